// SPDX-License-Identifier: Apache-2.0
// src/k8s against a real kube-apiserver + etcd (test/helpers/kube.ts): list and
// watch with a field selector, 410 after an etcd compaction → relist, an API
// server restart mid-watch, merge patches on pods/status, 403 without RBAC.
import assert from 'node:assert/strict';
import { after, before } from 'node:test';
import { ApiError } from '../../src/agent/api.ts';
import type { Reconciler } from '../../src/agent/reconcile.ts';
import { KubeSource } from '../../src/agent/sources/kube.ts';
import { KubeError } from '../../src/k8s/client.ts';
import { REDIRECTION, REDIRECTION_REASON, type Pod } from '../../src/k8s/enroll.ts';
import { Informer } from '../../src/k8s/informer.ts';
import { patchRedirection, podEvent } from '../../src/k8s/status.ts';
import { kubePrefix, kubeTest, missingKubeTools, serviceAccountToken, startKube, type KubeServer } from '../helpers/kube.ts';
import { waitUntil } from '../helpers/poll.ts';

const P = kubePrefix();
let k: KubeServer | undefined;
const kube = () => k!;

before(async () => { if (missingKubeTools().length === 0) k = await startKube(); }, { timeout: 120_000 });
after(async () => { await k?.stop(); });

const podObj = (name: string, node: string, extra: Partial<Pod['metadata']> = {}) => ({
  metadata: { name, ...extra },
  spec: { nodeName: node, containers: [{ name: 'app', image: 'example.invalid/app:1' }] },
});
async function ns(name: string, labels: Record<string, string> = {}) {
  await kube().admin.request('POST', '/api/v1/namespaces', { metadata: { name, labels } });
}
const createPod = (nsName: string, name: string, node: string) => kube().admin.request<Pod>('POST', `/api/v1/namespaces/${nsName}/pods`, podObj(name, node));
const deletePod = (nsName: string, name: string) => kube().admin.request('DELETE', `/api/v1/namespaces/${nsName}/pods/${name}?gracePeriodSeconds=0`);

function recorder() {
  const seen: string[] = [];
  const handlers = {
    add: (p: Pod) => seen.push(`add ${p.metadata.name}`),
    update: (_o: Pod, p: Pod) => seen.push(`update ${p.metadata.name}`),
    delete: (p: Pod) => seen.push(`delete ${p.metadata.name}`),
  };
  return { seen, handlers };
}

kubeTest('list then watch pods of one node (field selector spec.nodeName)', async (t) => {
  const n = `${P}-a`;
  await ns(n);
  await createPod(n, 'before', 'node-a');
  await createPod(n, 'other-node', 'node-b');
  const r = recorder();
  const inf = new Informer<Pod>(kube().admin, { path: '/api/v1/pods', fieldSelector: 'spec.nodeName=node-a' }, r.handlers);
  t.after(() => inf.stop());
  inf.start();
  await waitUntil('first list', () => inf.synced, 20_000);
  assert.deepEqual(inf.list().filter((p) => p.metadata.namespace === n).map((p) => p.metadata.name), ['before']);
  await createPod(n, 'after', 'node-a');
  await createPod(n, 'after-b', 'node-b');
  await waitUntil('watch add', () => r.seen.includes('add after'), 20_000);
  await kube().admin.mergePatch(`/api/v1/namespaces/${n}/pods/after`, { metadata: { labels: { x: '1' } } });
  await waitUntil('watch update', () => r.seen.includes('update after'), 20_000);
  await deletePod(n, 'after');
  await waitUntil('watch delete', () => r.seen.includes('delete after'), 20_000);
  assert.ok(!r.seen.some((s) => s.includes('other-node') || s.includes('after-b')), `saw another node's pod: ${r.seen}`);
  assert.equal(inf.counters.relists, 0);
});

/** Moves etcd's revision two past every resourceVersion seen so far, then compacts (a watch from X starts at X+1). */
async function bumpAndCompact(nsName: string) {
  for (let i = 0; i < 2; i++) await kube().admin.request('POST', `/api/v1/namespaces/${nsName}/configmaps`, { metadata: { generateName: 'rev-' }, data: {} });
  await kube().compact();
}

kubeTest('a resourceVersion compacted away: 410 as a status and in-stream; the informer relists and diffs', async (t) => {
  const n = `${P}-c`;
  await ns(n);
  await createPod(n, 'keep', 'node-c');
  await createPod(n, 'bump', 'node-c');
  const old = (await kube().admin.request('GET', `/api/v1/namespaces/${n}/pods`)).metadata.resourceVersion as string;
  await bumpAndCompact(n);
  // As an HTTP status: an exact list at a compacted revision.
  await assert.rejects(kube().admin.request('GET', `/api/v1/namespaces/${n}/pods?resourceVersion=${old}&resourceVersionMatch=Exact`),
    (e: unknown) => e instanceof KubeError && e.status === 410);
  // In-stream: a watch from it answers 200, then an ERROR event with code 410.
  const events: any[] = [];
  const ac = new AbortController();
  await kube().admin.watch(`/api/v1/namespaces/${n}/pods?watch=1&resourceVersion=${old}&timeoutSeconds=5`, (e) => { events.push(e); if (e.type === 'ERROR') ac.abort(); }, ac.signal, 30_000);
  assert.equal(events.at(-1)?.type, 'ERROR', JSON.stringify(events));
  assert.equal(events.at(-1)?.object?.code, 410);

  // The informer: short server timeouts make it re-watch from its last resourceVersion;
  // once that is compacted it gets the 410 and relists, and keeps going.
  const r = recorder();
  const inf = new Informer<Pod>(kube().admin, { path: `/api/v1/namespaces/${n}/pods`, watchTimeoutSeconds: 1 }, r.handlers);
  t.after(() => inf.stop());
  inf.start();
  await waitUntil('first list', () => inf.synced, 20_000);
  await bumpAndCompact(n);
  await waitUntil('relist after 410', () => inf.counters.relists >= 1, 30_000);
  assert.equal(inf.counters.failures, 0, '410 is not a failure (no backoff)');
  // A deletion seen live or (if the watch was between two requests) by the relist diff.
  await deletePod(n, 'bump');
  await bumpAndCompact(n);
  await waitUntil('delete seen', () => r.seen.includes('delete bump'), 30_000);
  assert.deepEqual(inf.list().map((p) => p.metadata.name), ['keep']);
  await createPod(n, 'later', 'node-c');
  await waitUntil('still watching', () => r.seen.includes('add later'), 30_000);
});

kubeTest('API server restart mid-watch: the watch comes back with backoff and sees what happened', async (t) => {
  const n = `${P}-r`;
  await ns(n);
  const r = recorder();
  const inf = new Informer<Pod>(kube().admin, { path: '/api/v1/pods', fieldSelector: 'spec.nodeName=node-r', backoffBaseMs: 100, backoffCapMs: 1000 }, r.handlers);
  t.after(() => inf.stop());
  inf.start();
  await waitUntil('first list', () => inf.synced, 20_000);
  await createPod(n, 'one', 'node-r');
  await waitUntil('add one', () => r.seen.includes('add one'), 20_000);
  await kube().restartApiServer();
  await createPod(n, 'two', 'node-r');
  await waitUntil('add two after the restart', () => r.seen.includes('add two'), 60_000);
  assert.ok(inf.counters.restarts >= 1 && inf.counters.failures >= 1, JSON.stringify(inf.counters));
  assert.ok(inf.secondsSinceLastEvent() !== undefined);
}, { timeout: 180_000 });

kubeTest('merge patch on pods/status sets and removes the status annotation; Events are created', async () => {
  const n = `${P}-s`;
  await ns(n);
  const pod = await createPod(n, 'st', 'node-s');
  await patchRedirection(kube().admin, pod, 'failed', 'bad port');
  let got = await kube().admin.request<Pod>('GET', `/api/v1/namespaces/${n}/pods/st`);
  assert.equal(got.metadata.annotations?.[REDIRECTION], 'failed');
  assert.equal(got.metadata.annotations?.[REDIRECTION_REASON], 'bad port');
  await patchRedirection(kube().admin, pod, 'enabled');
  got = await kube().admin.request<Pod>('GET', `/api/v1/namespaces/${n}/pods/st`);
  assert.equal(got.metadata.annotations?.[REDIRECTION], 'enabled');
  assert.equal(got.metadata.annotations?.[REDIRECTION_REASON], undefined);
  await patchRedirection(kube().admin, pod, undefined);
  got = await kube().admin.request<Pod>('GET', `/api/v1/namespaces/${n}/pods/st`);
  assert.equal(got.metadata.annotations?.[REDIRECTION], undefined);
  await deletePod(n, 'st');
  await patchRedirection(kube().admin, pod, 'enabled'); // 404: ignored
  await podEvent(kube().admin, pod, 'node-s', 'Warning', 'RedirectionFailed', 'test');
  const evs = await kube().admin.request('GET', `/api/v1/namespaces/${n}/events`);
  assert.ok(evs.items.some((e: any) => e.reason === 'RedirectionFailed' && e.involvedObject.uid === pod.metadata.uid));
});

kubeTest('403 without an RBAC rule: a ServiceAccount with no binding cannot list pods', async () => {
  const n = `${P}-x`;
  const token = await serviceAccountToken(kube(), n, 'nobody');
  const c = kube().clientWithToken(token);
  await assert.rejects(c.request('GET', '/api/v1/pods?fieldSelector=spec.nodeName%3Dn'), (e: unknown) => e instanceof KubeError && e.status === 403);
  c.close();
});

kubeTest('CNI ADD before the watch has the pod: one GET with the agent\'s credentials; a missing pod fails the ADD', async () => {
  const n = `${P}-g`;
  await ns(n);
  await kube().admin.request('POST', `/api/v1/namespaces/${n}/pods`, {
    metadata: { name: 'early', annotations: { 'traffic.sidecar.istio.io/excludeInboundPorts': '9000' } },
    spec: { nodeName: 'node-g', containers: [{ name: 'app', image: 'example.invalid/app:1' }, { name: 'linkerd-proxy', image: 'example.invalid/p:1' }] },
  });
  // Not started: its caches are empty, as right after the agent starts.
  const src = new KubeSource(kube().admin, {} as Reconciler, { nodeName: 'node-g', excludeNamespaces: ['kube-system'], validate: () => {} });
  const intent = {
    key: { sandboxId: 'sb1', uid: '', namespace: n, name: 'early' }, netns: '/run/netns/x', ips: ['10.0.0.9'], ifName: 'eth0',
    dataplane: 'sidecar' as const, profile: 'osm', annotations: {} as Record<string, string>, meshedAt: new Date().toISOString(),
  };
  const r = await src.forAdd(intent);
  assert.ok(!('skip' in r));
  assert.equal(r.profile, 'linkerd');
  assert.match(r.key.uid, /^[0-9a-f-]{36}$/);
  assert.equal(r.annotations['traffic.sidecar.istio.io/excludeInboundPorts'], '9000');
  await assert.rejects(src.forAdd({ ...intent, key: { ...intent.key, name: 'nope' } }), (e: unknown) => e instanceof ApiError && e.status === 409);
});

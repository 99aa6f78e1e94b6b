// SPDX-License-Identifier: Apache-2.0
// End to end against a real kube-apiserver: namespaces and Pod objects bound
// to lab node1 (as the scheduler would), with mesh-injected shapes; the lab
// plays kubelet (creates the pods through the real CNI chain, then sets their
// status IPs through the API); the agent runs with the chart's ServiceAccount
// and RBAC (a missing permission fails the test). Checked: enrollment,
// capture, a live annotation change, an invalid one (Event + reason, last
// good policy kept), the status annotation, a relabelled namespace, an API
// server restart mid-watch, an agent restart, pod deletion.
// Only the sidecar dataplane exists in this build: an ambient-labelled pod is
// enrolled and reported `failed` (dataplane not enabled), never half-meshed.
// Traffic stays in the lab's netns; the agent reaches the API server through a
// unix-socket bridge (node1's loopback → the host's loopback).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import type { Pod } from '../../src/k8s/enroll.ts';
import type { LabPod } from '../../src/lab/index.ts';
import { labRunDir } from '../../src/lab/cleanup.ts';
import { resolvePodPolicy } from '../../src/profiles/index.ts';
import { APP_PORT, Sidecar, assertDirect, assertProxied, connectFrom, serveIn } from '../conformance/harness.ts';
import { applyManifests, renderChart, splitManifests } from '../helpers/chart.ts';
import { agentPods, cli as meshwarp, cniLab, metricsText } from '../helpers/cni-runtime.ts';
import { inCI, kernelUnavailable } from '../helpers/kernel.ts';
import { ISTIO_SHAPE, PLAIN_SHAPE, bridgeApi } from '../helpers/kube-lab.ts';
import { kubePrefix, kubeTest, serviceAccountToken, startKube, type KubeServer } from '../helpers/kube.ts';
import { waitUntil } from '../helpers/poll.ts';

const TOOLS = ['etcd', 'kube-apiserver', 'helm'];
const RELEASE_NS = 'meshwarp';

kubeTest('e2e: the agent with the chart\'s RBAC meshes, updates and reports pods of its node', async (t) => {
  const why = kernelUnavailable();
  if (why) { if (inCI) throw new Error(why); t.skip(why); return; }
  const k: KubeServer = await startKube();
  t.after(() => k.stop());
  const P = kubePrefix();
  const api = k.admin;
  const nsPath = (ns: string) => `/api/v1/namespaces/${ns}`;
  const mkNs = (name: string, labels: Record<string, string> = {}) => api.request('POST', '/api/v1/namespaces', { metadata: { name, labels } });
  const getPod = (ns: string, name: string) => api.request<Pod>('GET', `${nsPath(ns)}/pods/${name}`);
  const annot = async (ns: string, name: string, key: string) => (await getPod(ns, name)).metadata.annotations?.[key];

  // The chart's ServiceAccount, ClusterRole and binding, created as Helm renders them.
  await mkNs(RELEASE_NS);
  // Every object the chart renders, for real (no controller runs, so the DaemonSet makes no pods).
  await applyManifests(api, splitManifests(renderChart('mw', RELEASE_NS)), false);
  const token = await serviceAccountToken(k, RELEASE_NS, 'mw-node');
  const kubeconfig = k.writeKubeconfig(token);
  const port = Number(new URL(k.server).port);

  const c = await cniLab(t, {
    tag: 'k8', start: false, agentArgs: ['--kubeconfig', kubeconfig, '--node-name', 'node1', '--daemonset', `${RELEASE_NS}/mw-node`],
    beforeAgent: async (lab, n1) => {
      const stop = await bridgeApi(n1, port, `${labRunDir(lab.prefix)}/api.sock`);
      t.after(stop);
    },
  });
  if (!c) return;
  const { lab, n1, agent } = c;

  const mesh = `${P}-mesh`, plain = `${P}-plain`, amb = `${P}-amb`;
  await mkNs(mesh); await mkNs(plain); await mkNs(amb);
  /** The scheduler's part (spec.nodeName) and then the kubelet's (CNI ADD, status IPs). */
  const runPod = async (ns: string, name: string, shape: typeof ISTIO_SHAPE | typeof PLAIN_SHAPE): Promise<LabPod> => {
    const obj = await api.request<Pod>('POST', `${nsPath(ns)}/pods`, {
      metadata: { name, annotations: shape.annotations }, spec: { nodeName: 'node1', containers: shape.containers },
    });
    const p = await lab.addPodCni(n1, name, { namespace: ns, uid: obj.metadata.uid });
    await api.mergePatch(`${nsPath(ns)}/pods/${name}/status`, { status: { phase: 'Running', podIP: p.ip4, podIPs: [{ ip: p.ip4 }, { ip: p.ip6 }] } });
    return p;
  };
  await agent.start();

  const web = await runPod(mesh, 'web', ISTIO_SHAPE);
  const cli = await runPod(plain, 'cli', PLAIN_SHAPE);
  const other = await runPod(amb, 'other', PLAIN_SHAPE);

  // Enrollment: the injected pod only.
  const meshed = async () => (await agentPods(agent)).map((p) => p.podName).sort();
  assert.deepEqual(await meshed(), ['web']);
  await waitUntil('status enabled on web', async () => (await annot(mesh, 'web', 'meshwarp.io/redirection')) === 'enabled', 20_000);
  assert.equal(await annot(plain, 'cli', 'meshwarp.io/redirection'), undefined, 'an unenrolled pod gets no status');

  // Capture by the istio profile (inbound 15006 as uid 1337).
  await serveIn(web, 'web', [APP_PORT]);
  const sc = await Sidecar.start(web, resolvePodPolicy('istio', {}));
  t.after(() => sc.stop());
  /** One connection cli -> web:8080: through web's sidecar, direct, or failed. */
  const path = async (): Promise<'captured' | 'direct' | 'failed'> => {
    const r = await connectFrom(cli, web.ip4, APP_PORT);
    if (!r.ok || !r.reply) return 'failed';
    return r.reply.remotePort === r.localPort ? 'direct' : 'captured';
  };
  const captured = async () => (await path()) === 'captured';
  const direct = async () => (await path()) === 'direct';
  assertProxied(await connectFrom(cli, web.ip4, APP_PORT), 'web', 'cli -> web captured');

  // A live annotation change re-applies in place.
  const setAnnot = (v: string | null) => api.mergePatch(`${nsPath(mesh)}/pods/web`, { metadata: { annotations: { 'traffic.sidecar.istio.io/excludeInboundPorts': v } } });
  await setAnnot(String(APP_PORT));
  await waitUntil('inbound 8080 excluded', direct, 20_000);
  assertDirect(await connectFrom(cli, web.ip4, APP_PORT), 'web', 'excluded port is direct');

  // An invalid value: an Event and a status reason; the last good policy stays.
  await setAnnot('not-a-port');
  await waitUntil('reason on web', async () => /invalid per-pod setting/.test((await annot(mesh, 'web', 'meshwarp.io/redirection-reason')) ?? ''), 20_000);
  assert.equal(await annot(mesh, 'web', 'meshwarp.io/redirection'), 'enabled');
  const events = await api.request('GET', `${nsPath(mesh)}/events`);
  assert.ok(events.items.some((e: any) => e.reason === 'RedirectionFailed' && e.involvedObject.name === 'web' && /excludeInboundPorts/.test(e.message)), 'Event written');
  assertDirect(await connectFrom(cli, web.ip4, APP_PORT), 'web', 'last good policy kept');

  // Removing it: captured again, reason cleared.
  await setAnnot(null);
  await waitUntil('captured again', () => captured(), 20_000);
  await waitUntil('reason cleared', async () => (await annot(mesh, 'web', 'meshwarp.io/redirection-reason')) === undefined, 20_000);

  // A relabelled namespace fans out to its pods: ambient enrolls `other`, which this
  // build cannot mesh (no ambient dataplane): failed + reason, nothing applied.
  await api.mergePatch(nsPath(amb), { metadata: { labels: { 'istio.io/dataplane-mode': 'ambient' } } });
  await waitUntil('ambient pod reported failed', async () => (await annot(amb, 'other', 'meshwarp.io/redirection')) === 'failed', 20_000);
  assert.match((await annot(amb, 'other', 'meshwarp.io/redirection-reason'))!, /dataplane ambient/);
  assert.deepEqual(await meshed(), ['web']);
  await api.mergePatch(nsPath(amb), { metadata: { labels: { 'istio.io/dataplane-mode': null } } });
  await waitUntil('status removed on unenroll', async () => (await annot(amb, 'other', 'meshwarp.io/redirection')) === undefined, 20_000);

  // A pod of this node that is running (it has an IP) but whose CNI ADD this agent never saw.
  await api.request('POST', `${nsPath(mesh)}/pods`, { metadata: { name: 'ghost', annotations: ISTIO_SHAPE.annotations }, spec: { nodeName: 'node1', containers: ISTIO_SHAPE.containers } });
  await api.mergePatch(`${nsPath(mesh)}/pods/ghost/status`, { status: { phase: 'Running', podIP: '10.250.0.9', podIPs: [{ ip: '10.250.0.9' }] } });
  await waitUntil('ghost pending', async () => (await annot(mesh, 'ghost', 'meshwarp.io/redirection')) === 'pending', 20_000);
  assert.match((await annot(mesh, 'ghost', 'meshwarp.io/redirection-reason'))!, /CNI ADD/);

  // Readiness and the watch counters.
  const ready = await n1.run(['curl', '-sS', '-m', '5', '-o', '/dev/null', '-w', '%{http_code}', 'http://127.0.0.1:9464/readyz']);
  assert.equal(ready.stdout, '200');
  assert.match(await metricsText(n1), /^meshwarp_kube_cache_objects\{resource="pods"\} 4$/m);
  const st = await meshwarp(n1, ['status', '--socket', agent.socket]);
  assert.match(st.stdout, /^kubernetes synced$/m, st.stdout + st.stderr);
  assert.match(st.stdout, /^ {2}pods {8}4 cached/m, st.stdout);

  // API server restart mid-watch: a change made after it still arrives.
  await k.restartApiServer();
  await setAnnot(String(APP_PORT));
  await waitUntil('change after API restart applied', direct, 60_000);
  assert.match(await metricsText(n1), /^meshwarp_kube_watch_restarts_total\{resource="pods"\} [1-9]/m);

  // Agent restart (SIGTERM keeps the datapath); a change made while it was down is applied by the watch's first list.
  await agent.stop();
  assertDirect(await connectFrom(cli, web.ip4, APP_PORT), 'web', 'datapath kept while the agent is down');
  await setAnnot(null);
  await agent.start();
  await waitUntil('change made while down applied', () => captured(), 20_000);
  assert.deepEqual(await meshed(), ['web']);
  assert.equal(await annot(mesh, 'web', 'meshwarp.io/redirection'), 'enabled');

  // Pod deleted in the API (its CNI DEL not yet run): unmeshed.
  await api.request('DELETE', `${nsPath(mesh)}/pods/web?gracePeriodSeconds=0`);
  await waitUntil('web unmeshed', async () => (await meshed()).length === 0, 20_000);
  assertDirect(await connectFrom(cli, web.ip4, APP_PORT), 'web', 'deleted pod no longer captured');

  // SIGTERM once the DaemonSet is gone is an uninstall: the datapath goes.
  const web2 = await runPod(mesh, 'web2', ISTIO_SHAPE);
  await serveIn(web2, 'web2', [APP_PORT]);
  await waitUntil('web2 enabled', async () => (await annot(mesh, 'web2', 'meshwarp.io/redirection')) === 'enabled', 20_000);
  const toWeb2 = async () => { const r = await connectFrom(cli, web2.ip4, APP_PORT); return r.ok && r.reply ? (r.reply.remotePort === r.localPort ? 'direct' : 'captured') : 'failed'; };
  assert.equal(await toWeb2(), 'failed', 'captured into web2\'s (absent) sidecar');
  await api.request('DELETE', `/apis/apps/v1/namespaces/${RELEASE_NS}/daemonsets/mw-node`);
  await agent.stop();
  assert.equal(await toWeb2(), 'direct', 'uninstalled: web2 no longer captured');
  assert.equal(existsSync(agent.pinRoot), false, 'pins removed');
  for (const p of [web, cli, other, web2]) await lab.removePodCni(p);
}, { tools: TOOLS, timeout: 300_000 });

// SPDX-License-Identifier: Apache-2.0
// The Helm chart (deploy/helm/meshwarp): helm lint --strict, the schema refusing
// bad values, helm template through kubeconform (schemas from the test API
// server's OpenAPI), a server-side dry-run of every object against a real
// kube-apiserver, and the invariants (no :latest, binding subject in the
// release namespace, least-privilege verbs, every mesh's opt-out on the agent pod).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before } from 'node:test';
import { applyManifests, CHART, helm, KUBE_VERSION, kubeconform, renderChart, splitManifests, writeSchemas } from '../helpers/chart.ts';
import { kubeTest, missingKubeTools, startKube, type KubeServer } from '../helpers/kube.ts';

const TOOLS = ['etcd', 'kube-apiserver', 'helm', 'kubeconform'];
const NS = 'mw-chart-test';
let k: KubeServer | undefined;
before(async () => { if (missingKubeTools(TOOLS).length === 0) k = await startKube(); }, { timeout: 120_000 });
after(async () => { await k?.stop(); });

const fails = (set: string[]): string => {
  try { renderChart('mw', NS, set); } catch (e) { return String((e as { stderr?: string }).stderr ?? e); }
  assert.fail(`helm template accepted ${set.join(' ')}`);
};

kubeTest('helm lint --strict passes; the schema and templates refuse bad values', async () => {
  helm(['lint', '--strict', '--kube-version', KUBE_VERSION, CHART]);
  assert.match(fails(['engnie=ebpf']), /additional propert/i);
  assert.match(fails(['engine=xdp']), /engine/);
  assert.match(fails(['image.tag=latest']), /image\/tag/);
  assert.match(fails(['failurePolicy=maybe']), /failurePolicy/);
  assert.match(fails(['dataplane=ambient']), /only the sidecar dataplane/);
}, { tools: TOOLS });

kubeTest('helm template | kubeconform -strict, with schemas from the API server', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-schemas-'));
  try {
    const loc = await writeSchemas(k!.admin, dir, ['DaemonSet', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']);
    for (const set of [[], ['privileged=true', 'platform=k3s', 'image.digest=sha256:' + 'a'.repeat(64)]]) {
      const out = kubeconform(renderChart('mw', NS, set), loc);
      assert.match(out, /Valid: 4, Invalid: 0, Errors: 0, Skipped: 0/, out);
    }
    // The check can fail: an unknown field is refused.
    const bad = renderChart('mw', NS).replace('priorityClassName:', 'priorityClass:');
    assert.throws(() => kubeconform(bad, loc), /priorityClass/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}, { tools: TOOLS });

kubeTest('server-side dry-run of every object; invariants', async () => {
  await k!.admin.request('POST', '/api/v1/namespaces', { metadata: { name: NS } }).catch((e) => { if (e.status !== 409) throw e; });
  const ms = splitManifests(renderChart('mw', NS));
  assert.deepEqual(ms.map((m) => m.kind).sort(), ['ClusterRole', 'ClusterRoleBinding', 'DaemonSet', 'ServiceAccount']);
  const objs = await applyManifests(k!.admin, ms, true);
  const by = (kind: string) => objs.find((o) => o.kind === kind);
  const ds = by('DaemonSet');
  const podSpec = ds.spec.template.spec;
  for (const c of [...podSpec.containers, ...(podSpec.initContainers ?? [])]) {
    assert.doesNotMatch(c.image, /:latest$/, c.image);
    assert.match(c.image, /:0\.1\.0$/, 'the default tag is the appVersion');
    assert.equal(c.securityContext.privileged, false);
  }
  assert.equal(podSpec.priorityClassName, 'system-node-critical');
  assert.equal(podSpec.dnsPolicy, 'ClusterFirstWithHostNet');
  assert.equal(ds.spec.updateStrategy.type, 'RollingUpdate');
  const env = podSpec.containers.find((c: any) => c.name === 'agent').env;
  assert.deepEqual(env.find((e: any) => e.name === 'NODE_NAME').valueFrom, { fieldRef: { apiVersion: 'v1', fieldPath: 'spec.nodeName' } });
  const meta = ds.spec.template.metadata;
  assert.equal(meta.labels['sidecar.istio.io/inject'], 'false');
  assert.equal(meta.labels['istio.io/dataplane-mode'], 'none');
  assert.equal(meta.annotations['linkerd.io/inject'], 'disabled');
  assert.equal(meta.labels['kuma.io/sidecar-injection'], 'disabled');
  assert.equal(meta.annotations['openservicemesh.io/sidecar-injection'], 'disabled');
  const mounts = podSpec.containers.find((c: any) => c.name === 'agent').volumeMounts;
  assert.equal(mounts.find((m: any) => m.mountPath === '/sys/fs/bpf').mountPropagation, 'HostToContainer', 'Bidirectional needs privileged');
  assert.equal(mounts.find((m: any) => m.mountPath === '/host/proc').readOnly, true);
  const binding = by('ClusterRoleBinding');
  assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: 'mw-node', namespace: NS }]);
  const verbs = by('ClusterRole').rules.flatMap((r: any) => r.resources.flatMap((res: string) => r.verbs.map((v: string) => `${res}:${v}`))).sort();
  assert.deepEqual(verbs, ['daemonsets:get', 'events:create', 'events:patch', 'namespaces:get', 'namespaces:list', 'namespaces:watch',
    'pods/status:patch', 'pods:get', 'pods:list', 'pods:watch']);
  // privileged=true: Bidirectional bpffs, accepted by the server too.
  const priv = await applyManifests(k!.admin, splitManifests(renderChart('mw', NS, ['privileged=true'])).filter((m) => m.kind === 'DaemonSet'), true);
  const pc = priv[0].spec.template.spec.containers.find((c: any) => c.name === 'agent');
  assert.equal(pc.securityContext.privileged, true);
  assert.equal(pc.volumeMounts.find((m: any) => m.mountPath === '/sys/fs/bpf').mountPropagation, 'Bidirectional');
  // Dry-run created nothing.
  await assert.rejects(k!.admin.request('GET', `/apis/apps/v1/namespaces/${NS}/daemonsets/mw-node`), (e: any) => e.status === 404);
}, { tools: TOOLS });

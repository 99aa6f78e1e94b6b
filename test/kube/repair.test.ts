// SPDX-License-Identifier: Apache-2.0
// Reconcile at start doubles as repair, against a real kube-apiserver: a pod
// created through the real CNI chain while the agent is down, with
// failurePolicy open, starts unmeshed; the agent then starts with the
// Kubernetes source, finds the pod's netns by its uid (the lab lays out
// kubelet's cgroups, kubepods/pod<uid>/<sandbox>, with a pause process) and
// meshes it through the CNI ADD path: capture checked with real traffic,
// status `pending` → `enabled`. A pod deleted in the API while the agent was
// down (its DEL lost, its netns still there) is unmeshed at start. Nothing in
// the cluster is deleted by the agent (its RBAC has no delete).
// Also /readyz with --cni-conf-dir: 503 while the conflist lacks a valid
// meshwarp-cni entry, 200 once it is back.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Pod } from '../../src/k8s/enroll.ts';
import type { LabNode, LabPod } from '../../src/lab/index.ts';
import { labRunDir } from '../../src/lab/cleanup.ts';
import { resolvePodPolicy } from '../../src/profiles/index.ts';
import { APP_PORT, Sidecar, connectFrom, serveIn } from '../conformance/harness.ts';
import { applyManifests, renderChart, splitManifests } from '../helpers/chart.ts';
import { agentPods, cniLab, logsAt } from '../helpers/cni-runtime.ts';
import { inCI, kernelUnavailable } from '../helpers/kernel.ts';
import { ISTIO_SHAPE, PLAIN_SHAPE, bridgeApi, type PodShape } from '../helpers/kube-lab.ts';
import { kubePrefix, kubeTest, serviceAccountToken, startKube } from '../helpers/kube.ts';
import { waitUntil } from '../helpers/poll.ts';

const RELEASE_NS = 'meshwarp';

/** GET /readyz on node1's metrics port: [code, body]. */
async function readyz(n: LabNode): Promise<[string, string]> {
  const r = await n.run(['curl', '-sS', '-m', '5', '-w', '\n%{http_code}', 'http://127.0.0.1:9464/readyz']);
  const i = r.stdout.lastIndexOf('\n');
  return [r.stdout.slice(i + 1), r.stdout.slice(0, i)];
}

kubeTest('repair: pods the agent never saw an ADD for are found by uid and meshed at start; gone ones removed; /readyz checks the conflist', async (t) => {
  const why = kernelUnavailable();
  if (why) { if (inCI) throw new Error(why); t.skip(why); return; }
  const k = await startKube();
  t.after(() => k.stop());
  const P = kubePrefix();
  const api = k.admin;
  const nsPath = (ns: string) => `/api/v1/namespaces/${ns}`;
  const annot = async (ns: string, name: string, key: string) => (await api.request<Pod>('GET', `${nsPath(ns)}/pods/${name}`)).metadata.annotations?.[key];

  await api.request('POST', '/api/v1/namespaces', { metadata: { name: RELEASE_NS } });
  await applyManifests(api, splitManifests(renderChart('mw', RELEASE_NS)), false);
  const kubeconfig = k.writeKubeconfig(await serviceAccountToken(k, RELEASE_NS, 'mw-node'));
  const port = Number(new URL(k.server).port);
  const c = await cniLab(t, {
    tag: 'kr', start: false, failurePolicy: 'open',
    agentArgs: ['--kubeconfig', kubeconfig, '--node-name', 'node1', '--daemonset', `${RELEASE_NS}/mw-node`],
    beforeAgent: async (lab, n1) => { t.after(await bridgeApi(n1, port, `${labRunDir(lab.prefix)}/api.sock`)); },
  });
  if (!c) return;
  const { lab, n1, agent, agentLog } = c;
  const confDir = n1.cni!.confDir;
  agent.opts.args!.push('--cni-conf-dir', confDir);

  const mesh = `${P}-mesh`, plain = `${P}-plain`;
  for (const ns of [mesh, plain]) await api.request('POST', '/api/v1/namespaces', { metadata: { name: ns } });
  /** The scheduler's part, then kubelet's: the sandbox in kubelet's cgroup layout through the CNI chain, then status IPs. */
  const runPod = async (ns: string, name: string, shape: PodShape): Promise<LabPod> => {
    const obj = await api.request<Pod>('POST', `${nsPath(ns)}/pods`, { metadata: { name, annotations: shape.annotations }, spec: { nodeName: 'node1', containers: shape.containers } });
    const p = await lab.addPodCni(n1, name, { namespace: ns, uid: obj.metadata.uid, kubeletCgroup: true });
    await api.mergePatch(`${nsPath(ns)}/pods/${name}/status`, { status: { phase: 'Running', podIP: p.ip4, podIPs: [{ ip: p.ip4 }, { ip: p.ip6 }] } });
    return p;
  };
  const meshed = async () => (await agentPods(agent)).map((p) => p.podName).sort();

  // A pod meshed by an earlier run, then deleted in the API while the agent is down (its CNI DEL lost).
  await agent.start();
  const old = await runPod(mesh, 'old', ISTIO_SHAPE);
  assert.deepEqual(await meshed(), ['old']);
  await agent.stop(); // the DaemonSet exists: an upgrade, the datapath stays
  await api.request('DELETE', `${nsPath(mesh)}/pods/old?gracePeriodSeconds=0`);

  // Created while the agent is down: the plugin fails open, the pod starts unmeshed.
  const cli = await runPod(plain, 'cli', PLAIN_SHAPE);
  const web = await runPod(mesh, 'web', ISTIO_SHAPE);
  assert.ok(c.pluginLog.some((l) => /started unmeshed \(failurePolicy open\)/.test(l.line)), `the plugin said it failed open: ${c.pluginLog.map((l) => l.line).join('\n')}`);
  await serveIn(web, 'web', [APP_PORT]);
  const sc = await Sidecar.start(web, resolvePodPolicy('istio', {}));
  t.after(() => sc.stop());
  const path = async (): Promise<'captured' | 'direct' | 'failed'> => {
    const r = await connectFrom(cli, web.ip4, APP_PORT);
    if (!r.ok || !r.reply) return 'failed';
    return r.reply.remotePort === r.localPort ? 'direct' : 'captured';
  };
  assert.equal(await path(), 'direct', 'unmeshed while the agent is down');

  // The conflist loses its entry (the primary CNI rewrote it): not ready until it is back.
  const file = join(confDir, '10-lab.conflist');
  const good = readFileSync(file, 'utf8');
  const list = JSON.parse(good);
  writeFileSync(file, JSON.stringify({ ...list, plugins: list.plugins.filter((p: { type: string }) => p.type !== 'meshwarp-cni') }));

  await agent.start();
  // Repaired before the agent said ready: netns found by uid, meshed through the ADD path.
  assert.deepEqual(await meshed(), ['web'], 'web repaired; old (gone from the API) removed');
  const rec = (await agentPods(agent)).find((p) => p.podName === 'web')!;
  assert.equal(rec.containerId, web.cni!.containerId, 'sandbox id from the pause process\'s cgroup leaf');
  assert.equal(rec.hostVeth?.name, web.hostVeth);
  assert.equal(await path(), 'captured', 'cli -> web captured after repair');
  await waitUntil('web enabled', async () => (await annot(mesh, 'web', 'meshwarp.io/redirection')) === 'enabled', 20_000);
  assert.equal(await annot(mesh, 'web', 'meshwarp.io/redirection-reason'), undefined);
  assert.equal(await annot(plain, 'cli', 'meshwarp.io/redirection'), undefined, 'an unenrolled pod is not touched');
  assert.ok(logsAt(agentLog, 'info').some((l) => /repaired/.test(String(l.msg)) && l.pod === `${mesh}/web`), 'repair logged');

  const [code, body] = await readyz(n1);
  assert.equal(code, '503', body);
  assert.match(body, /conflist entry: .*0 meshwarp-cni entries/);
  writeFileSync(file, good);
  const [code2, body2] = await readyz(n1);
  assert.equal(code2, '200', body2);

  // The runtime's DEL (same sandbox id) unmeshes the repaired pod.
  await lab.removePodCni(web);
  assert.deepEqual(await meshed(), []);
  assert.equal(old.cni !== undefined, true);
  for (const p of [old, cli]) await lab.removePodCni(p);
}, { tools: ['etcd', 'kube-apiserver', 'helm'], timeout: 240_000 });

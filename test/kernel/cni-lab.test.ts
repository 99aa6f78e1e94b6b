// SPDX-License-Identifier: Apache-2.0
// Lab pods created by the real CNI chain (loopback, then bridge + host-local + meshwarp-cni,
// run from inside the node netns as a runtime would) against a real agent: capture, clean DEL,
// the failure policies and excluded namespaces.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  CniChainError, DEBIAN_CNI_DIR, LAB_NETWORK, Lab, LabAgent, labNetns, uniquePrefix, waitForLine, type LabNode, type LabPod,
} from '../../src/lab/index.ts';
import { tryRun } from '../../src/sys/exec.ts';
import { get as httpGet, startServer as startHttpServer } from '../helpers/http.ts';
import { inCI, sidecarTest } from '../helpers/kernel.ts';
import { ourTc, tcPins } from '../helpers/cni-runtime.ts';
import { waitUntil } from '../helpers/poll.ts';

const node = process.execPath;
const PROXY = fileURLToPath(new URL('../../src/proxy/main.ts', import.meta.url));
const APP_UID = 1000;
/** The osm profile's proxy uid (the agent's default profile). */
const PROXY_UID = 1500;

interface Ctx { lab: Lab; n1: LabNode; agent: LabAgent; logs: { line: string; plugin: string; command: string }[] }

/** A lab node with an agent (started) and the CNI chain pointing at it. */
async function setup(t: { after(fn: () => unknown): void; skip(msg: string): void }, policy: 'closed' | 'open' = 'closed', agentOpts: ConstructorParameters<typeof LabAgent>[1] = {}): Promise<Ctx | undefined> {
  if (!existsSync(join(DEBIAN_CNI_DIR, 'bridge'))) {
    if (inCI) throw new Error(`${DEBIAN_CNI_DIR}/bridge missing (containernetworking-plugins)`);
    t.skip('containernetworking-plugins not installed');
    return undefined;
  }
  const lab = await Lab.create({ prefix: uniquePrefix('cl') });
  t.after(() => lab.destroy());
  const n1 = lab.addNode('node1');
  const agent = new LabAgent(n1, agentOpts);
  await agent.start();
  const logs: Ctx['logs'] = [];
  lab.enableCni(n1, { agentSocket: agent.socket, failurePolicy: policy, onLog: (line, plugin, command) => logs.push({ line, plugin, command }) });
  return { lab, n1, agent, logs };
}

const startServer = (pod: LabPod) => startHttpServer(pod, { port: 8080, reply: 'ok', uid: APP_UID });

/** The test sidecar as the proxy uid; returns its parsed log lines (one per finished connection). */
async function startSidecar(pod: LabPod): Promise<Record<string, unknown>[]> {
  const p: ChildProcess = pod.spawn([node, '--disable-warning=ExperimentalWarning', PROXY, '--outbound', '15001', '--inbound', '15003', '--log', '--tag', pod.name], { uid: PROXY_UID });
  await waitForLine(p, /ready/);
  const lines: Record<string, unknown>[] = [];
  let buf = '';
  p.stderr!.on('data', (d: Buffer) => {
    buf += d.toString('utf8');
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    for (const l of parts) if (l.startsWith('{')) lines.push(JSON.parse(l) as Record<string, unknown>);
  });
  return lines;
}

const get = (from: LabPod, host: string): Promise<string> => httpGet(from, host, { port: 8080, uid: APP_UID, maxTimeS: 5 });

/** Addresses host-local holds on the node (one file per IP in its dataDir). */
function allocated(n: LabNode): string[] {
  const dir = join(n.cni!.ipamDir, LAB_NETWORK);
  return existsSync(dir) ? readdirSync(dir).filter((f) => isIP(f) !== 0).sort() : [];
}

const podIds = async (agent: LabAgent) => (await agent.request<{ pods: { podNamespace: string; podName: string; ip4: string; ip6: string; hostVeth?: { name: string } }[] }>('GET', '/v1/pods')).pods;

sidecarTest('Pods created through the chain are captured; DEL leaves no map entry, link or filter behind', async (t) => {
  const c = await setup(t);
  if (!c) return;
  const { lab, n1, agent } = c;
  const status = () => agent.request<{ pods: number; maps: Record<string, number> }>('GET', '/v1/status');
  const server = await lab.addPodCni(n1, 'server', { namespace: 'demo' });
  const before = await status();
  const client = await lab.addPodCni(n1, 'client', { namespace: 'demo' });
  for (const p of [server, client]) {
    assert.match(p.ip4, /^10\.244\.1\.(1\d\d|2[0-4]\d|25[0-4])$/, 'IPv4 from host-local\'s range');
    assert.match(p.ip6, /^fd00:244:1::[12]\d\d$/, 'IPv6 from host-local\'s range');
    assert.match(p.hostVeth, /^veth/, 'host veth named by the CNI plugin (bridge or ptp)');
  }
  assert.deepEqual(allocated(n1), [client.ip4, client.ip6, server.ip4, server.ip6].sort());

  const pods = await podIds(agent);
  assert.deepEqual(pods.map((p) => [`${p.podNamespace}/${p.podName}`, p.ip4, p.ip6, p.hostVeth?.name]).sort(), [
    ['demo/client', client.ip4, client.ip6, client.hostVeth], ['demo/server', server.ip4, server.ip6, server.hostVeth],
  ]);

  await startServer(server);
  const [clientLog, serverLog] = await Promise.all([startSidecar(client), startSidecar(server)]);
  assert.equal(await get(client, server.ip4), 'ok');
  assert.equal(await get(client, server.ip6), 'ok');
  await waitUntil('both sidecars to log the two connections', () => clientLog.length >= 2 && serverLog.length >= 2, 2000);
  assert.deepEqual(clientLog.map((l) => [l.dir, l.origDst]), [['outbound', `${server.ip4}:8080`], ['outbound', `[${server.ip6}]:8080`]]);
  assert.deepEqual(serverLog.map((l) => [l.dir, l.origDst]), [['inbound', `${server.ip4}:8080`], ['inbound', `[${server.ip6}]:8080`]]);

  // Our tc programs on a pod's veth: legacy cls_bpf filters unless another tcx user holds the hook.
  const tcx = (p: LabPod) => [...ourTc(n1, p.hostVeth, 'ingress'), ...ourTc(n1, p.hostVeth, 'egress')];
  // tc attachments are pinned per sandbox (container id), not per ifindex, which the kernel reuses.
  // auto on a pod veth no other tcx user holds: legacy filters (src/datapath/ebpf/tc.ts, head)
  const want = (p: LabPod) => [`cls-${p.hostIfindex}-egress`, `cls-${p.hostIfindex}-ingress`];
  const pins = (p: LabPod) => tcPins(agent.pinRoot, p.cni!.containerId);
  assert.equal(tcx(client).length, 2, 'tc programs on the client veth');
  assert.deepEqual(pins(client), want(client));

  const cni = client.cni!;
  await lab.removePodCni(client);
  const after = await status();
  assert.equal(after.pods, 1);
  for (const m of ['pod_config', 'local_pods', 'port_rules', 'cidr_rules']) assert.equal(after.maps[m], before.maps[m], `${m} back to one pod`);
  assert.deepEqual(pins(client), [], 'the client\'s tc links are unpinned (destroyed, not left on a dead veth)');
  assert.equal(tcx(server).length, 2, 'the server keeps its programs');
  assert.deepEqual(pins(server), want(server));
  assert.deepEqual((await podIds(agent)).map((p) => p.podName), ['server']);
  const hostVeth = cni.result.interfaces!.find((i) => !i.sandbox && i.name !== n1.bridge)!.name; // bridge lists the bridge first, ptp does not
  assert.equal(tryRun(['ip', '-n', n1.netns, 'link', 'show', 'dev', hostVeth]), false, 'host veth gone');
  assert.ok(!labNetns(lab.prefix).includes(client.netns), 'netns gone');
  assert.ok(!existsSync(client.cgroupPath), 'cgroup gone');
  assert.deepEqual(allocated(n1), [server.ip4, server.ip6].sort(), 'host-local released the client\'s addresses');
  await lab.removePodCni(client); // idempotent
  assert.equal(await get(server, server.ip4), 'ok', 'the node still works');
}, { timeout: 30_000 });

sidecarTest('Fail-closed and fail-open', async (t) => {
  const c = await setup(t, 'closed');
  if (!c) return;
  const { lab, n1, agent, logs } = c;
  await agent.stop();

  const err = await lab.addPodCni(n1, 'web', { namespace: 'demo' }).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof CniChainError, `a CniChainError, got ${String(err)}`);
  assert.equal(err.plugin, 'meshwarp-cni');
  assert.equal(err.command, 'ADD');
  assert.equal(err.cniCode, 11, 'try again later');
  assert.ok(err.msg.includes(agent.socket), `the message names the socket: ${err.msg}`);
  assert.match(err.details, /failurePolicy/);
  assert.ok(!n1.pods.has('web'));
  assert.ok(!labNetns(lab.prefix).includes(`${lab.prefix}-node1-web`), 'no netns left');
  assert.ok(!existsSync(`${n1.cgroupPath}/web`), 'no cgroup left');
  assert.deepEqual(allocated(n1), [], 'the runtime\'s DEL released the addresses');
  assert.ok(logs.some((l) => l.plugin === 'meshwarp-cni' && l.command === 'DEL'), 'the runtime ran DEL after the failed ADD');

  await agent.start();
  const web = await lab.addPodCni(n1, 'web', { namespace: 'demo' });
  assert.match(web.ip4, /^10\.244\.1\.1\d\d$/);
  assert.deepEqual(allocated(n1), [web.ip4, web.ip6].sort());
  assert.deepEqual((await podIds(agent)).map((p) => p.podName), ['web']);

  // failurePolicy open: with the agent down, pods start unmeshed.
  lab.enableCni(n1, { agentSocket: agent.socket, failurePolicy: 'open', onLog: (line, plugin, command) => logs.push({ line, plugin, command }) });
  const srv = lab.addPod(n1, 'srv'); // directly wired, never meshed: the destination
  await startServer(srv);
  const webLog = await startSidecar(web);
  await agent.stop();
  logs.length = 0;
  const late = await lab.addPodCni(n1, 'late', { namespace: 'demo' });
  const warns = logs.filter((l) => l.plugin === 'meshwarp-cni' && l.command === 'ADD').map((l) => JSON.parse(l.line) as Record<string, unknown>);
  assert.equal(warns.length, 1, JSON.stringify(logs));
  assert.equal(warns[0].level, 'warn');
  assert.match(String(warns[0].msg), /agent unreachable, pod started unmeshed \(failurePolicy open\)/);
  assert.equal(warns[0].pod, 'demo/late');
  const lateLog = await startSidecar(late);
  assert.equal(await get(late, srv.ip4), 'ok', 'the unmeshed pod works');
  assert.equal(await get(web, srv.ip4), 'ok');
  await waitUntil('the meshed pod\'s sidecar to log', () => webLog.length >= 1, 2000);
  assert.deepEqual(webLog.map((l) => l.origDst), [`${srv.ip4}:8080`], 'the meshed pod is still captured with the agent down');
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(lateLog, [], 'the unmeshed pod went direct, not through its sidecar');

  await lab.removePodCni(late); // DEL is best effort with the agent down
  assert.deepEqual(allocated(n1), [web.ip4, web.ip6].sort());
}, { timeout: 30_000 });

sidecarTest('A pod in an excluded namespace is created without contacting the agent', async (t) => {
  const c = await setup(t, 'closed');
  if (!c) return;
  const { lab, n1, agent, logs } = c;
  await agent.stop();
  const dns = await lab.addPodCni(n1, 'coredns', { namespace: 'kube-system' });
  assert.match(dns.ip4, /^10\.244\.1\.1\d\d$/);
  assert.deepEqual(logs.filter((l) => l.command === 'ADD'), [], 'no warning: the agent was not asked');
  await assert.rejects(lab.addPodCni(n1, 'web', { namespace: 'demo' }), (e: unknown) => e instanceof CniChainError && e.cniCode === 11,
    'the same config refuses a pod of another namespace: the agent really is unreachable');
  assert.ok((await dns.check(['ip', '-o', 'addr', 'show', 'dev', 'eth0'])).includes(`${dns.ip4}/24`), 'the pod has its address');
  await lab.removePodCni(dns);
  assert.deepEqual(allocated(n1), []);
}, { timeout: 30_000 });

sidecarTest('The cluster DNS (--cluster-dns) becomes each pod\'s nameservers for DNS capture, and leaves with the pod', async (t) => {
  const c = await setup(t, 'closed', { profile: 'istio', args: ['--cluster-dns', '10.96.0.10', '--cluster-dns', 'fd00:96::a'] });
  if (!c) return;
  const { lab, n1, agent } = c;
  const status = () => agent.request<{ maps: Record<string, number> }>('GET', '/v1/status');
  const web = await lab.addPodCni(n1, 'web', { namespace: 'demo' });
  const [pod] = (await agent.request<{ pods: { podName: string; dnsServers?: string[] }[] }>('GET', '/v1/pods')).pods;
  assert.deepEqual(pod.dnsServers, ['10.96.0.10', 'fd00:96::a']);
  assert.equal((await status()).maps.dns_servers, 2, 'one dns_servers entry per nameserver (istio has a DNS proxy port)');
  await lab.removePodCni(web);
  assert.equal((await status()).maps.dns_servers, 0, 'gone with the pod');
}, { timeout: 30_000 });

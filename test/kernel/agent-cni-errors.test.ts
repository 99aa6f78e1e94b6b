// SPDX-License-Identifier: Apache-2.0
// How the agent (a real `meshwarp agent` process as the lab starts it) answers bad or odd
// input that reaches it through meshwarp-cni or its API, on a lab node whose pods are made
// by the real CNI chain (loopback, Debian's bridge + host-local, meshwarp-cni):
//   5. client errors (bad netns, bad ifname) are refusals (4xx, a CNI code that is not 11),
//      whatever the failure policy
//   6. node addresses added after the agent started are node addresses too
//   7. a 10 MB body, client aborts, a query string, a foreign exclusive cgroup program,
//      the node's own netns as a pod, and a prevResult with several interfaces
// Traffic stays inside the lab's network namespaces; waits are bounded polls.
// Run: make bpf && .tools/node/bin/node --disable-warning=ExperimentalWarning --test test/kernel/agent-cni-errors.test.ts
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { BpfObject } from '../../src/bpf/index.ts';
import { fn } from '../../src/bpf/libbpf.ts';
import { selftestObject } from '../../src/bpf/selftest.ts';
import { labPinRoot, labRunDir, type LabPod } from '../../src/lab/index.ts';
import { resolvePodPolicy } from '../../src/profiles/index.ts';
import { run, tryRun } from '../../src/sys/exec.ts';
import { ipBatch } from '../../src/sys/netns.ts';
import { APP_PORT, Sidecar, assertProxied, connectFrom, hostPort, serveIn, splitHostPort, type ServerReply } from '../conformance/harness.ts';
import {
  abortedRequest, agentHttp, agentPods, agentStatus, cniEnv, cniLab, eventually, logsAt, metricValue, metricsText, outcomeText, podMaps,
  type CniLab,
} from '../helpers/cni-runtime.ts';
import { sidecarTest } from '../helpers/kernel.ts';

const POLICY = resolvePodPolicy('osm', {});

async function workload(p: LabPod): Promise<Sidecar> {
  await serveIn(p, p.name, [APP_PORT]);
  return Sidecar.start(p, POLICY);
}

/** The body meshwarp-cni sends for ADD (docs/cni.md, "Agent HTTP contract"). */
function addBody(env: Record<string, string>, prevResult: unknown, extra: Record<string, unknown> = {}): string {
  const args = new Map(env.CNI_ARGS.split(';').map((kv) => kv.split('=') as [string, string]));
  return JSON.stringify({
    cniVersion: '1.0.0', networkName: 'k8s-pod-network', containerId: env.CNI_CONTAINERID, netns: env.CNI_NETNS, ifName: env.CNI_IFNAME,
    podNamespace: args.get('K8S_POD_NAMESPACE') ?? '', podName: args.get('K8S_POD_NAME') ?? '', podUid: args.get('K8S_POD_UID') ?? '',
    podInfraContainerId: env.CNI_CONTAINERID, prevResult, ...extra,
  });
}

/**
 * meshwarp-cni ADD that must be refused: exit 1 with a CNI code other than 11 whose message
 * matches `names`, with failurePolicy closed and open alike; and the agent's own answer to
 * the same request is a 4xx. Nothing gets meshed.
 */
async function assertRefused(c: CniLab, env: Record<string, string>, prevResult: unknown, names: RegExp[], what: string): Promise<void> {
  const before = podMaps(await agentStatus(c.agent));
  for (const failurePolicy of ['closed', 'open']) {
    const r = await c.rt.meshwarp('ADD', env, { prevResult, meshwarp: { failurePolicy } });
    assert.equal(r.code, 1, `${what} (failurePolicy ${failurePolicy}): ADD must fail: ${outcomeText(r)}`);
    assert.equal(typeof r.json?.code, 'number', `${what}: a CNI error on stdout: ${outcomeText(r)}`);
    assert.notEqual(r.json!.code, 11, `${what} (failurePolicy ${failurePolicy}): a client error is not "try again later" (11): ${outcomeText(r)}`);
    // The problem, in words (the netns path alone names the subject, not the problem).
    const msg = String(r.json!.msg);
    for (const re of names) assert.match(env.CNI_NETNS ? msg.replaceAll(env.CNI_NETNS, '<netns>') : msg, re, `${what}: the message names the problem: ${outcomeText(r)}`);
  }
  const h = await agentHttp(c.agent.socket, 'POST', '/v1/cni/add', addBody(env, prevResult));
  assert.ok(h.status >= 400 && h.status < 500, `${what}: the agent answers 4xx, got ${h.status} ${h.body.trim()}`);
  assert.deepEqual(podMaps(await agentStatus(c.agent)), before, `${what}: no map entry changed`);
}

// ---------------------------------------------------------------------------------------
// 5. Client errors are refusals, not "agent unavailable".

/** What a message about a netns path that is no network namespace says (in some words). */
const NOT_NETNS = /not a (network )?name ?space|not a netns|not an? nsfs|no network namespace|regular file|directory/i;

sidecarTest('ADD with a bad netns or interface is refused (4xx, CNI code not 11), with failurePolicy closed and open', async (t) => {
  const c = await cniLab(t, { tag: 'le' });
  if (!c) return;
  const { lab, n1 } = c;
  // A real sandbox (unmeshed: excluded namespace) whose result serves as prevResult.
  const base = await lab.addPodCni(n1, 'base', { namespace: 'kube-system' });
  const prev = base.cni!.result;
  const dir = `${labRunDir(lab.prefix)}/bogus`;
  mkdirSync(`${dir}/a-directory`, { recursive: true });
  writeFileSync(`${dir}/a-file`, 'not a namespace\n');
  const env = (over: Record<string, string>) => ({
    ...cniEnv({ containerId: `${lab.prefix}bad${Object.keys(over).join('')}${Math.random().toString(16).slice(2, 8)}`, netns: base.netnsPath, podNamespace: 'default', podName: 'bad' }),
    ...over,
  });

  await t.test('CNI_NETNS is a regular file', async () => {
    await assertRefused(c, env({ CNI_NETNS: `${dir}/a-file` }), prev, [/<netns>/, NOT_NETNS], 'netns is a regular file');
  });
  await t.test('CNI_NETNS is a directory', async () => {
    await assertRefused(c, env({ CNI_NETNS: `${dir}/a-directory` }), prev, [/<netns>/, NOT_NETNS], 'netns is a directory');
  });
  await t.test('CNI_IFNAME names no interface in the pod netns', async () => {
    await assertRefused(c, env({ CNI_IFNAME: 'eth7' }), prev, [/eth7/, /no (such )?(interface|device|link)|does not exist|not found|missing/i], 'ifName eth7 does not exist');
  });
  await t.test('CNI_IFNAME is missing (empty)', async () => {
    await assertRefused(c, env({ CNI_IFNAME: '' }), prev, [/CNI_IFNAME|ifName|interface name/i], 'ifName missing');
  });
  await t.test('CNI_IFNAME is ".."', async () => {
    await assertRefused(c, env({ CNI_IFNAME: '..' }), prev, [/CNI_IFNAME|ifName|interface name/i], 'ifName ..');
  });
  await t.test('the agent meshed nothing and counted no internal error', async () => {
    assert.deepEqual(await agentPods(c.agent), []);
    const text = await metricsText(n1);
    assert.equal(metricValue(text, 'meshwarp_errors_total'), 0, 'meshwarp_errors_total');
    // The process figures a node dashboard reads (the agent's own RSS, not the scraper's).
    const rss = metricValue(text, 'process_resident_memory_bytes') ?? 0;
    assert.ok(rss > 20 * 2 ** 20 && rss < 2 ** 31, `process_resident_memory_bytes ${rss}`);
    const heap = metricValue(text, 'nodejs_heap_size_used_bytes') ?? 0;
    assert.ok(heap > 0 && heap <= (metricValue(text, 'nodejs_heap_size_total_bytes') ?? 0), `nodejs_heap_size_used_bytes ${heap}`);
  });
}, { timeout: 120_000 });

// ---------------------------------------------------------------------------------------
// 6. Node addresses are not read only once.

sidecarTest('an address added to the node after the agent started is a node address: connections from it reach the app directly', async (t) => {
  const c = await cniLab(t, { tag: 'ln' });
  if (!c) return;
  const { lab, n1 } = c;
  const web = await lab.addPodCni(n1, 'web');
  const sc = await workload(web);
  const fromNode = async (src: string | undefined, dst: string): Promise<ServerReply & { raw: string }> => {
    const url = `http://${dst.includes(':') ? `[${dst}]` : dst}:${APP_PORT}/`;
    const r = await n1.run(['curl', '-sS', '-m', '5', ...(src ? ['--interface', src] : []), url]);
    assert.equal(r.code, 0, `curl ${src ?? ''} -> ${url} from the node: ${r.stderr}`);
    return { ...(JSON.parse(r.stdout) as ServerReply), raw: r.stdout };
  };
  const norm = (a: string) => a.replace(/^::ffff:/, '');

  await t.test('control: a connection from the node\'s own addresses (known at start) reaches the app directly', async () => {
    for (const [src, dst] of [[n1.addrs.gw4, web.ip4], [n1.addrs.gw6, web.ip6]]) {
      const r = await fromNode(src, dst);
      assert.equal(norm(r.remote), src, `the app saw the node address ${src} itself: ${r.raw}`);
    }
    // Control the other way: a client that is not the node is captured.
    const srv = lab.addPod(n1, 'other');
    const r = await connectFrom(srv, web.ip4, APP_PORT);
    assertProxied(r, 'web', 'a pod -> web is captured inbound');
  });

  const added = { 4: '10.244.1.60', 6: 'fd00:244:1::60' } as const;
  ipBatch(n1.netns, [`addr add ${added[4]}/24 dev ${n1.bridge}`, `addr add ${added[6]}/64 dev ${n1.bridge} nodad`]);

  for (const fam of [4, 6] as const) {
    await t.test(`a connection from the new node address ${added[fam]} reaches the app directly, not the sidecar (IPv${fam})`, async () => {
      const dst = fam === 4 ? web.ip4 : web.ip6;
      let last: (ServerReply & { raw: string }) | undefined;
      const since = sc.mark();
      const direct = await eventually(async () => {
        last = await fromNode(added[fam], dst);
        return norm(last.remote) === added[fam];
      }, 10_000, 200);
      assert.ok(direct, `connections from ${added[fam]} (added to ${n1.bridge} after the agent started) are still DNAT-ed into the sidecar ` +
        `after 10 s of polling: the app saw ${last && hostPort(norm(last.remote), last.remotePort)}; sidecar inbound lines: ` +
        `${JSON.stringify(sc.lines.slice(since).filter((l) => l.dir === 'inbound').slice(-2))}`);
    });
  }
}, { timeout: 120_000 });

// ---------------------------------------------------------------------------------------
// 7. Smaller ones.

sidecarTest('agent API: a 10 MB body gets 413; client aborts are no errors; a query string is fine', async (t) => {
  const c = await cniLab(t, { tag: 'lh' });
  if (!c) return;
  const { lab, n1, agent, agentLog } = c;
  await lab.addPodCni(n1, 'web'); // a node with a meshed pod, as in production

  await t.test('a 10 MB request body is answered 413 (not a reset), and the agent keeps serving', async () => {
    const h = await agentHttp(agent.socket, 'POST', '/v1/cni/add', Buffer.alloc(10 * 1024 * 1024, 0x61));
    assert.equal(h.status, 413, `status of a 10 MB body: got ${h.status || 'no answer'} (connection: ${h.ended}) ${h.body.slice(0, 200)}`);
    assert.equal((await agentStatus(agent)).pods, 1);
  });

  await t.test('client aborts are not counted in meshwarp_errors_total nor logged as errors', async () => {
    const errorsBefore = metricValue(await metricsText(n1), 'meshwarp_errors_total');
    const logMark = agentLog.length;
    const body = '{"containerId":"abc","netns":"/run/netns/x","ifName":"eth0","prevResult":{}}';
    for (const partial of [
      'POST /v1/cni/add HTTP/1.1\r\nHost: agent\r\nContent-Ty', // half the headers
      `POST /v1/cni/add HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 20)}`, // half the body
      `POST /v1/cni/gc HTTP/1.1\r\nHost: agent\r\nContent-Length: 1000\r\n\r\n{"validAttach`,
    ]) await abortedRequest(agent.socket, partial);
    // Later requests on new connections: the agent has seen the closes by the time these are answered.
    for (let i = 0; i < 3; i++) await agentStatus(agent);
    const text = await metricsText(n1);
    assert.equal(metricValue(text, 'meshwarp_errors_total'), errorsBefore, 'meshwarp_errors_total unchanged by client aborts');
    assert.deepEqual(logsAt(agentLog.slice(logMark), 'error'), [], 'no error-level log line for a client that went away');
  });

  await t.test('GET /v1/status?x=1 is 200 (a query string does not change the route)', async () => {
    const h = await agentHttp(agent.socket, 'GET', '/v1/status?x=1');
    assert.equal(h.status, 200, `${h.status} ${h.body.trim()}`);
    assert.equal(h.json?.pods, 1);
  });
}, { timeout: 120_000 });

sidecarTest('a foreign exclusive (override) connect4 program on the node cgroup: the agent exits saying what is there and what to do, pinning nothing', async (t) => {
  let foreignPin = '';
  let cg = '';
  const c = await cniLab(t, {
    tag: 'lx', start: false,
    beforeAgent: (lab, n1) => {
      // A tiny foreign program, attached the old way: exclusive-with-override, not multi.
      const obj = BpfObject.load(selftestObject, { config: { st_from_port: 1, st_to_port: 2 } });
      t.after(() => obj.close());
      mkdirSync(labPinRoot(lab.prefix), { recursive: true });
      foreignPin = `${labPinRoot(lab.prefix)}/foreign_connect4`;
      const r = fn.objPin(obj.program('st_connect4').fd, foreignPin);
      assert.equal(r, 0, `pin the foreign program: ${r}`);
      cg = n1.cgroupPath;
      run(['bpftool', 'cgroup', 'attach', cg, 'connect4', 'pinned', foreignPin, 'override']);
      t.after(() => {
        tryRun(['bpftool', 'cgroup', 'detach', cg, 'connect4', 'pinned', foreignPin]);
        if (existsSync(foreignPin)) unlinkSync(foreignPin);
      });
    },
  });
  if (!c) return;
  const { agent } = c;
  const shown = JSON.parse(run(['bpftool', '-j', 'cgroup', 'show', cg])) as { id: number; name: string; attach_flags?: string }[];
  const foreign = shown.find((p) => p.name === 'st_connect4');
  assert.ok(foreign, `the foreign program is attached: ${JSON.stringify(shown)}`);

  const err = await agent.start().then(() => undefined, (e: unknown) => e as Error);
  assert.ok(err, 'the agent must not start: its connect4 program cannot run beside an exclusive one');

  await t.test('the error says what is attached there and what to do (not a bare "Operation not permitted")', () => {
    const msg = err.message;
    assert.match(msg, /connect4/, `names the hook: ${msg}`);
    assert.ok(msg.includes('st_connect4') || msg.includes(String(foreign.id)), `names the program that is there (st_connect4, id ${foreign.id}): ${msg}`);
    assert.match(msg, /override|exclusive|multi/i, `says how it is attached: ${msg}`);
    assert.match(msg, /detach|remove/i, `says what to do: ${msg}`);
  });

  await t.test('nothing is left under the agent\'s pin root, and the foreign program is untouched', () => {
    const maps = `${agent.pinRoot}/maps`;
    assert.deepEqual(existsSync(maps) ? readdirSync(maps).sort() : [], [], `pinned maps left under ${maps}`);
    const links = `${agent.pinRoot}/links`;
    assert.deepEqual(existsSync(links) ? readdirSync(links, { recursive: true }) : [], [], `pinned links left under ${links}`);
    assert.deepEqual((JSON.parse(run(['bpftool', '-j', 'cgroup', 'show', cg])) as { name: string }[]).map((p) => p.name), ['st_connect4'],
      'only the foreign program on the cgroup');
  });
}, { timeout: 120_000 });

sidecarTest('ADD with the node\'s own netns as the pod netns is refused (4xx), nothing meshed', async (t) => {
  const c = await cniLab(t, { tag: 'lo' });
  if (!c) return;
  const { lab, n1, agent } = c;
  const env = cniEnv({ containerId: `${lab.prefix}nodens01`, netns: n1.netnsPath, podNamespace: 'default', podName: 'node-as-pod' });
  const prev = { cniVersion: '1.0.0', interfaces: [{ name: 'eth0', sandbox: n1.netnsPath }], ips: [{ address: '10.244.1.250/24', interface: 0 }] };
  await assertRefused(c, env, prev, [/\b(node|host|agent)\b|\bown\b/i], 'the node netns as pod netns');
  assert.deepEqual(await agentPods(agent), [], 'not meshed');
}, { timeout: 120_000 });

sidecarTest('prevResult with IPs on several interfaces: the agent takes the IPs of CNI_IFNAME\'s interface, not the first IPv4', async (t) => {
  const c = await cniLab(t, { tag: 'lm' });
  if (!c) return;
  const { lab, n1, agent, rt } = c;
  const srv = lab.addPod(n1, 'srv'); // unmeshed client on the same node
  // A sandbox made by the chain (excluded namespace: not meshed yet), plus a second interface net1.
  const pod = await lab.addPodCni(n1, 'multi', { namespace: 'kube-system' });
  ipBatch(pod.netns, [
    'link add net1 type veth peer name net1p', 'addr add 10.99.0.5/24 dev net1', 'addr add fd00:99::5/64 dev net1 nodad', 'link set net1 up',
  ]);
  const r0 = pod.cni!.result;
  const ifs = r0.interfaces!;
  const eth0 = ifs.findIndex((i) => i.name === 'eth0' && i.sandbox);
  assert.ok(eth0 >= 0, JSON.stringify(r0));
  // Interfaces: bridge, host veth, net1 (sandbox), eth0 (sandbox); net1's IPs first.
  const prev = {
    ...r0,
    interfaces: [...ifs.filter((_, i) => i !== eth0), { name: 'net1', sandbox: pod.netnsPath }, ifs[eth0]],
    ips: [
      { address: '10.99.0.5/24', interface: ifs.length - 1 }, { address: 'fd00:99::5/64', interface: ifs.length - 1 },
      ...r0.ips!.map((x) => ({ ...x, interface: ifs.length })),
    ],
  };
  const sc = await workload(pod);
  const env = cniEnv({ containerId: `${lab.prefix}multi0001`, netns: pod.netnsPath, podNamespace: 'default', podName: 'multi' });
  const r = await rt.meshwarp('ADD', env, { prevResult: prev });
  assert.equal(r.code, 0, outcomeText(r));
  const pods = await agentPods(agent);
  assert.deepEqual(pods.map((p) => [p.podName, p.ip4, p.ip6]), [['multi', pod.ip4, pod.ip6]], 'the pod\'s IPs are those of eth0 (CNI_IFNAME)');
  for (const dst of [pod.ip4, pod.ip6]) {
    const c2 = await connectFrom(srv, dst, APP_PORT);
    assertProxied(c2, 'multi', `srv -> multi ${dst}: inbound capture on eth0's address`);
    await sc.waitFor((l) => l.dir === 'inbound' && splitHostPort(l.client).port === c2.localPort, `multi inbound from ${c2.localPort}`);
  }
}, { timeout: 120_000 });

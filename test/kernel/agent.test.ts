// SPDX-License-Identifier: Apache-2.0
// The agent on a lab node: API validation, root-only socket, DEL cleanup, and
// restart safety (R1) under continuous traffic.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { Lab, LabAgent, uniquePrefix, waitForLine, type LabPod } from '../../src/lab/index.ts';
import { SIDECAR_CGROUP_PROGS } from '../../src/datapath/sidecar/object.ts';
import { sidecarTest } from '../helpers/kernel.ts';
import { ourTc } from '../helpers/cni-runtime.ts';
import { waitUntil } from '../helpers/poll.ts';
import { TIME_SCALE } from '../../src/lab/proc.ts';

const node = process.execPath;
const PROXY = fileURLToPath(new URL('../../src/proxy/main.ts', import.meta.url));

/** CNI-ADD-like request for a directly wired lab pod. */
const addRequest = (p: LabPod, extra: Record<string, unknown> = {}) => ({
  containerId: `c-${p.name}`, netns: p.netnsPath, ifName: 'eth0', podNamespace: 'default', podName: p.name,
  prevResult: { cniVersion: '1.0.0', ips: [{ address: `${p.ip4}/24` }, { address: `${p.ip6}/64` }] }, ...extra,
});

async function setup(t: { after(fn: () => unknown): void }) {
  const lab = await Lab.create({ prefix: uniquePrefix('ag') });
  t.after(() => lab.destroy());
  const n1 = lab.addNode('node1');
  const client = lab.addPod(n1, 'client');
  const server = lab.addPod(n1, 'server');
  server.spawn([node, '-e', `require('http').createServer((q,r)=>r.end('ok')).listen(8080,'::')`], { uid: 1000 });
  const proxy = client.spawn([node, '--disable-warning=ExperimentalWarning', PROXY, '--outbound', '15001', '--inbound', '15003', '--log'], { uid: 1500 });
  await waitForLine(proxy, /ready/);
  let proxied = 0;
  proxy.stderr!.on('data', (d: Buffer) => { proxied += d.toString().split('\n').filter((l) => l.includes('"outbound"')).length; });
  const agent = new LabAgent(n1);
  await agent.start();
  return { lab, n1, client, server, agent, proxied: () => proxied };
}

sidecarTest('agent API: bad requests are 400 and change nothing; DEL leaves no entry or tc link', async (t) => {
  const { client, agent } = await setup(t);
  const status = () => agent.request<any>('GET', '/v1/status');
  const before = await status();
  for (const bad of [
    { ...addRequest(client), containerId: 5 },
    { ...addRequest(client), netns: 'relative/path' },
    { ...addRequest(client), prevResult: undefined },
    { ...addRequest(client), annotations: { 'openservicemesh.io/outbound-port-exclusion-list': '80,notaport' } },
    { ...addRequest(client), netns: '/run/netns/does-not-exist' },
  ]) {
    await assert.rejects(agent.request('POST', '/v1/cni/add', bad), /agent: /);
  }
  assert.deepEqual((await status()).maps, before.maps, 'no map changed');

  await agent.request('POST', '/v1/cni/add', addRequest(client));
  const meshed = await status();
  assert.equal(meshed.pods, 1);
  assert.equal(meshed.maps.pod_config, 1);
  // tcx links (≥ 6.6) or, without tcx, legacy cls_bpf filters: the agent picks (--tc auto).
  const tcx = () => [...ourTc(client.node, client.hostVeth, 'ingress'), ...ourTc(client.node, client.hostVeth, 'egress')];
  assert.equal(tcx().length, 2, 'tc programs on the pod veth');

  assert.deepEqual(await agent.request('POST', '/v1/cni/del', { containerId: `c-${client.name}` }), { removed: true });
  assert.deepEqual(await agent.request('POST', '/v1/cni/del', { containerId: `c-${client.name}` }), { removed: false }, 'DEL is idempotent');
  const after = await status();
  assert.equal(after.pods, 0);
  for (const m of ['pod_config', 'local_pods', 'port_rules', 'cidr_rules', 'origin_by_tuple', 'inbound_nat']) assert.equal(after.maps[m], 0, m);
  assert.equal(tcx().length, 0, 'tc programs removed');
});

sidecarTest('the agent socket is for root only', async (t) => {
  const { n1, agent } = await setup(t);
  const r = await n1.run(['curl', '-sS', '--unix-socket', agent.socket, 'http://agent/v1/status'], { uid: 65534 });
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /Permission denied|Couldn't connect/i);
  const root = await n1.run(['curl', '-sS', '--unix-socket', agent.socket, 'http://agent/v1/status']);
  assert.equal(root.code, 0, root.stderr);
});

sidecarTest('agent SIGKILL and restart under continuous traffic: no failed request, capture never stops', async (t) => {
  const { client, server, agent, proxied } = await setup(t);
  await agent.request('POST', '/v1/cni/add', addRequest(client));
  // New connection per request (agent: false), for 3 s (× MESHWARP_TIME_SCALE), as an ordinary app uid.
  const loop = client.run([node, '-e', `
    const http = require('http'); let ok = 0, fail = 0; const end = Date.now() + ${3000 * TIME_SCALE};
    (function next() {
      if (Date.now() > end) { console.log(JSON.stringify({ ok, fail })); return; }
      http.get({ host: '${server.ip4}', port: 8080, agent: false, timeout: 2000 }, (r) => { r.resume(); r.on('end', () => { ok++; next(); }); })
        .on('error', () => { fail++; next(); });
    })();`], { uid: 1000 });
  await waitUntil('traffic to flow through the sidecar', () => proxied() > 0, 10_000);
  await agent.kill();
  const during = proxied();
  // Agent down: new connections must still be captured (polled, not a fixed wait: emulated kernels are slow).
  await waitUntil('a connection captured while the agent is down', () => proxied() > during, 10_000);
  const whileDown = proxied() - during;
  await agent.start(); // adopts pins, replaces programs in place
  const res = await loop;
  const { ok, fail } = JSON.parse(res.stdout);
  assert.equal(fail, 0, 'no failed request');
  assert.ok(ok > whileDown, `traffic flowed before, while and after the agent was down (${ok} requests)`);
  assert.ok(whileDown > 0, 'connections opened while the agent was down went through the sidecar');
  assert.equal(proxied(), ok, 'every request was captured by the sidecar');
  const s = await agent.request<any>('GET', '/v1/status');
  assert.equal(s.pods, 1, 'the restarted agent knows the pod from its state file');
  assert.equal(s.counters.reconciled, 1);
});

sidecarTest('meshwarp trace streams the datapath decisions of a request, only while someone listens', async (t) => {
  const { client, server, agent } = await setup(t);
  await agent.request('POST', '/v1/cni/add', addRequest(client));
  const { BpfMap } = await import('../../src/bpf/index.ts');
  const { traceConfig } = await import('../../src/datapath/sidecar/structs.ts');
  const { codec } = await import('../../src/bpf/index.ts');
  const cfg = BpfMap.openPinned(`${agent.pinRoot}/maps/trace_config`, codec.u32, traceConfig);
  t.after(() => cfg.closeFd());
  assert.equal(cfg.get(0).enabled, 0, 'off by default');

  const { spawn } = await import('node:child_process');
  const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
  const tr = spawn(node, ['--disable-warning=ExperimentalWarning', CLI, 'trace', '--json', '--pod', 'default/client', '--count', '3', '--socket', agent.socket]);
  let out = '';
  tr.stdout.on('data', (d) => (out += d));
  const done = new Promise((r) => tr.on('exit', r));
  await waitUntil('tracing on while a client listens', () => cfg.get(0).enabled === 1, 10_000);
  const r = await client.run(['curl', '-s', '-m', '3', `http://${server.ip4}:8080/`], { uid: 1000 });
  assert.equal(r.stdout, 'ok');
  await done;
  const events = out.trim().split('\n').map((l) => JSON.parse(l));
  const connect = events.find((e) => e.program === 'connect4' && e.uid === 1000);
  assert.deepEqual(
    { pod: connect?.pod, verdict: connect?.verdict, reason: connect?.reason, orig: connect?.orig, to: connect?.to },
    { pod: 'default/client', verdict: 'captured', reason: 'captured_out', orig: `${server.ip4}:8080`, to: '127.0.0.1:15001' });
  assert.ok(events.some((e) => e.program === 'getsockopt' && e.verdict === 'answered' && e.orig === `${server.ip4}:8080`), 'sidecar asked for the original destination');
  assert.ok(events.some((e) => e.program === 'connect4' && e.uid === 1500 && e.verdict === 'bypassed' && e.reason === 'bypass_proxy'), 'sidecar connect not re-captured');
  await waitUntil('tracing off again when the last client left', () => cfg.get(0).enabled === 0, 10_000);
});

sidecarTest('meshwarp uninstall removes everything the agent made and nothing else', async (t) => {
  const { n1, client, agent } = await setup(t);
  await agent.request('POST', '/v1/cni/add', addRequest(client));
  // A foreign program on the same cgroup hook, and a foreign pin beside ours.
  const { BpfObject, Link } = await import('../../src/bpf/index.ts');
  const { selftestObject } = await import('../../src/bpf/selftest.ts');
  const foreign = BpfObject.load(selftestObject, { config: { st_from_port: 1, st_to_port: 2 } });
  const flink = Link.attachCgroup(foreign.program('st_connect4'), n1.cgroupPath);
  t.after(() => { flink.destroy(); foreign.close(); });
  const { existsSync } = await import('node:fs');
  const { run } = await import('../../src/sys/exec.ts');
  const cgroupProgs = () => (JSON.parse(run(['bpftool', '-j', 'cgroup', 'show', n1.cgroupPath])) as { name: string }[]).map((p) => p.name).sort();
  assert.deepEqual(cgroupProgs(), [...SIDECAR_CGROUP_PROGS, 'st_connect4'].sort());

  const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
  const r = await n1.run([node, '--disable-warning=ExperimentalWarning', CLI, 'uninstall', ...agent.flags()]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /uninstalled through the running agent/);
  const p = agent.process;
  if (p && p.exitCode === null && p.signalCode === null) await new Promise((res) => p.once('exit', res)); // the agent exits after uninstall
  assert.deepEqual(cgroupProgs(), ['st_connect4'], 'only the foreign program is left');
  assert.equal(existsSync(agent.pinRoot), false, 'pins gone');
  const tc = [...ourTc(client.node, client.hostVeth, 'ingress'), ...ourTc(client.node, client.hostVeth, 'egress')];
  assert.equal(tc.length, 0, 'tc programs gone (tcx links or legacy filters)');
});

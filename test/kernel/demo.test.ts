// SPDX-License-Identifier: Apache-2.0
// `meshwarp demo` as a user runs it, in both modes, and what its trace shows.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { kernelTest, ambientTest, sidecarTest } from '../helpers/kernel.ts';
import type { DemoResult } from '../../src/demo/demo.ts';
import type { AmbientDemoResult } from '../../src/demo/ambient.ts';

const MW = fileURLToPath(new URL('../../bin/meshwarp', import.meta.url));

function demo(args: string[]): Promise<{ code: number | null; result: DemoResult; stderr: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(MW, ['demo', '--json', ...args]);
    let out = '';
    let err = '';
    c.stdout.on('data', (d) => (out += d));
    c.stderr.on('data', (d) => (err += d));
    c.on('exit', (code) => {
      try { resolve({ code, result: JSON.parse(out), stderr: err }); } catch { reject(new Error(`demo printed no JSON (exit ${code}): ${err.slice(-2000)}`)); }
    });
  });
}

for (const mode of ['ebpf', 'iptables'] as const) {
  (mode === 'ebpf' ? sidecarTest : kernelTest)(`meshwarp demo --engine ${mode}: every request answered by v1 or v2, captured by the sidecar`, async () => {
    const { code, result, stderr } = await demo(['--engine', mode, '--requests', '4']);
    assert.equal(code, 0, stderr);
    assert.equal(result.ok, true);
    assert.equal(result.requests.length, 4);
    const answers = new Set(result.requests.map((r) => r.answer));
    assert.deepEqual([...answers].sort(), ['Hi, I am pipy ok v1 !', 'Hi, I am pipy ok v2 !'], 'both versions answered (round robin)');
    assert.equal(result.captured, 4, 'every request went through the client sidecar');
    // The name went through DNS, captured to the client sidecar's DNS proxy: it answered every
    // request's A query itself and the cluster DNS (which knows the name too) saw none.
    assert.equal(result.profile, 'istio');
    assert.deepEqual(result.requests.map((r) => r.resolvedBySidecar), [true, true, true, true]);
    assert.equal(result.clusterDnsQueries, 0, 'no query for pipy-ok reached the cluster DNS');
    assert.ok(result.dns.some((d) => d.pod === 'curl' && d.name === 'pipy-ok.ebpf.svc.cluster.local' && d.type === 1 && d.answer === 'local'), JSON.stringify(result.dns));
    const inbound = result.sidecars.filter((s) => s.dir === 'inbound');
    assert.equal(inbound.length, 1, 'the first request also went through the server pod\'s sidecar');
    assert.match(inbound[0].origDst, /:8080$/);
  }, { timeout: 120_000 });
}

sidecarTest('the demo trace shows what the datapath did for one request', async () => {
  const { code, result } = await demo(['--mode', 'ebpf', '--requests', '1']);
  assert.equal(code, 0);
  const t = result.trace;
  const has = (f: (e: DemoResult['trace'][number]) => boolean, what: string) => assert.ok(t.some(f), `${what}\n${JSON.stringify(t, null, 1)}`);
  // DNS first: glibc's connected UDP socket to the cluster DNS goes to the sidecar's DNS proxy,
  // and the answers show the cluster DNS as their source.
  has((e) => e.node === 'node1' && e.pod === 'ebpf/curl' && e.program === 'connect4' && e.verdict === 'captured' && e.reason === 'dns_captured'
    && e.orig === '10.96.0.53:53' && e.to === '127.0.0.1:15053' && e.uid === 1000, 'curl\'s DNS query captured to its sidecar\'s DNS proxy');
  has((e) => e.node === 'node1' && e.pod === 'ebpf/curl' && e.program === 'recvmsg4' && e.verdict === 'restored'
    && e.orig === '127.0.0.1:15053' && e.to === '10.96.0.53:53', 'the answer\'s source restored to the cluster DNS');
  has((e) => e.node === 'node1' && e.pod === 'ebpf/curl' && e.program === 'connect4' && e.verdict === 'captured'
    && e.orig === '10.96.0.10:8080' && e.to === '127.0.0.1:15001' && e.uid === 1000, 'curl connect captured to its sidecar');
  has((e) => e.node === 'node1' && e.pod === 'ebpf/curl' && e.program === 'getsockopt' && e.verdict === 'answered' && e.orig === '10.96.0.10:8080',
    'the sidecar read the original destination');
  const v2 = result.pods.find((p) => p.name === 'pipy-ok-v2')!;
  assert.equal(result.requests[0].answer, 'Hi, I am pipy ok v2 !', 'request 1 goes to v2 on node2');
  assert.ok(!t.some((e) => e.pod === 'ebpf/pipy-ok-v1'), 'v1 took no part in request 1');
  has((e) => e.node === 'node1' && e.pod === 'ebpf/curl' && e.program === 'connect4' && e.uid === 1337 && e.verdict === 'bypassed'
    && e.reason === 'bypass_proxy' && e.orig === `${v2.ip4}:8080`, 'the sidecar\'s own connect to v2 is not re-captured');
  has((e) => e.node === 'node2' && e.program === 'tc_to_pod' && e.pod === 'ebpf/pipy-ok-v2' && e.verdict === 'captured'
    && e.orig === `${v2.ip4}:8080` && e.to === `${v2.ip4}:15006`, 'node2 tc DNATs the SYN to v2\'s inbound port');
  has((e) => e.node === 'node2' && e.program === 'getsockopt' && e.pod === 'ebpf/pipy-ok-v2' && e.orig === `${v2.ip4}:8080`,
    'the server sidecar read the original port 8080');
}, { timeout: 120_000 });

sidecarTest('meshwarp demo --profile osm (no DNS proxy in the mesh): the cluster DNS answers the name, nothing captured', async () => {
  const { code, result, stderr } = await demo(['--profile', 'osm', '--requests', '1']);
  assert.equal(code, 0, stderr);
  assert.equal(result.ok, true);
  assert.equal(result.resolvedBySidecar, 0);
  assert.ok(result.clusterDnsQueries >= 1, 'the query reached dnsmasq');
  assert.ok(!result.trace.some((e) => e.reason.startsWith('dns_')), JSON.stringify(result.trace, null, 1));
}, { timeout: 120_000 });

ambientTest('meshwarp demo --dataplane ambient: same node and cross node through the node proxies, trace, veth programs, ambient config', async () => {
  const { code, result, stderr } = await demo(['--dataplane', 'ambient', '--requests', '4']);
  const r = result as unknown as AmbientDemoResult;
  assert.equal(code, 0, stderr);
  assert.equal(r.ok, true);
  const proxy = (node: string) => r.proxies.find((p) => p.node === node)!;
  for (const q of r.requests) {
    assert.ok(q.ok, `request ${q.n}: ${q.answer}`);
    // Cross node the server sees node2's proxy (inbound capture there), same node node1's.
    const want = q.to.endsWith('(node2)') ? proxy('node2') : proxy('node1');
    assert.ok([want.ip4, want.ip6].includes(q.sawClient!), `request ${q.n} to ${q.to}: the server saw ${q.sawClient}, not ${JSON.stringify(want)}`);
  }
  assert.deepEqual(new Set(r.requests.map((q) => q.to)), new Set(['pipy-ok-v1 (node1)', 'pipy-ok-v2 (node2)']));
  const has = (f: (e: AmbientDemoResult['trace'][number]) => boolean, what: string) => assert.ok(r.trace.some(f), `${what}\n${JSON.stringify(r.trace, null, 1)}`);
  has((e) => e.node === 'node1' && e.program === 'am_from_pod' && e.pod === 'ambient/curl' && e.verdict === 'captured', 'curl\'s SYN taken at its veth');
  has((e) => e.node === 'node2' && e.program === 'am_to_pod' && e.pod === 'ambient/pipy-ok-v2' && e.verdict === 'captured', 'inbound capture on node2');
  // The cross-node request crossed as HBONE: to v2's address on 15008, both identities proven.
  has((e) => e.node === 'node2' && e.program === 'am_proxy_in' && e.pod === 'ambient/pipy-ok-v2' && /:15008$/.test(e.orig), 'node2 delivered the HBONE connection to its proxy');
  const v2 = r.pods.find((p) => p.name === 'pipy-ok-v2')!;
  const { client, server } = r.hbone ?? {};
  assert.deepEqual([client?.srcId, client?.dstId, client?.status, client?.peer], ['spiffe://cluster.local/ns/ambient/sa/curl', 'spiffe://cluster.local/ns/ambient/sa/pipy-ok-v2', 200, `${v2.ip4}:15008`], JSON.stringify(r.hbone));
  assert.deepEqual([server?.srcId, server?.dstId, server?.status, server?.authority], [client?.srcId, client?.dstId, 200, `${v2.ip4}:8080`], JSON.stringify(r.hbone));
  assert.ok(server?.peer.startsWith(`${proxy('node1').ip4}:`), `node2's proxy accepted it from node1's: ${server?.peer}`);
  // The name went through DNS: curl's query captured at its veth to node1's node proxy, its answer's source restored.
  has((e) => e.node === 'node1' && e.program === 'am_from_pod' && e.pod === 'ambient/curl' && e.reason === 'dns_captured' && e.orig === '10.96.0.53:53', 'curl\'s DNS query taken at its veth');
  has((e) => e.node === 'node1' && e.program === 'am_to_pod' && e.verdict === 'restored' && e.to === '10.96.0.53:53', 'the answer\'s source restored to the cluster DNS');
  assert.ok(r.resolvedByProxy >= 4, `the node proxy answered the names: ${r.resolvedByProxy}`);
  assert.equal(r.clusterDnsQueries, 0, 'no query for the apps reached the cluster DNS');
  for (const p of ['curl', 'pipy-ok-v1', 'pipy-ok-v2']) {
    for (const [hook, prog] of [['ingress', 'mwam_from_pod'], ['egress', 'mwam_to_pod']]) {
      const a = r.attached.find((x) => x.pod === p && x.hook === hook);
      assert.ok(a?.programs.some((s) => s.includes(prog)), `${p} ${hook}: ${JSON.stringify(a)}`);
    }
  }
  assert.deepEqual(r.ambientConfig.map((c) => JSON.stringify({ ztunnelReady: c.ztunnelReady, redirectMode: c.redirectMode })),
    ['{"ztunnelReady":true,"redirectMode":"ebpf"}', '{"ztunnelReady":true,"redirectMode":"ebpf"}']);
}, { timeout: 120_000 });

kernelTest('meshwarp demo --dataplane ambient --engine iptables: in-pod rules and the node proxy\'s listeners in each pod netns', async () => {
  const { code, result, stderr } = await demo(['--dataplane', 'ambient', '--engine', 'iptables', '--requests', '4']);
  const r = result as unknown as AmbientDemoResult;
  assert.equal(code, 0, stderr);
  assert.equal(r.ok, true);
  assert.equal(r.engine, 'iptables');
  for (const q of r.requests) {
    assert.ok(q.ok, `request ${q.n}: ${q.answer}`);
    // In-pod: the server's own inbound listener (in its netns) connected to it from its own address.
    const pod = r.pods.find((p) => q.to.startsWith(`${p.name} `))!;
    assert.ok([pod.ip4, pod.ip6].includes(q.sawClient!), `request ${q.n} to ${q.to}: the server saw ${q.sawClient}, not its own address`);
  }
  assert.deepEqual(new Set(r.requests.map((q) => q.to)), new Set(['pipy-ok-v1 (node1)', 'pipy-ok-v2 (node2)']));
  const view = (p: string) => r.inPod!.find((v) => v.pod === p)!;
  assert.ok(view('curl').rules.some((l) => /^v4 \[[1-9]\d*:\d+\] .*am_captured_out/.test(l)), `curl's SYN captured by its in-pod rule: ${view('curl').rules.join('\n')}`);
  assert.ok(view('pipy-ok-v2').rules.some((l) => /^v4 \[[1-9]\d*:\d+\] .*am_captured_in/.test(l)), 'inbound capture in v2\'s netns');
  assert.ok(view('curl').rules.some((l) => /^v4 \[[1-9]\d*:\d+\] .*dns_captured/.test(l)), `curl's DNS query redirected to the node proxy's DNS listener: ${view('curl').rules.join('\n')}`);
  assert.ok(r.resolvedByProxy >= 4, `the node proxy answered the names: ${r.resolvedByProxy}`);
  assert.equal(r.clusterDnsQueries, 0, 'no query for the apps reached the cluster DNS');
  for (const p of ['curl', 'pipy-ok-v1', 'pipy-ok-v2']) {
    assert.deepEqual([...view(p).listeners].sort(), ['0.0.0.0:15001', '0.0.0.0:15006', '[::]:15001', '[::]:15006'], `${p}: the node proxy listens in its netns`);
  }
  assert.deepEqual(r.ambientConfig.map((c) => JSON.stringify({ ztunnelReady: c.ztunnelReady, redirectMode: c.redirectMode })),
    ['{"ztunnelReady":true,"redirectMode":"iptables"}', '{"ztunnelReady":true,"redirectMode":"iptables"}']);
}, { timeout: 120_000 });

// SPDX-License-Identifier: Apache-2.0
// S6 DNS capture in the ambient dataplane (MESHWARP_DATAPLANE=ambient): an enrolled pod's
// queries to its nameservers reach the node proxy's DNS proxy (port 15053, announced in the
// node proxy contract), which answers mesh names itself and forwards the rest to the real
// server; the pod sees every answer come from the server it asked.
//   eBPF: UDP is bpf_sk_assign-ed to the proxy's socket in the proxy netns, the reply's source
//   put back at the pod's veth; TCP 53 goes to the proxy's TCP DNS listener.
//   in-pod (iptables): the proxy's DNS listener in the pod netns, REDIRECT rules (Istio's way).
//   node1: a (enrolled by the test; nameservers w4, w6)  ztunnel (node proxy + DNS proxy)
//   node2: w (not enrolled: dnsmasq, the cluster DNS, on its IPv4 and IPv6)
// svc.mesh is 192.0.2.1 at the real server and 192.0.2.2 at the node proxy: the answer says who answered.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { labRunDir } from '../../src/lab/index.ts';
import { APP_UID, MODE, MeshLab, presetPods, startDnsmasq, stat, suiteSkip, SUITE } from './harness.ts';
import { waitUntil } from '../helpers/poll.ts';
import type { TraceRecord } from '../../src/datapath/trace.ts';

const REAL = '192.0.2.1';
const MESH = '192.0.2.2';
const EXT = '192.0.2.10';
const BIG = 'big.mesh';
const BIG_ADDR = '192.0.2.3';
const DNS_PORT = 15053;
const INPOD = MODE === 'iptables';
const TOOL = fileURLToPath(new URL('./dnstool.ts', import.meta.url));
const NODE = [process.execPath, '--disable-warning=ExperimentalWarning'];
const ENV = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };

describe(`ambient DNS capture through the node proxy (${SUITE})`, { skip: suiteSkip('ambient') }, () => {
  let env: MeshLab;
  let ns: { w4: string; w6: string };
  let resolvConf: string;
  const serverLog: string[] = [];

  const run = async (argv: string[], uid = APP_UID): Promise<string> => {
    const r = await env.pod('a').sb.run(argv, { uid, env: ENV, resolvConf, timeoutMs: 120_000 });
    if (r.code !== 0 && !argv.includes('+short')) throw new Error(`${argv.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  };
  // dig drops replies from another address than the server it asked: an answer means the source was restored.
  const dig = (server: string, name: string, opts: { tcp?: boolean } = {}) =>
    run(['dig', '+short', '+time=2', '+tries=1', ...(opts.tcp ? ['+tcp'] : []), `@${server}`, name]);
  const tool = async (args: string[]) => JSON.parse(await run([...NODE, TOOL, ...args]));
  const proxy = () => env.proxy('node1');
  const d = () => env.driver('node1');
  const announce = (ports?: { outbound: number; inbound: number; hbone?: number }, ready = true) =>
    env.ambientDriver('node1').setNodeProxy(ports ? { ...proxy().announcement(ready), ports } : proxy().announcement(ready));

  before(async () => {
    env = await MeshLab.create(presetPods(['a', 'w'], { unmeshed: ['a'] }), {
      tag: 'adn',
      nodeProxyDns: (e) => ({ names: [`svc.mesh=${MESH}`, `${BIG}=${BIG_ADDR}`], truncate: [BIG], upstream: [e.pod('w').sb.ip4] }),
    });
    const [a, w] = ['a', 'w'].map((n) => env.pod(n));
    ns = { w4: w.sb.ip4, w6: w.sb.ip6 };
    await startDnsmasq(w.sb, [ns.w4, ns.w6], [`svc.mesh,${REAL}`, `ext.test,${EXT},2001:db8::10`, `${BIG},${REAL}`], serverLog);
    const dir = `${labRunDir(env.prefix)}/dns`;
    mkdirSync(dir, { recursive: true });
    resolvConf = `${dir}/a-resolv.conf`;
    writeFileSync(resolvConf, `nameserver ${ns.w4}\nnameserver ${ns.w6}\noptions timeout:2 attempts:2\n`);
    a.dnsServers = [ns.w4, ns.w6];
    await a.mesh('istio');
  });

  after(async () => {
    await env?.destroy();
  });

  it('dig over UDP and TCP (+tcp), IPv4 and IPv6 nameserver: the node proxy answers, from the server that was asked', async () => {
    const c0 = stat(d(), 'dns_captured')!;
    const m = proxy().dnsLog.length;
    assert.equal(await dig(ns.w4, 'svc.mesh'), MESH);
    assert.equal(await dig(ns.w6, 'svc.mesh'), MESH);
    assert.equal(await dig(ns.w4, 'svc.mesh', { tcp: true }), MESH);
    assert.equal(await dig(ns.w6, 'svc.mesh', { tcp: true }), MESH);
    const lines = proxy().dnsLog.slice(m).filter((l) => l.name === 'svc.mesh');
    assert.deepEqual(lines.map((l) => l.proto).sort(), ['tcp', 'tcp', 'udp', 'udp'], JSON.stringify(lines));
    assert.ok(stat(d(), 'dns_captured')! >= c0 + 2n, 'dns_captured counted the UDP queries');
    if (!INPOD) assert.ok(stat(d(), 'dns_restored')! >= 2n, 'dns_restored counted the UDP replies');
  });

  it('glibc getaddrinfo (connected UDP, A and AAAA in parallel) and a truncated answer\'s TCP retry', async () => {
    assert.match(await run(['getent', 'ahosts', 'svc.mesh']), new RegExp(`^${MESH.replaceAll('.', '\\.')}\\s`, 'm'));
    const m = proxy().dnsLog.length;
    assert.match(await run(['getent', 'ahostsv4', BIG]), new RegExp(`^${BIG_ADDR.replaceAll('.', '\\.')}\\s`, 'm'));
    await waitUntil('the TCP retry reached the node proxy', () => proxy().dnsLog.slice(m).some((l) => l.name === BIG && l.proto === 'tcp' && l.answer === 'local'));
  });

  it('the reply\'s source is the server: a connected socket gets it, an unconnected one sees it as the sender', async () => {
    const c = await tool(['connected', '--server', ns.w4, '--name', 'svc.mesh']);
    assert.deepEqual([c.reply?.a, c.reply?.from], [MESH, ns.w4], JSON.stringify(c));
    const r = await tool(['multi', '--servers', ns.w4, '--name', 'svc.mesh']);
    assert.deepEqual(r.replies, [{ from: ns.w4, port: 53, a: MESH }]);
  });

  it('10,000 queries, a socket each: all answered by the node proxy, no per-query entry left', async (t) => {
    const before = d().features.mapCounts?.();
    const captured = stat(d(), 'dns_captured')!;
    const m = proxy().dnsLog.length;
    const r = await tool(['many', '--server', ns.w4, '--name', 'svc.mesh', '--count', '10000']);
    assert.equal(r.ok, 10000, JSON.stringify(r));
    const logged = () => proxy().dnsLog.slice(m).filter((l) => l.name === 'svc.mesh' && l.answer === 'local').length;
    await waitUntil('the node proxy logged every query', () => logged() >= 10000, 10_000).catch((e: Error) => {
      throw new Error(`${e.message}: ${logged()} logged; dns_captured +${stat(d(), 'dns_captured')! - captured}, dns_no_listener ${stat(d(), 'dns_no_listener')}`);
    });
    assert.equal(logged(), 10000);
    // In-pod the nat rule counts new conntrack flows only (a reused client port is not one).
    if (!INPOD) assert.ok(stat(d(), 'dns_captured')! - captured >= 10000n, 'every query counted as captured');
    else assert.ok(stat(d(), 'dns_captured')! > captured, 'dns_captured counted');
    if (before) {
      // Entries live from a query to its reply: none left, and nothing else grew.
      assert.deepEqual(d().features.mapCounts?.(), before);
    } else t.diagnostic(`${MODE}: no maps to count; the pod netns's conntrack expires its own entries`);
  });

  it('a name the mesh does not know: forwarded by the node proxy to the real server, and that query is not captured again', async () => {
    const m = proxy().dnsLog.length;
    const s = serverLog.length;
    const ext = await run(['getent', 'ahosts', 'ext.test']);
    assert.ok(ext.includes(EXT) && ext.includes('2001:db8::10'), ext);
    await waitUntil('forwarded', () => proxy().dnsLog.slice(m).some((l) => l.name === 'ext.test' && l.answer === 'upstream' && l.upstream === ns.w4));
    // eBPF: the proxy asks from its own address (its interface is no enrolled pod's); in-pod: from the pod's, as the proxy's cgroup.
    const from = INPOD ? env.pod('a').sb.ip4 : proxy().ip4;
    await waitUntil(`dnsmasq saw ext.test from ${from}`, () => serverLog.slice(s).some((l) => l.includes(`query[A] ext.test from ${from}`)));
    assert.ok(!serverLog.slice(s).some((l) => /ext\.test from /.test(l) && !l.includes(`from ${from}`)), serverLog.slice(s).join('\n'));
    // No loop through the proxy: each query it got was answered by the server (a looping one would
    // come back to the proxy, again and again, and end unanswered). glibc may resend (in-pod: parallel
    // A/AAAA on one socket meet conntrack), so a few, not exactly two.
    const lines = proxy().dnsLog.slice(m).filter((l) => l.name === 'ext.test');
    assert.ok(lines.length <= 8 && lines.every((l) => l.answer === 'upstream' && l.upstream === ns.w4), JSON.stringify(lines));
    if (INPOD) assert.ok(stat(d(), 'dns_bypass_proxy')! > 0n, 'dns_bypass_proxy counted the proxy\'s upstream query');
  });

  it('no ready node proxy with a DNS port: queries reach the real server (fail open, counted), whatever the TCP policy', async () => {
    const n0 = stat(d(), 'dns_no_listener')!;
    const { hbone, outbound, inbound } = proxy().announcement().ports;
    try {
      // Ready, but no DNS listener announced: UDP to the server; TCP 53 is ordinary TCP (relayed by the proxy).
      await announce({ outbound, inbound, ...(hbone ? { hbone } : {}) });
      assert.equal(await dig(ns.w4, 'svc.mesh'), REAL, 'UDP, no DNS port announced');
      assert.equal(await dig(ns.w6, 'svc.mesh'), REAL, 'UDP over IPv6, no DNS port announced');
      assert.equal(await dig(ns.w4, 'svc.mesh', { tcp: true }), REAL, 'TCP, no DNS port announced');
      // Not ready (failure policy closed: the pod's TCP is dropped), DNS still answered by the real server.
      await announce(undefined, false);
      assert.equal(await dig(ns.w4, 'svc.mesh'), REAL, 'UDP, no ready proxy');
      assert.equal(await dig(ns.w4, 'svc.mesh', { tcp: true }), REAL, 'TCP, no ready proxy');
      assert.match(await run(['getent', 'ahosts', 'svc.mesh']), new RegExp(REAL.replaceAll('.', '\\.')));
      assert.ok(stat(d(), 'dns_no_listener')! > n0, 'dns_no_listener counted');
    } finally {
      await announce();
    }
    assert.equal(await dig(ns.w4, 'svc.mesh'), MESH, 'captured again');
    assert.equal(await dig(ns.w4, 'svc.mesh', { tcp: true }), MESH, 'captured again (TCP)');
  });

  it('eBPF: the announced DNS socket is gone: queries reach the real server (the socket is checked, not the announcement)', async (t) => {
    if (INPOD) { t.skip('in-pod: REDIRECT cannot see whether the listener is open (limitation dns-fail-open, as the sidecar\'s)'); return; }
    const n0 = stat(d(), 'dns_no_listener')!;
    await proxy().setDnsRunning(false);
    try {
      assert.equal(await dig(ns.w4, 'svc.mesh'), REAL, 'UDP');
      assert.equal(await dig(ns.w6, 'svc.mesh'), REAL, 'UDP over IPv6');
      assert.equal(await dig(ns.w4, 'svc.mesh', { tcp: true }), REAL, 'TCP: the outbound listener relays it');
      assert.ok(stat(d(), 'dns_no_listener')! >= n0 + 2n, 'dns_no_listener counted');
    } finally {
      await proxy().setDnsRunning(true);
    }
    assert.equal(await dig(ns.w4, 'svc.mesh'), MESH);
  });

  it('trace: a DNS event for each verdict (captured, assigned, restored, no listener)', async (t) => {
    const src = d().features.trace;
    if (!src) { t.skip(`${MODE}: no trace events (the rules' counters are the stats)`); return; }
    const events: TraceRecord[] = [];
    src.setEnabled(true);
    const reader = src.read((r) => events.push(r));
    try {
      await dig(ns.w4, 'svc.mesh');
      await dig(ns.w6, 'svc.mesh');
      await proxy().setDnsRunning(false);
      try { await dig(ns.w4, 'svc.mesh'); } finally { await proxy().setDnsRunning(true); }
      const has = (what: string, f: (e: TraceRecord) => boolean) => waitUntil(`${what}\n${JSON.stringify(events, null, 1)}`, () => events.some(f));
      await has('am_from_pod captured', (e) => e.program === 'am_from_pod' && e.verdict === 'captured' && e.reason === 'dns_captured'
        && e.orig === `${ns.w4}:53` && e.to === `${ns.w4}:${DNS_PORT}`);
      await has('am_proxy_in assigned', (e) => e.program === 'am_proxy_in' && e.reason === 'am_assigned' && e.to === `${ns.w4}:${DNS_PORT}`);
      await has('am_to_pod restored (v4)', (e) => e.program === 'am_to_pod' && e.verdict === 'restored' && e.reason === 'dns_restored'
        && e.orig === `${proxy().ip4}:${DNS_PORT}` && e.to === `${ns.w4}:53`);
      await has('am_to_pod restored (v6)', (e) => e.program === 'am_to_pod' && e.verdict === 'restored' && e.to === `[${ns.w6}]:53`);
      await has('no listener', (e) => e.program === 'am_from_pod' && e.verdict === 'bypassed' && e.reason === 'dns_no_listener' && e.orig === `${ns.w4}:53`);
    } finally {
      reader.close();
      src.setEnabled(false);
    }
  });
});

// SPDX-License-Identifier: Apache-2.0
// The ambient tc programs (bpf/ambient/) on crafted frames through BPF_PROG_TEST_RUN:
// every branch as (frame, maps, skb context) -> (return code, frame, counters), and the
// time per packet of each branch (repeat runs, printed as a diagnostic). Nothing is
// attached and nothing is sent. Socket lookups "in the node proxy's netns" use the test's
// own netns (netns id -1 = the caller's), where the test opens real sockets on loopback.
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import net from 'node:net';
import { testRun } from '../../src/bpf/index.ts';
import { TCP_FLAG, buildFrame } from '../../src/bpf/testing/packets.ts';
import { AMBIENT_PROG, openAmbientMaps, type AmbientMaps } from '../../src/datapath/ambient/object.ts';
import { AM_FAIL, AM_PROXY_F, EMPTY_PROXY, loadAmbientObject } from '../../src/datapath/ambient/structs.ts';
import { toIpAddr } from '../../src/datapath/sidecar/entries.ts';
import { STATS, type StatName } from '../../src/datapath/sidecar/structs.ts';
import { ambientTest } from '../helpers/kernel.ts';
import { waitUntil } from '../helpers/poll.ts';
import { run } from '../../src/sys/exec.ts';

const NEXT = -1;
const SHOT = 2;
const REDIRECT = 7;
const OK = 0;
/** A test run's skb is on lo (ifindex 1) of the caller's netns: the "pod veth". */
const VETH = 1;
const PROXY_HOST_IFINDEX = 4242;
const PROXY_MAC = [0x02, 0x6d, 0x77, 0x61, 0x6d, 0x01];
const POD = { v4: '10.244.1.5', v6: 'fd00:244:1::5' };
const PEER = { v4: '10.244.2.9', v6: 'fd00:244:2::9' };
const MARK_OUT = 0x10;
const MARK_LOCAL = 0x20;
const COOKIE = 77n;
const SYN = TCP_FLAG.SYN;
const DATA = TCP_FLAG.ACK | TCP_FLAG.PSH;

/** struct __sk_buff with the fields a test run accepts: mark, ingress_ifindex, ifindex. */
function ctx(o: { mark?: number; ingressIfindex?: number; ifindex?: number } = {}): Buffer {
  const b = Buffer.alloc(192);
  b.writeUInt32LE(o.mark ?? 0, 8);
  b.writeUInt32LE(o.ingressIfindex ?? 0, 36);
  b.writeUInt32LE(o.ifindex ?? VETH, 40);
  return b;
}

type Fam = 'v4' | 'v6';
const out = (fam: Fam, flags: number, o: Partial<Parameters<typeof buildFrame>[0]> = {}) =>
  buildFrame({ src: POD[fam], dst: PEER[fam], sport: 40000, dport: 8080, flags, ...o });
const inb = (fam: Fam, flags: number, o: Partial<Parameters<typeof buildFrame>[0]> = {}) =>
  buildFrame({ src: PEER[fam], dst: POD[fam], sport: 40000, dport: 8080, flags, ...o });
/** The same frame with another L4 protocol number (the programs never read past it). */
function withProto(f: Buffer, proto: number): Buffer {
  const g = Buffer.from(f);
  if (g.readUInt16BE(12) === 0x0800) g[23] = proto; else g[20] = proto;
  return g;
}
/** The frame addressed to lo's (all-zero) MAC: the test run's skb is then PACKET_HOST. */
function toUs(f: Buffer): Buffer { const g = Buffer.from(f); g.fill(0, 0, 6); return g; }

/** DNS (bpf/ambient/dns.h): the pod's nameservers are PEER's addresses; the proxy's DNS port, the query id. */
const DNS_PORT = 15053;
const PROXY_IP = { v4: '10.244.1.2', v6: 'fd00:244:1::2' };
/** buildFrame's payload is zeros: the message id is 0. */
const DNS_ID = 0;
const DNS_LEN = 12;
const query = (fam: Fam, o: Partial<Parameters<typeof buildFrame>[0]> = {}) =>
  buildFrame({ src: POD[fam], dst: PEER[fam], sport: 40000, dport: 53, l4: 'udp', payload: DNS_LEN, ...o });
const reply = (fam: Fam, from: string, sport: number) =>
  buildFrame({ src: from, dst: POD[fam], sport, dport: 40000, l4: 'udp', payload: DNS_LEN });
function dnsServers(m: AmbientMaps): void {
  for (const ip of [PEER.v4, PEER.v6]) m.dnsServers.update({ netns_cookie: COOKIE, addr: toIpAddr(ip) }, 1);
}
function withDnsPort(m: AmbientMaps, netnsId?: number): void {
  const px = m.proxies.lookup(0)!;
  m.proxies.update(0, { ...px, dns_port: DNS_PORT, ...(netnsId !== undefined ? { netns_id: netnsId } : {}) });
}

function baseState(m: AmbientMaps, o: { ready?: boolean; policy?: number; netnsId?: number; outPort?: number; inPort?: number } = {}): void {
  for (const ip of [POD.v4, POD.v6]) m.pods.update(toIpAddr(ip), { netns_cookie: COOKIE, ifindex: VETH, flags: 0 });
  m.ifaces.update(VETH, { netns_cookie: COOKIE, flags: 0 });
  m.proxies.update(0, {
    ...EMPTY_PROXY, netns_cookie: 1n, netns_id: o.netnsId ?? 0x7fff_fff0, host_ifindex: PROXY_HOST_IFINDEX,
    flags: AM_PROXY_F.LIVE | (o.ready === false ? 0 : AM_PROXY_F.READY),
    outbound_port: o.outPort ?? 15001, inbound_port: o.inPort ?? 15006, hbone_port: 15008, mac: Uint8Array.from(PROXY_MAC),
  });
  m.node.update(0, { fail_policy: o.policy ?? AM_FAIL.CLOSED, active: o.ready === false ? 0 : 1, mark_mask: MARK_OUT | MARK_LOCAL, mark_out: MARK_OUT, mark_local: MARK_LOCAL });
}

interface Case {
  name: string;
  prog: keyof typeof AMBIENT_PROG;
  frame: Buffer | (() => Buffer);
  ctx?: Buffer;
  setup?: (m: AmbientMaps) => void;
  rc: number;
  counts?: Partial<Record<StatName, number>>;
  /** Check of the frame as the program left it. */
  frameOut?: (f: Buffer) => void;
}

function statsOf(m: AmbientMaps): Record<string, bigint> {
  const r: Record<string, bigint> = {};
  STATS.forEach((n, i) => { r[n] = (m.stats.lookupPerCpu(i) ?? []).reduce((a, b) => a + b, 0n); });
  return r;
}

/** A connected loopback pair in the test's netns; its tuple as the client's packets travel. */
async function loopbackFlow(host: string): Promise<{ sport: number; dport: number; close: () => void }> {
  const server = net.createServer(() => {});
  await new Promise<void>((r) => server.listen(0, host, r));
  const dport = (server.address() as net.AddressInfo).port;
  const c = net.connect(dport, host);
  await new Promise<void>((r, j) => { c.once('connect', r); c.once('error', j); });
  return { sport: c.localPort!, dport, close: () => { c.destroy(); server.close(); } };
}

/**
 * A loopback connection whose server side closed first and now sits in TIME_WAIT in the
 * test's netns; its tuple as the client's packets travel (the client side is gone).
 */
async function timeWaitTuple(host: string): Promise<{ sport: number; dport: number; close: () => void }> {
  const server = net.createServer((s) => s.end());
  await new Promise<void>((r) => server.listen(0, host, r));
  const dport = (server.address() as net.AddressInfo).port;
  const c = net.connect(dport, host);
  const sport = await new Promise<number>((r, j) => { c.once('connect', () => r(c.localPort!)); c.once('error', j); });
  c.on('end', () => c.end());
  await new Promise<void>((r) => c.once('close', () => r()));
  const tw = (): boolean => run(['ss', '-Htan', 'state', 'time-wait', `sport = :${dport}`, `dport = :${sport}`]).trim() !== '';
  await waitUntil('the server-side TIME_WAIT socket', tw, 10_000);
  return { sport, dport, close: () => server.close() };
}

ambientTest('ambient tc programs: (frame, maps, context) -> (verdict, counters), ns per packet per branch', async (t) => {
  const { obj, twHandoff } = loadAmbientObject();
  const m = openAmbientMaps(obj);
  const flow4 = await loopbackFlow('127.0.0.1');
  const tw4 = await timeWaitTuple('127.0.0.1');
  const listener = net.createServer(() => {});
  await new Promise<void>((r) => listener.listen(0, '127.0.0.1', r));
  const lport = (listener.address() as net.AddressInfo).port;
  const lo = { src: '127.0.0.1', dst: '127.0.0.1' };
  // The node proxy's DNS socket (the proxy netns is the test's own here): UDP on every address.
  const dnsSock = dgram.createSocket('udp4');
  const dnsSock6 = dgram.createSocket({ type: 'udp6', ipv6Only: true });
  await new Promise<void>((r) => dnsSock.bind(DNS_PORT, '0.0.0.0', r));
  await new Promise<void>((r) => dnsSock6.bind(DNS_PORT, '::', r));
  const cases: Case[] = [
    // mwam_from_pod (host veth ingress)
    { name: 'from pod: ARP', prog: 'fromPod', frame: Buffer.concat([Buffer.alloc(12), Buffer.from([0x08, 0x06]), Buffer.alloc(28)]), rc: NEXT },
    { name: 'from pod: veth not enrolled', prog: 'fromPod', frame: out('v4', SYN), setup: (s) => s.ifaces.delete(VETH), rc: NEXT },
    { name: 'from pod: spoofed IPv4 source', prog: 'fromPod', frame: out('v4', SYN, { src: '10.244.1.99' }), rc: SHOT, counts: { am_spoof: 1 } },
    { name: 'from pod: spoofed IPv6 source', prog: 'fromPod', frame: out('v6', SYN, { src: 'fd00:244:1::99' }), rc: SHOT, counts: { am_spoof: 1 } },
    { name: 'from pod: another pod\'s address (other veth)', prog: 'fromPod', frame: out('v4', SYN),
      setup: (s) => s.pods.update(toIpAddr(POD.v4), { netns_cookie: 5n, ifindex: 9, flags: 0 }), rc: SHOT, counts: { am_spoof: 1 } },
    { name: 'from pod: NDP from link-local', prog: 'fromPod', frame: withProto(out('v6', 0, { src: 'fe80::1', l4: 'udp' }), 58), rc: NEXT },
    { name: 'from pod: ICMP', prog: 'fromPod', frame: withProto(out('v4', 0, { l4: 'udp' }), 1), rc: NEXT },
    { name: 'from pod: IPv4 SYN -> node proxy', prog: 'fromPod', frame: out('v4', SYN), rc: REDIRECT, counts: { am_captured_out: 1 } },
    { name: 'from pod: IPv6 SYN -> node proxy', prog: 'fromPod', frame: out('v6', SYN), rc: REDIRECT, counts: { am_captured_out: 1 } },
    { name: 'from pod: non-SYN without proxy socket (older flow)', prog: 'fromPod', frame: out('v4', DATA), rc: NEXT, counts: { am_bypass_existing: 1 } },
    { name: 'from pod: non-SYN of a proxy socket -> node proxy', prog: 'fromPod', rc: REDIRECT, counts: { am_flow: 1 },
      frame: () => out('v4', DATA, { ...lo, sport: flow4.sport, dport: flow4.dport }),
      setup: (s) => { baseState(s, { netnsId: -1 }); s.pods.update(toIpAddr('127.0.0.1'), { netns_cookie: COOKIE, ifindex: VETH, flags: 0 }); } },
    { name: 'from pod: SYN on a proxy TIME_WAIT socket -> node proxy as a new flow', prog: 'fromPod', rc: REDIRECT, counts: { am_captured_out: 1 },
      frame: () => out('v4', SYN, { ...lo, sport: tw4.sport, dport: tw4.dport }),
      setup: (s) => { baseState(s, { netnsId: -1 }); s.pods.update(toIpAddr('127.0.0.1'), { netns_cookie: COOKIE, ifindex: VETH, flags: 0 }); } },
    { name: 'from pod: non-SYN of a proxy TIME_WAIT socket -> node proxy (its flow)', prog: 'fromPod', rc: REDIRECT, counts: { am_flow: 1 },
      frame: () => out('v4', TCP_FLAG.ACK, { ...lo, sport: tw4.sport, dport: tw4.dport }),
      setup: (s) => { baseState(s, { netnsId: -1 }); s.pods.update(toIpAddr('127.0.0.1'), { netns_cookie: COOKIE, ifindex: VETH, flags: 0 }); } },
    { name: 'from pod: SYN, no proxy ready, closed', prog: 'fromPod', frame: out('v4', SYN), setup: (s) => baseState(s, { ready: false }), rc: SHOT, counts: { am_fail_closed: 1 } },
    { name: 'from pod: SYN, no proxy ready, open', prog: 'fromPod', frame: out('v4', SYN), setup: (s) => baseState(s, { ready: false, policy: AM_FAIL.OPEN }), rc: NEXT, counts: { am_fail_open: 1 } },
    { name: 'from pod: UDP, proxy ready', prog: 'fromPod', frame: out('v4', 0, { l4: 'udp' }), rc: NEXT, counts: { am_bypass_udp: 1 } },
    { name: 'from pod: UDP, no proxy ready, closed', prog: 'fromPod', frame: out('v6', 0, { l4: 'udp' }), setup: (s) => baseState(s, { ready: false }), rc: SHOT, counts: { am_fail_closed: 1 } },
    // DNS (dns.h): UDP port 53 to a nameserver of the pod
    { name: 'from pod: DNS query, proxy with a DNS socket -> node proxy', prog: 'fromPod', frame: query('v4'), rc: REDIRECT, counts: { dns_captured: 1 },
      setup: (s) => { dnsServers(s); withDnsPort(s, -1); } },
    { name: 'from pod: DNS query over IPv6 -> node proxy', prog: 'fromPod', frame: query('v6'), rc: REDIRECT, counts: { dns_captured: 1 },
      setup: (s) => { dnsServers(s); withDnsPort(s, -1); } },
    { name: 'from pod: DNS query, announced DNS socket gone (fail open)', prog: 'fromPod', frame: query('v4', { dport: 53 }), rc: NEXT, counts: { dns_no_listener: 1 },
      setup: (s) => { dnsServers(s); s.proxies.update(0, { ...s.proxies.lookup(0)!, dns_port: 1, netns_id: -1 }); } },
    { name: 'from pod: DNS query, proxy without a DNS port', prog: 'fromPod', frame: query('v4'), rc: NEXT, counts: { dns_no_listener: 1 }, setup: dnsServers },
    { name: 'from pod: DNS query, no proxy ready, closed (DNS fails open)', prog: 'fromPod', frame: query('v4'), rc: NEXT, counts: { dns_no_listener: 1 },
      setup: (s) => { baseState(s, { ready: false }); dnsServers(s); } },
    { name: 'from pod: DNS TCP SYN, no proxy ready, closed', prog: 'fromPod', frame: out('v4', SYN, { dport: 53 }), rc: NEXT, counts: { dns_no_listener: 1 },
      setup: (s) => { baseState(s, { ready: false }); dnsServers(s); } },
    { name: 'from pod: port 53, not a nameserver', prog: 'fromPod', frame: query('v4'), rc: NEXT, counts: { dns_not_server: 1, am_bypass_udp: 1 } },
    { name: 'to pod: DNS reply from the proxy -> source = the server', prog: 'toPod', frame: reply('v4', PROXY_IP.v4, DNS_PORT), rc: NEXT, counts: { dns_restored: 1 },
      ctx: ctx({ ingressIfindex: PROXY_HOST_IFINDEX }),
      setup: (s) => { dnsServers(s); withDnsPort(s); s.dnsQueries.update({ pod: toIpAddr(POD.v4), pod_port: 40000, id: DNS_ID }, { server: toIpAddr(PEER.v4), server_port: 53, pending: 1, since_ns: 1n }); },
      frameOut: (f) => { assert.deepEqual(f, reply('v4', PEER.v4, 53), 'rewritten, checksums valid'); assert.equal(m.dnsQueries.count(), 0, 'the entry went with its reply'); } },
    { name: 'to pod: DNS reply over IPv6 -> source = the server', prog: 'toPod', frame: reply('v6', PROXY_IP.v6, DNS_PORT), rc: NEXT, counts: { dns_restored: 1 },
      ctx: ctx({ ingressIfindex: PROXY_HOST_IFINDEX }),
      setup: (s) => { dnsServers(s); withDnsPort(s); s.dnsQueries.update({ pod: toIpAddr(POD.v6), pod_port: 40000, id: DNS_ID }, { server: toIpAddr(PEER.v6), server_port: 53, pending: 2, since_ns: 1n }); },
      frameOut: (f) => { assert.deepEqual(f, reply('v6', PEER.v6, 53), 'rewritten, checksum valid'); assert.equal(m.dnsQueries.count(), 1, 'one query still pending'); } },
    { name: 'to pod: DNS reply from the proxy, no query entry', prog: 'toPod', frame: reply('v4', PROXY_IP.v4, DNS_PORT), rc: NEXT, counts: { dns_unmatched: 1 },
      ctx: ctx({ ingressIfindex: PROXY_HOST_IFINDEX }), setup: (s) => { dnsServers(s); withDnsPort(s); } },
    { name: 'to pod: a nameserver\'s own reply, no proxy ready, closed', prog: 'toPod', frame: reply('v4', PEER.v4, 53), rc: NEXT, counts: { dns_no_listener: 1 },
      ctx: ctx({ ingressIfindex: 3 }), setup: (s) => { baseState(s, { ready: false }); dnsServers(s); } },
    { name: 'proxy: DNS query, DNS socket found (assign outside tc ingress: refused)', prog: 'proxyIn', frame: query('v4'), ctx: ctx({ mark: MARK_OUT }), rc: SHOT,
      counts: { am_assign_failed: 1 }, setup: (s) => { dnsServers(s); withDnsPort(s); } },
    { name: 'proxy: DNS query, no DNS socket', prog: 'proxyIn', frame: query('v4'), ctx: ctx({ mark: MARK_OUT }), rc: SHOT, counts: { am_no_listener: 1 },
      setup: (s) => { dnsServers(s); s.proxies.update(0, { ...s.proxies.lookup(0)!, dns_port: 1 }); } },
    // mwam_to_pod (host veth egress)
    { name: 'to pod: not an enrolled pod', prog: 'toPod', frame: inb('v4', SYN, { dst: '10.244.1.77' }), rc: NEXT },
    { name: 'to pod: from the node proxy', prog: 'toPod', frame: inb('v4', SYN), ctx: ctx({ ingressIfindex: PROXY_HOST_IFINDEX }), rc: NEXT, counts: { am_bypass_proxy: 1 } },
    { name: 'to pod: IPv4 SYN -> node proxy (its MAC)', prog: 'toPod', frame: inb('v4', SYN), ctx: ctx({ ingressIfindex: 3 }), rc: REDIRECT, counts: { am_captured_in: 1 },
      frameOut: (f) => assert.deepEqual([...f.subarray(0, 6)], PROXY_MAC) },
    { name: 'to pod: IPv6 SYN -> node proxy', prog: 'toPod', frame: inb('v6', SYN), ctx: ctx({ ingressIfindex: 3 }), rc: REDIRECT, counts: { am_captured_in: 1 } },
    { name: 'to pod: non-SYN without proxy socket', prog: 'toPod', frame: inb('v4', DATA), ctx: ctx({ ingressIfindex: 3 }), rc: NEXT, counts: { am_bypass_existing: 1 } },
    { name: 'to pod: SYN, no proxy ready, closed', prog: 'toPod', frame: inb('v4', SYN), ctx: ctx({ ingressIfindex: 3 }), setup: (s) => baseState(s, { ready: false }), rc: SHOT, counts: { am_fail_closed: 1 } },
    { name: 'to pod: ICMP', prog: 'toPod', frame: withProto(inb('v4', 0, { l4: 'udp' }), 1), rc: NEXT },
    // mwam_proxy_in (ingress of the node proxy's interface, its netns)
    { name: 'proxy: UDP', prog: 'proxyIn', frame: out('v4', 0, { l4: 'udp' }), ctx: ctx({ mark: MARK_OUT }), rc: NEXT },
    { name: 'proxy: its own traffic (no mark, not a pod address)', prog: 'proxyIn', frame: toUs(inb('v4', DATA, { dst: '10.244.1.250' })), rc: NEXT },
    { name: 'proxy: inbound frame not sent to its MAC', prog: 'proxyIn', frame: inb('v4', SYN), rc: NEXT },
    { name: 'proxy: captured non-SYN whose socket is gone', prog: 'proxyIn', frame: out('v4', DATA), ctx: ctx({ mark: MARK_OUT }), rc: SHOT, counts: { am_no_socket: 1 } },
    { name: 'proxy: captured SYN, no listener', prog: 'proxyIn', frame: out('v4', SYN), ctx: ctx({ mark: MARK_OUT }), rc: SHOT, counts: { am_no_listener: 1 } },
    { name: 'proxy: inbound SYN, no listener', prog: 'proxyIn', frame: toUs(inb('v6', SYN)), rc: SHOT, counts: { am_no_listener: 1 } },
    { name: 'proxy: captured packet of a proxy socket -> local', prog: 'proxyIn', rc: OK, counts: { am_delivered: 1 }, ctx: ctx({ mark: MARK_OUT | 0x1000 }),
      frame: () => out('v4', DATA, { ...lo, sport: flow4.sport, dport: flow4.dport }) },
    // A SYN on a proxy socket in TIME_WAIT: not assigned (the kernel would refuse the request
    // socket beside it) but delivered locally, the listener left for mwam_tw_lookup.
    // Where the kernel refuses the hand-off (a sockmap update from tc, 7.x), it is delivered as before.
    { name: 'proxy: captured SYN on a TIME_WAIT socket -> local, listener handed off', prog: 'proxyIn', rc: OK, counts: twHandoff ? { am_tw_handoff: 1 } : { am_delivered: 1 },
      ctx: ctx({ mark: MARK_OUT }), frame: () => out('v4', SYN, { ...lo, sport: tw4.sport, dport: tw4.dport }),
      setup: (s) => baseState(s, { outPort: lport }) },
    // A test run is not at tc ingress, where bpf_sk_assign works: the listener is found, the assign refused.
    { name: 'proxy: captured SYN, listener found (assign outside tc ingress: refused)', prog: 'proxyIn', rc: SHOT, counts: { am_assign_failed: 1 },
      ctx: ctx({ mark: MARK_OUT }), frame: () => out('v4', SYN, { src: '127.0.0.1', dst: '127.0.0.1', sport: 40001, dport: 9 }),
      setup: (s) => baseState(s, { outPort: lport }) },
  ];
  try {
    for (const c of cases) {
      for (const [k] of [...m.pods.entries()]) m.pods.delete(k);
      for (const k of [...m.ifaces.keys()]) m.ifaces.delete(k);
      for (const [k] of [...m.dnsServers.entries()]) m.dnsServers.delete(k);
      for (const [k] of [...m.dnsQueries.entries()]) m.dnsQueries.delete(k);
      for (let s = 0; s < 4; s++) m.proxies.update(s, EMPTY_PROXY);
      baseState(m);
      c.setup?.(m);
      const frame = typeof c.frame === 'function' ? c.frame() : c.frame;
      const before = statsOf(m);
      const fd = obj.program(AMBIENT_PROG[c.prog]).fd;
      const r = testRun(fd, { data: frame, ctx: c.ctx ?? ctx(), dataOutSize: frame.length + 64 });
      assert.equal(r.retval, c.rc, `${c.name}: return code`);
      const after = statsOf(m);
      for (const n of STATS) assert.equal(after[n] - before[n], BigInt(c.counts?.[n] ?? 0), `${c.name}: counter ${n}`);
      c.frameOut?.(r.dataOut!);
      const timed = testRun(fd, { data: frame, ctx: c.ctx ?? ctx(), repeat: 2000 });
      t.diagnostic(`${c.name}: ${timed.durationNs} ns/packet`);
    }
  } finally {
    flow4.close();
    tw4.close();
    listener.close();
    dnsSock.close();
    dnsSock6.close();
    obj.close();
  }
}, { needs: ['test_run.sched_cls.ingress_ifindex'] });

ambientTest('the kernel keeps every ambient program name whole and distinct', () => {
  const { obj } = loadAmbientObject();
  try {
    const names = Object.values(AMBIENT_PROG);
    for (const n of names) assert.ok(n.length <= 15 && n.startsWith('mwam_'), n);
    for (const n of names) assert.equal(obj.program(n).name, n);
  } finally {
    obj.close();
  }
});

// SPDX-License-Identifier: Apache-2.0
// The sidecar tc programs (bpf/sidecar/tc.bpf.c) on crafted frames through
// BPF_PROG_TEST_RUN: for each branch, (frame, map state) -> (return code,
// frame as the program left it, counters, inbound_nat, trace events). Nothing
// is attached and nothing is sent: a test run's skb never leaves the kernel.
// Also checks that the kernel keeps every program name whole (15 characters)
// and that the linked object keeps its config global.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { BpfObject, RingBufferReader, testRun } from '../../src/bpf/index.ts';
import { fn } from '../../src/bpf/libbpf.ts';
import { TCP_FLAG, buildFrame, otherFrame, type FrameSpec } from '../../src/bpf/testing/packets.ts';
import { podEntries, toIpAddr } from '../../src/datapath/sidecar/entries.ts';
import { SIDECAR_MAP, SIDECAR_PROG, openSidecarMaps, type SidecarMaps } from '../../src/datapath/sidecar/object.ts';
import { NAT_F, STATS, sidecarObject, type NatEntry, type NatKey, type StatName } from '../../src/datapath/sidecar/structs.ts';
import { decodeTrace, type TraceRecord } from '../../src/datapath/sidecar/trace.ts';
import { resolvePodPolicy, type PodPolicy } from '../../src/profiles/index.ts';
import { BPFFS_DEFAULT } from '../../src/sys/bpffs.ts';
import { testPrefix, sidecarTest } from '../helpers/kernel.ts';

const TC_ACT_UNSPEC = -1; // == TCX_NEXT: the programs never drop or redirect
const COOKIE = 0x6d77_7463_7465_7374n; // a made-up netns cookie of the meshed pod
const POD = { v4: '10.244.1.5', v6: 'fd00:244:1::5' };
const CLIENT = { v4: '10.244.2.9', v6: 'fd00:244:2::9' }; // on another node
const NODE_IP = '10.244.1.1'; // this node's address on the pod network (kubelet probes)
const UNMESHED = '10.244.1.77';
const APP = 8080;
const EXCLUDED = 9090;
const CLIENT_PORT = 40000;
/** A test run's skb is on the loopback device (ifindex 1) of the caller's netns. */
const TEST_RUN_IFINDEX = 1;

const policy = resolvePodPolicy('osm', {}, { excludeInboundPorts: [EXCLUDED] });
const INBOUND = policy.inboundPort;

type Fam = 'v4' | 'v6';
/** Client -> pod, as it arrives on the host veth's egress. */
const toPod = (fam: Fam, flags: number, o: Partial<FrameSpec> = {}) =>
  buildFrame({ src: CLIENT[fam], dst: POD[fam], sport: CLIENT_PORT, dport: APP, flags, ...o });
/** Pod -> client, as it leaves on the host veth's ingress. */
const fromPod = (fam: Fam, flags: number, o: Partial<FrameSpec> = {}) =>
  buildFrame({ src: POD[fam], dst: CLIENT[fam], sport: INBOUND, dport: CLIENT_PORT, flags, ...o });
const flow = (fam: Fam, remotePort = CLIENT_PORT): NatKey =>
  ({ remote: toIpAddr(CLIENT[fam]), local: toIpAddr(POD[fam]), remote_port: remotePort });
const entry = (orig: number, flags: number, since = 1n): NatEntry => ({ orig_port: orig, inbound_port: INBOUND, flags, since_ns: since });

const SYN = TCP_FLAG.SYN;
const DATA = TCP_FLAG.ACK | TCP_FLAG.PSH;

interface Case {
  name: string;
  prog: 'toPod' | 'fromPod';
  frame: Buffer;
  /** Changes to the base state (the meshed pod, the node IPs) before the run. */
  setup?: (m: SidecarMaps) => void;
  /** inbound_nat before the run. */
  nat?: [NatKey, NatEntry][];
  /** The frame as the program leaves it; default: untouched. */
  out?: Buffer;
  /** Counters the run bumps (all others must stay). */
  counts?: Partial<Record<StatName, number>>;
  /** inbound_nat after the run; default: as before. since_ns: 'new' = set by this run. */
  natAfter?: [NatKey, Omit<NatEntry, 'since_ns'> & { since_ns: bigint | 'new' }][];
  /** Run with tracing on and expect exactly these events. */
  trace?: Partial<TraceRecord>[];
  /** Use the object whose inbound_nat holds one entry (and make it full). */
  fullNat?: boolean;
}

const withInclude = (p: PodPolicy): PodPolicy => ({ ...p, includeInboundPorts: [APP] });

const cases: Case[] = [
  // Not ours: anything but Ethernet/IPv4|IPv6/TCP with a TCP header.
  { name: 'to pod: ARP frame', prog: 'toPod', frame: otherFrame(0x0806) },
  { name: 'to pod: IPv4 UDP', prog: 'toPod', frame: buildFrame({ src: CLIENT.v4, dst: POD.v4, sport: CLIENT_PORT, dport: APP, l4: 'udp', payload: 32 }) },
  { name: 'to pod: IPv6 UDP', prog: 'toPod', frame: buildFrame({ src: CLIENT.v6, dst: POD.v6, sport: CLIENT_PORT, dport: APP, l4: 'udp', payload: 32 }) },
  { name: 'to pod: IPv4 non-first fragment', prog: 'toPod', frame: toPod('v4', SYN, { fragmentOffset: 185 }) },
  { name: 'to pod: IPv6 with an extension header', prog: 'toPod', frame: toPod('v6', SYN, { hopByHop: true }) },

  // SYNs that are not for a meshed pod's app port: untouched, most uncounted.
  { name: 'to pod: SYN to an unmeshed pod', prog: 'toPod', frame: buildFrame({ src: CLIENT.v4, dst: UNMESHED, sport: CLIENT_PORT, dport: APP, flags: SYN }) },
  {
    name: 'to pod: SYN to a meshed pod behind another veth', prog: 'toPod', frame: toPod('v4', SYN),
    setup: (m) => m.localPods.update(toIpAddr(POD.v4), { netns_cookie: COOKIE, inbound_port: INBOUND, ifindex: TEST_RUN_IFINDEX + 6 }),
  },
  { name: 'to pod: SYN to the inbound port itself', prog: 'toPod', frame: toPod('v4', SYN, { dport: INBOUND }) },
  { name: 'to pod: SYN to a pod without pod_config', prog: 'toPod', frame: toPod('v4', SYN), setup: (m) => m.podConfig.delete(COOKIE) },
  { name: 'to pod: SYN to an excluded port', prog: 'toPod', frame: toPod('v4', SYN, { dport: EXCLUDED }), counts: { bypass_excluded: 1 } },
  {
    name: 'to pod: SYN to a port outside the include list', prog: 'toPod', frame: toPod('v4', SYN, { dport: APP + 1 }),
    setup: (m) => meshPod(m, withInclude(policy)), counts: { bypass_excluded: 1 },
  },
  {
    name: 'to pod: SYN from a node IP', prog: 'toPod', frame: buildFrame({ src: NODE_IP, dst: POD.v4, sport: CLIENT_PORT, dport: APP, flags: SYN }),
    counts: { bypass_node: 1 },
    trace: [{ program: 'tc_to_pod', verdict: 'bypassed', reason: 'bypass_node', orig: `${POD.v4}:${APP}`, to: `${POD.v4}:${APP}`, uid: 0 }],
  },

  // SYN DNAT: a new flow gets an inbound_nat entry and the inbound port.
  {
    name: 'to pod: IPv4 SYN of a new flow', prog: 'toPod', frame: toPod('v4', SYN), out: toPod('v4', SYN, { dport: INBOUND }),
    counts: { nat_added: 1, tc_dnat: 1 }, natAfter: [[flow('v4'), { ...entry(APP, 0), since_ns: 'new' }]],
    trace: [{ program: 'tc_to_pod', verdict: 'captured', reason: 'nat_added', orig: `${POD.v4}:${APP}`, to: `${POD.v4}:${INBOUND}`, uid: 0 }],
  },
  {
    name: 'to pod: IPv4 SYN with IP options', prog: 'toPod', frame: toPod('v4', SYN, { ipOptions: 12 }), out: toPod('v4', SYN, { ipOptions: 12, dport: INBOUND }),
    counts: { nat_added: 1, tc_dnat: 1 }, natAfter: [[flow('v4'), { ...entry(APP, 0), since_ns: 'new' }]],
  },
  {
    name: 'to pod: IPv6 SYN of a new flow', prog: 'toPod', frame: toPod('v6', SYN), out: toPod('v6', SYN, { dport: INBOUND }),
    counts: { nat_added: 1, tc_dnat: 1 }, natAfter: [[flow('v6'), { ...entry(APP, 0), since_ns: 'new' }]],
  },
  {
    name: 'to pod: SYN to an included port', prog: 'toPod', frame: toPod('v4', SYN), out: toPod('v4', SYN, { dport: INBOUND }),
    setup: (m) => meshPod(m, withInclude(policy)),
    counts: { nat_added: 1, tc_dnat: 1 }, natAfter: [[flow('v4'), { ...entry(APP, 0), since_ns: 'new' }]],
  },
  {
    name: 'to pod: retransmitted SYN (entry of this flow)', prog: 'toPod', frame: toPod('v4', SYN), out: toPod('v4', SYN, { dport: INBOUND }),
    nat: [[flow('v4'), entry(APP, 0)]], counts: { tc_dnat: 1 }, trace: [],
  },
  {
    name: 'to pod: SYN reusing the client port of a flow in TIME_WAIT', prog: 'toPod', frame: toPod('v4', SYN), out: toPod('v4', SYN, { dport: INBOUND }),
    nat: [[flow('v4'), entry(APP + 1, NAT_F.ESTABLISHED | NAT_F.TIME_WAIT)]],
    counts: { nat_added: 1, tc_dnat: 1 }, natAfter: [[flow('v4'), { ...entry(APP, 0), since_ns: 'new' }]],
  },
  {
    name: 'to pod: SYN reusing the client port of a handshake that never completed', prog: 'toPod', frame: toPod('v4', SYN), out: toPod('v4', SYN, { dport: INBOUND }),
    nat: [[flow('v4'), entry(APP + 1, 0)]],
    counts: { nat_added: 1, tc_dnat: 1 }, natAfter: [[flow('v4'), { ...entry(APP, 0), since_ns: 'new' }]],
  },
  {
    name: 'to pod: SYN clashing with a live flow to another port', prog: 'toPod', frame: toPod('v4', SYN),
    nat: [[flow('v4'), entry(APP + 1, NAT_F.ESTABLISHED)]], counts: { nat_collision: 1 },
    trace: [{ program: 'tc_to_pod', verdict: 'failed', reason: 'nat_collision' }],
  },
  {
    name: 'to pod: SYN with inbound_nat full', prog: 'toPod', frame: toPod('v4', SYN), fullNat: true,
    nat: [[flow('v4', CLIENT_PORT + 1), entry(APP, NAT_F.ESTABLISHED)]], counts: { nat_failed: 1 },
    trace: [{ program: 'tc_to_pod', verdict: 'failed', reason: 'nat_failed', orig: `${POD.v4}:${APP}`, to: `${POD.v4}:${APP}` }],
  },

  // Everything but a SYN: one inbound_nat lookup.
  { name: 'to pod: data without a NAT entry', prog: 'toPod', frame: toPod('v4', DATA, { payload: 64 }), trace: [] },
  {
    name: 'to pod: IPv4 data of a DNAT-ed flow', prog: 'toPod', frame: toPod('v4', DATA, { payload: 64 }), out: toPod('v4', DATA, { payload: 64, dport: INBOUND }),
    nat: [[flow('v4'), entry(APP, NAT_F.ESTABLISHED)]], counts: { tc_dnat: 1 }, trace: [],
  },
  {
    name: 'to pod: IPv6 data of a DNAT-ed flow', prog: 'toPod', frame: toPod('v6', DATA, { payload: 64 }), out: toPod('v6', DATA, { payload: 64, dport: INBOUND }),
    nat: [[flow('v6'), entry(APP, NAT_F.ESTABLISHED)]], counts: { tc_dnat: 1 },
  },
  {
    name: 'to pod: data to another port from a DNAT-ed client port', prog: 'toPod', frame: toPod('v4', DATA, { dport: APP + 1 }),
    nat: [[flow('v4'), entry(APP, NAT_F.ESTABLISHED)]],
  },
  { name: 'to pod: SYN-ACK towards the pod is not a new flow', prog: 'toPod', frame: toPod('v4', SYN | TCP_FLAG.ACK) },

  // From the pod: replies of DNAT-ed flows get their original port back.
  {
    name: 'from pod: IPv4 reply of a DNAT-ed flow', prog: 'fromPod', frame: fromPod('v4', DATA, { payload: 64 }), out: fromPod('v4', DATA, { payload: 64, sport: APP }),
    nat: [[flow('v4'), entry(APP, NAT_F.ESTABLISHED)]], counts: { tc_undnat: 1 }, trace: [],
  },
  {
    name: 'from pod: IPv4 reply with IP options', prog: 'fromPod', frame: fromPod('v4', DATA, { ipOptions: 40 }), out: fromPod('v4', DATA, { ipOptions: 40, sport: APP }),
    nat: [[flow('v4'), entry(APP, NAT_F.ESTABLISHED)]], counts: { tc_undnat: 1 },
  },
  {
    name: 'from pod: IPv6 SYN-ACK of a DNAT-ed flow', prog: 'fromPod', frame: fromPod('v6', SYN | TCP_FLAG.ACK), out: fromPod('v6', SYN | TCP_FLAG.ACK, { sport: APP }),
    nat: [[flow('v6'), entry(APP, 0)]], counts: { tc_undnat: 1 },
  },
  { name: 'from pod: reply without a NAT entry', prog: 'fromPod', frame: fromPod('v4', DATA) },
  {
    name: 'from pod: reply from the app port itself', prog: 'fromPod', frame: fromPod('v4', DATA, { sport: APP }),
    nat: [[flow('v4'), entry(APP, NAT_F.ESTABLISHED)]],
  },
  {
    name: 'from pod: entry whose original port is the inbound port', prog: 'fromPod', frame: fromPod('v4', DATA),
    nat: [[flow('v4'), entry(INBOUND, NAT_F.ESTABLISHED)]],
  },
  {
    name: 'from pod: RST refusing a handshake deletes its entry', prog: 'fromPod', frame: fromPod('v4', TCP_FLAG.RST | TCP_FLAG.ACK), out: fromPod('v4', TCP_FLAG.RST | TCP_FLAG.ACK, { sport: APP }),
    nat: [[flow('v4'), entry(APP, 0)]], counts: { tc_undnat: 1, nat_reset: 1 }, natAfter: [],
  },
  {
    name: 'from pod: RST of an established flow keeps its entry', prog: 'fromPod', frame: fromPod('v4', TCP_FLAG.RST | TCP_FLAG.ACK), out: fromPod('v4', TCP_FLAG.RST | TCP_FLAG.ACK, { sport: APP }),
    nat: [[flow('v4'), entry(APP, NAT_F.ESTABLISHED)]], counts: { tc_undnat: 1 },
  },
  {
    name: 'from pod: UDP from the inbound port', prog: 'fromPod', frame: buildFrame({ src: POD.v4, dst: CLIENT.v4, sport: INBOUND, dport: CLIENT_PORT, l4: 'udp' }),
    nat: [[flow('v4'), entry(APP, NAT_F.ESTABLISHED)]],
  },
];

/** Writes the meshed pod's entries the way the driver does (podEntries), replacing earlier ones. */
function meshPod(m: SidecarMaps, p: PodPolicy): void {
  m.portRules.clear();
  m.cidrRules.clear();
  const e = podEntries(COOKIE, { ip4: POD.v4, ip6: POD.v6, ifindex: TEST_RUN_IFINDEX }, p);
  for (const [k, v] of e.portRules) m.portRules.update(k, v);
  for (const [k, v] of e.cidrRules) m.cidrRules.update(k, v);
  for (const [k, v] of e.localPods) m.localPods.update(k, v);
  m.podConfig.update(COOKIE, e.config);
}

/** Every map back to the base state: one meshed pod (v4 + v6), the node IPs, tracing off. */
function reset(m: SidecarMaps): void {
  for (const map of [m.podConfig, m.localPods, m.portRules, m.cidrRules, m.inboundNat, m.nodeIps]) map.clear();
  meshPod(m, policy);
  for (const ip of [NODE_IP, 'fd00:244:1::1']) m.nodeIps.update(toIpAddr(ip), 1);
  m.traceConfig.update(0, { enabled: 0 });
}

function counters(m: SidecarMaps): Record<StatName, bigint> {
  const out = {} as Record<StatName, bigint>;
  STATS.forEach((name, i) => { out[name] = (m.stats.lookupPerCpu(i) ?? []).reduce((a, b) => a + b, 0n); });
  return out;
}

const natText = (entries: Iterable<[NatKey, NatEntry]>) =>
  [...entries].map(([k, v]) => `${Buffer.from(k.remote.addr).toString('hex')}:${k.remote_port} orig ${v.orig_port} inbound ${v.inbound_port} flags ${v.flags}`).sort();

interface Loaded { obj: BpfObject; maps: SidecarMaps; events: TraceRecord[]; reader: RingBufferReader }

function open(obj: BpfObject): Loaded {
  const events: TraceRecord[] = [];
  const reader = new RingBufferReader(obj.mapInfo(SIDECAR_MAP.traceEvents).fd, (b) => events.push(decodeTrace(b)));
  return { obj, maps: openSidecarMaps(obj), events, reader };
}

function runCase(c: Case, l: Loaded): void {
  const { maps: m, events } = l;
  reset(m);
  c.setup?.(m);
  for (const [k, v] of c.nat ?? []) m.inboundNat.update(k, v);
  const natBefore = natText(m.inboundNat.entries());
  if (c.trace) m.traceConfig.update(0, { enabled: 1 });
  l.reader.consume();
  events.length = 0;
  const before = counters(m);
  const t0 = process.hrtime.bigint();

  const r = testRun(l.obj.program(SIDECAR_PROG[c.prog]).fd, { data: c.frame, dataOutSize: c.frame.length + 64 });

  assert.equal(r.retval, TC_ACT_UNSPEC, 'return code');
  const want = c.out ?? c.frame;
  assert.equal(r.dataOut!.toString('hex'), want.toString('hex'), c.out ? 'rewritten frame (ports and TCP checksum)' : 'frame untouched');
  const after = counters(m);
  const delta = Object.fromEntries(STATS.map((n) => [n, Number(after[n] - before[n])]).filter(([, d]) => d !== 0));
  assert.deepEqual(delta, c.counts ?? {}, 'counters');
  const nat = [...m.inboundNat.entries()];
  if (c.natAfter) {
    assert.deepEqual(natText(nat), natText(c.natAfter.map(([k, v]) => [k, { ...v, since_ns: 0n }])), 'inbound_nat');
    for (const [k, v] of c.natAfter) {
      if (v.since_ns !== 'new') continue;
      const got = m.inboundNat.get(k).since_ns;
      assert.ok(got >= t0 && got <= process.hrtime.bigint(), `since_ns ${got} set by the run (CLOCK_MONOTONIC)`);
    }
  } else {
    assert.deepEqual(natText(nat), natBefore, 'inbound_nat unchanged');
  }
  if (c.trace) {
    l.reader.consume();
    assert.equal(events.length, c.trace.length, `trace events: ${JSON.stringify(events)}`);
    c.trace.forEach((want, i) => {
      for (const [k, v] of Object.entries(want)) assert.equal(events[i][k as keyof TraceRecord], v, `trace event ${i}: ${k}`);
      assert.equal(events[i].netnsCookie, String(COOKIE), `trace event ${i}: the pod's cookie`);
    });
  }
}

sidecarTest('sidecar tc programs: (frame, maps) -> (verdict, frame, counters)', async (t) => {
  const pinRoot = join(BPFFS_DEFAULT, testPrefix('mtc'));
  let main: Loaded | undefined;
  let full: Loaded | undefined;
  try {
    main = open(BpfObject.load(sidecarObject, { pinRoot }));
    // A private copy (no pins) whose inbound_nat holds one entry: full after one insert.
    full = open(BpfObject.load(sidecarObject, { programs: [SIDECAR_PROG.toPod], maxEntries: { [SIDECAR_MAP.inboundNat]: 1 } }));
    for (const c of cases) await t.test(c.name, () => runCase(c, c.fullNat ? full! : main!));
  } finally {
    for (const l of [main, full]) { l?.reader.close(); l?.obj.close(); }
    rmSync(pinRoot, { recursive: true, force: true });
  }
});

sidecarTest('the kernel keeps every sidecar program name whole and distinct', () => {
  // mw_flags is defined in one unit and extern in the others: the linked
  // object must still carry it in .rodata for the loader to set.
  const obj = BpfObject.load(sidecarObject, { config: { mw_flags: 0 } });
  try {
    const names = Object.values(SIDECAR_PROG).map((name) => {
      // struct bpf_prog_info: char name[BPF_OBJ_NAME_LEN = 16] at offset 64.
      const info = Buffer.alloc(256);
      const len = [info.length];
      assert.equal(fn.objGetInfoByFd(obj.program(name).fd, info, len), 0, `prog info of ${name}`);
      return info.toString('utf8', 64, 80).replace(/\0.*$/s, '');
    });
    assert.deepEqual(names, Object.values(SIDECAR_PROG), 'bpf_prog_info.name');
    assert.equal(new Set(names).size, names.length, 'distinct');
    assert.deepEqual(obj.programNames().sort(), Object.values(SIDECAR_PROG).sort(), 'the object has exactly these programs');
  } finally {
    obj.close();
  }
});

// SPDX-License-Identifier: Apache-2.0
// Per-packet cost of the tc programs of sidecar.bpf.o (mission: <= 100 ns per
// packet), measured with BPF_PROG_TEST_RUN on crafted frames, against an
// empty program as the floor.
//
// The object is loaded privately (no pins, nothing attached) and its maps are
// filled with one meshed pod, the way the driver does it (podEntries).
// Two methods, because a test run repeats on one skb:
//   repeat  one call runs the program N times: exact for paths that leave the
//           packet alone (fast paths); the kernel reports the mean.
//   single  one run per call, with a fresh packet and map state each time:
//           needed for the paths that rewrite the packet or create a NAT
//           entry (the second repetition would see its own rewrite). Each
//           figure includes one clock read; "net" subtracts the empty
//           program measured the same way.
import { BpfObject, RingBufferReader, codec, returnProgram, testRun, PROG_TYPE, type BpfMap } from '../bpf/index.ts';
import {
  STATS, ipAddr, localPod, natEntry, natKey, podConfig, portRuleKey, cidrKey, sidecarObject, traceConfig,
  type NatEntry, type NatKey,
} from '../datapath/sidecar/structs.ts';
import { podEntries, toIpAddr } from '../datapath/sidecar/entries.ts';
import { resolvePodPolicy } from '../profiles/index.ts';
import { TCP_FLAG, tcp4Frame, tcp4Ports } from './packets.ts';
import { median, summarize, type Summary } from './stats.ts';

export const TC_GOAL_NS = 100;
const TC_ACT_UNSPEC = -1;

export interface TcProgOptions {
  /** Runs per call for the repeat method (default 1,000,000). */
  repeat?: number;
  /** Calls per single-run figure (default 20,000). */
  singleRuns?: number;
  /** Independent trials per figure; the spread is over trials (default 5). */
  trials?: number;
  objectPath?: string;
  onProgress?: (what: string) => void;
}

export type TraceState = 'off' | 'on, ring full' | 'on, reader draining';

export interface TcProgRow {
  id: string;
  program: string;
  packet: string;
  method: 'repeat' | 'single';
  trace: TraceState;
  /** ns per packet (median over trials, min–max). */
  ns: Summary;
  /** Median minus the empty program's median by the same method (>= 0). */
  netNs: number;
  /** Whether this path is held to the mission goal (real program, not the floor). */
  goal: boolean;
}

export interface TcProgResult {
  object: string;
  repeat: number;
  singleRuns: number;
  trials: number;
  goalNs: number;
  rows: TcProgRow[];
  /** Datapath counters after the runs (proof the intended paths ran). */
  stats: Record<string, number>;
}

const POD = '10.244.1.5';       // the meshed pod (this node)
const UNMESHED = '10.244.1.77'; // a pod of this node that is not meshed
const REMOTE = '10.244.2.9';    // a client on the other node
const APP_PORT = 8080;
const CLIENT_PORT = 40000;
const COOKIE = 0x6d77_6265_6e63_6801n; // a made-up netns cookie for the pod

interface Maps {
  inboundNat: BpfMap<NatKey, NatEntry>;
  stats: BpfMap<number, bigint>;
  trace: BpfMap<number, { enabled: number }>;
}

/** Runs every case; throws if a path did not do what it is meant to measure. */
export function benchTcPrograms(opts: TcProgOptions = {}): TcProgResult {
  const repeat = opts.repeat ?? 1_000_000;
  const singleRuns = opts.singleRuns ?? 20_000;
  const trials = opts.trials ?? 5;
  const progress = opts.onProgress ?? (() => {});
  const path = opts.objectPath ?? sidecarObject;
  const obj = BpfObject.load(path, { programs: ['sidecar_tc_to_pod', 'sidecar_tc_from_pod'] });
  const empty = returnProgram(PROG_TYPE.SCHED_CLS, TC_ACT_UNSPEC, 'mw_bench_empty');
  try {
    const policy = resolvePodPolicy('osm');
    // ifindex 1: a test run's skb is on the loopback device of the caller's netns.
    const e = podEntries(COOKIE, { ip4: POD, ifindex: 1 }, policy);
    const podCfg = obj.map('pod_config', codec.u64, podConfig);
    const lp = obj.map('local_pods', ipAddr, localPod);
    const pr = obj.map('port_rules', portRuleKey, codec.u8);
    const cr = obj.map('cidr_rules', cidrKey, codec.u8);
    for (const [k, v] of e.portRules) pr.update(k, v);
    for (const [k, v] of e.cidrRules) cr.update(k, v);
    for (const [k, v] of e.localPods) lp.update(k, v);
    podCfg.update(COOKIE, e.config);
    const nodeIps = obj.map('node_ips', ipAddr, codec.u8);
    for (const ip of ['10.244.1.1', '10.255.0.1', 'fd00:244:1::1', 'fd00:255::1']) nodeIps.update(toIpAddr(ip), 1);
    const maps: Maps = {
      inboundNat: obj.map('inbound_nat', natKey, natEntry),
      stats: obj.map('stats', codec.u32, codec.u64),
      trace: obj.map('trace_config', codec.u32, traceConfig),
    };
    const toPod = obj.program('sidecar_tc_to_pod').fd;
    const fromPod = obj.program('sidecar_tc_from_pod').fd;
    const flowKey: NatKey = { remote: toIpAddr(REMOTE), local: toIpAddr(POD), remote_port: CLIENT_PORT };

    const frames = {
      dataIn: tcp4Frame({ src: REMOTE, dst: POD, sport: CLIENT_PORT, dport: APP_PORT, flags: TCP_FLAG.ACK | TCP_FLAG.PSH, payload: 64 }),
      dataOut: tcp4Frame({ src: POD, dst: REMOTE, sport: APP_PORT, dport: CLIENT_PORT, flags: TCP_FLAG.ACK | TCP_FLAG.PSH, payload: 64 }),
      synUnmeshed: tcp4Frame({ src: REMOTE, dst: UNMESHED, sport: CLIENT_PORT, dport: APP_PORT, flags: TCP_FLAG.SYN }),
      syn: tcp4Frame({ src: REMOTE, dst: POD, sport: CLIENT_PORT, dport: APP_PORT, flags: TCP_FLAG.SYN }),
      replyDnat: tcp4Frame({ src: POD, dst: REMOTE, sport: policy.inboundPort, dport: CLIENT_PORT, flags: TCP_FLAG.ACK | TCP_FLAG.PSH, payload: 64 }),
    };

    const rows: TcProgRow[] = [];
    const setTrace = (on: boolean) => maps.trace.update(0, { enabled: on ? 1 : 0 });
    const check = (what: string, retval: number) => {
      if (retval !== TC_ACT_UNSPEC) throw new Error(`tc bench: ${what} returned ${retval}, expected TC_ACT_UNSPEC (-1)`);
    };

    // repeat method: mean of `repeat` runs per call, one call per trial.
    const byRepeat = (fd: number, frame: Buffer, what: string): Summary => {
      const xs: number[] = [];
      for (let t = 0; t < trials; t++) {
        const r = testRun(fd, { data: frame, repeat });
        check(what, r.retval);
        xs.push(r.durationNs);
      }
      return summarize(xs);
    };
    // single method: one run per call; per trial the median of its calls.
    const bySingle = (fd: number, frame: Buffer, what: string, between?: () => void): Summary => {
      const per = Math.max(1, Math.floor(singleRuns / trials));
      const xs: number[] = [];
      for (let t = 0; t < trials; t++) {
        const ds = new Array<number>(per);
        for (let i = 0; i < per; i++) {
          const r = testRun(fd, { data: frame });
          check(what, r.retval);
          ds[i] = r.durationNs;
          between?.();
        }
        xs.push(median(ds));
      }
      return summarize(xs);
    };
    const row = (r: Omit<TcProgRow, 'netNs'>, floor: Summary) =>
      rows.push({ ...r, netNs: Math.max(0, r.ns.median - floor.median) });

    // Floors.
    progress('tc programs: empty program (floor)');
    const floorRepeat = byRepeat(empty.fd, frames.dataIn, 'empty program');
    const floorSingle = bySingle(empty.fd, frames.dataIn, 'empty program');
    row({ id: 'empty.repeat', program: 'empty (r0 = -1)', packet: 'any', method: 'repeat', trace: 'off', ns: floorRepeat, goal: false }, floorRepeat);
    row({ id: 'empty.single', program: 'empty (r0 = -1)', packet: 'any', method: 'single', trace: 'off', ns: floorSingle, goal: false }, floorSingle);

    // Fast paths: the packet is left alone, so N repetitions measure it exactly.
    const fast: [string, number, string, Buffer, string][] = [
      ['to_pod.data_unknown', toPod, 'sidecar_tc_to_pod', frames.dataIn, 'data, no NAT entry (fast path)'],
      ['from_pod.data_unknown', fromPod, 'sidecar_tc_from_pod', frames.dataOut, 'data, no NAT entry (fast path)'],
      ['to_pod.syn_unmeshed', toPod, 'sidecar_tc_to_pod', frames.synUnmeshed, 'SYN to an unmeshed pod'],
    ];
    const fastRows = (trace: boolean) => {
      for (const [id, fd, program, frame, packet] of fast) {
        progress(`tc programs: ${id}${trace ? ' (trace on)' : ''}`);
        row({ id: `${id}${trace ? '.trace_full' : ''}`, program, packet, method: 'repeat', trace: trace ? 'on, ring full' : 'off',
          ns: byRepeat(fd, frame, id), goal: true }, floorRepeat);
      }
    };
    fastRows(false);
    // The same fast path one run per call: how much the single method's cold caches add.
    progress('tc programs: to_pod.data_unknown (single)');
    row({ id: 'to_pod.data_unknown.single', program: 'sidecar_tc_to_pod', packet: 'data, no NAT entry (fast path)', method: 'single', trace: 'off',
      ns: bySingle(toPod, frames.dataIn, 'data unknown'), goal: true }, floorSingle);

    // The DNAT path: a new flow's SYN to the meshed pod creates an inbound_nat
    // entry and rewrites the port; the entry is removed between runs so every
    // run is a new flow. First a sanity run: the port must come out rewritten.
    const dropEntry = () => { maps.inboundNat.delete(flowKey); };
    const first = testRun(toPod, { data: frames.syn, dataOutSize: frames.syn.length });
    if (tcp4Ports(first.dataOut!).dport !== policy.inboundPort) {
      throw new Error(`tc bench: the SYN to the meshed pod was not DNAT-ed to ${policy.inboundPort} (dport ${tcp4Ports(first.dataOut!).dport})`);
    }
    dropEntry();
    progress('tc programs: SYN DNAT (trace off)');
    const synOff = bySingle(toPod, frames.syn, 'SYN DNAT', dropEntry);
    row({ id: 'to_pod.syn_dnat', program: 'sidecar_tc_to_pod', packet: 'SYN of a new flow → NAT entry + DNAT', method: 'single', trace: 'off', ns: synOff, goal: true }, floorSingle);

    // Trace on with a reader that keeps up: every decision reserves, fills and submits an event.
    progress('tc programs: SYN DNAT (trace on, reader draining)');
    setTrace(true);
    let events = 0;
    const reader = new RingBufferReader(obj.mapInfo('trace_events').fd, () => { events++; });
    try {
      reader.consume();
      const synDrained = bySingle(toPod, frames.syn, 'SYN DNAT', () => { dropEntry(); reader.consume(); });
      if (events === 0) throw new Error('tc bench: trace on, but no trace event was read');
      row({ id: 'to_pod.syn_dnat.trace_drained', program: 'sidecar_tc_to_pod', packet: 'SYN of a new flow → NAT entry + DNAT', method: 'single', trace: 'on, reader draining', ns: synDrained, goal: true }, floorSingle);
    } finally {
      reader.close();
    }

    // Trace on with nobody reading: fill the ring buffer, then every event is a failed reserve + a drop count.
    progress('tc programs: SYN DNAT (trace on, ring full)');
    const dropped = () => statValue(maps.stats, 'trace_dropped');
    for (let i = 0; i < 100_000 && dropped() === 0; i++) {
      testRun(toPod, { data: frames.syn });
      dropEntry();
    }
    if (dropped() === 0) throw new Error('tc bench: the trace ring buffer never filled');
    const synFull = bySingle(toPod, frames.syn, 'SYN DNAT', dropEntry);
    row({ id: 'to_pod.syn_dnat.trace_full', program: 'sidecar_tc_to_pod', packet: 'SYN of a new flow → NAT entry + DNAT', method: 'single', trace: 'on, ring full', ns: synFull, goal: true }, floorSingle);
    fastRows(true); // they emit no event: the switch must cost them nothing
    setTrace(false);

    // An established DNAT-ed flow: the entry stays, each run gets a fresh packet.
    testRun(toPod, { data: frames.syn });
    progress('tc programs: data of a DNAT-ed flow');
    row({ id: 'to_pod.data_dnat', program: 'sidecar_tc_to_pod', packet: 'data of a DNAT-ed flow → port rewrite', method: 'single', trace: 'off',
      ns: bySingle(toPod, frames.dataIn, 'data DNAT'), goal: true }, floorSingle);
    row({ id: 'from_pod.reply_dnat', program: 'sidecar_tc_from_pod', packet: 'reply of a DNAT-ed flow → rewrite back', method: 'single', trace: 'off',
      ns: bySingle(fromPod, frames.replyDnat, 'reply un-DNAT'), goal: true }, floorSingle);
    const check2 = testRun(fromPod, { data: frames.replyDnat, dataOutSize: frames.replyDnat.length });
    if (tcp4Ports(check2.dataOut!).sport !== APP_PORT) throw new Error('tc bench: the reply of a DNAT-ed flow was not rewritten back to the app port');

    rows.sort((a, b) => ROW_ORDER.indexOf(a.id) - ROW_ORDER.indexOf(b.id));
    const stats: Record<string, number> = {};
    for (const name of STATS) stats[name] = statValue(maps.stats, name);
    return { object: path, repeat, singleRuns, trials, goalNs: TC_GOAL_NS, rows, stats };
  } finally {
    empty.close();
    obj.close();
  }
}

/** Report order: floors, per-packet paths, per-connection path, then the trace switch. */
const ROW_ORDER = [
  'empty.repeat', 'empty.single', 'to_pod.data_unknown', 'from_pod.data_unknown', 'to_pod.syn_unmeshed',
  'to_pod.data_unknown.single', 'to_pod.data_dnat', 'from_pod.reply_dnat', 'to_pod.syn_dnat',
  'to_pod.data_unknown.trace_full', 'from_pod.data_unknown.trace_full', 'to_pod.syn_unmeshed.trace_full',
  'to_pod.syn_dnat.trace_full', 'to_pod.syn_dnat.trace_drained',
];

function statValue(stats: BpfMap<number, bigint>, name: (typeof STATS)[number]): number {
  const v = stats.lookupPerCpu(STATS.indexOf(name)) ?? [];
  return Number(v.reduce((a, b) => a + b, 0n));
}

/**
 * The worst program path measured the way the goal is stated (many repeats,
 * trace off), net of the empty program. The one-run-per-call rows (rewrites,
 * the SYN that creates a NAT entry) are reported beside it: they carry cold
 * caches and the SYN is a per-connection cost.
 */
export function worstTcPath(r: TcProgResult): TcProgRow | undefined {
  return r.rows.filter((x) => x.goal && x.trace === 'off' && x.method === 'repeat').sort((a, b) => b.netNs - a.netNs)[0];
}

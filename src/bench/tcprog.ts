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
import { BpfObject, RingBufferReader, returnProgram, testRun, PROG_TYPE, type BpfMap } from '../bpf/index.ts';
import { STATS, sidecarObject, type NatKey } from '../datapath/sidecar/structs.ts';
import { SIDECAR_MAP, SIDECAR_PROG, openSidecarMaps } from '../datapath/sidecar/object.ts';
import { podEntries, toIpAddr } from '../datapath/sidecar/entries.ts';
import { resolvePodPolicy } from '../profiles/index.ts';
import { TCP_FLAG, buildFrame } from '../bpf/testing/packets.ts';
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

/** Runs every case; throws if a path did not do what it is meant to measure. */
export function benchTcPrograms(opts: TcProgOptions = {}): TcProgResult {
  const repeat = opts.repeat ?? 1_000_000;
  const singleRuns = opts.singleRuns ?? 20_000;
  const trials = opts.trials ?? 5;
  const progress = opts.onProgress ?? (() => {});
  const path = opts.objectPath ?? sidecarObject;
  const obj = BpfObject.load(path, { programs: [SIDECAR_PROG.toPod, SIDECAR_PROG.fromPod] });
  const empty = returnProgram(PROG_TYPE.SCHED_CLS, TC_ACT_UNSPEC, 'mw_bench_empty');
  try {
    const policy = resolvePodPolicy('osm');
    // ifindex 1: a test run's skb is on the loopback device of the caller's netns.
    const e = podEntries(COOKIE, { ip4: POD, ifindex: 1 }, policy);
    const maps = openSidecarMaps(obj);
    for (const [k, v] of e.portRules) maps.portRules.update(k, v);
    for (const [k, v] of e.cidrRules) maps.cidrRules.update(k, v);
    for (const [k, v] of e.localPods) maps.localPods.update(k, v);
    maps.podConfig.update(COOKIE, e.config);
    for (const ip of ['10.244.1.1', '10.255.0.1', 'fd00:244:1::1', 'fd00:255::1']) maps.nodeIps.update(toIpAddr(ip), 1);
    const toPod = obj.program(SIDECAR_PROG.toPod).fd;
    const fromPod = obj.program(SIDECAR_PROG.fromPod).fd;
    const flowKey: NatKey = { remote: toIpAddr(REMOTE), local: toIpAddr(POD), remote_port: CLIENT_PORT };

    const frames = {
      dataIn: buildFrame({ src: REMOTE, dst: POD, sport: CLIENT_PORT, dport: APP_PORT, flags: TCP_FLAG.ACK | TCP_FLAG.PSH, payload: 64 }),
      dataOut: buildFrame({ src: POD, dst: REMOTE, sport: APP_PORT, dport: CLIENT_PORT, flags: TCP_FLAG.ACK | TCP_FLAG.PSH, payload: 64 }),
      synUnmeshed: buildFrame({ src: REMOTE, dst: UNMESHED, sport: CLIENT_PORT, dport: APP_PORT, flags: TCP_FLAG.SYN }),
      syn: buildFrame({ src: REMOTE, dst: POD, sport: CLIENT_PORT, dport: APP_PORT, flags: TCP_FLAG.SYN }),
      replyDnat: buildFrame({ src: POD, dst: REMOTE, sport: policy.inboundPort, dport: CLIENT_PORT, flags: TCP_FLAG.ACK | TCP_FLAG.PSH, payload: 64 }),
    };

    const rows: TcProgRow[] = [];
    const setTrace = (on: boolean) => maps.traceConfig.update(0, { enabled: on ? 1 : 0 });
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
      ['to_pod.data_unknown', toPod, SIDECAR_PROG.toPod, frames.dataIn, 'data, no NAT entry (fast path)'],
      ['from_pod.data_unknown', fromPod, SIDECAR_PROG.fromPod, frames.dataOut, 'data, no NAT entry (fast path)'],
      ['to_pod.syn_unmeshed', toPod, SIDECAR_PROG.toPod, frames.synUnmeshed, 'SYN to an unmeshed pod'],
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
    row({ id: 'to_pod.data_unknown.single', program: SIDECAR_PROG.toPod, packet: 'data, no NAT entry (fast path)', method: 'single', trace: 'off',
      ns: bySingle(toPod, frames.dataIn, 'data unknown'), goal: true }, floorSingle);

    // The DNAT path: a new flow's SYN to the meshed pod creates an inbound_nat
    // entry and rewrites the port; the entry is removed between runs so every
    // run is a new flow. (That the rewrites happen is test/kernel/tc-programs.test.ts's job.)
    const dropEntry = () => { maps.inboundNat.delete(flowKey); };
    progress('tc programs: SYN DNAT (trace off)');
    const synOff = bySingle(toPod, frames.syn, 'SYN DNAT', dropEntry);
    row({ id: 'to_pod.syn_dnat', program: SIDECAR_PROG.toPod, packet: 'SYN of a new flow → NAT entry + DNAT', method: 'single', trace: 'off', ns: synOff, goal: true }, floorSingle);

    // Trace on with a reader that keeps up: every decision reserves, fills and submits an event.
    progress('tc programs: SYN DNAT (trace on, reader draining)');
    setTrace(true);
    let events = 0;
    const reader = new RingBufferReader(obj.mapInfo(SIDECAR_MAP.traceEvents).fd, () => { events++; });
    try {
      reader.consume();
      const synDrained = bySingle(toPod, frames.syn, 'SYN DNAT', () => { dropEntry(); reader.consume(); });
      if (events === 0) throw new Error('tc bench: trace on, but no trace event was read');
      row({ id: 'to_pod.syn_dnat.trace_drained', program: SIDECAR_PROG.toPod, packet: 'SYN of a new flow → NAT entry + DNAT', method: 'single', trace: 'on, reader draining', ns: synDrained, goal: true }, floorSingle);
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
    row({ id: 'to_pod.syn_dnat.trace_full', program: SIDECAR_PROG.toPod, packet: 'SYN of a new flow → NAT entry + DNAT', method: 'single', trace: 'on, ring full', ns: synFull, goal: true }, floorSingle);
    fastRows(true); // they emit no event: the switch must cost them nothing
    setTrace(false);

    // An established DNAT-ed flow: the entry stays, each run gets a fresh packet.
    testRun(toPod, { data: frames.syn });
    progress('tc programs: data of a DNAT-ed flow');
    row({ id: 'to_pod.data_dnat', program: SIDECAR_PROG.toPod, packet: 'data of a DNAT-ed flow → port rewrite', method: 'single', trace: 'off',
      ns: bySingle(toPod, frames.dataIn, 'data DNAT'), goal: true }, floorSingle);
    row({ id: 'from_pod.reply_dnat', program: SIDECAR_PROG.fromPod, packet: 'reply of a DNAT-ed flow → rewrite back', method: 'single', trace: 'off',
      ns: bySingle(fromPod, frames.replyDnat, 'reply un-DNAT'), goal: true }, floorSingle);

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

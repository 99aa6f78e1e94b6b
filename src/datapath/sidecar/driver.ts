// SPDX-License-Identifier: Apache-2.0
// The eBPF sidecar-mode driver of one node: loads sidecar.bpf.o (bpf/sidecar/),
// attaches its cgroup programs to the node's cgroup, and turns "pod P is
// meshed with policy X" into map entries (entries.ts) plus tc programs on the
// pod's host-side veth for cross-node inbound.
//
// Follow one connection: app connect() -> mwsc_connect4 (C) reads
// pod_config[netns cookie] written by mesh() below -> rewrites to the proxy's
// outbound port, keeps the original in origin_by_sock -> mwsc_sockops
// hands it to the proxy's accepted socket -> mwsc_getsockopt answers the
// proxy's SO_ORIGINAL_DST.
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { BpfObject, BpfMap, Link, TcFilter, BpfError, RingBufferReader, type Direction, type Program } from '../../bpf/index.ts';
import { decodeTrace, type TraceRecord } from './trace.ts';
import { netnsCookie, withNetns } from '../../sys/netns.ts';
import type { PodPolicy } from '../../profiles/index.ts';
import type { InterceptionDriver, Limitation, PodRef } from '../driver.ts';
import { podEntries, toIpAddr, type PodEntries } from './entries.ts';
import { SIDECAR_CGROUP_PROGS, SIDECAR_TC_PROG, openSidecarMaps } from './object.ts';
import {
  NAT_F, STATS, sidecarObject,
  type CidrKey, type TraceConfig, type IpAddr, type LocalPod, type NatEntry, type NatKey, type Origin, type PodConfig, type PortRuleKey, type StatName, type TupleKey,
} from './structs.ts';

export interface SidecarEbpfOptions {
  /** bpffs directory for this driver's pins (maps/, links/). */
  pinRoot: string;
  /** cgroup2 directory whose processes are subject to capture (the node's pods). */
  cgroupPath: string;
  /** Netns holding the pods' host-side veths (default: the caller's). */
  nodeNetnsPath?: string;
  /** Node addresses: traffic from them (kubelet probes) is never captured inbound. */
  nodeIps: string[];
  /** tc attachment: tcx links (kernel >= 6.6), legacy cls_bpf, or tcx with legacy fallback. */
  tc?: 'auto' | 'tcx' | 'legacy';
  /** Priority of our legacy cls_bpf filters (lower runs first). */
  legacyTcPriority?: number;
  objectPath?: string;
}

/** Linux keeps a TIME_WAIT socket this long (TCP_TIMEWAIT_LEN), plus a margin. */
export const NAT_TIME_WAIT_NS = 65n * 1_000_000_000n;
/** A SYN is retried for about 127 s (tcp_syn_retries = 6), plus a margin. */
export const NAT_HANDSHAKE_NS = 150n * 1_000_000_000n;
const NAT_SWEEP_MS = 10_000;
/** How soon a quiet trace is shown (the datapath batches reader wakeups). */
const TRACE_DRAIN_MS = 50;

const CGROUP_PROGRAMS = SIDECAR_CGROUP_PROGS;
const TC_PROGRAMS = SIDECAR_TC_PROG;

type TcAttachment = { kind: 'tcx'; link: Link } | { kind: 'legacy'; filter: TcFilter };

interface MeshedPod { ref: PodRef; cookie: bigint; entries: PodEntries; tc: TcAttachment[] }

interface Maps {
  podConfig: BpfMap<bigint, PodConfig>;
  localPods: BpfMap<IpAddr, LocalPod>;
  portRules: BpfMap<PortRuleKey, number>;
  cidrRules: BpfMap<CidrKey, number>;
  originByTuple: BpfMap<TupleKey, Origin>;
  inboundNat: BpfMap<NatKey, NatEntry>;
  nodeIps: BpfMap<IpAddr, number>;
  stats: BpfMap<number, bigint>;
  traceConfig: BpfMap<number, TraceConfig>;
}

export class SidecarEbpfDriver implements InterceptionDriver {
  readonly mode = 'ebpf' as const;
  readonly opts: SidecarEbpfOptions;
  #obj: BpfObject | undefined;
  #maps: Maps | undefined;
  #links: Link[] = [];
  readonly #pods = new Map<string, MeshedPod>();
  #sweep: NodeJS.Timeout | undefined;

  constructor(opts: SidecarEbpfOptions) {
    this.opts = opts;
  }

  /**
   * Loads the datapath and attaches it. Restart-safe: maps pinned by an
   * earlier run are reused (libbpf pin reuse), and pinned links get the new
   * program in place (link update), so capture never stops.
   */
  async start(): Promise<void> {
    if (this.#obj) return;
    const obj = BpfObject.load(this.opts.objectPath ?? sidecarObject, { pinRoot: this.opts.pinRoot });
    const fresh: Link[] = [];
    try {
      this.#maps = openSidecarMaps(obj);
      for (const ip of this.opts.nodeIps) this.#maps.nodeIps.update(toIpAddr(ip), 1);
      for (const name of CGROUP_PROGRAMS) {
        const pin = join(this.opts.pinRoot, 'links', name);
        let link: Link;
        if (existsSync(pin)) {
          link = Link.open(pin);
          link.update(obj.program(name));
        } else {
          link = Link.attachCgroup(obj.program(name), this.opts.cgroupPath);
          fresh.push(link);
          link.pin(pin);
        }
        this.#links.push(link);
      }
      this.#obj = obj;
      this.#sweep = setInterval(() => this.expireNat(), NAT_SWEEP_MS).unref();
    } catch (e) {
      for (const l of fresh) l.destroy();
      for (const l of this.#links) l.close();
      this.#links = [];
      this.#maps = undefined;
      obj.close();
      throw e;
    }
  }

  /** Whether an earlier run left this driver's pins (maps/links) behind to adopt. */
  hasPins(): boolean {
    return existsSync(join(this.opts.pinRoot, 'links'));
  }

  #need(): { obj: BpfObject; maps: Maps } {
    if (!this.#obj || !this.#maps) throw new Error('sidecar eBPF driver not started');
    return { obj: this.#obj, maps: this.#maps };
  }

  async mesh(pod: PodRef, policy: PodPolicy): Promise<void> {
    const { obj, maps } = this.#need();
    const cookie = netnsCookie(pod.netnsPath);
    const entries = podEntries(cookie, { ip4: pod.ip4, ip6: pod.ip6, ifindex: pod.hostVeth?.ifindex }, policy);
    const previous = this.#pods.get(pod.id);
    if (previous) this.#removeEntries(previous);

    // Rules before pod_config: a pod becomes "managed" only once its rules exist.
    const undo: (() => void)[] = [];
    try {
      for (const [k, v] of entries.portRules) { maps.portRules.update(k, v); undo.push(() => maps.portRules.delete(k)); }
      for (const [k, v] of entries.cidrRules) { maps.cidrRules.update(k, v); undo.push(() => maps.cidrRules.delete(k)); }
      for (const [k, v] of entries.localPods) { maps.localPods.update(k, v); undo.push(() => maps.localPods.delete(k)); }
      maps.podConfig.update(cookie, entries.config);
      undo.push(() => maps.podConfig.delete(cookie));
      const tc = pod.hostVeth ? this.#attachTc(obj, pod.hostVeth) : (previous?.tc ?? []);
      this.#pods.set(pod.id, { ref: pod, cookie, entries, tc });
    } catch (e) {
      for (const u of undo.reverse()) { try { u(); } catch { /* best effort */ } }
      this.#pods.delete(pod.id);
      if (previous) for (const t of previous.tc) this.#detachTc(t);
      throw e instanceof BpfError ? new Error(`mesh ${pod.id}: ${e.message}`, { cause: e }) : e;
    }
    if (previous && pod.hostVeth) for (const t of previous.tc) this.#detachTc(t);
  }

  async unmesh(pod: PodRef): Promise<void> {
    const p = this.#pods.get(pod.id);
    if (!p) return;
    this.#removeEntries(p);
    for (const t of p.tc) this.#detachTc(t);
    this.#pods.delete(pod.id);
  }

  /** Deletes a pod's entries, pod_config first so it stops being managed at once. */
  #removeEntries(p: MeshedPod): void {
    const { maps } = this.#need();
    maps.podConfig.delete(p.cookie);
    for (const [k] of p.entries.localPods) maps.localPods.delete(k);
    for (const [k] of p.entries.portRules) maps.portRules.delete(k);
    for (const [k] of p.entries.cidrRules) maps.cidrRules.delete(k);
  }

  #attachTc(obj: BpfObject, veth: { name: string; ifindex: number }): TcAttachment[] {
    const attach = (dir: Direction, prog: Program): TcAttachment => {
      const mode = this.opts.tc ?? 'auto';
      const pin = join(this.opts.pinRoot, 'links', 'tc', `${veth.ifindex}-${dir}`);
      if (existsSync(pin)) { // left by an earlier run: swap the program in place
        const link = Link.open(pin);
        link.update(prog);
        return { kind: 'tcx', link };
      }
      if (mode !== 'legacy') {
        try {
          const link = Link.attachTcx(prog, veth.ifindex, dir);
          link.pin(pin);
          return { kind: 'tcx', link };
        } catch (e) {
          if (mode === 'tcx' || !(e instanceof BpfError) || e.errno !== 22) throw e; // EINVAL: no tcx
        }
      }
      const priority = this.opts.legacyTcPriority ?? 0xc000;
      return { kind: 'legacy', filter: TcFilter.attach(prog, veth.ifindex, dir, { priority, handle: 1 }) };
    };
    const inNode = <T>(fn: () => T): T => (this.opts.nodeNetnsPath ? withNetns(this.opts.nodeNetnsPath, fn) : fn());
    return inNode(() => {
      const done: TcAttachment[] = [];
      try {
        for (const dir of ['ingress', 'egress'] as const) done.push(attach(dir, obj.program(TC_PROGRAMS[dir])));
        return done;
      } catch (e) {
        for (const t of done) this.#detachTc(t);
        throw e;
      }
    });
  }

  #detachTc(t: TcAttachment): void {
    if (t.kind === 'tcx') t.link.destroy();
    else if (this.opts.nodeNetnsPath) withNetns(this.opts.nodeNetnsPath, () => t.filter.detach());
    else t.filter.detach();
  }

  /**
   * Lets go of this process's handles and leaves everything attached and
   * pinned: what an agent does on shutdown or upgrade (traffic keeps flowing).
   */
  async close(): Promise<void> {
    clearInterval(this.#sweep);
    for (const p of this.#pods.values()) for (const t of p.tc) if (t.kind === 'tcx') t.link.close();
    this.#pods.clear();
    for (const l of this.#links) l.close();
    this.#links = [];
    this.#obj?.close();
    this.#obj = undefined;
    this.#maps = undefined;
  }

  /** Removes everything this driver made on the node: entries, tc, links, pins. */
  async stop(): Promise<void> {
    clearInterval(this.#sweep);
    for (const p of [...this.#pods.values()]) await this.unmesh(p.ref);
    for (const l of this.#links) l.destroy();
    this.#links = [];
    this.#obj?.close();
    this.#obj = undefined;
    this.#maps = undefined;
    rmSync(this.opts.pinRoot, { recursive: true, force: true });
  }

  limitations(): Limitation[] {
    return [];
  }

  /** Datapath counters summed over CPUs, by name (enum mw_stat). */
  stats(): Record<StatName, bigint> {
    const { maps } = this.#need();
    const out = {} as Record<StatName, bigint>;
    STATS.forEach((name, i) => { out[name] = (maps.stats.lookupPerCpu(i) ?? []).reduce((a, b) => a + b, 0n); });
    return out;
  }

  /** Entries per map (per-connection maps must drain to 0 when connections close). */
  mapEntryCounts(): Record<string, number> {
    const { maps } = this.#need();
    return {
      pod_config: maps.podConfig.count(),
      local_pods: maps.localPods.count(),
      port_rules: maps.portRules.count(),
      cidr_rules: maps.cidrRules.count(),
      origin_by_tuple: maps.originByTuple.count(),
      inbound_nat: maps.inboundNat.count(),
      node_ips: maps.nodeIps.count(),
    };
  }

  /**
   * Deletes the inbound_nat entries the kernel no longer needs, by its own
   * timers (see struct nat_entry): TIME_WAIT over, or a handshake that never
   * completed. `nowNs` is CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns().
   * Returns how many were deleted.
   */
  expireNat(nowNs: bigint = process.hrtime.bigint()): number {
    if (!this.#maps) return 0;
    const nat = this.#maps.inboundNat;
    let n = 0;
    for (const [k, v] of nat.entries()) {
      const age = nowNs - v.since_ns;
      const done = v.flags & NAT_F.TIME_WAIT ? age > NAT_TIME_WAIT_NS : !(v.flags & NAT_F.ESTABLISHED) && age > NAT_HANDSHAKE_NS;
      if (done && nat.delete(k)) n++;
    }
    return n;
  }

  /** Turns datapath tracing on or off at run time (a map write; no reload). */
  setTrace(enabled: boolean): void {
    this.#need().maps.traceConfig.update(0, { enabled: enabled ? 1 : 0 });
  }

  /** Reads trace events from the ring buffer on the event loop until closed. */
  traceReader(onEvent: (r: TraceRecord) => void): RingBufferReader {
    const { obj } = this.#need();
    // The datapath wakes the reader only once MW_TRACE_WAKEUP_BYTES are pending.
    return new RingBufferReader(obj.mapInfo('trace_events').fd, (b) => onEvent(decodeTrace(b)), { drainMs: TRACE_DRAIN_MS });
  }

  /** The meshed pods this driver knows, by id. */
  pods(): { id: string; cookie: bigint }[] {
    return [...this.#pods.values()].map((p) => ({ id: p.ref.id, cookie: p.cookie }));
  }
}

// SPDX-License-Identifier: Apache-2.0
// The sidecar dataplane on the eBPF engine, for one node: loads
// bpf/sidecar/ (one object), attaches its cgroup programs to the node's
// cgroup, and turns "sandbox S is meshed with plan X" into map entries
// (entries.ts) plus tc programs on the pod's host-side veth (../ebpf/tc.ts)
// for cross-node inbound.
//
// Follow one connection: app connect() -> mwsc_connect4 (bpf/sidecar/connect.bpf.c)
// reads pod_config[netns cookie] written by mesh() below -> rewrites to the
// sidecar's outbound port, keeps the original in origin_by_sock -> mwsc_sockops
// hands it to the sidecar's accepted socket -> mwsc_getsockopt answers the
// sidecar's SO_ORIGINAL_DST.
import { existsSync, rmSync } from 'node:fs';
import { BpfObject, Link, MapProgAttachment, BpfError, type Program } from '../../bpf/index.ts';
import { requireDatapath } from '../../bpf/features.ts';
import { ERRNO } from '../../bpf/uapi.ts';
import { run } from '../../sys/exec.ts';
import { decodeTrace, formatAddr } from './trace.ts';
import { netnsCookie } from '../../sys/netns.ts';
import { limitations as deriveLimitations, type DatapathDriver, type DriverFeatures, type Limitation, type SidecarPlan } from '../driver.ts';
import { firstIps, podName, type PodTarget } from '../pod.ts';
import type { TraceSource } from '../trace.ts';
import { TcAttacher, type TcMode } from '../ebpf/tc.ts';
import { pinLayout, type PinLayout } from '../ebpf/pins.ts';
import { DatapathUpgrade, type UpgradeReport } from '../ebpf/upgrade.ts';
import { ringTrace, sumStats } from '../ebpf/observe.ts';
import { podEntries, toIpAddr, type PodEntries } from './entries.ts';
import { SIDECAR_CGROUP_PROGS, SIDECAR_MAP, SIDECAR_PROG, SIDECAR_TC_PROG, openSidecarMaps, type SidecarMaps } from './object.ts';
import { runSockmapGate, type GateVerdict } from './sockgate.ts';
import { NAT_F, STATS, sidecarObject, type CidrKey, type DnsServerKey, type IpAddr, type PortRuleKey, type StatName } from './structs.ts';

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
  tc?: TcMode;
  /** Priority of our legacy cls_bpf filters (lower runs first). */
  legacyTcPriority?: number;
  objectPath?: string;
  /**
   * S4 (sockmap acceleration of app <-> sidecar on loopback): 'auto' (default)
   * turns it on only when the behaviour gate passes on this kernel; 'off';
   * 'force' turns it on whatever the gate says (benchmarks, tests of the
   * datapath itself; the verdict is still reported).
   */
  sockmap?: SockmapMode;
}

export type SockmapMode = 'auto' | 'off' | 'force';

/** What `meshwarp status` and the metrics say about S4. */
export interface SockmapState {
  enabled: boolean;
  mode: SockmapMode;
  reason: string;
  /** The gate's checks (absent when it did not run: mode off). */
  gate?: GateVerdict;
}

/** The gate runs once per process and object: the kernel does not change under a running agent. */
const gateRuns = new Map<string, Promise<GateVerdict>>();
function gateOnce(objectPath: string): Promise<GateVerdict> {
  let p = gateRuns.get(objectPath);
  if (!p) { p = runSockmapGate({ objectPath }); gateRuns.set(objectPath, p); }
  return p;
}

/** Linux keeps a TIME_WAIT socket this long (TCP_TIMEWAIT_LEN), plus a margin. */
export const NAT_TIME_WAIT_NS = 65n * 1_000_000_000n;
/** A SYN is retried for about 127 s (tcp_syn_retries = 6), plus a margin. */
export const NAT_HANDSHAKE_NS = 150n * 1_000_000_000n;
const NAT_SWEEP_MS = 10_000;
export const LEGACY_TC_PRIORITY = 0xc000;


/** What this run applied for one sandbox. */
interface Applied { pod: PodTarget; cookie: bigint; entries: PodEntries }

type Maps = SidecarMaps;

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const portKey = (k: PortRuleKey): string => `${k.netns_cookie}/${k.direction}/${k.port}`;
const cidrKeyText = (k: CidrKey): string => `${k.prefixlen}/${hex(k.netns_cookie)}/${hex(k.addr)}`;
const cookieOfCidr = (k: CidrKey): bigint => Buffer.from(k.netns_cookie).readBigUInt64BE();
const dnsKeyText = (k: DnsServerKey): string => `${k.netns_cookie}/${hex(k.addr.addr)}`;

export class SidecarEbpfDriver implements DatapathDriver<SidecarPlan> {
  readonly dataplane = 'sidecar' as const;
  readonly engine = 'ebpf' as const;
  readonly opts: SidecarEbpfOptions;
  readonly features: DriverFeatures;
  #obj: BpfObject | undefined;
  #maps: Maps | undefined;
  #links: Link[] = [];
  #tc: TcAttacher;
  readonly #pins: PinLayout;
  readonly #pods = new Map<string, Applied>();
  #sweep: NodeJS.Timeout | undefined;

  constructor(opts: SidecarEbpfOptions) {
    this.opts = opts;
    this.#pins = pinLayout(opts.pinRoot);
    this.#tc = new TcAttacher({
      pinDir: this.#pins.tc, mode: opts.tc ?? 'auto', auto: 'shared',
      priority: opts.legacyTcPriority ?? LEGACY_TC_PRIORITY, nodeNetns: opts.nodeNetnsPath,
    });
    this.features = {
      trace: this.#traceSource(), stats: () => this.stats(), mapCounts: () => this.mapEntryCounts(), sweep: (now) => this.expireNat(now),
      getsockoptPassthrough: true, cgroupScope: true, sockmap: false,
      dnsFailOpen: true, // a socket lookup of the DNS listener before every capture (bpf/sidecar/dns.h)
      sockmapState: () => this.sockmapState(), setSockmap: (on) => this.setSockmap(on),
    };
  }

  /** What the last start did with pinned maps (reused, migrated). */
  upgradeReport: UpgradeReport | undefined;

  readonly why: { sockmap?: string } = { sockmap: 'sockmap acceleration (S4): driver not started' };
  #sockmap: SockmapState = { enabled: false, mode: 'auto', reason: 'driver not started' };

  /**
   * Loads the datapath and attaches it. Restart-safe: maps pinned by an
   * earlier run are reused (libbpf pin reuse), and pinned links get the new
   * program in place (link update), so capture never stops.
   */
  async start(): Promise<void> {
    if (this.#obj) return;
    requireDatapath('sidecar'); // Linux < 5.15: refuse with the missing probes, not a verifier log (docs/kernels.md)
    // A first start that fails must not leave pinned maps behind (nothing would own them).
    const firstRun = !existsSync(this.opts.pinRoot);
    // Pinned maps of another object version: reused, migrated or refused (docs/upgrade.md).
    const upgrade = new DatapathUpgrade();
    let obj: BpfObject;
    try {
      obj = BpfObject.load(this.opts.objectPath ?? sidecarObject, { pinRoot: this.opts.pinRoot, prepare: (o) => upgrade.prepare(o) });
    } catch (e) { upgrade.abort(); throw e; }
    const fresh: Link[] = [];
    try {
      upgrade.migrate(obj);
      this.#maps = openSidecarMaps(obj);
      this.#writeNodeIps(this.opts.nodeIps);
      for (const name of SIDECAR_CGROUP_PROGS) {
        const pin = this.#pins.link(name);
        const oldPin = this.#pins.link(name.replace(/^mwsc_/, 'sidecar_'));
        let link: Link;
        if (existsSync(pin)) {
          link = Link.open(pin);
          link.update(obj.program(name));
        } else if (existsSync(oldPin)) {
          // Pinned by a build before the 15-character names: adopt it in place, re-pin under the new name.
          link = Link.open(oldPin);
          link.update(obj.program(name));
          link.pin(pin);
          rmSync(oldPin);
        } else {
          link = attachCgroupExplained(obj.program(name), this.opts.cgroupPath);
          fresh.push(link);
          link.pin(pin);
        }
        this.#links.push(link);
      }
      // The sk_msg verdict lives in the (pinned) sock_pairs map: attached again
      // on every start, it replaces the earlier run's for sockets enrolled from
      // now on; enrolled sockets keep theirs. Their entries leave only when they close.
      MapProgAttachment.attach(obj.program(SIDECAR_PROG.skMsg), obj.mapInfo(SIDECAR_MAP.sockPairs).fd, SIDECAR_MAP.sockPairs);
      // Every pod's tc programs too, before the new maps take the pins.
      this.#tc.updateAll({ egress: obj.program(SIDECAR_TC_PROG.egress), ingress: obj.program(SIDECAR_TC_PROG.ingress) });
      upgrade.commit(obj);
      this.upgradeReport = upgrade.report;
      this.#obj = obj;
      await this.#decideSockmap();
      this.#sweep = setInterval(() => this.expireNat(), NAT_SWEEP_MS).unref();
    } catch (e) {
      upgrade.abort();
      for (const l of fresh) l.destroy();
      for (const l of this.#links) l.close();
      this.#links = [];
      this.#maps = undefined;
      obj.close();
      if (firstRun) rmSync(this.opts.pinRoot, { recursive: true, force: true });
      throw e;
    }
  }

  /** Mode + gate -> the switch in sockmap_config (a flag: entries are never deleted here). */
  async #decideSockmap(): Promise<void> {
    const mode = this.opts.sockmap ?? 'auto';
    let gate: GateVerdict | undefined;
    let enabled = false;
    let reason: string;
    if (mode === 'off') {
      reason = 'off by configuration (sockmap: off)';
    } else {
      gate = await gateOnce(this.opts.objectPath ?? sidecarObject);
      enabled = mode === 'force' || gate.pass;
      reason = gate.pass ? `behaviour gate passed on ${gate.kernel} (${gate.reason})`
        : `${mode === 'force' ? 'forced on although the' : 'off: the'} behaviour gate failed on ${gate.kernel}: ${gate.reason}`;
    }
    this.#sockmap = { enabled, mode, reason, gate };
    this.#writeSockmapSwitch(enabled);
  }

  #writeSockmapSwitch(on: boolean): void {
    this.#need().maps.sockmapConfig.update(0, { enabled: on ? 1 : 0 });
    this.features.sockmap = on;
    this.why.sockmap = on ? undefined : this.#sockmap.reason;
  }

  /** S4's state for status and metrics. */
  sockmapState(): SockmapState {
    return { ...this.#sockmap };
  }

  /**
   * Flips the S4 switch at run time (a map write). Sockets already enrolled
   * stay enrolled; while off they send through TCP and, for order, keep doing
   * so; new connections are enrolled again once it is on.
   */
  setSockmap(on: boolean): void {
    this.#sockmap = { ...this.#sockmap, enabled: on, reason: on ? `switched on at run time (${this.#sockmap.reason})` : 'switched off at run time' };
    this.#writeSockmapSwitch(on);
  }

  #need(): { obj: BpfObject; maps: Maps } {
    if (!this.#obj || !this.#maps) throw new Error('sidecar eBPF driver not started');
    return { obj: this.#obj, maps: this.#maps };
  }

  /**
   * Writes the sandbox's entries over whatever is there (no moment without
   * them: a duplicate ADD or a restart changes nothing for live traffic),
   * then removes entries the previous plan had and this one has not.
   */
  async mesh(pod: PodTarget, plan: SidecarPlan): Promise<void> {
    const { obj, maps } = this.#need();
    const key = pod.key.sandboxId;
    const cookie = netnsCookie(pod.netns);
    const entries = podEntries(cookie, { ...firstIps(pod.ips), ifindex: pod.hostVeth?.ifindex, dnsServers: pod.dnsServers }, plan);
    const previous = this.#pods.get(key);
    const prevCookie = previous?.cookie;
    const undo: (() => void)[] = [];
    try {
      // Rules before pod_config: a pod becomes "managed" only once its rules exist.
      for (const [k, v] of entries.portRules) { maps.portRules.update(k, v); undo.push(() => maps.portRules.delete(k)); }
      for (const [k, v] of entries.cidrRules) { maps.cidrRules.update(k, v); undo.push(() => maps.cidrRules.delete(k)); }
      for (const [k, v] of entries.localPods) { maps.localPods.update(k, v); undo.push(() => maps.localPods.delete(k)); }
      for (const [k, v] of entries.dnsServers) { maps.dnsServers.update(k, v); undo.push(() => maps.dnsServers.delete(k)); }
      maps.podConfig.update(cookie, entries.config);
      undo.push(() => maps.podConfig.delete(cookie));
      if (pod.hostVeth) {
        this.#tc.attach(key, pod.hostVeth, { egress: obj.program(SIDECAR_TC_PROG.egress), ingress: obj.program(SIDECAR_TC_PROG.ingress) });
      }
    } catch (e) {
      if (!previous) for (const u of undo.reverse()) { try { u(); } catch { /* best effort */ } }
      throw e instanceof BpfError ? new Error(`mesh ${podName(pod.key)}: ${e.message}`, { cause: e }) : e;
    }
    this.#pods.set(key, { pod, cookie, entries });
    if (previous) this.#removeStale(previous, entries, prevCookie !== cookie);
  }

  /** Deletes what `previous` wrote and `next` does not (all of it when the netns changed). */
  #removeStale(previous: Applied, next: PodEntries, allOfIt: boolean): void {
    const { maps } = this.#need();
    const keep = allOfIt ? { ports: new Set<string>(), cidrs: new Set<string>(), ips: new Set<string>(), dns: new Set<string>() } : {
      ports: new Set(next.portRules.map(([k]) => portKey(k))),
      cidrs: new Set(next.cidrRules.map(([k]) => cidrKeyText(k))),
      ips: new Set(next.localPods.map(([k]) => hex(k.addr))),
      dns: new Set(next.dnsServers.map(([k]) => dnsKeyText(k))),
    };
    if (allOfIt) maps.podConfig.delete(previous.cookie);
    for (const [k] of previous.entries.localPods) if (!keep.ips.has(hex(k.addr))) this.#deleteLocalPod(k, previous.cookie);
    for (const [k] of previous.entries.portRules) if (!keep.ports.has(portKey(k))) maps.portRules.delete(k);
    for (const [k] of previous.entries.cidrRules) if (!keep.cidrs.has(cidrKeyText(k))) maps.cidrRules.delete(k);
    for (const [k] of previous.entries.dnsServers) if (!keep.dns.has(dnsKeyText(k))) maps.dnsServers.delete(k);
  }

  /** Deletes a local_pods entry only while it is still this sandbox's (an IP can move to another). */
  #deleteLocalPod(k: IpAddr, cookie: bigint): void {
    const maps = this.#need().maps;
    if (maps.localPods.lookup(k)?.netns_cookie === cookie) maps.localPods.delete(k);
  }

  async unmesh(pod: PodTarget): Promise<void> {
    const key = pod.key.sandboxId;
    const p = this.#pods.get(key);
    if (p) this.#removeEntries(p);
    this.#tc.detach(key);
    this.#pods.delete(key);
  }

  /** Deletes a sandbox's entries, pod_config first so it stops being managed at once. */
  #removeEntries(p: Applied): void {
    const { maps } = this.#need();
    maps.podConfig.delete(p.cookie);
    for (const [k] of p.entries.localPods) this.#deleteLocalPod(k, p.cookie);
    for (const [k] of p.entries.portRules) maps.portRules.delete(k);
    for (const [k] of p.entries.cidrRules) maps.cidrRules.delete(k);
    for (const [k] of p.entries.dnsServers) maps.dnsServers.delete(k);
  }

  async verify(pod: PodTarget): Promise<string | undefined> {
    const { maps } = this.#need();
    const p = this.#pods.get(pod.key.sandboxId);
    if (!p) return 'not meshed by this datapath';
    let cookie: bigint;
    try { cookie = netnsCookie(pod.netns); } catch (e) { return `netns ${pod.netns}: ${(e as Error).message}`; }
    if (cookie !== p.cookie) return `netns ${pod.netns} is another namespace than the one meshed`;
    if (!maps.podConfig.lookup(cookie)) return 'pod_config entry missing';
    for (const [k] of p.entries.localPods) {
      if (maps.localPods.lookup(k)?.netns_cookie !== cookie) return `local_pods entry for ${formatAddr(k)} missing or another sandbox's`;
    }
    return pod.hostVeth ? this.#tc.verify(pod.key.sandboxId, pod.hostVeth) : undefined;
  }

  async setNodeIps(ips: string[]): Promise<void> {
    this.opts.nodeIps = [...ips];
    if (this.#maps) this.#writeNodeIps(ips);
  }

  #writeNodeIps(ips: string[]): void {
    const m = this.#maps;
    if (!m) throw new Error('sidecar eBPF driver not started');
    const want = new Map(ips.map((ip) => [hex(toIpAddr(ip).addr), toIpAddr(ip)]));
    for (const k of [...m.nodeIps.keys()]) if (!want.has(hex(k.addr))) m.nodeIps.delete(k);
    for (const v of want.values()) m.nodeIps.update(v, 1);
  }

  /**
   * Removes every per-pod entry and tc attachment that no sandbox in `live`
   * owns: what a lost DEL, a crash mid-change or an earlier run left behind.
   */
  async sweepOrphans(live: ReadonlySet<string>): Promise<string[]> {
    const { maps } = this.#need();
    const removed: string[] = [];
    for (const [key, p] of [...this.#pods]) {
      if (live.has(key)) continue;
      await this.unmesh(p.pod);
      removed.push(key);
    }
    const cookies = new Set([...this.#pods.values()].map((p) => p.cookie));
    const ports = new Set([...this.#pods.values()].flatMap((p) => p.entries.portRules.map(([k]) => portKey(k))));
    const cidrs = new Set([...this.#pods.values()].flatMap((p) => p.entries.cidrRules.map(([k]) => cidrKeyText(k))));
    for (const c of [...maps.podConfig.keys()]) if (!cookies.has(c)) maps.podConfig.delete(c);
    for (const [k, v] of [...maps.localPods.entries()]) if (!cookies.has(v.netns_cookie)) maps.localPods.delete(k);
    for (const k of [...maps.portRules.keys()]) if (!ports.has(portKey(k))) maps.portRules.delete(k);
    for (const k of [...maps.cidrRules.keys()]) if (!cidrs.has(cidrKeyText(k)) || !cookies.has(cookieOfCidr(k))) maps.cidrRules.delete(k);
    const dns = new Set([...this.#pods.values()].flatMap((p) => p.entries.dnsServers.map(([k]) => dnsKeyText(k))));
    for (const k of [...maps.dnsServers.keys()]) if (!dns.has(dnsKeyText(k))) maps.dnsServers.delete(k);
    for (const key of this.#tc.keys()) {
      if (this.#pods.has(key)) continue;
      this.#tc.detach(key);
      if (!removed.includes(key)) removed.push(key);
    }
    return removed;
  }

  /** Lets go of this process's handles and leaves everything attached and pinned. */
  async release(): Promise<void> {
    clearInterval(this.#sweep);
    this.#pods.clear();
    for (const l of this.#links) l.close();
    this.#links = [];
    this.#obj?.close();
    this.#obj = undefined;
    this.#maps = undefined;
  }

  /** Removes everything this driver made on the node: entries, tc (also an earlier run's), links, pins. */
  async stop(): Promise<void> {
    clearInterval(this.#sweep);
    for (const p of [...this.#pods.values()]) await this.unmesh(p.pod);
    for (const key of this.#tc.keys()) this.#tc.detach(key);
    for (const l of this.#links) l.destroy();
    this.#links = [];
    this.#obj?.close();
    this.#obj = undefined;
    this.#maps = undefined;
    rmSync(this.opts.pinRoot, { recursive: true, force: true });
  }

  limitations(): Limitation[] {
    return deriveLimitations(this);
  }

  /** Datapath counters summed over CPUs, by name (enum mw_stat). */
  stats(): Record<StatName, bigint> {
    return sumStats(this.#need().maps.stats, STATS);
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
      dns_servers: maps.dnsServers.count(),
      sock_pairs: maps.sockPairs.count(),
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

  #traceSource(): TraceSource {
    return ringTrace({
      setSwitch: (on) => { this.#need().maps.traceConfig.update(0, { enabled: on ? 1 : 0 }); }, // a map write: no reload
      ringFd: () => this.#need().obj.mapInfo(SIDECAR_MAP.traceEvents).fd,
      decode: decodeTrace,
      cookies: () => new Map([...this.#pods.values()].map((p) => [String(p.cookie), podName(p.pod.key)])),
    });
  }
}

/**
 * Link.attachCgroup, with EPERM explained: the kernel refuses a multi-attach
 * link when the hook already holds a program attached exclusively or with
 * BPF_F_ALLOW_OVERRIDE. Say what is there and what to do.
 */
function attachCgroupExplained(prog: Program, cgroupPath: string): Link {
  try {
    return Link.attachCgroup(prog, cgroupPath);
  } catch (e) {
    if (!(e instanceof BpfError) || e.errno !== ERRNO.EPERM) throw e;
    let there = '';
    try {
      const out = JSON.parse(run(['bpftool', '-j', 'cgroup', 'show', cgroupPath])) as { id: number; attach_type: string; attach_flags: string; name: string }[];
      there = out.map((p) => `program ${p.id} "${p.name}" on ${p.attach_type}${p.attach_flags ? ` (${p.attach_flags})` : ' (exclusive)'}`).join('; ');
    } catch { /* bpftool missing: say what we know */ }
    throw new Error(`cannot attach ${prog.name} to cgroup ${cgroupPath}: the hook holds a program attached exclusively or with override`
      + `${there ? ` — ${there}` : ''}. meshwarp attaches beside other programs (multi-attach) and never replaces them: `
      + 'have that program attached with BPF_F_ALLOW_MULTI (e.g. `bpftool cgroup attach ... multi`), or detach it, then start the agent again.', { cause: e });
  }
}


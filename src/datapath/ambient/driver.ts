// SPDX-License-Identifier: Apache-2.0
// The ambient dataplane on the eBPF engine, for one node: loads bpf/ambient/
// (one object), enrols pods (am_pods/am_ifaces + tc on the host veth) and
// programs the node proxies that announced themselves (proxy.ts): a slot in
// am_proxies, tc ingress on the proxy's interface, its local-delivery route.
//
// Follow one connection: pod SYN -> mwam_from_pod (bpf/ambient/pod.bpf.c)
// finds no proxy socket for it -> bpf_redirect_peer to the active proxy with
// the "outbound" mark bit -> mwam_proxy_in (proxy.bpf.c) assigns it to the
// proxy's outbound listener -> the proxy's accepted socket has the original
// destination as its local address. (A SYN meeting the proxy's TIME_WAIT
// socket of the same tuple goes the kernel's way instead: mwam_tw_lookup,
// BPF sk_lookup in the proxy's netns, names the listener.)
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { BpfError, BpfObject, Link } from '../../bpf/index.ts';
import { requireDatapath } from '../../bpf/features.ts';
import { netnsCookie } from '../../sys/netns.ts';
import { limitations as deriveLimitations, type DatapathDriver, type DriverFeatures, type Limitation, type SidecarPlan } from '../driver.ts';
import { podName, type PodTarget } from '../pod.ts';
import type { TraceSource } from '../trace.ts';
import { TcAttacher, type TcMode } from '../ebpf/tc.ts';
import { pinLayout } from '../ebpf/pins.ts';
import { DatapathUpgrade, type UpgradeReport } from '../ebpf/upgrade.ts';
import { ringTrace, sumStats } from '../ebpf/observe.ts';
import { decodeTrace } from '../sidecar/trace.ts';
import { toIpAddr } from '../sidecar/entries.ts';
import { STATS, type IpAddr, type StatName } from '../sidecar/structs.ts';
import { AMBIENT_MAP, AMBIENT_PROG, AMBIENT_TC_PROG, openAmbientMaps, type AmbientMaps } from './object.ts';
import { AM_FAIL, AM_PROXY_F, EMPTY_PROXY, MAX_PROXIES, ambientObject, loadAmbientObject, type AmProxy, type FailPolicy } from './structs.ts';
import { forgetNeighbours, installProxyRouting, removeProxyRouting, resolveProxyLink, type NodeProxy, type ProxyLink } from './proxy.ts';

export interface AmbientEbpfOptions {
  /** bpffs directory for this driver's pins (maps/, links/). */
  pinRoot: string;
  /** Netns holding the pods' host-side veths (default: the caller's). */
  nodeNetnsPath?: string;
  nodeIps: string[];
  tc?: TcMode;
  legacyTcPriority?: number;
  objectPath?: string;
  /** What enrolled pods' new flows do while no node proxy is ready (default closed). */
  failPolicy?: FailPolicy;
  /** The two mark bits ambient may use (lower: "outbound capture", higher: "deliver locally"); default 0x30. */
  markMask?: number;
  /** Pods per node the maps are sized for (x4 addresses, x2 interfaces headroom); default: the object's. */
  maxPods?: number;
  /** Routing table (and rule priority) of local delivery in the node proxy's netns; default 15100. */
  routeTable?: number;
}

export const AMBIENT_LEGACY_TC_PRIORITY = 0xc100;
export const DEFAULT_MARK_MASK = 0x30;
export const DEFAULT_ROUTE_TABLE = 15100;

/** Splits a two-bit mask into its bits; anything else is an error. */
export function markBits(mask: number): { out: number; local: number } {
  if (!Number.isInteger(mask) || mask <= 0 || mask > 0xffffffff) throw new Error(`markMask: expected a 32-bit mask, got ${mask}`);
  const bits: number[] = [];
  for (let b = 0; b < 32; b++) if ((mask >>> b) & 1) bits.push((1 << b) >>> 0);
  if (bits.length !== 2) throw new Error(`markMask 0x${mask.toString(16)}: expected exactly two bits (outbound, local)`);
  return { out: bits[0], local: bits[1] };
}

interface Enrolled { pod: PodTarget; cookie: bigint; ifindex: number; addrs: IpAddr[]; dns: IpAddr[] }

/** A query whose reply never came is forgotten after this long (the sweep; replies delete their own). */
export const DNS_QUERY_TTL_NS = 30_000_000_000n;
interface Proxy { np: NodeProxy; slot: number; link: ProxyLink; cookie: bigint; seq: number }

const hex = (a: IpAddr): string => Buffer.from(a.addr).toString('hex');
const tcKeyOfProxy = (id: string): string => `proxy-${id}`;

export class AmbientEbpfDriver implements DatapathDriver<SidecarPlan> {
  readonly dataplane = 'ambient' as const;
  readonly engine = 'ebpf' as const;
  readonly opts: AmbientEbpfOptions;
  readonly features: DriverFeatures;
  readonly why = {
    'cgroup-scope': 'ambient captures at the pod\'s veth: every process of the pod netns',
    sockmap: 'no sockmap/sk_msg acceleration',
  };
  #obj: BpfObject | undefined;
  #maps: AmbientMaps | undefined;
  /** False where the kernel refuses the TIME_WAIT hand-off (loadAmbientObject). */
  twHandoff = true;
  readonly #tc: TcAttacher;
  readonly #proxyTc: TcAttacher;
  readonly #pods = new Map<string, Enrolled>();
  readonly #proxies = new Map<string, Proxy>();
  #seq = 0;
  readonly #marks: { out: number; local: number };

  constructor(opts: AmbientEbpfOptions) {
    this.opts = opts;
    this.#marks = markBits(opts.markMask ?? DEFAULT_MARK_MASK);
    const pins = pinLayout(opts.pinRoot);
    const priority = opts.legacyTcPriority ?? AMBIENT_LEGACY_TC_PRIORITY;
    this.#tc = new TcAttacher({ pinDir: pins.tc, mode: opts.tc ?? 'auto', auto: 'shared', priority, nodeNetns: opts.nodeNetnsPath });
    // The proxy's interface lives in its own netns: one attacher per call (nodeNetns differs).
    this.#proxyTc = new TcAttacher({ pinDir: `${pins.root}/links/tc-proxy`, mode: opts.tc ?? 'auto', priority });
    this.features = {
      trace: this.#traceSource(), stats: () => this.stats(), mapCounts: () => this.mapEntryCounts(),
      getsockoptPassthrough: true, cgroupScope: false, sockmap: false,
    };
  }

  #proxyAttacher(netns: string): TcAttacher {
    return new TcAttacher({ ...this.#proxyTc.opts, nodeNetns: netns });
  }

  async start(): Promise<void> {
    if (this.#obj) return;
    requireDatapath('ambient'); // a kernel that cannot load bpf/ambient: refuse with the missing probes (docs/kernels.md)
    const firstRun = !existsSync(this.opts.pinRoot);
    const maxEntries: Record<string, number> = {};
    if (this.opts.maxPods !== undefined) {
      if (!Number.isInteger(this.opts.maxPods) || this.opts.maxPods < 1) throw new Error(`maxPods: expected a positive integer, got ${this.opts.maxPods}`);
      maxEntries[AMBIENT_MAP.pods] = this.opts.maxPods * 4;
      maxEntries[AMBIENT_MAP.ifaces] = this.opts.maxPods * 2;
    }
    // Pinned maps of another object version: reused, migrated or refused (docs/upgrade.md).
    const upgrade = new DatapathUpgrade();
    let loaded: ReturnType<typeof loadAmbientObject>;
    try {
      loaded = loadAmbientObject(this.opts.objectPath ?? ambientObject, { pinRoot: this.opts.pinRoot, maxEntries, prepare: (o) => upgrade.prepare(o) });
    } catch (e) { upgrade.abort(); throw e; }
    const { obj, twHandoff } = loaded;
    this.twHandoff = twHandoff;
    try {
      upgrade.migrate(obj);
      this.#maps = openAmbientMaps(obj);
      this.#obj = obj;
      // A restart keeps the active proxy (pinned maps): traffic never notices the agent.
      const cur = this.#maps.node.lookup(0);
      this.#writeNode(cur?.active ?? 0);
      for (let slot = 0; slot < MAX_PROXIES; slot++) {
        const px = this.#maps.proxies.lookup(slot);
        if (px && px.flags & AM_PROXY_F.LIVE) this.#adopted.set(slot, px);
      }
      this.#updatePinnedPrograms(obj);
      upgrade.commit(obj);
      this.upgradeReport = upgrade.report;
    } catch (e) {
      upgrade.abort();
      this.#maps = undefined;
      this.#obj = undefined;
      obj.close();
      if (firstRun) rmSync(this.opts.pinRoot, { recursive: true, force: true });
      throw e;
    }
  }

  /** What the last start did with pinned maps (reused, migrated). */
  upgradeReport: UpgradeReport | undefined;

  /**
   * Every attachment an earlier run pinned gets this object's program in place:
   * pods' tc, node proxies' tc (tcx links; a legacy filter in a proxy's netns is
   * swapped when the proxy announces itself again) and the sk_lookup links.
   */
  #updatePinnedPrograms(obj: BpfObject): void {
    this.#tc.updateAll({ ingress: obj.program(AMBIENT_TC_PROG.ingress), egress: obj.program(AMBIENT_TC_PROG.egress) });
    this.#proxyTc.updateAll({ ingress: obj.program(AMBIENT_PROG.proxyIn) });
    const dir = `${pinLayout(this.opts.pinRoot).root}/links/sk-lookup`;
    const names = existsSync(dir) ? readdirSync(dir) : [];
    for (const n of names) {
      const l = Link.open(`${dir}/${n}`);
      try { l.update(obj.program(AMBIENT_PROG.twLookup)); } catch (e) { if (!(e instanceof BpfError)) throw e; /* its netns is gone */ } finally { l.close(); }
    }
  }

  /** Slots an earlier run filled, kept until their proxy announces itself again (matched by netns). */
  readonly #adopted = new Map<number, AmProxy>();

  #need(): { obj: BpfObject; maps: AmbientMaps } {
    if (!this.#obj || !this.#maps) throw new Error('ambient eBPF driver not started');
    return { obj: this.#obj, maps: this.#maps };
  }

  #writeNode(active: number): void {
    const { maps } = this.#need();
    maps.node.update(0, {
      fail_policy: this.opts.failPolicy === 'open' ? AM_FAIL.OPEN : AM_FAIL.CLOSED, active,
      mark_mask: (this.#marks.out | this.#marks.local) >>> 0, mark_out: this.#marks.out, mark_local: this.#marks.local,
    });
  }

  /** The failure policy while no node proxy is ready; takes effect at once. */
  setFailPolicy(p: FailPolicy): void {
    this.opts.failPolicy = p;
    if (this.#maps) this.#writeNode(this.#maps.node.lookup(0)?.active ?? 0);
  }

  async mesh(pod: PodTarget, _plan?: SidecarPlan): Promise<void> {
    const { obj, maps } = this.#need();
    const veth = pod.hostVeth;
    if (!veth) throw new Error(`enrol ${podName(pod.key)}: ambient needs the pod's host-side veth`);
    if (pod.ips.length === 0) throw new Error(`enrol ${podName(pod.key)}: the pod has no address`);
    const key = pod.key.sandboxId;
    const cookie = netnsCookie(pod.netns);
    const addrs = pod.ips.map((ip) => toIpAddr(ip));
    const dns = [...new Set(pod.dnsServers ?? [])].map((ip) => toIpAddr(ip));
    const previous = this.#pods.get(key);
    try {
      for (const a of dns) maps.dnsServers.update({ netns_cookie: cookie, addr: a }, 1);
      for (const a of addrs) maps.pods.update(a, { netns_cookie: cookie, ifindex: veth.ifindex, flags: 0 });
      maps.ifaces.update(veth.ifindex, { netns_cookie: cookie, flags: 0 });
      this.#tc.attach(key, veth, { ingress: obj.program(AMBIENT_TC_PROG.ingress), egress: obj.program(AMBIENT_TC_PROG.egress) });
    } catch (e) {
      if (!previous) this.#removeEntries({ pod, cookie, ifindex: veth.ifindex, addrs, dns });
      throw e instanceof BpfError ? new Error(`enrol ${podName(pod.key)}: ${e.message}`, { cause: e }) : e;
    }
    this.#pods.set(key, { pod, cookie, ifindex: veth.ifindex, addrs, dns });
    if (previous) {
      const keep = new Set(addrs.map(hex));
      for (const a of previous.addrs) if (!keep.has(hex(a))) this.#deletePodAddr(a, previous.cookie);
      const keepDns = new Set(previous.cookie === cookie ? dns.map(hex) : []);
      for (const a of previous.dns) if (!keepDns.has(hex(a))) maps.dnsServers.delete({ netns_cookie: previous.cookie, addr: a });
      if (previous.ifindex !== veth.ifindex) this.#deleteIface(previous.ifindex, previous.cookie);
    }
  }

  #deletePodAddr(a: IpAddr, cookie: bigint): void {
    const m = this.#need().maps;
    if (m.pods.lookup(a)?.netns_cookie === cookie) m.pods.delete(a);
  }

  #deleteIface(ifindex: number, cookie: bigint): void {
    const m = this.#need().maps;
    if (m.ifaces.lookup(ifindex)?.netns_cookie === cookie) m.ifaces.delete(ifindex);
  }

  #removeEntries(p: Enrolled): void {
    const m = this.#need().maps;
    for (const a of p.dns) m.dnsServers.delete({ netns_cookie: p.cookie, addr: a });
    this.#deleteIface(p.ifindex, p.cookie);
    for (const a of p.addrs) this.#deletePodAddr(a, p.cookie);
  }

  async unmesh(pod: PodTarget): Promise<void> {
    const key = pod.key.sandboxId;
    const p = this.#pods.get(key);
    if (p) this.#removeEntries(p);
    this.#tc.detach(key);
    this.#pods.delete(key);
    if (p) for (const px of this.#proxies.values()) forgetNeighbours(px.np.netns, p.pod.ips);
  }

  async verify(pod: PodTarget): Promise<string | undefined> {
    const { maps } = this.#need();
    const p = this.#pods.get(pod.key.sandboxId);
    if (!p) return 'not enrolled by this datapath';
    if (maps.ifaces.lookup(p.ifindex)?.netns_cookie !== p.cookie) return 'am_ifaces entry missing';
    for (const a of p.addrs) if (maps.pods.lookup(a)?.netns_cookie !== p.cookie) return `am_pods entry for ${hex(a)} missing or another pod's`;
    return pod.hostVeth ? this.#tc.verify(pod.key.sandboxId, pod.hostVeth) : undefined;
  }

  async setNodeIps(ips: string[]): Promise<void> {
    // Probes are recognised by their local socket, not by address: nothing to write.
    this.opts.nodeIps = [...ips];
  }

  /**
   * Takes a node proxy's announcement (proxy.ts): programs its netns, gives it
   * a slot and, when it says it is ready, makes it the one new flows go to
   * (the newest ready instance wins). Flows of other live instances keep
   * going to them. Idempotent; a bad announcement changes nothing.
   */
  async setNodeProxy(np: NodeProxy): Promise<void> {
    const { obj, maps } = this.#need();
    const link = resolveProxyLink(np, this.opts.nodeNetnsPath);
    const cookie = netnsCookie(np.netns);
    const known = this.#proxies.get(np.id);
    let slot = known?.slot;
    if (slot === undefined) {
      for (const [s, px] of this.#adopted) if (px.netns_cookie === cookie) slot = s;
    }
    if (slot === undefined) {
      const used = new Set([...this.#proxies.values()].map((p) => p.slot).concat([...this.#adopted.keys()]));
      for (let s = 0; s < MAX_PROXIES && slot === undefined; s++) if (!used.has(s)) slot = s;
    }
    if (slot === undefined) throw new Error(`node proxy ${np.id}: ${MAX_PROXIES} instances are live already; remove one first`);
    const routing = { markLocal: this.#marks.local, table: this.opts.routeTable ?? DEFAULT_ROUTE_TABLE };
    installProxyRouting(np.netns, routing);
    this.#proxyAttacher(np.netns).attach(tcKeyOfProxy(np.id), { name: np.ifName, ifindex: link.ifindex }, { ingress: obj.program(AMBIENT_PROG.proxyIn) });
    this.#attachLookup(np.netns, cookie);
    maps.proxies.update(slot, {
      netns_cookie: cookie, netns_id: link.netnsId, host_ifindex: link.hostIfindex,
      flags: AM_PROXY_F.LIVE | (np.ready ? AM_PROXY_F.READY : 0),
      outbound_port: np.ports.outbound, inbound_port: np.ports.inbound, hbone_port: np.ports.hbone ?? 0, mac: link.mac,
      dns_port: np.ports.dns ?? 0,
    });
    this.#adopted.delete(slot);
    const seq = np.ready && !(known?.np.ready) ? ++this.#seq : known?.seq ?? 0;
    this.#proxies.set(np.id, { np, slot, link, cookie, seq });
    this.#chooseActive();
  }

  /** The instance is gone (exited, or drained): its slot, tc program and route go. */
  async removeNodeProxy(id: string): Promise<boolean> {
    const p = this.#proxies.get(id);
    if (!p) return false;
    const { maps } = this.#need();
    this.#proxies.delete(id);
    maps.proxies.update(p.slot, EMPTY_PROXY);
    this.#chooseActive();
    this.#detachProxy(p);
    return true;
  }

  #detachProxy(p: Proxy): void {
    try { this.#proxyAttacher(p.np.netns).detach(tcKeyOfProxy(p.np.id)); } catch { this.#proxyTc.detach(tcKeyOfProxy(p.np.id)); }
    if (![...this.#proxies.values()].some((o) => o.np.netns === p.np.netns)) {
      removeProxyRouting(p.np.netns, { markLocal: this.#marks.local, table: this.opts.routeTable ?? DEFAULT_ROUTE_TABLE });
    }
    if (![...this.#proxies.values()].some((o) => o.cookie === p.cookie)) {
      const pin = this.#lookupPin(p.cookie);
      if (existsSync(pin)) Link.open(pin).destroy();
    }
  }

  #lookupPin(cookie: bigint): string {
    return `${pinLayout(this.opts.pinRoot).root}/links/sk-lookup/${cookie}`;
  }

  /**
   * mwam_tw_lookup on the proxy's netns, one link per netns (pinned by its
   * cookie): kept when the pin is this netns's live link, else attached anew.
   */
  #attachLookup(netns: string, cookie: bigint): void {
    const pin = this.#lookupPin(cookie);
    if (existsSync(pin)) {
      const old = Link.open(pin);
      if (old.info().netnsIno === statSync(netns).ino) { old.close(); return; }
      old.destroy();
    }
    const l = Link.attachNetns(this.#need().obj.program(AMBIENT_PROG.twLookup), netns);
    try { l.pin(pin); } finally { l.close(); }
  }

  #chooseActive(): void {
    let best: Proxy | undefined;
    for (const p of this.#proxies.values()) if (p.np.ready && (!best || p.seq > best.seq)) best = p;
    let active = best ? best.slot + 1 : 0;
    if (!best) for (const [slot, px] of this.#adopted) if (px.flags & AM_PROXY_F.READY) active = slot + 1;
    this.#writeNode(active);
  }

  /** Announced instances, for status and tests. */
  nodeProxies(): { id: string; slot: number; ready: boolean; active: boolean; hostVeth: string }[] {
    const active = this.#maps?.node.lookup(0)?.active ?? 0;
    return [...this.#proxies.values()].map((p) => ({ id: p.np.id, slot: p.slot, ready: p.np.ready, active: active === p.slot + 1, hostVeth: p.link.hostName }));
  }

  async sweepOrphans(live: ReadonlySet<string>): Promise<string[]> {
    const { maps } = this.#need();
    const removed: string[] = [];
    for (const [key, p] of [...this.#pods]) {
      if (live.has(key)) continue;
      await this.unmesh(p.pod);
      removed.push(key);
    }
    const cookies = new Set([...this.#pods.values()].map((p) => p.cookie));
    for (const [k, v] of [...maps.pods.entries()]) if (!cookies.has(v.netns_cookie)) maps.pods.delete(k);
    for (const [k, v] of [...maps.ifaces.entries()]) if (!cookies.has(v.netns_cookie)) maps.ifaces.delete(k);
    for (const [k] of [...maps.dnsServers.entries()]) if (!cookies.has(k.netns_cookie)) maps.dnsServers.delete(k);
    this.sweepDnsQueries();
    for (const key of this.#tc.keys()) {
      if (this.#pods.has(key)) continue;
      this.#tc.detach(key);
      if (!removed.includes(key)) removed.push(key);
    }
    return removed;
  }

  /** Forgets DNS queries whose reply never came (older than ttlNs); returns how many. */
  sweepDnsQueries(ttlNs = DNS_QUERY_TTL_NS): number {
    const { maps } = this.#need();
    const now = process.hrtime.bigint(); // CLOCK_MONOTONIC, as bpf_ktime_get_ns()
    let n = 0;
    for (const [k, v] of [...maps.dnsQueries.entries()]) if (now - v.since_ns > ttlNs) { maps.dnsQueries.delete(k); n++; }
    return n;
  }

  async release(): Promise<void> {
    this.#pods.clear();
    this.#proxies.clear();
    this.#adopted.clear();
    this.#obj?.close();
    this.#obj = undefined;
    this.#maps = undefined;
  }

  /** Removes everything this driver made: enrolments, proxy programs and routes, pins. */
  async stop(): Promise<void> {
    if (this.#obj) {
      for (const p of [...this.#pods.values()]) await this.unmesh(p.pod);
      for (const id of [...this.#proxies.keys()]) await this.removeNodeProxy(id);
    }
    for (const key of this.#tc.keys()) this.#tc.detach(key);
    for (const key of this.#proxyTc.keys()) { try { this.#proxyTc.detach(key); } catch { /* its netns is gone */ } }
    this.#obj?.close();
    this.#obj = undefined;
    this.#maps = undefined;
    rmSync(this.opts.pinRoot, { recursive: true, force: true });
  }

  limitations(): Limitation[] {
    return deriveLimitations(this);
  }

  stats(): Record<StatName, bigint> {
    return sumStats(this.#need().maps.stats, STATS);
  }

  mapEntryCounts(): Record<string, number> {
    const { maps } = this.#need();
    return { am_pods: maps.pods.count(), am_ifaces: maps.ifaces.count(), dns_servers: maps.dnsServers.count(), am_dns_queries: maps.dnsQueries.count() };
  }

  #traceSource(): TraceSource {
    return ringTrace({
      setSwitch: (on) => { this.#need().maps.traceConfig.update(0, { enabled: on ? 1 : 0 }); },
      ringFd: () => this.#need().obj.mapInfo(AMBIENT_MAP.traceEvents).fd,
      decode: decodeTrace,
      cookies: () => new Map([...this.#pods.values()].map((p) => [String(p.cookie), podName(p.pod.key)])),
    });
  }
}

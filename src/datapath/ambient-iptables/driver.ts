// SPDX-License-Identifier: Apache-2.0
// The ambient dataplane on the iptables engine (in-pod redirection, Istio >= 1.21's way):
// rules inside each enrolled pod's netns (rules.ts) send its TCP to the node proxy's
// listeners, which the proxy opened *inside that pod's netns* after the agent sent it the
// pod (PUT /v1/pods on the proxy's control socket, docs/ambient.md). mesh() returns only
// once the active proxy acknowledged, so CNI ADD returns with the pod's network ready.
//
// Follow one connection: pod SYN -> mangle OUTPUT marks it (and its connmark) -> the mark
// routes it to lo (ip rule, table routeTable) -> mangle PREROUTING TPROXYs it to the
// proxy's outbound listener in this netns -> the proxy connects upstream from a socket of
// its own cgroup (never captured), with the pod's own address.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { cgroup2Mount } from '../../sys/cgroup.ts';
import { inNetns } from '../../sys/links.ts';
import { run } from '../../sys/exec.ts';
import { limitations as deriveLimitations, type DatapathDriver, type DriverFeatures, type Limitation, type LimitationId, type SidecarPlan } from '../driver.ts';
import { podName, type PodTarget } from '../pod.ts';
import { FAMILIES, type Family } from '../iptables/rules.ts';
import { checkIptables, restore, saveTable } from '../iptables/driver.ts';
import { installProxyRouting, removeProxyRouting, type NodeProxy } from '../ambient/proxy.ts';
import { DEFAULT_MARK_MASK, DEFAULT_ROUTE_TABLE, markBits } from '../ambient/driver.ts';
import type { FailPolicy } from '../ambient/structs.ts';
import { POD_CHAINS, cgroupArg, dnsMeshScript, dnsUnmeshScript, parseTableSave, podMeshScript, podUnmeshScript, probeScript, type CaptureMode } from './rules.ts';

export interface AmbientIptablesOptions {
  /** Netns of the node (the probe SNAT chain lives there); default: the agent's. */
  nodeNetnsPath?: string;
  nodeIps: string[];
  failPolicy?: FailPolicy;
  /** Mark bits ambient may use; the higher of the two marks captured flows (default 0x30). */
  markMask?: number;
  /** Routing table (and rule priority) that sends marked packets to lo in each pod netns; default 15100. */
  routeTable?: number;
  /** How long mesh() waits for a node proxy's acknowledgement (default 10 s). */
  ackTimeoutMs?: number;
}

/** The counters this engine has: packet counts of its commented rules. */
const STAT_NAMES = ['am_captured_out', 'am_captured_in', 'am_bypass_host', 'am_bypass_proxy', 'am_spoof', 'am_fail_closed', 'am_fail_open',
  'dns_captured', 'dns_no_listener', 'dns_bypass_proxy'] as const;

interface Proxy { np: NodeProxy; cgroup: string; seq: number }

/** PUT body on the proxy's control socket: every pod whose netns it must listen in. */
export interface PodSnapshot { pods: { sandboxId: string; netns: string; ips: string[] }[] }

/** One PUT of `snap` to a proxy's control socket; resolves on 200, rejects otherwise. */
export function putSnapshot(control: string, snap: PodSnapshot, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify(snap);
    const req = http.request({ socketPath: control, agent: false, method: 'PUT', path: '/v1/pods', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }, timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`node proxy at ${control}: ${res.statusCode} ${text.trim()}`))));
    });
    req.on('timeout', () => req.destroy(new Error(`node proxy at ${control}: no acknowledgement within ${timeoutMs} ms`)));
    req.on('error', (e) => reject(new Error(`node proxy at ${control}: ${e.message}`)));
    req.end(body);
  });
}

export class AmbientIptablesDriver implements DatapathDriver<SidecarPlan> {
  readonly dataplane = 'ambient' as const;
  readonly engine = 'iptables' as const;
  readonly opts: AmbientIptablesOptions;
  readonly features: DriverFeatures;
  readonly why: Partial<Record<LimitationId, string>> = {
    'map-entry-counts': 'in-pod rules keep no per-connection state of their own (conntrack does, and expires it)',
    'trace': 'no per-decision trace events (eBPF ring buffer); the rules have packet counters (stats)',
    'sweep': 'conntrack expires its own entries',
    'sockmap': 'sockmap/sk_msg acceleration needs eBPF',
    'cgroup-scope': 'in-pod rules apply to every process of the pod netns',
    'getsockopt-passthrough': 'the rules turn on conntrack in the pod netns, which answers SO_ORIGINAL_DST for every tracked connection',
  };
  readonly #pods = new Map<string, PodTarget>();
  /** Pods with DNS rules (nat): the port they redirect to, null while not capturing. */
  readonly #podDns = new Map<string, number | null>();
  readonly #proxies = new Map<string, Proxy>();
  /** Removed pods' counters, so totals never go down. */
  readonly #gone = new Map<string, bigint>();
  #seq = 0;
  #started = false;
  /** No announcement since start: existing pod rules are adopted as they are (agent restart). */
  #proxiesKnown = false;
  readonly #mark: number;

  constructor(opts: AmbientIptablesOptions) {
    this.opts = { ...opts, nodeIps: [...opts.nodeIps] };
    this.#mark = markBits(opts.markMask ?? DEFAULT_MARK_MASK).local;
    this.features = { stats: () => this.stats(), getsockoptPassthrough: false, cgroupScope: false, sockmap: false };
  }

  get #nodeNs(): string { return this.opts.nodeNetnsPath ?? `/proc/${process.pid}/ns/net`; }
  get #routing() { return { markLocal: this.#mark, table: this.opts.routeTable ?? DEFAULT_ROUTE_TABLE }; }

  async start(): Promise<void> {
    if (this.#started) return;
    checkIptables();
    this.#started = true;
  }

  /** The newest ready instance: the one new flows go to. */
  #active(): Proxy | undefined {
    let best: Proxy | undefined;
    for (const p of this.#proxies.values()) if (p.np.ready && (!best || p.seq > best.seq)) best = p;
    return best;
  }

  #mode(): CaptureMode {
    if (this.#active()) return 'redirect';
    return this.opts.failPolicy === 'open' ? 'open' : 'closed';
  }

  #snapshot(): PodSnapshot {
    return { pods: [...this.#pods.values()].map((p) => ({ sandboxId: p.key.sandboxId, netns: p.netns, ips: [...p.ips] })) };
  }

  /** Tells every instance where to listen: the active one in every pod netns, the others nowhere (they drain). */
  async #push(): Promise<void> {
    const active = this.#active();
    const timeout = this.opts.ackTimeoutMs ?? 10_000;
    const snap = this.#snapshot();
    if (active) await putSnapshot(active.np.control!, snap, timeout);
    const others = [...this.#proxies.values()].filter((p) => p !== active);
    const results = await Promise.allSettled(others.map((p) => putSnapshot(p.np.control!, { pods: [] }, timeout)));
    // A draining instance that does not answer keeps serving; it is not an error of the pod.
    void results;
  }

  /** dnsPort: the DNS listener to redirect to (null: the active instance's; undefined: none). */
  #writePod(pod: PodTarget, mode: CaptureMode, dns: number | undefined | null = null): void {
    const dnsPort = dns === null ? this.#active()?.np.ports.dns : dns;
    const input = {
      ips: pod.ips, ports: this.#ports(), mark: this.#mark, proxyCgroups: [...new Set([...this.#proxies.values()].map((p) => p.cgroup))], mode,
      dnsServers: pod.dnsServers ?? [], ...(dnsPort !== undefined ? { dnsPort } : {}),
    };
    // The nat table (DNS) only in pods with nameservers: nothing to capture, no nat hooks in the pod netns.
    const hasDns = (pod.dnsServers ?? []).length > 0;
    const scripts = FAMILIES.flatMap((f) => {
      const out = [{ f, script: podMeshScript(f, input, parseTableSave(saveTable(pod.netns, f, 'mangle'), 'mangle')) as string | null }];
      if (hasDns) out.push({ f, script: dnsMeshScript(f, input, parseTableSave(saveTable(pod.netns, f, 'nat'), 'nat')) });
      else if (this.#podDns.has(pod.key.sandboxId)) out.push({ f, script: dnsUnmeshScript(parseTableSave(saveTable(pod.netns, f, 'nat'), 'nat')) });
      return out;
    });
    installProxyRouting(pod.netns, this.#routing);
    for (const { f, script } of scripts) if (script) restore(pod.netns, f, script);
    // undefined: no DNS rules in this pod; null: rules, not capturing; a port: capturing to it.
    const key = pod.key.sandboxId;
    const now = hasDns ? dnsPort ?? null : undefined;
    if (this.#podDns.get(key) !== now) {
      if (now === undefined) this.#podDns.delete(key); else this.#podDns.set(key, now);
      if (hasDns) this.#forgetDnsFlows(pod);
    }
  }

  /**
   * After DNS capture switched on or off in a pod: its UDP flows to the nameservers are dropped from
   * the pod netns's conntrack table. A query from a client port reused within the UDP timeout (30 s)
   * would otherwise keep the NAT decision of the previous mode (still REDIRECTed to a proxy that is
   * gone, or still sent to the server while the proxy is back). Needs conntrack(8) (setup installs
   * it); without it that window stays.
   */
  #forgetDnsFlows(pod: PodTarget): void {
    for (const server of new Set(pod.dnsServers ?? [])) {
      const fam = server.includes(':') ? 'ipv6' : 'ipv4';
      try {
        run(['nsenter', `--net=${pod.netns}`, '--', 'conntrack', '-D', '-f', fam, '-p', 'udp', '--orig-dst', server, '--orig-port-dst', '53'],
          { stdio: ['ignore', 'ignore', 'ignore'] });
      } catch { /* no entry (exit 1), or no conntrack(8) */ }
    }
  }

  #ports(): { outbound: number; inbound: number } {
    const a = this.#active() ?? [...this.#proxies.values()][0];
    return a ? { outbound: a.np.ports.outbound, inbound: a.np.ports.inbound } : { outbound: 15001, inbound: 15006 };
  }

  #hasRules(netns: string): boolean {
    return FAMILIES.every((f) => parseTableSave(saveTable(netns, f, 'mangle'), 'mangle').chains.has(POD_CHAINS[0]));
  }

  #writeProbes(): void {
    const ips = [...this.#pods.values()].flatMap((p) => p.ips);
    for (const f of FAMILIES) {
      const script = probeScript(f, ips, parseTableSave(saveTable(this.#nodeNs, f, 'nat'), 'nat'));
      if (script) restore(this.#nodeNs, f, script);
    }
  }

  async mesh(pod: PodTarget, _plan?: SidecarPlan): Promise<void> {
    const name = podName(pod.key);
    if (pod.ips.length === 0) throw new Error(`enrol ${name}: the pod has no address`);
    if (!fs.existsSync(pod.netns)) throw new Error(`enrol ${name}: netns ${pod.netns} does not exist`);
    const key = pod.key.sandboxId;
    const previous = this.#pods.get(key);
    this.#pods.set(key, { ...pod });
    try {
      // Listeners first (the proxy acknowledges), then the rules that send traffic to them.
      await this.#push();
      if (!this.#proxiesKnown && this.#hasRules(pod.netns)) { /* adopted: the proxy announces again soon */ } else this.#writePod(pod, this.#mode());
      this.#writeProbes();
    } catch (e) {
      if (previous) this.#pods.set(key, previous);
      else {
        this.#pods.delete(key);
        try { this.#removePod(pod.netns); } catch { /* report the first error */ }
        await this.#push().catch(() => {});
      }
      throw new Error(`enrol ${name}: ${(e as Error).message}`, { cause: e });
    }
  }

  #removePod(netns: string): void {
    if (!fs.existsSync(netns)) return;
    for (const f of FAMILIES) {
      const st = parseTableSave(saveTable(netns, f, 'mangle', true), 'mangle');
      for (const [k, v] of st.counts) this.#gone.set(k, (this.#gone.get(k) ?? 0n) + v);
      const script = podUnmeshScript(st);
      if (script) restore(netns, f, script);
      const nat = parseTableSave(saveTable(netns, f, 'nat', true), 'nat');
      for (const [k, v] of nat.counts) this.#gone.set(k, (this.#gone.get(k) ?? 0n) + v);
      const dnsScript = dnsUnmeshScript(nat);
      if (dnsScript) restore(netns, f, dnsScript);
    }
    removeProxyRouting(netns, this.#routing);
  }

  async unmesh(pod: PodTarget): Promise<void> {
    const key = pod.key.sandboxId;
    const known = this.#pods.get(key);
    try {
      this.#removePod(known?.netns ?? pod.netns);
    } catch (e) {
      throw new Error(`unmesh ${podName(pod.key)}: ${(e as Error).message}`, { cause: e });
    }
    this.#pods.delete(key);
    this.#podDns.delete(key);
    if (known) {
      this.#writeProbes();
      await this.#push().catch(() => {}); // the pod is gone either way; the proxy closes its listeners there
    }
  }

  async verify(pod: PodTarget): Promise<string | undefined> {
    if (!this.#pods.has(pod.key.sandboxId)) return 'not enrolled by this datapath';
    if (!fs.existsSync(pod.netns)) return `netns ${pod.netns} is gone`;
    return this.#hasRules(pod.netns) ? undefined : 'our mangle chains are missing in the pod netns';
  }

  async setNodeIps(ips: string[]): Promise<void> {
    // Probes are recognised by their local socket (SNAT on the node), not by address.
    this.opts.nodeIps = [...ips];
  }

  /**
   * A node proxy's announcement. The in-pod engine needs its control socket and cgroup.
   * Its cgroup is exempted in every pod and the SYN rules follow the new mode; then the active
   * instance gets the snapshot (and acknowledges), the others an empty one (they drain).
   */
  async setNodeProxy(np: NodeProxy): Promise<void> {
    if (!np.control) throw new Error('control: required by the in-pod (iptables) engine: the socket where the proxy takes the pods to listen in');
    if (!np.cgroup) throw new Error('cgroup: required by the in-pod (iptables) engine: its sockets are never captured');
    const root = cgroup2Mount();
    const rel = np.cgroup.startsWith(root + '/') ? np.cgroup.slice(root.length) : np.cgroup;
    cgroupArg(rel);
    if (!fs.existsSync(path.join(root, rel))) throw new Error(`cgroup: ${np.cgroup} does not exist`);
    if (!fs.existsSync(np.control)) throw new Error(`control: ${np.control} does not exist`);
    const known = this.#proxies.get(np.id);
    const prevDns = this.#active()?.np.ports.dns;
    const seq = np.ready && !known?.np.ready ? ++this.#seq : known?.seq ?? 0;
    this.#proxies.set(np.id, { np, cgroup: rel, seq });
    this.#proxiesKnown = true;
    try {
      // Its cgroup is exempted before it can open any upstream socket (it listens only after the push);
      // DNS is redirected to the new active instance only once it acknowledged (its DNS listeners are open).
      for (const p of this.#pods.values()) this.#writePod(p, this.#mode(), prevDns);
      await this.#push();
      if (this.#active()?.np.ports.dns !== prevDns) for (const p of this.#pods.values()) this.#writePod(p, this.#mode());
    } catch (e) {
      if (known) this.#proxies.set(np.id, known); else this.#proxies.delete(np.id);
      throw e;
    }
  }

  async removeNodeProxy(id: string): Promise<boolean> {
    const p = this.#proxies.get(id);
    if (!p) return false;
    this.#proxies.delete(id);
    for (const pod of this.#pods.values()) this.#writePod(pod, this.#mode());
    await this.#push().catch(() => {});
    return true;
  }

  /** The failure policy while no node proxy is ready; rewrites the pods' SYN rules now. */
  setFailPolicy(p: FailPolicy): void {
    this.opts.failPolicy = p;
    for (const pod of this.#pods.values()) this.#writePod(pod, this.#mode());
  }

  nodeProxies(): { id: string; slot: number; ready: boolean; active: boolean; hostVeth: string }[] {
    const active = this.#active();
    return [...this.#proxies.values()].map((p, i) => ({ id: p.np.id, slot: i, ready: p.np.ready, active: p === active, hostVeth: '' }));
  }

  async sweepOrphans(live: ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    for (const [key, pod] of [...this.#pods]) {
      if (live.has(key)) continue;
      await this.unmesh(pod);
      removed.push(key);
    }
    return removed;
  }

  /** Rules stay in the pods' netns and the node's probe chain; nothing to let go of. */
  async release(): Promise<void> {
    this.#pods.clear();
    this.#podDns.clear();
    this.#proxies.clear();
    this.#proxiesKnown = false;
  }

  async stop(): Promise<void> {
    const errors: unknown[] = [];
    for (const pod of [...this.#pods.values()]) {
      try { this.#removePod(pod.netns); } catch (e) { errors.push(e); }
    }
    this.#pods.clear();
    try { this.#writeProbes(); } catch (e) { errors.push(e); }
    await this.#push().catch(() => {});
    this.#proxies.clear();
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `ambient iptables driver: ${errors.length} errors at stop`);
  }

  limitations(): Limitation[] {
    return deriveLimitations(this);
  }

  /** Packet counters of our commented rules in every enrolled pod (plus those of pods since removed). */
  stats(): Record<string, bigint> {
    const out: Record<string, bigint> = Object.fromEntries(STAT_NAMES.map((n) => [n, this.#gone.get(n) ?? 0n]));
    for (const pod of this.#pods.values()) {
      if (!fs.existsSync(pod.netns)) continue;
      for (const f of FAMILIES as readonly Family[]) {
        for (const table of ['mangle', 'nat']) {
          let text: string;
          try { text = inNetns(pod.netns, [f === 4 ? 'iptables-save' : 'ip6tables-save', '-c', '-t', table]); } catch { continue; }
          for (const [k, v] of parseTableSave(text, table).counts) if (k in out) out[k] += v;
        }
      }
    }
    return out;
  }
}

// SPDX-License-Identifier: Apache-2.0
// The iptables sidecar-mode driver (mode `iptables`): the same capture as the eBPF
// driver, done with nat rules inside each pod's netns (rules.ts), the way mesh init
// containers do it. Conntrack then answers SO_ORIGINAL_DST for the proxy.
//
// Options (kept minimal so one factory serves the conformance suite):
//   nodeIps  node addresses; TCP from them (kubelet probes) is never captured inbound.
//
// Tools: `iptables-restore`/`ip6tables-restore` and the `-save` pair, whichever backend
// Debian's alternatives select (nf_tables by default), run with `nsenter --net=` (not
// `ip netns exec`, which remounts /sys). Every change is one restore transaction per
// family; only our four chains and two jump lines are ever touched.
import fs from 'node:fs';
import { run, tryRun } from '../../sys/exec.ts';
import { inNetns } from '../../sys/links.ts';
import { limitations, type DatapathDriver, type DriverFeatures, type Limitation, type LimitationId, type SidecarPlan } from '../driver.ts';
import { firstIps, podName, type PodTarget } from '../pod.ts';
import { FAMILIES, address, meshScript, parseNatSave, unmeshScript, type Family, type NatState } from './rules.ts';

export interface IptablesOptions {
  /** Node addresses: TCP from them (kubelet probes) is never captured inbound. */
  nodeIps: string[];
}

export const TOOLS: Record<Family, { save: string; restore: string }> = {
  4: { save: 'iptables-save', restore: 'iptables-restore' },
  6: { save: 'ip6tables-save', restore: 'ip6tables-restore' },
};

export interface IptablesInfo {
  /** e.g. "iptables-restore v1.8.9 (nf_tables)" */
  version: string;
  backend: 'nf_tables' | 'legacy';
}

/**
 * Checks that the tools exist and the kernel has what the rules use (REDIRECT target,
 * owner and multiport matches), loading modules if needed. Throws a clear error otherwise.
 */
export function checkIptables(): IptablesInfo {
  let version = '';
  for (const f of FAMILIES) {
    try {
      version = run([TOOLS[f].restore, '--version']).trim();
    } catch (e) {
      throw new Error(`iptables mode needs ${TOOLS[f].restore} (Debian package iptables): ${(e as Error).message}`, { cause: e });
    }
  }
  const missing = () => [
    ...['REDIRECT'].filter((t) => !procList('ip_tables_targets').includes(t) || !procList('ip6_tables_targets').includes(t)),
    ...['owner', 'multiport', 'tcp', 'udp'].filter((m) => !procList('ip_tables_matches').includes(m) || !procList('ip6_tables_matches').includes(m)),
  ];
  if (missing().length > 0) {
    // Built-in on most kernels; as modules they load on first use or here.
    for (const m of ['nf_nat', 'xt_REDIRECT', 'xt_owner', 'xt_multiport', 'xt_tcpudp', 'iptable_nat', 'ip6table_nat']) tryRun(['modprobe', '-q', m]);
    const still = missing();
    if (still.length > 0) throw new Error(`iptables mode: the kernel lacks ${still.join(', ')} (CONFIG_NETFILTER_XT_TARGET_REDIRECT, _MATCH_OWNER, _MATCH_MULTIPORT)`);
  }
  return { version, backend: version.includes('nf_tables') ? 'nf_tables' : 'legacy' };
}

function procList(name: string): string[] {
  try {
    return fs.readFileSync(`/proc/net/${name}`, 'utf8').split('\n').map((s) => s.trim());
  } catch {
    return [];
  }
}

function natState(netnsPath: string, f: Family): NatState {
  return parseNatSave(inNetns(netnsPath, [TOOLS[f].save, '-t', 'nat']));
}

/** One table of one family of a netns as `*-save` prints it (with counters when asked). */
export function saveTable(netnsPath: string, f: Family, table: 'nat' | 'mangle', counters = false): string {
  return inNetns(netnsPath, [TOOLS[f].save, ...(counters ? ['-c'] : []), '-t', table]);
}

/** One `*-restore --noflush` transaction in a netns (the script names its tables). */
export function restore(netnsPath: string, f: Family, script: string): void {
  inNetns(netnsPath, [TOOLS[f].restore, '--noflush', '--wait'], script);
}

export class IptablesDriver implements DatapathDriver<SidecarPlan> {
  readonly dataplane = 'sidecar' as const;
  readonly engine = 'iptables' as const;
  readonly opts: IptablesOptions;
  readonly features: DriverFeatures = { getsockoptPassthrough: false, cgroupScope: false, sockmap: false };
  readonly why: Partial<Record<LimitationId, string>> = {
    'map-entry-counts': 'iptables mode has no eBPF maps; per-connection state is conntrack, which the kernel expires',
    'datapath-stats': 'iptables mode has no per-verdict counters (stats are eBPF only)',
    'trace': 'no per-decision trace events (meshwarp trace reads the eBPF ring buffer); iptables has only rule counters',
    'sweep': 'conntrack expires its own entries',
    'sockmap': 'sockmap/sk_msg acceleration needs eBPF; iptables traffic always crosses the TCP/IP stack',
    'getsockopt-passthrough': 'NAT turns on conntrack in the pod netns, and conntrack answers SO_ORIGINAL_DST for every tracked connection '
      + '(with its real destination), not only captured ones; eBPF leaves uncaptured sockets to the kernel (ENOENT)',
    'cgroup-scope': 'iptables rules apply to every process in the pod netns; eBPF connect hooks only to processes in the node cgroup',
    'dns-fail-open': 'REDIRECT of port 53 does not know whether the DNS proxy listens: with it down, queries are refused (as Istio\'s rules)',
  };
  #info: IptablesInfo | undefined;
  readonly #pods = new Map<string, { pod: PodTarget; plan: SidecarPlan }>();

  constructor(opts: IptablesOptions) {
    if (!opts || !Array.isArray(opts.nodeIps)) throw new Error('IptablesDriver: options { nodeIps: string[] } required');
    for (const ip of opts.nodeIps) address('IptablesDriver: node IP', ip); // fail now, not at the first mesh
    this.opts = { nodeIps: [...opts.nodeIps] };
  }

  /** The tools and backend in use (after start()). */
  get info(): IptablesInfo | undefined { return this.#info; }

  async start(): Promise<void> {
    this.#info ??= checkIptables();
  }

  async mesh(pod: PodTarget, plan: SidecarPlan): Promise<void> {
    // Everything is computed before anything changes: bad input changes nothing.
    const { ip4, ip6 } = firstIps(pod.ips);
    const ips: Record<Family, string | undefined> = { 4: ip4, 6: ip6 };
    const name = podName(pod.key);
    const scripts = FAMILIES.map((f) => {
      try {
        return { f, script: meshScript(f, plan, { podIp: ips[f], nodeIps: this.opts.nodeIps, dnsServers: pod.dnsServers }, natState(pod.netns, f)) };
      } catch (e) {
        throw new Error(`mesh ${name} (IPv${f}): ${(e as Error).message}`, { cause: e });
      }
    });
    try {
      for (const { f, script } of scripts) restore(pod.netns, f, script);
    } catch (e) {
      // A half-applied policy is worse than none (the eBPF driver also leaves the pod unmeshed).
      try { this.#remove(pod.netns); } catch { /* report the first error */ }
      this.#pods.delete(pod.key.sandboxId);
      throw new Error(`mesh ${name}: ${(e as Error).message}`, { cause: e });
    }
    this.#pods.set(pod.key.sandboxId, { pod: { ...pod }, plan });
  }

  async unmesh(pod: PodTarget): Promise<void> {
    const netnsPath = this.#pods.get(pod.key.sandboxId)?.pod.netns ?? pod.netns;
    try {
      // A pod whose netns is gone took its rules with it.
      if (fs.existsSync(netnsPath)) this.#remove(netnsPath);
    } catch (e) {
      throw new Error(`unmesh ${podName(pod.key)}: ${(e as Error).message}`, { cause: e });
    }
    this.#pods.delete(pod.key.sandboxId);
  }

  async verify(pod: PodTarget): Promise<string | undefined> {
    if (!this.#pods.has(pod.key.sandboxId)) return 'not meshed by this datapath';
    if (!fs.existsSync(pod.netns)) return `netns ${pod.netns} is gone`;
    for (const f of FAMILIES) {
      if (![...natState(pod.netns, f).chains].some((c) => c.startsWith('MESHWARP'))) return `IPv${f}: our nat chains are missing`;
    }
    return undefined;
  }

  /** New node addresses: every pod's rules are rewritten (the bypass is a rule per node IP). */
  async setNodeIps(ips: string[]): Promise<void> {
    for (const ip of ips) address('IptablesDriver: node IP', ip);
    const same = ips.length === this.opts.nodeIps.length && ips.every((ip) => this.opts.nodeIps.includes(ip));
    this.opts.nodeIps = [...ips];
    if (same) return;
    for (const { pod, plan } of [...this.#pods.values()]) await this.mesh(pod, plan);
  }

  async sweepOrphans(live: ReadonlySet<string>): Promise<string[]> {
    // Rules live in the pod's netns and die with it; only pods we know can be left over.
    const removed: string[] = [];
    for (const [key, { pod }] of [...this.#pods]) {
      if (live.has(key)) continue;
      await this.unmesh(pod);
      removed.push(key);
    }
    return removed;
  }

  /**
   * Removes our jump lines and chains from both families of a netns (no-op if absent).
   * With the nf_tables backend the nat base chains OUTPUT/PREROUTING stay, empty (and
   * invisible to iptables-save): iptables cannot delete them and `nft delete chain` is
   * recursive, so it could take a rule someone adds meanwhile. They keep conntrack on in
   * the netns until it is deleted.
   */
  #remove(netnsPath: string): void {
    const scripts = FAMILIES.map((f) => ({ f, script: unmeshScript(natState(netnsPath, f)) }));
    for (const { f, script } of scripts) if (script !== null) restore(netnsPath, f, script);
  }

  /** Rules stay in the pods' netns; nothing to let go of. */
  async release(): Promise<void> {
    this.#pods.clear();
  }

  async stop(): Promise<void> {
    const errors: unknown[] = [];
    for (const { pod } of [...this.#pods.values()]) {
      try { await this.unmesh(pod); } catch (e) { errors.push(e); }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `iptables driver: ${errors.length} pods could not be unmeshed`);
  }

  limitations(): Limitation[] {
    return limitations(this);
  }

  /** The sandboxes this driver meshed, by key. */
  pods(): { key: string; netns: string }[] {
    return [...this.#pods].map(([key, p]) => ({ key, netns: p.pod.netns }));
  }
}

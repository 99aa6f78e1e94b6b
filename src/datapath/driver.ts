// SPDX-License-Identifier: Apache-2.0
// The one interface every datapath driver implements. A driver is a
// (dataplane, engine) pair: sidecar/ebpf, sidecar/iptables, later ambient/ebpf.
// One conformance suite runs against each; the agent holds one per dataplane,
// because sidecar and ambient pods share a node.
import type { PodPolicy } from '../profiles/index.ts';
import type { PodTarget } from './pod.ts';
import type { TraceSource } from './trace.ts';

/** Where a pod's traffic goes: its own sidecar, or the node proxy (Istio's `dataplane-mode`). */
export type Dataplane = 'sidecar' | 'ambient';
/** How it gets there (Istio's `redirectMode`). */
export type Engine = 'ebpf' | 'iptables';
export const DATAPLANES: readonly Dataplane[] = ['sidecar', 'ambient'];
export const ENGINES: readonly Engine[] = ['ebpf', 'iptables'];

function parseWord<T extends string>(what: string, known: readonly T[], s: string): T {
  if ((known as readonly string[]).includes(s)) return s as T;
  throw new Error(`unknown ${what} "${s}" (known: ${known.join(', ')})`);
}
export const parseEngine = (s: string): Engine => parseWord('engine', ENGINES, s);
export const parseDataplane = (s: string): Dataplane => parseWord('dataplane', DATAPLANES, s);

/** @deprecated `mode` was the engine's old name; `--mode` stays as an alias of `--engine`. */
export type Mode = Engine;
/** @deprecated use ENGINES. */
export const MODES = ENGINES;
/** @deprecated use parseEngine (same words; the error says "mode" for old callers). */
export const parseMode = (s: string): Engine => parseWord('mode', ENGINES, s);

/** What a sidecar-dataplane driver is told per pod (mesh profile + annotations, resolved). */
export type SidecarPlan = PodPolicy;

/**
 * Optional capabilities, typed once here: the agent, the CLI and the
 * conformance suite read them from `features` instead of probing for methods.
 */
export interface DriverFeatures {
  /** Per-decision trace events (ring buffer) with a run-time switch. */
  trace?: TraceSource;
  /** Datapath counters by name (enum mw_stat), summed over CPUs. */
  stats?: () => Record<string, bigint>;
  /** Entries per map (per-connection maps drain to 0 when connections close). */
  mapCounts?: () => Record<string, number>;
  /** Expires per-connection state by the kernel's own timers; returns how many entries went. */
  sweep?: (nowNs?: bigint) => number;
  /** Uncaptured sockets' getsockopt(SO_ORIGINAL_DST) reaches the kernel untouched. */
  getsockoptPassthrough: boolean;
  /** Capture applies only to processes in the node cgroup, not to everything in the pod netns. */
  cgroupScope: boolean;
  /** sockmap/sk_msg acceleration between local sockets (S4): true while it is on. */
  sockmap: boolean;
  /** DNS capture (S6) leaves queries to the real server while the proxy's DNS port has no listener. */
  dnsFailOpen?: boolean;
  /** S4's state and why (the behaviour gate's verdict), for status and metrics. */
  sockmapState?: () => { enabled: boolean; mode: string; reason: string; gate?: { pass: boolean; checks: { check: string; ok: boolean; family: number; detail: string }[] } };
  /** Flips S4 at run time (a flag in a map; enrolled sockets are never removed). */
  setSockmap?: (on: boolean) => void;
}

/** Something a driver cannot do; derived from `features` (see limitations()). */
export type LimitationId = 'trace' | 'datapath-stats' | 'map-entry-counts' | 'sweep' | 'getsockopt-passthrough' | 'cgroup-scope' | 'sockmap' | 'dns-fail-open';
export interface Limitation { feature: LimitationId; reason: string }

export interface DatapathDriver<Plan = SidecarPlan> {
  readonly dataplane: Dataplane;
  readonly engine: Engine;
  readonly features: DriverFeatures;
  /** Why a lacking feature is lacking, in this engine's words (limitations() has defaults). */
  readonly why?: Partial<Record<LimitationId, string>>;
  /** Node-level setup (load, attach, adopt what an earlier run pinned); idempotent. */
  start(): Promise<void>;
  /** Starts (or updates, in place) capturing `pod` with `plan`. Idempotent. */
  mesh(pod: PodTarget, plan: Plan): Promise<void>;
  /** Stops capturing `pod` (by its sandbox key); a pod that is not meshed is a no-op. */
  unmesh(pod: PodTarget): Promise<void>;
  /** Whether the datapath really captures `pod` now; undefined when it does, else why not (CNI CHECK). */
  verify(pod: PodTarget): Promise<string | undefined>;
  /** Node addresses whose traffic (kubelet probes) is never captured inbound; replaces the set. */
  setNodeIps(ips: string[]): Promise<void>;
  /**
   * Removes datapath state of sandboxes not in `live` (keys), including state an
   * earlier run left behind (a DEL lost while the agent was down). Returns the keys removed.
   */
  sweepOrphans(live: ReadonlySet<string>): Promise<string[]>;
  /** Agent shutdown or upgrade: lets go of handles, keeps everything attached (traffic flows). */
  release(): Promise<void>;
  /** Removes everything this driver made on the node, and nothing else. */
  stop(): Promise<void>;
}

const DEFAULT_REASONS: Record<LimitationId, string> = {
  'trace': 'no per-decision trace events (meshwarp trace reads the eBPF ring buffer)',
  'datapath-stats': 'no per-verdict datapath counters',
  'map-entry-counts': 'no eBPF maps to count',
  'sweep': 'no per-connection state of its own to expire',
  'getsockopt-passthrough': 'getsockopt(SO_ORIGINAL_DST) of uncaptured sockets is not left to the kernel',
  'cgroup-scope': 'capture applies to every process in the pod netns, not only those in the node cgroup',
  'sockmap': 'no sockmap/sk_msg acceleration',
  'dns-fail-open': 'DNS queries are redirected even while the DNS proxy is down (they fail instead of reaching the real server)',
};

/** What `d` cannot do, with the reason: derived from what its `features` lack. */
export function limitations(d: Pick<DatapathDriver<unknown>, 'features' | 'why'>): Limitation[] {
  const f = d.features;
  const lacks: [LimitationId, boolean][] = [
    ['map-entry-counts', !f.mapCounts], ['datapath-stats', !f.stats], ['trace', !f.trace], ['sweep', !f.sweep],
    ['sockmap', !f.sockmap], ['getsockopt-passthrough', !f.getsockoptPassthrough], ['cgroup-scope', !f.cgroupScope],
    ['dns-fail-open', !f.dnsFailOpen],
  ];
  return lacks.filter(([, lacking]) => lacking).map(([feature]) => ({ feature, reason: d.why?.[feature] ?? DEFAULT_REASONS[feature] }));
}

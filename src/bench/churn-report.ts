// SPDX-License-Identifier: Apache-2.0
// The pure half of `meshwarp bench --control-plane` (src/bench/churn.ts): percentiles,
// leak counts between two snapshots of a node, and the goals, so they are unit-tested.
import type { Goal } from './figures.ts';

/** What the bench counts on the node; each must return to its value before the first pod. */
export interface NodeCounts {
  /** Sum of the agent's map entry counts (GET /v1/status maps). */
  mapEntries: number;
  /** Links in the node netns (host veths included). */
  links: number;
  /** Files under the agent's pin root. */
  pins: number;
  /** BPF programs on the tc hooks of the node's veths (tcx links and cls_bpf filters). */
  tcFilters: number;
  /** Pods in the agent's state file. */
  stateEntries: number;
  /** Open fds of the agent process. */
  fds: number;
  /** Network namespaces of the lab. */
  netns: number;
  /** Addresses host-local holds. */
  ipam: number;
}

export const COUNT_NAMES: readonly (keyof NodeCounts)[] = ['mapEntries', 'links', 'pins', 'tcFilters', 'stateEntries', 'fds', 'netns', 'ipam'];

export interface Latency { p50: number; p99: number; max: number; n: number }

/** Nearest-rank percentiles in ms; NaN for no samples. */
export function latency(ms: readonly number[]): Latency {
  const s = [...ms].sort((a, b) => a - b);
  if (s.length === 0) return { p50: NaN, p99: NaN, max: NaN, n: 0 };
  const q = (p: number) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  return { p50: q(0.5), p99: q(0.99), max: s[s.length - 1], n: s.length };
}

/** after − before per count: what the run left behind. */
export function leaks(before: NodeCounts, after: NodeCounts): NodeCounts {
  const out = {} as NodeCounts;
  for (const k of COUNT_NAMES) out[k] = after[k] - before[k];
  return out;
}

/** A churn phase other than the whole chain's: achieved rates and latencies (ADD → done, DEL → gone). */
export interface PhaseFigures { driverLagS: number; addRate: number; delRate: number; add: Latency; del: Latency; failures: number; skippedTicks: number }

export interface ChurnFigures {
  /** Requested and achieved pod ADDs / DELs per second through the whole chain. */
  rate: number;
  addRate: number;
  delRate: number;
  addToCaptured: Latency;
  delToGone: Latency;
  held: number;
  heldTarget: number;
  rssMB: number;
  leaks: NodeCounts;
  /** Every phase's failed ADDs and DELs. */
  failures: number;
  /** The same chain without meshwarp-cni, in blocks alternating with the whole chain's (ABBA). */
  chainOnly: PhaseFigures;
  /** meshwarp-cni alone on ready sandboxes: what the agent sustains, without the other plugins' processes. */
  agentOnly: PhaseFigures;
  /**
   * Whole chain's ADD rate ÷ the chain's alone, per pair of blocks: median and spread. Not a goal:
   * where the bench's one driver process is what limits both (each plugin process it starts
   * blocks it 2–5 ms, and meshwarp-cni is one more per ADD and DEL), it measures the driver.
   */
  chainRatio: { median: number; min: number; max: number };
}

function goal(id: string, text: string, value: number, op: '<=' | '>=', target: number): Goal {
  return { id, text, value, op, target, met: Number.isFinite(value) && (op === '<=' ? value <= target : value >= target) };
}

export function churnGoals(f: ChurnFigures): Goal[] {
  return [
    goal('churn-add-rate', `pod ADDs per second sustained (asked ${f.rate})`, f.addRate, '>=', f.rate),
    goal('churn-del-rate', `pod DELs per second sustained (asked ${f.rate})`, f.delRate, '>=', f.rate),
    goal('churn-agent-add-rate', `pod ADDs per second sustained by meshwarp-cni alone on ready sandboxes (asked ${f.rate})`, f.agentOnly.addRate, '>=', f.rate),
    goal('churn-agent-del-rate', `pod DELs per second sustained by meshwarp-cni alone on ready sandboxes (asked ${f.rate})`, f.agentOnly.delRate, '>=', f.rate),
    goal('churn-failures', 'CNI ADD/DEL that failed', f.failures, '<=', 0),
    goal('churn-held', `pods held (asked ${f.heldTarget})`, f.held, '>=', f.heldTarget),
    goal('churn-rss', `agent RSS at ${f.heldTarget} pods, MB`, f.rssMB, '<=', 100),
    ...COUNT_NAMES.map((k) => goal(`leak-${k}`, `${k} left after every pod was deleted`, f.leaks[k], '<=', 0)),
  ];
}

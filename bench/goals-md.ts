// SPDX-License-Identifier: Apache-2.0
// The goals of a `meshwarp bench --json` report as Markdown tables (for README.md and
// docs/benchmark.md after a run): the eBPF goals, the four S4 goals of issue 15 (same
// node, cross node, the leg) with the spread of the per-round ratios, whether S4 was
// forced, the ambient goals of issue 12, and the run's settings.
//   .tools/node/bin/node bench/goals-md.ts bench-full.json
import { readFileSync } from 'node:fs';
import type { BenchReport } from '../src/bench/run.ts';
import type { Goal } from '../src/bench/figures.ts';

const file = process.argv[2];
if (!file) { process.stderr.write('usage: bench/goals-md.ts REPORT.json\n'); process.exit(2); }
const r = JSON.parse(readFileSync(file, 'utf8')) as BenchReport;
const x = (v: number | null | undefined) => (typeof v === 'number' && Number.isFinite(v) ? `${v.toFixed(2)}×` : '—');
const cell = (g: Goal | undefined) => (g ? `${x(g.value)}${g.spread ? ` [${x(g.spread.min)}–${x(g.spread.max)}]` : ''} ${g.met ? '(met)' : '(not met)'}` : '—');
const goal = (id: string) => r.goals.find((g) => g.id === id);
const out: string[] = [];
out.push(`${r.options.rounds} rounds × ${r.options.durationS} s, ${r.scenarios.join(', ')} interleaved; kernel ${r.machine.kernel}, ` +
  `${r.machine.cpus} CPUs; took ${Math.round(r.wallS / 60)} min. Median ratio [min–max of the per-round ratios].`, '');
out.push('| ebpf / iptables | same node | cross node |', '|---|---|---|');
out.push(`| requests/s at 100 connections (goal ≥ 1.25×) | ${cell(goal('same-node.rps'))} | ${cell(goal('cross-node.rps'))} |`);
out.push(`| p99 at 100 connections (goal ≤ 0.8×) | ${cell(goal('same-node.p99'))} | ${cell(goal('cross-node.p99'))} |`);
out.push(`| connection setup (goal ≥ 1.3×) | ${cell(goal('same-node.cps'))} | ${cell(goal('cross-node.cps'))} |`);
if (r.goals.some((g) => g.id.includes('sockmap'))) {
  out.push('', `| ebpf+sockmap / iptables${r.sockmap && !r.sockmap.safe ? ' (S4 forced on; the gate keeps it off here)' : ''} | same node | cross node |`, '|---|---|---|');
  out.push(`| requests/s at 100 connections (goal ≥ 1.30×) | ${cell(goal('same-node.sockmap.rps'))} | ${cell(goal('cross-node.sockmap.rps'))} |`);
  out.push(`| p99 at 100 connections (goal ≤ 0.85×) | ${cell(goal('same-node.sockmap.p99'))} | ${cell(goal('cross-node.sockmap.p99'))} |`);
  out.push(`| new connections/s (goal ≥ 1.0×) | ${cell(goal('same-node.sockmap.cps'))} | ${cell(goal('cross-node.sockmap.cps'))} |`);
  const leg = r.sockmap?.leg;
  const med = (a: number[]) => [...a].sort((p, q) => p - q)[Math.floor(a.length / 2)];
  out.push('', `App ↔ sidecar leg alone (goal ≤ 0.7× loopback TCP): ${cell(goal('sockmap.leg'))}` +
    (leg?.sockmapNs.length ? `, ${(med(leg.sockmapNs) / 1000).toFixed(1)} vs ${(med(leg.tcpNs) / 1000).toFixed(1)} µs per round trip` : '') + '.');
}
if (r.goals.some((g) => g.id.includes('.ambient.'))) {
  out.push('', '| ambient/ebpf ÷ ambient/iptables (same node proxy) | same node | cross node |', '|---|---|---|');
  out.push(`| requests/s at 100 connections (goal ≥ 1.15×) | ${cell(goal('same-node.ambient.rps'))} | ${cell(goal('cross-node.ambient.rps'))} |`);
  out.push(`| p99 at 100 connections (goal ≤ 0.9×) | ${cell(goal('same-node.ambient.p99'))} | ${cell(goal('cross-node.ambient.p99'))} |`);
}
const tc = goal('tc.ns');
if (tc) out.push('', `tc programs: worst fast path ${Number.isFinite(tc.value) ? tc.value.toFixed(0) : '—'} ns per packet net (goal ≤ ${tc.target} ns, ${tc.met ? 'met' : 'not met'}).`);
process.stdout.write(`${out.join('\n')}\n`);

// SPDX-License-Identifier: Apache-2.0
// The benchmark's table for people: per placement the scenarios' medians with
// their min–max over rounds, then the ratio table, the goals, the tc programs.
import type { BenchReport } from './run.ts';
import { RATIO_KEYS, ratioParts, type Figure, type Sample } from './figures.ts';
import { duration, median, spread, times } from './stats.ts';
import type { Scenario } from './topology.ts';
import type { TcProgResult } from './tcprog.ts';

function table(rows: string[][], align: ('l' | 'r')[]): string[] {
  const w = rows[0].map((_, i) => Math.max(...rows.map((r) => [...(r[i] ?? '')].length)));
  return rows.map((r) => r.map((c, i) => {
    const pad = ' '.repeat(w[i] - [...c].length);
    return align[i] === 'r' ? pad + c : c + pad;
  }).join('  ').trimEnd());
}

/** Short row label: "req/s · 100 conns". */
export function rowLabel(f: Figure): string {
  const what = { rps: 'req/s', cps: 'conn/s', gbps: 'Gbit/s', p50_us: 'p50 µs', p99_us: 'p99 µs', cpu_us: 'cpu µs', machine_cpu_us: 'all µs', bpf_ns: 'bpf ns' }[f.stat];
  const load = f.test === 'bulk' ? '1 stream' : f.test === 'conn' ? `${f.connections} conc., close` : `${f.connections} conn${f.connections === 1 ? '' : 's'}`;
  return `${what.padEnd(7)}${load}`;
}

const PLACEMENT_TITLE: Record<string, string> = {
  'same-node': 'same node (client pod on node1 → server pod on node1)',
  'cross-node': 'cross node (client pod on node1 → server pod on node2)',
};

export function formatReport(r: BenchReport, chartPath?: string): string {
  const out: string[] = [];
  const o = r.options;
  out.push(`meshwarp bench — ${o.rounds} round${o.rounds === 1 ? '' : 's'} × ${o.durationS} s per measurement, scenarios interleaved; median [min–max] over rounds`);
  out.push(`kernel ${r.machine.kernel}, ${r.machine.cpus} CPUs (${r.machine.cpuModel}); ${r.tools.haproxy ?? 'haproxy'}; ${r.tools.wrk ?? 'wrk'}; ${r.tools.iperf3 ?? 'iperf3'}`);
  out.push(`sidecar: ${r.setup.sidecar}`);
  out.push(`took ${duration(r.wallS)}`);
  const scenarios = r.scenarios;
  for (const pl of r.placements) {
    out.push('', PLACEMENT_TITLE[pl] ?? pl);
    const rows: string[][] = [['', ...scenarios.map((m) => (m === 'ebpf+sockmap' && r.sockmap && !r.sockmap.safe ? `${m} †` : m))]];
    for (const f of r.figures.filter((x) => x.placement === pl)) {
      rows.push([rowLabel(f), ...scenarios.map((m) => spread(f.scenarios[m]) + errMark(f, m))]);
    }
    out.push(...table(rows, ['l', ...scenarios.map(() => 'r' as const)]).map((l) => `  ${l}`));
  }

  const keys = RATIO_KEYS.filter((k) => ratioParts(k).every((m) => scenarios.includes(m)));
  if (keys.length > 0) {
    out.push('', 'ratios of medians [min–max of the per-round ratios] (higher is better for /s and Gbit/s, lower for µs)');
    const rows: string[][] = [['', ...keys]];
    for (const pl of r.placements) {
      rows.push([pl, ...keys.map(() => '')]);
      for (const f of r.figures.filter((x) => x.placement === pl)) {
        rows.push([`  ${rowLabel(f)}`, ...keys.map((k) => {
          const sp = f.ratioSpread[k];
          return times(f.ratios[k]) + (sp ? ` [${times(sp.min)}–${times(sp.max)}]` : '');
        })]);
      }
    }
    out.push(...table(rows, ['l', ...keys.map(() => 'r' as const)]).map((l) => `  ${l}`));
  }

  out.push(...cpuSection(r));

  // Counters that mean "a connection was not handled as designed" in the ebpf blocks.
  const bad = ['update_failed', 'tuple_failed', 'tuple_unclaimed', 'accept_failed', 'nat_failed', 'nat_collision', 'tc_rewrite_failed'];
  const sums: Record<string, number> = {};
  for (const d of r.datapath ?? []) for (const k of bad) if (d.counters[k]) sums[k] = (sums[k] ?? 0) + d.counters[k];
  if (r.datapath?.length) {
    const captured = (r.datapath ?? []).reduce((a, d) => a + (d.counters.captured_out ?? 0), 0);
    const ambient = (r.datapath ?? []).reduce((a, d) => a + (d.counters.am_captured_out ?? 0), 0);
    const list = Object.entries(sums).map(([k, v]) => `${k} ${v}`).join(', ');
    out.push('', `ebpf datapath: ${captured} connections captured outbound (sidecar), ${ambient} (ambient); ${list ? `anomalies: ${list}` : 'no anomaly counter moved'}`);
  }

  if (r.sockmap) {
    const g = r.sockmap.gate;
    out.push('', `sockmap (S4)${r.sockmap.safe ? '' : ' † UNSAFE'}: ${r.sockmap.note}`);
    out.push(`  behaviour gate on this kernel: ${g ? (g.pass ? 'pass' : `FAIL (the agent keeps S4 off): ${g.reason}`) : 'not run'}`);
    if (r.sockmap.leg) out.push(`  leg micro-benchmark, ns per 64 B round trip per run: sockmap ${r.sockmap.leg.sockmapNs.join(', ')}; loopback TCP ${r.sockmap.leg.tcpNs.join(', ')}`);
  }

  if (r.goals.length > 0) {
    out.push('', 'mission goals (measured, not asserted)');
    for (const g of r.goals) {
      const v = g.id === 'tc.ns' ? `${Number.isFinite(g.value) ? g.value.toFixed(0) : '—'} ns` : times(g.value);
      const sp = g.spread ? ` [${times(g.spread.min)}–${times(g.spread.max)}]` : '';
      out.push(`  ${g.met ? 'met    ' : 'not met'}  ${v.padStart(7)}${sp} (goal ${g.op} ${g.target}${g.id === 'tc.ns' ? ' ns' : '×'})  ${g.text}`);
    }
  }

  if (r.tc) out.push('', formatTcTable(r.tc).trimEnd());

  const nErr = r.figures.reduce((a, f) => a + scenarios.reduce((b, m) => b + f.errors[m], 0), 0);
  if (nErr > 0) out.push('', '* some requests failed in that cell (wrk socket errors or non-2xx): see "errors" and "samples" in --json');
  if (r.errors.length > 0) {
    out.push('', `errors (${r.errors.length}):`);
    for (const e of r.errors.slice(0, 10)) out.push(`  ${e}`);
    if (r.errors.length > 10) out.push(`  … ${r.errors.length - 10} more in --json`);
  }
  if (chartPath) out.push('', `chart: ${chartPath}`);
  return `${out.join('\n')}\n`;
}

/**
 * Where the CPU goes: per request, the CPU time of each role (median over
 * rounds) for the busiest keep-alive test and the connection test.
 */
function cpuSection(r: BenchReport): string[] {
  const rr = r.tests.filter((t) => t.kind === 'rr').at(-1);
  const tests = [rr, r.tests.find((t) => t.kind === 'conn')].filter((t) => t !== undefined);
  if (tests.length === 0 || !r.samples.some((s) => s.cpu)) return [];
  const out = ['', 'where the CPU goes: µs of CPU per request, median over rounds (lab: the lab\'s processes, with the softirq work done',
    '  in their context; outside lab: softirq in other contexts, kernel threads and anything else running on the machine;',
    '  steal: CPU the hypervisor gave to other guests; proxies: the sidecars, or in ambient the node proxies — the server\'s',
    '  only when it is another one; bpf: meshwarp\'s BPF programs, wherever they ran)'];
  const cols = ['load gen', 'client proxy', 'server proxy', 'app', 'lab total', 'outside lab', 'machine busy', 'steal', 'bpf'];
  const rows: string[][] = [['', ...cols]];
  for (const pl of r.placements) {
    for (const t of tests) {
      rows.push([`${pl}, ${t.kind === 'rr' ? `${t.connections} keep-alive conns` : `conn test (${t.connections} conc.)`}`, ...cols.map(() => '')]);
      for (const m of r.scenarios) {
        const ss = r.samples.filter((s) => s.scenario === m && s.placement === pl && s.test === t.id && s.cpu && s.wrk && s.wrk.requests > 0);
        if (ss.length === 0) continue;
        const per = (f: (s: Sample) => number) => median(ss.map((s) => f(s) / s.wrk!.requests));
        const v = [
          per((s) => s.cpu!.roles.load), per((s) => s.cpu!.roles.clientSidecar), per((s) => s.cpu!.roles.serverSidecar),
          per((s) => s.cpu!.roles.app), per((s) => s.cpu!.labUs),
          per((s) => Math.max(0, s.cpu!.machineBusyUs - s.cpu!.labUs)), per((s) => s.cpu!.machineBusyUs), per((s) => s.cpu!.machineStealUs ?? 0),
          per((s) => (s.cpu!.bpfNs ?? NaN) / 1000),
        ];
        rows.push([`  ${m}`, ...v.map((x) => (Number.isFinite(x) ? x.toFixed(1) : '—'))]);
      }
    }
  }
  out.push(...table(rows, ['l', ...cols.map(() => 'r' as const)]).map((l) => `  ${l}`));
  return out;
}

/** The tc program table (also printed alone by bench/tc-prog.ts). */
export function formatTcTable(tc: TcProgResult): string {
  const out = [`tc programs (BPF_PROG_TEST_RUN; repeat: ${tc.repeat.toLocaleString('en')} runs per call; single: one run per call, ` +
    `${tc.singleRuns.toLocaleString('en')} calls; ${tc.trials} trials; net = minus the empty program, same method)`];
  const rows: string[][] = [['program', 'packet', 'method', 'trace', 'ns/packet', 'net ns']];
  for (const x of tc.rows) {
    rows.push([x.program.replace('mwsc_', ''), x.packet, x.method, x.trace, spread(x.ns), x.program.startsWith('empty') ? '' : x.netNs.toFixed(0)]);
  }
  out.push(...table(rows, ['l', 'l', 'l', 'l', 'r', 'r']).map((l) => `  ${l}`));
  return `${out.join('\n')}\n`;
}

function errMark(f: Figure, m: Scenario): string {
  return f.errors[m] > 0 ? '*' : '';
}

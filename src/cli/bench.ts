// SPDX-License-Identifier: Apache-2.0
// `meshwarp bench`: the A/B benchmark (direct, direct+sidecar, iptables, ebpf,
// ebpf+sockmap) on a lab it builds and removes, plus the tc programs' per-packet cost.
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { sidecarObject } from '../datapath/sidecar/structs.ts';
import { FULL, QUICK, runBench, type BenchOptions, type Progress } from '../bench/run.ts';
import { formatReport } from '../bench/report.ts';
import { renderChart } from '../bench/svg.ts';
import { SCENARIOS, PLACEMENTS, parseScenarios, parsePlacements } from '../bench/topology.ts';
import { duration } from '../bench/stats.ts';
import { writeFileAtomic } from '../sys/fs.ts';
import { runControlPlane } from './bench-churn.ts';

const HELP = `usage: meshwarp bench --control-plane [--json] (pod churn: meshwarp bench --control-plane -h)
       meshwarp bench [--full] [--json] [--chart PATH] [--rounds N] [--duration S]
                      [--conns LIST] [--conn-concurrency N] [--scenarios LIST] [--placements LIST]
                      [--no-tc] [--tc-repeat N] [--tc-runs N] [--bpf-object PATH] [--prefix P]

Builds a two-node lab and measures a client pod talking to a server pod on
the same node and on the other node, in five scenarios: direct (no sidecar),
direct+sidecar (haproxy sidecars used explicitly), iptables, ebpf and
ebpf+sockmap (haproxy sidecars, traffic intercepted; ebpf+sockmap with S4
forced on, labelled unsafe where the behaviour gate fails). Scenarios are
interleaved within each round; medians with min–max over rounds, the ratios
ebpf/iptables, ebpf+sockmap/iptables and each/direct with the min–max of the
per-round ratios, and the goals (JSON "goals") are reported. Also measures
the app <-> sidecar leg alone (sockmap vs loopback TCP) and each tc program's
ns per packet (BPF_PROG_TEST_RUN). Needs root; everything it creates is
removed at the end and on Ctrl-C.

  --full               longer run: ${FULL.rounds} rounds × ${FULL.durationS} s (default: ${QUICK.rounds} × ${QUICK.durationS} s, about 3 minutes; --full about 14)
  --json               print the report as JSON (every figure and sample) instead of the table
  --chart PATH         where to write the SVG chart (default: ./meshwarp-bench-<time>.svg)
  --rounds N           rounds (each scenario once per round)
  --duration S         seconds per measurement (whole seconds)
  --conns LIST         keep-alive connection counts (default ${QUICK.conns.join(',')})
  --conn-concurrency N concurrent connections of the connection-rate test (default ${QUICK.connConcurrency})
  --scenarios LIST     subset of ${SCENARIOS.join(',')} (--modes: the old name)
  --placements LIST    subset of ${PLACEMENTS.join(',')}
  --no-tc              skip the tc program section
  --tc-repeat N        runs per BPF_PROG_TEST_RUN call (default ${QUICK.tcRepeat})
  --tc-runs N          calls for the one-run-per-call figures (default ${QUICK.tcSingleRuns})
  --bpf-object PATH    measure another build of sidecar.bpf.o (default: build/bpf/sidecar.bpf.o)
  --prefix P           lab prefix (default: random mwb…)
`;

function positiveInt(flag: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const x = Number(v);
  if (!Number.isInteger(x) || x < 1) throw new Error(`${flag}: expected a positive whole number, got "${v}"`);
  return x;
}

function intList(flag: string, v: string | undefined, dflt: number[]): number[] {
  if (v === undefined) return dflt;
  const xs = v.split(',').map((s) => positiveInt(flag, s.trim(), 0));
  return [...new Set(xs)].sort((a, b) => a - b);
}

function stamp(d = new Date()): string {
  const p = (x: number) => String(x).padStart(2, '0');
  return `${d.getFullYear()}${p(d.getMonth() + 1)}${p(d.getDate())}-${p(d.getHours())}${p(d.getMinutes())}${p(d.getSeconds())}`;
}

export async function run(argv: string[]): Promise<number> {
  if (argv.includes('--control-plane')) return runControlPlane(argv);
  const { values: v } = parseArgs({
    args: argv,
    options: {
      full: { type: 'boolean' }, json: { type: 'boolean' }, chart: { type: 'string' },
      rounds: { type: 'string' }, duration: { type: 'string' }, conns: { type: 'string' },
      'conn-concurrency': { type: 'string' }, scenarios: { type: 'string' }, modes: { type: 'string' }, placements: { type: 'string' },
      'no-tc': { type: 'boolean' }, 'tc-repeat': { type: 'string' }, 'tc-runs': { type: 'string' },
      prefix: { type: 'string' }, 'bpf-object': { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (v.help) { process.stdout.write(HELP); return 0; }
  const base = v.full ? FULL : QUICK;
  const opts: BenchOptions = {
    rounds: positiveInt('--rounds', v.rounds, base.rounds),
    durationS: positiveInt('--duration', v.duration, base.durationS),
    conns: intList('--conns', v.conns, base.conns),
    connConcurrency: positiveInt('--conn-concurrency', v['conn-concurrency'], base.connConcurrency),
    scenarios: (v.scenarios ?? v.modes) === undefined ? [...SCENARIOS] : parseScenarios((v.scenarios ?? v.modes)!),
    placements: v.placements === undefined ? [...PLACEMENTS] : parsePlacements(v.placements),
    tc: !v['no-tc'],
    tcRepeat: positiveInt('--tc-repeat', v['tc-repeat'], base.tcRepeat),
    tcSingleRuns: positiveInt('--tc-runs', v['tc-runs'], base.tcSingleRuns),
    prefix: v.prefix,
    objectPath: v['bpf-object'] === undefined ? undefined : path.resolve(v['bpf-object']),
  };
  if (opts.scenarios.length === 0) throw new Error('--scenarios: no scenario selected');
  if (opts.placements.length === 0) throw new Error('--placements: no placement selected');
  if (process.getuid?.() !== 0) throw new Error('meshwarp bench needs root (network namespaces, cgroups, BPF)');
  const object = opts.objectPath ?? sidecarObject;
  if (!fs.existsSync(object)) throw new Error(`${object} is missing${opts.objectPath ? '' : ': run `make setup` (or `make bpf`)'}`);
  const chart = path.resolve(v.chart ?? `meshwarp-bench-${stamp()}.svg`);
  fs.mkdirSync(path.dirname(chart), { recursive: true });

  // Ctrl-C: exit at once; the lab's exit hook removes pods, processes, pins
  // and the config directory (see src/lab/cleanup.ts, src/bench/topology.ts).
  const tty = process.stderr.isTTY === true;
  const onSignal = (sig: NodeJS.Signals): void => {
    process.stderr.write(`${tty ? '\r\x1b[2K' : ''}meshwarp bench: ${sig}, cleaning up\n`);
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);

  let last = '';
  const onProgress = (p: Progress): void => {
    const round = p.round === 0 ? 'setup' : `round ${p.round}/${p.rounds}`;
    const line = `[${p.done}/${p.total} · ${round} · ~${duration(p.etaS)} left] ${p.what}`;
    if (tty) process.stderr.write(`\r\x1b[2K${line.slice(0, (process.stderr.columns || 120) - 1)}`);
    else if (p.what !== last) process.stderr.write(`${line}\n`);
    last = p.what;
  };

  try {
    const report = await runBench({ ...opts, onProgress });
    if (tty) process.stderr.write('\r\x1b[2K');
    writeFileAtomic(chart, renderChart(report));
    if (v.json) {
      process.stdout.write(`${JSON.stringify({ ...report, chart }, null, 2)}\n`);
      process.stderr.write(`chart: ${chart}\n`);
    } else {
      process.stdout.write(formatReport(report, chart));
    }
    return report.errors.length > 0 ? 1 : 0;
  } finally {
    if (tty) process.stderr.write('\r\x1b[2K');
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, onSignal);
  }
}

// SPDX-License-Identifier: Apache-2.0
// Per-packet cost of the tc programs of build/bpf/sidecar.bpf.o alone
// (BPF_PROG_TEST_RUN), the tc section of `meshwarp bench`:
//   sudo .tools/node/bin/node bench/tc-prog.ts [--json] [--repeat N] [--runs N] [--trials N]
// The test runs happen inside a throwaway lab netns (nothing is sent anywhere).
import { parseArgs } from 'node:util';
import { Lab, uniquePrefix } from '../src/lab/index.ts';
import { withNetns } from '../src/sys/netns.ts';
import { benchTcPrograms, worstTcPath } from '../src/bench/tcprog.ts';
import { formatTcTable } from '../src/bench/report.ts';

const { values: v } = parseArgs({
  options: { json: { type: 'boolean' }, repeat: { type: 'string' }, runs: { type: 'string' }, trials: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  strict: true,
});
if (v.help) {
  process.stdout.write('usage: bench/tc-prog.ts [--json] [--repeat N (default 1000000)] [--runs N (default 20000)] [--trials N (default 5)]\n');
  process.exit(0);
}
const num = (flag: string, s: string | undefined, d: number): number => {
  const x = s === undefined ? d : Number(s);
  if (!Number.isInteger(x) || x < 1) throw new Error(`${flag}: expected a positive whole number, got "${s}"`);
  return x;
};
const opts = { repeat: num('--repeat', v.repeat, 1_000_000), singleRuns: num('--runs', v.runs, 20_000), trials: num('--trials', v.trials, 5) };

const lab = await Lab.create({ prefix: uniquePrefix('mwt') });
try {
  const node = lab.addNode('node1');
  const r = withNetns(node.netnsPath, () => benchTcPrograms({ ...opts, onProgress: (w) => process.stderr.write(`${w}\n`) }));
  if (v.json) {
    process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
  } else {
    process.stdout.write(formatTcTable(r));
    const w = worstTcPath(r);
    if (w) process.stdout.write(`\nworst per-packet path (repeat method, trace off): ${w.id}, ${w.netNs.toFixed(0)} ns net of the empty program (goal ≤ ${r.goalNs} ns)\n`);
  }
} finally {
  await lab.destroy();
}

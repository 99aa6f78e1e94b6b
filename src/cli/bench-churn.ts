// SPDX-License-Identifier: Apache-2.0
// `meshwarp bench --control-plane`: pod churn through the real CNI chain (src/bench/churn.ts).
import { parseArgs } from 'node:util';
import { CHURN_FULL, formatChurn, runChurn } from '../bench/churn.ts';

const HELP = `usage: meshwarp bench --control-plane [--json] [--rate N] [--duration S] [--hold N] [--prefix P]

One lab node with a real agent; pods are created and deleted through the real CNI
chain (loopback, bridge + host-local, meshwarp-cni) at N per second each for S
seconds, then N pods are held. Reports ADD -> captured and DEL -> gone p50/p99,
the agent's RSS and CPU, and what was left after every pod was deleted (map
entries, links, pins, tc programs, state entries, fds, netns, IPAM). Needs root.

  --rate N       pods added and deleted per second (default ${CHURN_FULL.rate})
  --duration S   seconds of churn (default ${CHURN_FULL.durationS})
  --hold N       pods held after the churn (default ${CHURN_FULL.hold})
  --prefix P     lab prefix (mw..., at most 6 chars; default mwch + random)
  --json         the report as JSON (with "goals")
`;

function positiveInt(flag: string, v: string | undefined, dflt: number): number {
  if (v === undefined) return dflt;
  const x = Number(v);
  if (!Number.isInteger(x) || x < 1) throw new Error(`${flag}: expected a positive whole number, got "${v}"`);
  return x;
}

export async function runControlPlane(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      'control-plane': { type: 'boolean' }, json: { type: 'boolean' }, rate: { type: 'string' }, duration: { type: 'string' },
      hold: { type: 'string' }, prefix: { type: 'string' }, help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  if (v.help) { process.stdout.write(HELP); return 0; }
  const opts = {
    rate: positiveInt('--rate', v.rate, CHURN_FULL.rate),
    durationS: positiveInt('--duration', v.duration, CHURN_FULL.durationS),
    hold: positiveInt('--hold', v.hold, CHURN_FULL.hold),
    prefix: v.prefix,
  };
  if (opts.prefix !== undefined && !opts.prefix.startsWith('mw')) throw new Error('--prefix: must start with mw (a lab prefix)');
  if (process.getuid?.() !== 0) throw new Error('meshwarp bench needs root (network namespaces, cgroups, BPF)');
  const onSignal = (sig: NodeJS.Signals): void => { process.exit(sig === 'SIGINT' ? 130 : 143); }; // the lab's exit hook cleans up
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, onSignal);
  try {
    const r = await runChurn({ ...opts, progress: (l) => process.stderr.write(`${l}\n`) });
    process.stdout.write(v.json ? `${JSON.stringify(r, null, 2)}\n` : formatChurn(r));
    return r.goals.every((g) => g.met) ? 0 : 1;
  } finally {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, onSignal);
  }
}

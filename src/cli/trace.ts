// SPDX-License-Identifier: Apache-2.0
// `meshwarp trace`: streams the datapath's decisions from the running agent
// (the agent switches kernel tracing on while someone listens).
import { parseArgs } from 'node:util';
import { VERDICTS, formatTrace, type TraceRecord } from '../datapath/sidecar/trace.ts';
import { agentStream } from '../agent/client.ts';

const HELP = `usage: meshwarp trace [--pod NS/NAME] [--verdict ${VERDICTS.join('|')}] [--json] [--count N] [--socket PATH]

Streams one line per datapath decision (program, pod, verdict and reason,
original -> new destination) until Ctrl-C, or until --count events.
`;

export async function run(argv: string[]): Promise<number> {
  const { values: o } = parseArgs({
    args: argv,
    options: {
      pod: { type: 'string' }, verdict: { type: 'string' }, json: { type: 'boolean' },
      count: { type: 'string' }, socket: { type: 'string' }, help: { type: 'boolean' },
    },
    strict: true,
  });
  if (o.help) { process.stdout.write(HELP); return 0; }
  if (o.verdict && !VERDICTS.includes(o.verdict)) throw new Error(`--verdict: unknown verdict "${o.verdict}"`);
  const max = o.count === undefined ? Infinity : Number(o.count);
  if (!(max > 0)) throw new Error(`--count: expected a positive number, got ${o.count}`);
  const q = new URLSearchParams();
  if (o.pod) q.set('pod', o.pod);
  if (o.verdict) q.set('verdict', o.verdict);
  let n = 0;
  const stream = await agentStream(`/v1/trace?${q}`, (r) => {
    if (n >= max) return;
    process.stdout.write(o.json ? `${JSON.stringify(r)}\n` : `${formatTrace(r as TraceRecord)}\n`);
    if (++n >= max) stream.close();
  }, o.socket);
  process.once('SIGINT', () => stream.close());
  await stream.ended;
  return 0;
}

// SPDX-License-Identifier: Apache-2.0
// `meshwarp trace`: streams the datapath's decisions from the running agent
// (the agent switches kernel tracing on while someone listens).
import http from 'node:http';
import { parseArgs } from 'node:util';
import { DEFAULTS } from '../agent/config.ts';
import { formatTrace, type TraceRecord } from '../datapath/sidecar/trace.ts';

const HELP = `usage: meshwarp trace [--pod NS/NAME] [--verdict captured|bypassed|failed|answered] [--json] [--count N] [--socket PATH]

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
  if (o.verdict && !['captured', 'bypassed', 'failed', 'answered'].includes(o.verdict)) throw new Error(`--verdict: unknown verdict "${o.verdict}"`);
  const max = o.count === undefined ? Infinity : Number(o.count);
  if (!(max > 0)) throw new Error(`--count: expected a positive number, got ${o.count}`);
  const q = new URLSearchParams();
  if (o.pod) q.set('pod', o.pod);
  if (o.verdict) q.set('verdict', o.verdict);
  const socket = o.socket ?? DEFAULTS.socket;
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: socket, path: `/v1/trace?${q}` }, (res) => {
      if (res.statusCode !== 200) { res.resume(); return reject(new Error(`agent answered ${res.statusCode}`)); }
      let buf = '';
      let n = 0;
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (!line) continue;
          process.stdout.write(o.json ? `${line}\n` : `${formatTrace(JSON.parse(line) as TraceRecord)}\n`);
          if (++n >= max) { req.destroy(); return resolve(0); }
        }
      });
      res.on('end', () => resolve(0));
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') reject(new Error(`no agent listening at ${socket}`));
      else reject(e);
    });
    process.once('SIGINT', () => { req.destroy(); resolve(0); });
  });
}

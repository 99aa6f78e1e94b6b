// SPDX-License-Identifier: Apache-2.0
// The load generators: wrk (HTTP request/response, keep-alive or one request
// per connection) and iperf3 (bulk), run inside a lab sandbox as the app uid,
// with their results parsed into numbers.
import type { Sandbox } from '../lab/index.ts';
import { CommandError } from '../sys/exec.ts';

/** Children get a minimal environment (NODE_EXTRA_CA_CERTS and friends are not theirs). */
export const CHILD_ENV: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };

/**
 * wrk's done() hook: one machine-readable line with the exact counters and the
 * latency histogram's percentiles (microseconds), next to wrk's usual text.
 */
export const WRK_REPORT_LUA = `-- meshwarp bench: print wrk's summary as one JSON line
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'MWJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,"mean_us":%.1f,"max_us":%.0f,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
`;

export interface WrkErrors { connect: number; read: number; write: number; status: number; timeout: number }

export interface WrkResult {
  requests: number;
  durationUs: number;
  /** Completed requests per second (= connections per second with Connection: close). */
  rps: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  meanUs: number;
  maxUs: number;
  errors: WrkErrors;
}

/** Parses wrk's output with the WRK_REPORT_LUA line. */
export function parseWrk(stdout: string): WrkResult {
  const line = stdout.split('\n').find((l) => l.startsWith('MWJSON '));
  if (!line) throw new Error(`wrk printed no MWJSON line: ${stdout.trim().slice(-500)}`);
  const j = JSON.parse(line.slice(7)) as Record<string, number>;
  const durationUs = j.duration_us;
  return {
    requests: j.requests,
    durationUs,
    rps: durationUs > 0 ? j.requests / (durationUs / 1e6) : NaN,
    p50Us: j.p50_us, p90Us: j.p90_us, p99Us: j.p99_us, meanUs: j.mean_us, maxUs: j.max_us,
    errors: { connect: j.connect, read: j.read, write: j.write, status: j.status, timeout: j.timeout },
  };
}

export interface WrkOptions {
  url: string;
  connections: number;
  durationS: number;
  /** Path of WRK_REPORT_LUA, readable by `uid`. */
  script: string;
  /** One request per connection (Connection: close). */
  close?: boolean;
  uid: number;
}

export async function runWrk(sb: Sandbox, o: WrkOptions): Promise<WrkResult> {
  const argv = ['wrk', '-t1', `-c${o.connections}`, `-d${o.durationS}s`, '--timeout', '5s', '--latency', '-s', o.script,
    ...(o.close ? ['-H', 'Connection: close'] : []), o.url];
  const r = await sb.run(argv, { uid: o.uid, env: CHILD_ENV, timeoutMs: o.durationS * 1000 + 20_000 });
  if (r.code !== 0) throw new CommandError(argv, r.code, r.stderr || r.stdout || (r.timedOut ? 'timed out' : String(r.signal)));
  return parseWrk(r.stdout);
}

export interface IperfResult {
  /** Received bits per second (the receiver's view, end.sum_received). */
  bps: number;
  bytes: number;
  seconds: number;
  retransmits: number;
}

/** Parses `iperf3 -J` client output. */
export function parseIperf(stdout: string): IperfResult {
  let j: { error?: string; end?: { sum_received?: { bits_per_second: number; bytes: number; seconds: number }; sum_sent?: { retransmits?: number } } };
  try {
    j = JSON.parse(stdout);
  } catch {
    throw new Error(`iperf3 printed no JSON: ${stdout.trim().slice(-500)}`);
  }
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  const rx = j.end?.sum_received;
  if (!rx) throw new Error('iperf3 JSON has no end.sum_received');
  return { bps: rx.bits_per_second, bytes: rx.bytes, seconds: rx.seconds, retransmits: j.end?.sum_sent?.retransmits ?? 0 };
}

export interface IperfOptions { host: string; port: number; durationS: number; uid: number }

export async function runIperf(sb: Sandbox, o: IperfOptions): Promise<IperfResult> {
  const argv = ['iperf3', '-c', o.host, '-p', String(o.port), '-t', String(o.durationS), '-J', '--connect-timeout', '3000'];
  const r = await sb.run(argv, { uid: o.uid, env: CHILD_ENV, timeoutMs: o.durationS * 1000 + 20_000 });
  if (r.code !== 0 && !r.stdout.trim().startsWith('{')) {
    throw new CommandError(argv, r.code, r.stderr || (r.timedOut ? 'timed out' : String(r.signal)));
  }
  return parseIperf(r.stdout);
}

/** The TCP ports listening in the sandbox's netns. */
export async function listeningPorts(sb: Sandbox): Promise<Set<number>> {
  const out = await sb.check(['ss', '-Hltn'], { env: CHILD_ENV, timeoutMs: 5000 });
  const ports = new Set<number>();
  for (const l of out.split('\n')) {
    const local = l.trim().split(/\s+/)[3];
    const m = local ? /:(\d+)$/.exec(local) : null;
    if (m) ports.add(Number(m[1]));
  }
  return ports;
}

/** Waits until every port listens; rejects after timeoutMs naming the missing ones. */
export async function waitListening(sb: Sandbox, ports: number[], timeoutMs = 5000, why = () => ''): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const have = await listeningPorts(sb);
    const missing = ports.filter((p) => !have.has(p));
    if (missing.length === 0) return;
    if (Date.now() > end) throw new Error(`${sb.name}: nothing listens on ${missing.join(', ')} after ${timeoutMs} ms${why()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** One HTTP GET with curl from the sandbox; resolves with the body. */
export async function httpGet(sb: Sandbox, url: string, uid: number): Promise<string> {
  return sb.check(['curl', '-sS', '--fail', '--max-time', '3', url], { uid, env: CHILD_ENV, timeoutMs: 6000 });
}

/** First line of `<tool> --version`-like output (for the report). */
export async function toolVersion(sb: Sandbox, argv: string[]): Promise<string> {
  const r = await sb.run(argv, { env: CHILD_ENV, timeoutMs: 5000 });
  return `${r.stdout}\n${r.stderr}`.split('\n').map((l) => l.trim()).find((l) => l !== '') ?? 'unknown';
}

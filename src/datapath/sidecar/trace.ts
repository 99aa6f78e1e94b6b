// SPDX-License-Identifier: Apache-2.0
// Datapath trace events (struct trace_event) as records for people and JSON.
import { formatIp } from '../../profiles/ip.ts';
import { STATS, TRACE_PROGRAMS, TRACE_VERDICTS, traceEvent, type IpAddr } from './structs.ts';

import type { TraceRecord } from '../trace.ts';

export type { TraceRecord };

/** The verdicts a TraceRecord can carry (for filters and help texts). */
export const VERDICTS: readonly string[] = Object.values(TRACE_VERDICTS);

/** "10.0.0.1:80" / "[fd00::1]:80" from the 16-byte map form (v4-mapped for IPv4). */
export function formatEndpoint(a: IpAddr, port: number): string {
  const ip = formatAddr(a);
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** "10.0.0.1" / "fd00::1" from the 16-byte map form (v4-mapped for IPv4). */
export function formatAddr(a: IpAddr): string {
  const b = a.addr;
  const v4 = b.slice(0, 10).every((x) => x === 0) && b[10] === 0xff && b[11] === 0xff;
  return v4 ? b.slice(12).join('.') : formatIp({ family: 6, bytes: b });
}

export function decodeTrace(buf: Buffer): TraceRecord {
  const e = traceEvent.decode(buf);
  return {
    tsNs: String(e.ts_ns),
    netnsCookie: String(e.netns_cookie),
    program: TRACE_PROGRAMS[e.program] ?? `program${e.program}`,
    verdict: TRACE_VERDICTS[e.verdict] ?? `verdict${e.verdict}`,
    reason: STATS[e.reason] ?? `reason${e.reason}`,
    orig: formatEndpoint(e.orig, e.orig_port),
    to: formatEndpoint(e.to, e.to_port),
    uid: e.uid,
  };
}

/** One readable line: `connect4  default/curl  captured (captured_out)  10.244.2.3:8080 -> 127.0.0.1:15001  uid 1000`. */
export function formatTrace(r: TraceRecord): string {
  const arrow = r.orig === r.to ? r.orig : `${r.orig} -> ${r.to}`;
  return `${r.program.padEnd(10)} ${(r.pod ?? `netns:${r.netnsCookie}`).padEnd(24)} ${`${r.verdict} (${r.reason})`.padEnd(30)} ${arrow}${r.uid ? `  uid ${r.uid}` : ''}`;
}

// SPDX-License-Identifier: Apache-2.0
// The kernel CPU the datapath's own programs cost (BPF_ENABLE_STATS run time): the
// bench reads it around each measurement, so "CPU per request" can name what the
// BPF programs took. Counted for every meshwarp program on the machine (their names
// start mwsc_ or mwam_) the bench process holds.
import { execFileSync } from 'node:child_process';
import { fn } from '../bpf/libbpf.ts';
import { BPF_STATS_RUN_TIME } from '../bpf/uapi.ts';
import { close } from '../sys/libc.ts';

/**
 * Turns on per-program run-time accounting (the kernel counts while the fd is open;
 * it costs two clock reads per program run, in the eBPF scenarios only). Returns the
 * function that turns it off again.
 */
export function enableBpfStats(): () => void {
  const fd = fn.enableStats(BPF_STATS_RUN_TIME) as number;
  if (fd < 0) throw new Error(`BPF_ENABLE_STATS failed (${fd})`);
  return () => close(fd);
}

/** Run time (ns) so far of each meshwarp BPF program this process holds, by program id. */
export type BpfRunTimes = Map<number, number>;

/**
 * The run times of the meshwarp programs (names mwsc_/mwam_) whose fds this process
 * holds — the bench's own drivers, not another lab's on the same machine — or of every
 * meshwarp program where bpftool cannot tell who holds them.
 */
export function bpfRunTimes(): BpfRunTimes {
  const progs = JSON.parse(execFileSync('bpftool', ['-j', 'prog', 'show'], { encoding: 'utf8', maxBuffer: 64 << 20 })) as
    { id: number; name?: string; run_time_ns?: number; pids?: { pid: number }[] }[];
  const ours = progs.filter((p) => /^mw(sc|am)_/.test(p.name ?? ''));
  const known = ours.some((p) => p.pids !== undefined);
  const out: BpfRunTimes = new Map();
  for (const p of ours) if (!known || p.pids?.some((x) => x.pid === process.pid)) out.set(p.id, p.run_time_ns ?? 0);
  return out;
}

/** ns the programs ran between two readings (programs in both: one loaded or unloaded between does not count). */
export function bpfNsBetween(a: BpfRunTimes, b: BpfRunTimes): number {
  let ns = 0;
  for (const [id, t] of b) { const t0 = a.get(id); if (t0 !== undefined) ns += t - t0; }
  return ns;
}

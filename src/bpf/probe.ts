// SPDX-License-Identifier: Apache-2.0
// Two-instruction BPF_PROG_LOAD probes for what libbpf 1.1 cannot answer:
// - a program type with a given expected_attach_type (the hook itself);
// - a helper from a program type. libbpf_probe_bpf_helper() 1.1 only knows the
//   verifier's pre-6.2 wording ("unknown func"); since 6.2 the verifier says
//   "program of this type cannot use helper", which libbpf 1.1 reads as
//   "supported" (bpf_redirect from cgroup_sock_addr comes out as supported on
//   6.18). Reading the verifier log ourselves gets it right on every kernel.
// Programs are loaded and closed at once; nothing is attached.
import { close, strerror } from '../sys/libc.ts';
import { CALL, EXIT, MOV_R0, progLoadRaw } from './sys.ts';
import { fn } from './libbpf.ts';
import { ERRNO } from './uapi.ts';

interface LoadResult { ok: boolean; errno: number; log: string }

const MOV_R0_1 = MOV_R0(1);

/** BPF_PROG_LOAD of `insns`; the fd is closed at once. */
function probeLoad(progType: number, expectedAttachType: number, insns: Buffer): LoadResult {
  const r = progLoadRaw(progType, insns, { expectedAttachType });
  if (r.fd >= 0) close(r.fd);
  return { ok: r.fd >= 0, errno: r.errno, log: r.log };
}

/** Tri-state answer with the reason. */
export interface Answer { supported: boolean | undefined; detail: string }

/** Does the kernel load a trivial program of this type for this hook? */
export function probeAttachType(progType: number, attachType: number): Answer {
  const r = probeLoad(progType, attachType, Buffer.concat([MOV_R0_1, EXIT]));
  if (r.ok) return { supported: true, detail: 'loads' };
  if (r.errno === ERRNO.EPERM) return { supported: undefined, detail: `unknown: ${strerror(r.errno)} (errno ${r.errno})` };
  return { supported: false, detail: `rejected: ${lastLine(r.log) || strerror(r.errno)} (errno ${r.errno})` };
}

// Verifier messages meaning "this helper is not available to this program type".
const UNSUPPORTED = ['invalid func ', 'unknown func ', 'program of this type cannot use helper ', 'helper call is not allowed'];

/**
 * Is `helper` callable from `progType`? The verifier checks availability
 * before arguments, so any later complaint (wrong argument types) means yes.
 */
export function probeHelper(progType: number, attachType: number, helper: number): Answer {
  const r = probeLoad(progType, attachType, Buffer.concat([CALL(helper), EXIT]));
  if (r.ok) return { supported: true, detail: 'available' };
  const hit = UNSUPPORTED.find((m) => r.log.includes(m));
  if (hit) return { supported: false, detail: `not available: ${lineWith(r.log, hit)}` };
  // An empty log means the load stopped before the verifier ran (type/attach rejected, no privilege).
  if (r.log.trim() === '') return { supported: undefined, detail: `unknown: ${strerror(r.errno)} (errno ${r.errno})` };
  return { supported: true, detail: 'available' };
}

function lastLine(log: string): string {
  return log.trim().split('\n').filter((l) => !l.startsWith('processed ')).at(-1) ?? '';
}

function lineWith(log: string, needle: string): string {
  return log.split('\n').find((l) => l.includes(needle))?.trim() ?? needle.trim();
}

/** libbpf's own probes (correct for program and map types): 1 yes, 0 no, <0 -errno. */
export function probeProgType(progType: number): number {
  return fn.probeProgType(progType, null) as number;
}
export function probeMapType(mapType: number): number {
  return fn.probeMapType(mapType, null) as number;
}

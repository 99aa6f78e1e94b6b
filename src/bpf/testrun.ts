// SPDX-License-Identifier: Apache-2.0
// BPF_PROG_TEST_RUN through libbpf's bpf_prog_test_run_opts: runs a loaded
// program on a crafted input (for tc programs, a packet from its Ethernet
// header) `repeat` times inside the kernel and reports the return value and
// the mean time per run. The kernel reads the clock around the whole loop, so
// with repeat = 1 the figure includes one clock read: compare with an empty
// program measured the same way (returnProgram below).
//
// The packet is copied into a fresh skb once per call and every repetition
// runs on that same skb: a program that rewrites the packet sees its own
// rewrite from the second repetition on.
import koffi from 'koffi';
import { fn, check, BpfError, TestRunOpts } from './libbpf.ts';
import { close } from '../sys/libc.ts';
import { EXIT, MOV_R0, progLoadRaw } from './sys.ts';
import { ERRNO as E } from './uapi.ts';

export interface TestRunInput {
  /** The input packet (tc: from the Ethernet header; at least 14 bytes). */
  data?: Buffer;
  /** The context (tc: a struct __sk_buff with the fields the kernel accepts). */
  ctx?: Buffer;
  /** Runs of the program on the input (default 1). */
  repeat?: number;
  /** Room for the packet as the program left it (default: not returned). */
  dataOutSize?: number;
}

export interface TestRunResult {
  /** The program's return value (signed: TC_ACT_UNSPEC is -1). */
  retval: number;
  /** Mean nanoseconds per run, as the kernel timed it. */
  durationNs: number;
  /** The packet after the last run (when dataOutSize was given). */
  dataOut?: Buffer;
}

/** Runs the program behind `progFd` on `input` (BPF_PROG_TEST_RUN). */
export function testRun(progFd: number, input: TestRunInput = {}): TestRunResult {
  const repeat = input.repeat ?? 1;
  if (!Number.isInteger(repeat) || repeat < 1 || repeat > 0x7fffffff) throw new RangeError(`repeat must be a positive int32, got ${repeat}`);
  const out = input.dataOutSize ? Buffer.alloc(input.dataOutSize) : null;
  const o = {
    sz: koffi.sizeof(TestRunOpts),
    data_in: input.data ?? null,
    data_out: out,
    data_size_in: input.data?.length ?? 0,
    data_size_out: out?.length ?? 0,
    ctx_in: input.ctx ?? null,
    ctx_out: null,
    ctx_size_in: input.ctx?.length ?? 0,
    ctx_size_out: 0,
    retval: 0,
    repeat,
    duration: 0,
    flags: 0,
    cpu: 0,
    batch_size: 0,
  };
  // A repeated run stops with EINTR when a signal is pending (SIGCHLD of a child process,
  // under load): run it again, as the kernel asks.
  let rc = fn.progTestRun(progFd, o);
  for (let tries = 0; rc === -E.EINTR && tries < 20; tries++) { o.duration = 0; rc = fn.progTestRun(progFd, o); }
  check(`BPF_PROG_TEST_RUN (prog fd ${progFd})`, rc);
  const res: TestRunResult = { retval: o.retval | 0, durationNs: o.duration };
  if (out) res.dataOut = out.subarray(0, o.data_size_out);
  return res;
}

/** A program loaded from raw instructions; close() releases it. */
export class RawProgram {
  #fd: number;
  constructor(fd: number) { this.#fd = fd; }
  get fd(): number {
    if (this.#fd < 0) throw new Error('program is closed');
    return this.#fd;
  }
  close(): void {
    if (this.#fd >= 0) close(this.#fd);
    this.#fd = -1;
  }
}

/**
 * Loads `r0 = retval; exit` as a program of `progType`: the floor of a
 * per-packet measurement (what the test-run loop costs with no work in it).
 */
export function returnProgram(progType: number, retval: number, name = 'mw_empty'): RawProgram {
  const r = progLoadRaw(progType, Buffer.concat([MOV_R0(retval), EXIT]), { name });
  if (r.fd < 0) throw new BpfError(`load ${name} (program type ${progType})`, r.errno, r.log);
  return new RawProgram(r.fd);
}

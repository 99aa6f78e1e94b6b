// SPDX-License-Identifier: Apache-2.0
// TS side of bpf/selftest/selftest.bpf.c (used by kernel tests and doctor).
import { struct, u16, u32, u64, pad, type Codec } from './codec.ts';
import { fromRoot } from '../paths.ts';

export const selftestObject = fromRoot('build/bpf/selftest.bpf.o');

export interface StEvent { cookie: bigint; orig_ip4: number; orig_port: number; new_port: number; uid: number }
export const stEvent: Codec<StEvent> = struct('st_event', [
  ['cookie', u64], ['orig_ip4', u32], ['orig_port', u16], ['new_port', u16], ['uid', u32], ['_pad', pad(4)],
]);

/** Codecs that cross the boundary for this object, for the BTF layout test. */
export const selftestStructs: Codec<any>[] = [stEvent];

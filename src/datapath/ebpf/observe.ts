// SPDX-License-Identifier: Apache-2.0
// What every eBPF dataplane exposes the same way: per-CPU counters indexed by
// enum mw_stat (bpf/include/mw_trace.h), and the trace ring buffer behind its
// run-time switch map.
import { RingBufferReader, type BpfMap } from '../../bpf/index.ts';
import type { TraceRecord, TraceSource } from '../trace.ts';

/** How soon a quiet trace is shown (the datapath batches reader wakeups). */
const TRACE_DRAIN_MS = 50;

/** Counters summed over CPUs, by name (`names[i]` is slot i). */
export function sumStats<N extends string>(stats: BpfMap<number, bigint>, names: readonly N[]): Record<N, bigint> {
  const out = {} as Record<N, bigint>;
  names.forEach((name, i) => { out[name] = (stats.lookupPerCpu(i) ?? []).reduce((a, b) => a + b, 0n); });
  return out;
}

export interface RingTraceOptions {
  /** The trace_config switch: slot 0, { enabled }. */
  setSwitch(on: boolean): void;
  /** The trace_events ring buffer's fd. */
  ringFd(): number;
  decode(b: Buffer): TraceRecord;
  cookies(): Map<string, string>;
}

/** A TraceSource over a ring buffer: events are read on the event loop until closed. */
export function ringTrace(o: RingTraceOptions): TraceSource {
  return {
    setEnabled: (on) => o.setSwitch(on),
    // The datapath wakes the reader only once MW_TRACE_WAKEUP_BYTES are pending; the timer drains the rest.
    read: (onEvent) => new RingBufferReader(o.ringFd(), (b) => onEvent(o.decode(b)), { drainMs: TRACE_DRAIN_MS }),
    cookies: () => o.cookies(),
  };
}

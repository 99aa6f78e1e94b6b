// SPDX-License-Identifier: Apache-2.0
// Datapath trace records, engine-neutral: what the agent streams and the CLI prints.

export interface TraceRecord {
  /** Kernel monotonic time of the decision, ns. */
  tsNs: string;
  netnsCookie: string;
  /** namespace/name, resolved by the agent from the netns cookie. */
  pod?: string;
  program: string;
  verdict: string;
  reason: string;
  orig: string;
  to: string;
  uid: number;
}

/** A driver's trace: a run-time switch plus a reader of the events on the event loop. */
export interface TraceSource {
  setEnabled(on: boolean): void;
  read(onEvent: (r: TraceRecord) => void): { close(): void };
  /** The netns cookie of each meshed sandbox, to name pods in events. */
  cookies(): Map<string, string>;
}

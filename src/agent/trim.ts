// SPDX-License-Identifier: Apache-2.0
// Gives the memory a burst of pod work freed back to the kernel once the agent is idle.
// glibc keeps freed pages in its arenas (V8's compiler zones, buffers, koffi calls): after a
// churn of thousands of pods that is ~10 MB of RSS the agent no longer uses (docs/benchmark.md,
// session 6). malloc_trim(0) hands them back (under 1 ms here), once per quiet second.
import { mallocTrim } from '../sys/libc.ts';

/** How long the API has to be quiet before the agent trims. */
export const TRIM_IDLE_MS = 1000;

/** Returns arm(): call it when a request finishes; trim(0) runs idleMs after the last one. */
export function idleTrimmer(idleMs = TRIM_IDLE_MS, trim: (pad: number) => number = mallocTrim): () => void {
  let timer: NodeJS.Timeout | undefined;
  return () => {
    if (timer) { timer.refresh(); return; }
    timer = setTimeout(() => { timer = undefined; trim(0); }, idleMs);
    timer.unref();
  };
}

// SPDX-License-Identifier: Apache-2.0
// Gives the memory a burst of pod work freed back to the kernel once the agent is idle.
// glibc keeps freed pages in its arenas (V8's compiler zones, buffers, koffi calls): after a
// churn of thousands of pods that is ~10 MB of RSS the agent no longer uses (docs/benchmark.md,
// "agent memory"). malloc_trim(0) hands them back (under 1 ms here), once per quiet second.
import koffi from 'koffi';

/** How long the API has to be quiet before the agent trims. */
export const TRIM_IDLE_MS = 1000;

type Trim = (pad: number) => number;

/** glibc's malloc_trim, or undefined where libc has none. */
export function bindTrim(): Trim | undefined {
  try {
    return koffi.load('libc.so.6').func('int malloc_trim(size_t pad)') as Trim;
  } catch {
    return undefined; // not glibc (musl has no malloc_trim): nothing to hand back this way
  }
}

/** Returns arm(): call it when a request finishes; malloc_trim runs TRIM_IDLE_MS after the last one. */
export function idleTrimmer(idleMs = TRIM_IDLE_MS, trim: Trim | undefined = bindTrim()): () => void {
  if (!trim) return () => {};
  let timer: NodeJS.Timeout | undefined;
  return () => {
    if (timer) { timer.refresh(); return; }
    timer = setTimeout(() => { timer = undefined; trim(0); }, idleMs);
    timer.unref();
  };
}

// SPDX-License-Identifier: Apache-2.0
// Waiting in tests for something that happens asynchronously (a log line, a file rewrite).
import { eventually } from '../../src/lab/proc.ts';

export { eventually };

/** Polls `cond` until true; throws "timed out waiting for `what`" after timeoutMs. Returns the ms it took. */
export async function waitUntil(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 3000): Promise<number> {
  const start = performance.now();
  if (!await eventually(cond, timeoutMs)) throw new Error(`timed out waiting for ${what}`);
  return performance.now() - start;
}

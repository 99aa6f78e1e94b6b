// SPDX-License-Identifier: Apache-2.0
// Kernel tests need root and a BPF-capable kernel. Outside CI they skip with
// a reason when those are missing; with CI=true a missing feature fails.
import { test, type TestContext } from 'node:test';
import { ensureBpffs } from '../../src/sys/bpffs.ts';

export const inCI = process.env.CI === 'true';

/** Why kernel tests cannot run here, or undefined when they can. */
export function kernelUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root';
  try {
    ensureBpffs();
  } catch (e) {
    return `no bpffs: ${(e as Error).message}`;
  }
  return undefined;
}

/** A test that runs on the real kernel; skipped (or failed under CI) when it cannot. */
export function kernelTest(name: string, fn: (t: TestContext) => Promise<void> | void, opts: { timeout?: number } = {}): void {
  const why = kernelUnavailable();
  if (why && !inCI) {
    test(name, { skip: why }, () => {});
    return;
  }
  test(name, { timeout: opts.timeout ?? 60_000 }, async (t) => {
    if (why) throw new Error(`kernel test cannot run: ${why} (CI=true makes this a failure)`);
    await fn(t);
  });
}

/** Short unique prefix for names of netns, cgroups, pins (the lab's rule: fits 15-char interface names). */
export { uniquePrefix as testPrefix } from '../../src/lab/lab.ts';

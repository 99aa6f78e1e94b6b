// SPDX-License-Identifier: Apache-2.0
// Kernel tests need root, a BPF-capable kernel and, per test, the features
// they exercise. Outside CI they skip with a reason when those are missing;
// with CI=true a missing prerequisite fails, except a feature the running
// kernel is too old to have (an allowed skip).
import { release } from 'node:os';
import { test, type TestContext } from 'node:test';
import { ensureBpffs } from '../../src/sys/bpffs.ts';
import type { FeatureId } from '../../src/bpf/features.ts';
import { TIME_SCALE } from '../../src/lab/proc.ts';

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

/** A needed feature the kernel lacks: its id, the release that added it, what the probe found. */
export interface MissingFeature { id: string; since: string; reason: string }

export type Gate = { run: true } | { skip: string } | { fail: string };

/**
 * What to do with a test whose needed features are `missing` on kernel
 * `kernelAt(since)` (is the running kernel at least `since`? undefined when
 * its release does not parse). Pure, so the rule is unit-tested.
 */
export function featureGate(missing: MissingFeature[], kernelAt: (since: string) => boolean | undefined, ci: boolean): Gate {
  if (missing.length === 0) return { run: true };
  const skip = `needs ${missing.map((m) => `${m.id} (kernel ≥ ${m.since})`).join(', ')}`;
  if (!ci) return { skip };
  // In CI a kernel that should have the feature (or whose version is unknown) is a failure.
  const due = missing.filter((m) => kernelAt(m.since) !== false);
  if (due.length === 0) return { skip };
  return { fail: `${skip}, which this kernel should have: ${due.map((m) => m.reason).join('; ')} (CI=true makes this a failure)` };
}

type FeaturesModule = Pick<typeof import('../../src/bpf/features.ts'), 'feature' | 'have' | 'kernelAtLeast'>;

/** The gate for `needs` on the running kernel (features.ts passed in: callers choose when libbpf loads). */
export function gateOn(needs: FeatureId[], { feature, have, kernelAtLeast }: FeaturesModule): Gate {
  const missing = needs.filter((id) => !have(id).available)
    .map((id) => ({ id, since: feature(id).since, reason: have(id).reason }));
  return featureGate(missing, (since) => kernelAtLeast(release(), since), inCI);
}

export interface KernelTestOptions {
  timeout?: number;
  /** Kernel features the test exercises (src/bpf/features.ts ids); probed when the test starts. */
  needs?: FeatureId[];
}

/** A test that runs on the real kernel; skipped (or failed under CI) when it cannot. */
export function kernelTest(name: string, fn: (t: TestContext) => Promise<void> | void, opts: KernelTestOptions = {}): void {
  const why = kernelUnavailable();
  if (why && !inCI) {
    test(name, { skip: why }, () => {});
    return;
  }
  test(name, { timeout: (opts.timeout ?? 60_000) * TIME_SCALE }, async (t) => {
    if (why) throw new Error(`kernel test cannot run: ${why} (CI=true makes this a failure)`);
    if (opts.needs?.length) {
      // Loaded here, not at import: tests without `needs` never load the libbpf binding.
      const gate = gateOn(opts.needs, await import('../../src/bpf/features.ts'));
      if ('fail' in gate) throw new Error(gate.fail);
      if ('skip' in gate) { t.skip(gate.skip); return; }
    }
    await fn(t);
  });
}

/** A kernel test of the sidecar eBPF datapath: needs `datapath.sidecar` (Linux ≥ 5.15, docs/kernels.md) on top of `opts.needs`. */
export function sidecarTest(name: string, fn: (t: TestContext) => Promise<void> | void, opts: KernelTestOptions = {}): void {
  kernelTest(name, fn, { ...opts, needs: ['datapath.sidecar', ...(opts.needs ?? [])] });
}

/** A kernel test of the ambient eBPF datapath: needs `datapath.ambient` on top of `opts.needs`. */
export function ambientTest(name: string, fn: (t: TestContext) => Promise<void> | void, opts: KernelTestOptions = {}): void {
  kernelTest(name, fn, { ...opts, needs: ['datapath.ambient', ...(opts.needs ?? [])] });
}

/** Short unique prefix for names of netns, cgroups, pins (the lab's rule: fits 15-char interface names). */
export { uniquePrefix as testPrefix } from '../../src/lab/lab.ts';

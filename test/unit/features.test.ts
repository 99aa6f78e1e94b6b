// SPDX-License-Identifier: Apache-2.0
// Kernel features without the kernel: the registry, the missing-feature error,
// version parsing, and the rule behind kernelTest's `needs` (run, skip with
// the reason, or under CI=true fail when the kernel should have the feature).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { featureGate, type MissingFeature } from '../helpers/kernel.ts';
import { FEATURES, feature, kernelAtLeast, parseKernelVersion, UnsupportedFeatureError } from '../../src/bpf/features.ts';
import { BpfError } from '../../src/bpf/libbpf.ts';
import { ERRNO } from '../../src/bpf/uapi.ts';

const tcx: MissingFeature = { id: 'tcx', since: '6.6', reason: 'tcx not supported by this kernel (needs ≥ 6.6)' };
const cookie: MissingFeature = { id: 'helper.sock_ops.get_netns_cookie', since: '5.15', reason: 'not available' };
const on = (release: string) => (since: string) => kernelAtLeast(release, since);

test('nothing missing: the test runs, in CI or not', () => {
  assert.deepEqual(featureGate([], on('5.10.0'), false), { run: true });
  assert.deepEqual(featureGate([], on('5.10.0'), true), { run: true });
});

test('outside CI a missing feature is a skip that names it and its kernel', () => {
  assert.deepEqual(featureGate([tcx], on('6.1.192'), false), { skip: 'needs tcx (kernel ≥ 6.6)' });
  // Even on a kernel that should have it: only CI turns that into a failure.
  assert.deepEqual(featureGate([tcx], on('6.18.44-fc-v669'), false), { skip: 'needs tcx (kernel ≥ 6.6)' });
  assert.deepEqual(featureGate([tcx, cookie], on('5.10.0'), false),
    { skip: 'needs tcx (kernel ≥ 6.6), helper.sock_ops.get_netns_cookie (kernel ≥ 5.15)' });
});

test('CI: a kernel older than the feature may skip', () => {
  assert.deepEqual(featureGate([tcx], on('6.1.192'), true), { skip: 'needs tcx (kernel ≥ 6.6)' });
  assert.deepEqual(featureGate([tcx, cookie], on('5.10.262'), true), { skip: 'needs tcx (kernel ≥ 6.6), helper.sock_ops.get_netns_cookie (kernel ≥ 5.15)' });
});

test('CI: a kernel that should have the feature fails, with the probe\'s reason', () => {
  const g = featureGate([tcx], on('6.6.0'), true);
  assert.ok('fail' in g);
  assert.match(g.fail, /^needs tcx \(kernel ≥ 6\.6\), which this kernel should have: tcx not supported by this kernel \(needs ≥ 6\.6\)/);
  assert.match(g.fail, /CI=true/);
  // One feature due is enough; only the due one's reason is quoted.
  const both = featureGate([tcx, cookie], on('6.1.0'), true);
  assert.ok('fail' in both);
  assert.match(both.fail, /should have: not available \(CI=true/);
});

test('CI: an unparsable kernel release cannot excuse a skip', () => {
  assert.ok('fail' in featureGate([tcx], on('custom-kernel'), true));
});

test('kernel versions: parsed from uname -r, compared numerically', () => {
  assert.deepEqual(parseKernelVersion('6.18.44-fc-v669'), [6, 18, 44]);
  assert.deepEqual(parseKernelVersion('5.10.0-46-cloud-amd64'), [5, 10, 0]);
  assert.deepEqual(parseKernelVersion('6.6'), [6, 6, 0]);
  assert.equal(parseKernelVersion('custom'), undefined);
  assert.equal(kernelAtLeast('6.10.1', '6.6'), true, '6.10 is after 6.6 (not a string compare)');
  assert.equal(kernelAtLeast('6.6.0', '6.6'), true);
  assert.equal(kernelAtLeast('6.5.13', '6.6'), false);
  assert.equal(kernelAtLeast('7.0.0', '6.6'), true);
  assert.equal(kernelAtLeast('x', '6.6'), undefined);
});

test('registry: unique ids, each with a release that parses', () => {
  assert.equal(new Set(FEATURES.map((f) => f.id)).size, FEATURES.length);
  for (const f of FEATURES) assert.ok(parseKernelVersion(f.since), `${f.id}: since ${f.since}`);
  assert.equal(feature('tcx').since, '6.6');
  assert.equal(feature('helper.sched_cls.sk_assign').name, 'helper bpf_sk_assign in sched_cls programs');
  assert.throws(() => feature('nope' as never), RangeError);
});

test('a missing feature is an UnsupportedFeatureError: the release in the message, a stable code', () => {
  const e = new UnsupportedFeatureError('tcx', ERRNO.EINVAL);
  assert.equal(e.message, 'tcx not supported by this kernel (needs ≥ 6.6)');
  assert.equal(e.code, 'ERR_BPF_NOT_SUPPORTED');
  assert.equal(e.name, 'UnsupportedFeatureError');
  assert.ok(e instanceof BpfError);
  assert.deepEqual([e.feature, e.since, e.errno], ['tcx', '6.6', ERRNO.EINVAL]);
});

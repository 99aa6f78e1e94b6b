// SPDX-License-Identifier: Apache-2.0
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { COUNT_NAMES, churnGoals, latency, leaks, type ChurnFigures, type NodeCounts } from '../../src/bench/churn-report.ts';

const counts = (v: number): NodeCounts => Object.fromEntries(COUNT_NAMES.map((k) => [k, v])) as unknown as NodeCounts;

test('latency: nearest-rank p50/p99, NaN without samples', () => {
  const xs = Array.from({ length: 100 }, (_, i) => 100 - i); // 100..1, unsorted
  assert.deepEqual(latency(xs), { p50: 50, p99: 99, max: 100, n: 100 });
  assert.deepEqual(latency([7]), { p50: 7, p99: 7, max: 7, n: 1 });
  const none = latency([]);
  assert.ok(Number.isNaN(none.p50) && Number.isNaN(none.p99) && none.n === 0);
});

test('leaks: after minus before, per count', () => {
  const after = { ...counts(10), pins: 12, fds: 9 };
  assert.deepEqual(leaks(counts(10), after), { ...counts(0), pins: 2, fds: -1 });
});

const phase = (rate: number) => ({ driverLagS: 0, addRate: rate, delRate: rate, add: latency([1]), del: latency([1]), failures: 0, skippedTicks: 0 });

const figures = (over: Partial<ChurnFigures> = {}): ChurnFigures => ({
  rate: 100, addRate: 100.4, delRate: 99.8, addToCaptured: latency([1]), delToGone: latency([1]),
  held: 250, heldTarget: 250, rssMB: 80, leaks: counts(0), failures: 0,
  chainOnly: phase(30), agentOnly: phase(100), chainRatio: { median: 0.95, min: 0.9, max: 1 }, ...over,
});

test('churnGoals: the asked rate is the target (never lowered), RSS ≤ 100 MB, each leak = 0', () => {
  const g = churnGoals(figures());
  const by = Object.fromEntries(g.map((x) => [x.id, x]));
  assert.equal(by['churn-add-rate'].met, true);
  assert.deepEqual([by['churn-del-rate'].met, by['churn-del-rate'].target, by['churn-del-rate'].op], [false, 100, '>=']);
  assert.deepEqual([by['churn-rss'].target, by['churn-rss'].op, by['churn-rss'].met], [100, '<=', true]);
  for (const k of COUNT_NAMES) assert.deepEqual([by[`leak-${k}`].value, by[`leak-${k}`].met], [0, true]);
  const bad = Object.fromEntries(churnGoals(figures({ rssMB: 100.1, held: 249, failures: 1, leaks: { ...counts(0), tcFilters: 1 } })).map((x) => [x.id, x.met]));
  assert.deepEqual([bad['churn-rss'], bad['churn-held'], bad['churn-failures'], bad['leak-tcFilters'], bad['leak-pins']], [false, false, false, false, true]);
  assert.equal(churnGoals(figures({ rssMB: NaN })).find((x) => x.id === 'churn-rss')!.met, false, 'not measured is not met');
});

test('churnGoals: meshwarp-cni alone must sustain the asked rate, ADDs and DELs', () => {
  const by = (f: ChurnFigures) => Object.fromEntries(churnGoals(f).map((x) => [x.id, x]));
  const g = by(figures());
  assert.deepEqual([g['churn-agent-add-rate'].met, g['churn-agent-del-rate'].met, g['churn-agent-del-rate'].target], [true, true, 100]);
  const slow = by(figures({ agentOnly: { ...phase(100), delRate: 99.9 } }));
  assert.deepEqual([slow['churn-agent-add-rate'].met, slow['churn-agent-del-rate'].met], [true, false]);
  assert.equal(g['churn-chain-ratio'], undefined, 'the chain ratio is a figure, not a goal (it measures the bench\'s driver)');
});

// SPDX-License-Identifier: Apache-2.0
// The benchmark's goals list (src/bench/figures.ts): the four S4 goals of issue 15 are
// always there when ebpf+sockmap ran, with value, op, target, met and the spread of the
// per-round ratios, and say when S4 was forced on against the behaviour gate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildFigures, evaluateGoals, testSpecs, type Sample } from '../../src/bench/figures.ts';
import type { Scenario } from '../../src/bench/topology.ts';

const tests = testSpecs([100], 10);
/** rps per (scenario, round); p99 = 1e6 / rps so lower is better in the same proportion. */
function samples(rps: Partial<Record<Scenario, number[]>>): Sample[] {
  const out: Sample[] = [];
  for (const [scenario, rounds] of Object.entries(rps) as [Scenario, number[]][]) {
    rounds.forEach((v, i) => {
      for (const t of ['rr100', 'conn']) {
        out.push({ round: i + 1, scenario, placement: 'same-node', test: t,
          wrk: { requests: v, durationUs: 1e6, rps: v, p50Us: 5e5 / v, p90Us: 8e5 / v, p99Us: 1e6 / v, meanUs: 5e5 / v, maxUs: 2e6 / v,
            errors: { connect: 0, read: 0, write: 0, status: 0, timeout: 0 } } });
      }
    });
  }
  return out;
}

test('ebpf+sockmap: rps, p99, new connections/s per placement and the leg, with spread; forced where the gate fails', () => {
  const figs = buildFigures(samples({ iptables: [100, 100, 100], ebpf: [110, 110, 110], 'ebpf+sockmap': [120, 140, 160] }), tests, ['same-node']);
  const goals = evaluateGoals(figs, [100], undefined, { sockmapNs: [7, 8, 9], tcpNs: [10, 10, 10] }, { forced: true, gatePass: false });
  const s4 = goals.filter((g) => g.id.includes('sockmap'));
  assert.deepEqual(s4.map((g) => g.id), ['same-node.sockmap.rps', 'same-node.sockmap.p99', 'same-node.sockmap.cps', 'sockmap.leg']);
  const rps = s4[0];
  assert.equal(rps.value, 1.4);
  assert.equal(rps.op, '>=');
  assert.equal(rps.target, 1.3);
  assert.equal(rps.met, true);
  assert.deepEqual(rps.spread, { min: 1.2, max: 1.6 });
  const p99 = s4[1];
  assert.ok(Math.abs(p99.value - 100 / 140) < 1e-9);
  assert.equal(p99.met, true); // 0.714 <= 0.85
  assert.equal(s4[2].met, true); // 1.4 >= 1.0
  assert.equal(s4[3].value, 0.8);
  assert.equal(s4[3].met, false); // 0.8 > 0.7
  assert.deepEqual(s4[3].spread, { min: 0.7, max: 0.9 });
  for (const g of s4) {
    assert.equal(g.forced, true, `${g.id} says it was forced`);
    assert.match(g.text, /forced/);
  }
  // The eBPF goals carry their spread too.
  assert.deepEqual(goals.find((g) => g.id === 'same-node.rps')!.spread, { min: 1.1, max: 1.1 });
});

test('a gate that passes: the S4 goals are not marked forced', () => {
  const figs = buildFigures(samples({ iptables: [100], 'ebpf+sockmap': [120] }), tests, ['same-node']);
  const goals = evaluateGoals(figs, [100], undefined, undefined, { forced: true, gatePass: true });
  assert.ok(goals.filter((g) => g.id.includes('sockmap')).every((g) => g.forced === undefined && !/forced/.test(g.text)));
});

test('the S4 goals are listed (not met, value NaN) when ebpf+sockmap ran but could not be measured', () => {
  const figs = buildFigures(samples({ iptables: [100] }), tests, ['same-node']);
  const goals = evaluateGoals(figs, [100], undefined, undefined, { forced: true, gatePass: false });
  const s4 = goals.filter((g) => g.id.includes('sockmap'));
  assert.equal(s4.length, 4);
  assert.ok(s4.every((g) => Number.isNaN(g.value) && g.met === false));
});

test('no S4 goals when the scenario was not selected', () => {
  const figs = buildFigures(samples({ iptables: [100], ebpf: [110] }), tests, ['same-node']);
  assert.equal(evaluateGoals(figs, [100]).filter((g) => g.id.includes('sockmap')).length, 0);
});

test('ambient (issue 12): ambient/ebpf against ambient/iptables, rps ≥ 1.15× and p99 ≤ 0.9× per placement, with spread', () => {
  const figs = buildFigures(samples({ 'ambient/iptables': [100, 100, 100], 'ambient/ebpf': [110, 120, 130] }), tests, ['same-node']);
  const goals = evaluateGoals(figs, [100]).filter((g) => g.id.includes('.ambient.'));
  assert.deepEqual(goals.map((g) => [g.id, g.op, g.target]), [['same-node.ambient.rps', '>=', 1.15], ['same-node.ambient.p99', '<=', 0.9]]);
  assert.equal(goals[0].value, 1.2);
  assert.equal(goals[0].met, true);
  assert.deepEqual(goals[0].spread, { min: 1.1, max: 1.3 });
  assert.ok(Math.abs(goals[1].value - 100 / 120) < 1e-9);
  assert.equal(goals[1].met, true); // 0.833 <= 0.9
  // Not listed when no ambient scenario ran.
  assert.ok(!evaluateGoals(buildFigures(samples({ iptables: [100] }), tests, ['same-node']), [100]).some((g) => g.id.includes('.ambient.')));
});

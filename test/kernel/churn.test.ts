// SPDX-License-Identifier: Apache-2.0
// A short `meshwarp bench --control-plane` (src/bench/churn.ts): a few seconds of pod churn
// through the real CNI chain against a real agent, then pods held, then all deleted. Asserts
// what each held pod costs on the node and that nothing is left once every pod is gone.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runChurn } from '../../src/bench/churn.ts';
import { COUNT_NAMES } from '../../src/bench/churn-report.ts';
import { DEBIAN_CNI_DIR, labNetns, prefixIsClean } from '../../src/lab/index.ts';
import { inCI, sidecarTest } from '../helpers/kernel.ts';

sidecarTest('Pod churn through the CNI chain leaves no map entry, link, pin, tc program, state entry, fd, netns or address behind', async (t) => {
  if (!existsSync(join(DEBIAN_CNI_DIR, 'bridge'))) {
    if (inCI) throw new Error(`${DEBIAN_CNI_DIR}/bridge missing (containernetworking-plugins)`);
    t.skip('containernetworking-plugins not installed');
    return;
  }
  const prefix = `mwcr${Math.floor(Math.random() * 256).toString(16).padStart(2, '0')}`;
  const r = await runChurn({ rate: 10, durationS: 3, hold: 12, prefix });
  assert.deepEqual(r.errors, [], 'every ADD captured and every DEL gone');
  assert.equal(r.failures, 0);
  assert.equal(r.held, 12);
  assert.ok(r.addToCaptured.n >= 12 + 20, `ADDs measured: ${r.addToCaptured.n}`);
  assert.equal(r.delToGone.n, r.addToCaptured.n, 'every pod added was deleted');
  // Each held pod: one state entry, one netns, its host veth, two tc programs and their pins, two addresses.
  assert.deepEqual(
    { state: r.perHeldPod.stateEntries, netns: r.perHeldPod.netns, links: r.perHeldPod.links, tc: r.perHeldPod.tcFilters, ipam: r.perHeldPod.ipam },
    { state: 1, netns: 1, links: 1, tc: 2, ipam: 2 });
  assert.ok(r.perHeldPod.mapEntries > 0 && r.perHeldPod.pins >= 2, `held pods show in the maps and pins: ${JSON.stringify(r.perHeldPod)}`);
  for (const k of COUNT_NAMES) assert.equal(r.leaks[k], 0, `${k}: ${r.baseline[k]} before the first pod, ${r.after[k]} after the last`);
  assert.ok(r.goals.filter((g) => g.id.startsWith('leak-')).every((g) => g.met));
  // The agent's memory is read (VmRSS of its process), with pods held and with none.
  assert.ok(r.rssMB > 0 && r.rssIdleMB > 0 && r.goals.some((g) => g.id === 'churn-rss' && g.value === r.rssMB), `RSS ${r.rssMB} / ${r.rssIdleMB} MB`);
  // The split adds up to the RSS read just before it; the agent's metrics answered with its heap.
  assert.ok(Math.abs(r.heldRss.anonMB + r.heldRss.fileMB - r.rssMB) < 5, `RSS split ${JSON.stringify(r.heldRss)} vs ${r.rssMB} MB`);
  const m = r.machineCpu;
  assert.ok(m.cores >= 1 && [m.chain, m.full, m.agentOnly].every((x) => Number.isFinite(x) && x > 0) && m.full > m.agentOnly, `machine CPU per pod ${JSON.stringify(m)}`);
  assert.ok(r.heldMemory && r.heldMemory.heapUsedMB > 1 && r.heldMemory.heapUsedMB <= r.heldMemory.heapTotalMB, `agent heap ${JSON.stringify(r.heldMemory)}`);
  // Every step of the chain is timed, one pod at a time and during the churn, and each ran once per pod.
  const chain = ['sandbox', 'ADD loopback', 'ADD bridge', 'ADD meshwarp-cni', 'DEL meshwarp-cni', 'DEL bridge', 'DEL loopback', 'teardown'];
  for (const k of chain) {
    assert.equal(r.steps.alone[k]?.n, 10, `step ${k} alone: ${JSON.stringify(r.steps.alone[k])}`);
    assert.equal(r.steps.churn[k]?.n, r.addToCaptured.n - 12, `step ${k} during churn`);
  }
  assert.ok(Number.isFinite(r.agentCapacity) && r.agentCapacity > 0, `agent capacity ${r.agentCapacity}`);
  // The baseline blocks (the chain without meshwarp-cni) and meshwarp-cni alone on ready sandboxes ran too.
  for (const [name, ph] of [['chain only', r.chainOnly], ['meshwarp-cni alone', r.agentOnly]] as const) {
    assert.equal(ph.failures, 0, `${name}: no failure`);
    assert.ok(ph.addRate > 0 && ph.delRate > 0 && ph.add.n >= 15 && ph.del.n === ph.add.n, `${name}: ${JSON.stringify(ph)}`);
  }
  assert.ok(r.chainRatio.min > 0 && r.chainRatio.min <= r.chainRatio.median && r.chainRatio.median <= r.chainRatio.max, `ratio ${JSON.stringify(r.chainRatio)}`);
  assert.ok(['churn-agent-add-rate', 'churn-agent-del-rate'].every((id) => r.goals.some((g) => g.id === id)));
  assert.deepEqual(labNetns(prefix), [], 'the bench removed its lab');
  assert.ok(prefixIsClean(prefix), 'no cgroup, pin or run directory left');
}, { timeout: 120_000 });

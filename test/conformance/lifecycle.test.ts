// SPDX-License-Identifier: Apache-2.0
// Pod lifecycle and per-connection state: unmesh() stops capture and leaves nothing of the
// pod in the maps; after 10,000 short captured connections no per-connection state is left
// in any map (the done-when). D1.
//   node1: a (istio, meshed)  b (unmeshed)  c (osm, meshed)
//   node2: d (istio, meshed)  w (unmeshed)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { eventually } from '../helpers/poll.ts';
import {
  APP_PORT, FAMILIES, MODE, MeshLab, assertDirect, assertProxied, famName, loadFrom, presetPods, skipIfLimited, stat, suiteSkip,
  type ConformanceDriver, SUITE } from './harness.ts';

/** Maps that hold state of live connections only: must drain to 0. */
const PER_CONNECTION_MAPS = ['origin_by_tuple', 'inbound_nat'];
const CONNECTIONS = 10_000;
const CONCURRENCY = 50;

function counts(d: ConformanceDriver): Record<string, number> {
  const c = d.features.mapCounts?.();
  if (!c) throw new Error(`${MODE} driver has no mapEntryCounts()`);
  return c;
}

function delta(x: Record<string, number>, y: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.keys(y).map((k) => [k, y[k] - (x[k] ?? 0)]));
}

describe(`lifecycle and per-connection state (${SUITE})`, { skip: suiteSkip() }, () => {
  let env: MeshLab;

  before(async () => {
    env = await MeshLab.create(presetPods(['a', 'b', 'c', 'd', 'w']), { tag: 'mlc' });
  });

  after(async () => {
    await env?.destroy();
  });

  for (const fam of FAMILIES) {
    it(`unmesh stops capture both ways and removes exactly the pod's entries; mesh again restores it (${famName(fam)})`, async (t) => {
      const a = env.pod('a');
      const b = env.pod('b');
      const w = env.pod('w');
      const d1 = env.driver('node1');
      const hasCounts = d1.features.mapCounts !== undefined;
      if (!hasCounts) t.diagnostic(`${MODE} driver has no mapEntryCounts(): map checks skipped`);
      const meshed = hasCounts ? counts(d1) : {};
      assertProxied(await a.connectTo(b, fam), 'b', 'meshed: a -> b');

      await a.unmesh();
      assertDirect(await a.connectTo(b, fam), 'b', 'unmeshed: a -> b (outbound)');
      assertDirect(await w.connectTo(a, fam), 'a', 'unmeshed: w (node2) -> a (inbound, tc)');
      assertDirect(await env.pod('c').connectTo(a, fam, APP_PORT, { uid: env.pod('c').policy!.proxyUid }), 'a',
        "unmeshed: c's proxy -> a (inbound at connect time)");
      await a.unmesh(); // a pod that is not meshed: no-op
      const unmeshed = hasCounts ? counts(d1) : {};

      await a.mesh('istio');
      assertProxied(await a.connectTo(b, fam), 'b', 'meshed again: a -> b');
      assertProxied(await w.connectTo(a, fam), 'a', 'meshed again: w -> a');
      if (hasCounts) {
        const again = counts(d1);
        // Per-connection maps hold what live (or TIME_WAIT) connections need; pod state must match.
        const podState = (c: Record<string, number>) => Object.fromEntries(Object.entries(c).filter(([k]) => !PER_CONNECTION_MAPS.includes(k)));
        assert.deepEqual(podState(again), podState(meshed), 'meshing again gives the same entries as before');
        const own = delta(unmeshed, meshed);
        assert.equal(own.pod_config, 1, `pod_config entries of a: ${JSON.stringify(own)}`);
        assert.equal(own.local_pods, 2, 'one local_pods entry per pod IP');
        for (const [k, n] of Object.entries(own)) assert.ok(n >= 0, `unmesh removed ${-n} entries of other pods from ${k}`);
        for (const k of PER_CONNECTION_MAPS) assert.equal(own[k], 0, `${k}: not pod state`);
      }
    });

    it(`no per-connection state is left in any map after ${CONNECTIONS} captured connections (${famName(fam)})`, async (t) => {
      const drivers = [env.driver('node1'), env.driver('node2')];
      if (skipIfLimited(t, env, 'map-entry-counts')) return;
      if (drivers.some((d) => d.features.mapCounts === undefined)) {
        t.skip(`${MODE} driver has no mapEntryCounts(): it keeps no per-connection maps`);
        return;
      }
      const a = env.pod('a');
      const statsBefore = drivers.map((d) => d.features.stats?.());
      // Half across nodes (tuple on node1, inbound_nat on node2), half to a meshed pod on the
      // same node (two tuple hand-overs on node1).
      const [far, near] = await Promise.all([
        loadFrom(a.sb, env.pod('d').ip(fam), APP_PORT, CONNECTIONS / 2, CONCURRENCY / 2),
        loadFrom(a.sb, env.pod('c').ip(fam), APP_PORT, CONNECTIONS / 2, CONCURRENCY / 2),
      ]);
      t.diagnostic(`a -> d (node2): ${far.ok}/${far.total} in ${far.ms} ms; a -> c (node1): ${near.ok}/${near.total} in ${near.ms} ms`);
      assert.deepEqual(far.errors, {}, 'every request across nodes succeeded');
      assert.deepEqual(near.errors, {}, 'every request on the node succeeded');
      // Server-side sockets that closed first sit in TIME_WAIT, and their inbound_nat entries
      // with them; the driver's sweep removes those once TIME_WAIT is over (65 s): ask it now,
      // as of then.
      const later = process.hrtime.bigint() + 66n * 1_000_000_000n;
      const drained = await eventually(() => {
        for (const d of drivers) d.features.sweep?.(later);
        return drivers.every((d) => PER_CONNECTION_MAPS.every((m) => counts(d)[m] === 0));
      }, 5000, 50);
      const left = drivers.map((d) => Object.fromEntries(PER_CONNECTION_MAPS.map((m) => [m, counts(d)[m]])));
      if (statsBefore[0] !== undefined) {
        const moved = drivers.map((d, i) => Object.fromEntries(
          ['tuple_added', 'tuple_moved', 'tuple_unclaimed', 'tuple_failed', 'nat_added', 'nat_bound', 'nat_closed', 'nat_time_wait', 'nat_failed', 'nat_collision']
            .map((k) => [k, Number(stat(d, k)! - statsBefore[i]![k])])));
        t.diagnostic(`stats delta node1 ${JSON.stringify(moved[0])} node2 ${JSON.stringify(moved[1])}`);
        assert.equal(moved[0].tuple_failed, 0, 'no origin_by_tuple insert failed');
        assert.equal(moved[1].nat_failed, 0, 'no inbound_nat insert failed');
        assert.ok(moved[1].nat_added >= CONNECTIONS / 2, `inbound_nat used for every cross-node connection (${moved[1].nat_added})`);
      }
      assert.ok(drained, `per-connection entries left after all connections closed: node1 ${JSON.stringify(left[0])}, node2 ${JSON.stringify(left[1])}`);
    });
  }
});

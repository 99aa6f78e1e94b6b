// SPDX-License-Identifier: Apache-2.0
// Hitless datapath upgrade (docs/upgrade.md) of the ambient eBPF datapath, in a
// real lab (conformance harness, node1: pods a and b enrolled, the node proxy):
// under continuous new-connection load and with a connection held open, node1's
// driver is replaced by one with build/test/ambient-v2.bpf.o (a changed
// mwam_from_pod, am_pods with a trailing field), then back to
// build/bpf/ambient.bpf.o. Every request succeeds through the node proxy,
// every connection is captured, the held one completes.
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import type { MeshLab as Lab } from '../conformance/harness.ts';
import type { AmbientEbpfDriver as Driver } from '../../src/datapath/ambient/driver.ts';

process.env.MESHWARP_DATAPLANE ??= 'ambient'; // before the harness reads it
const { DATAPLANE, MODE, MeshLab, loadFrom, norm, stat, suiteSkip } = await import('../conformance/harness.ts');
const { AmbientEbpfDriver } = await import('../../src/datapath/ambient/driver.ts');
const { pinnedLayout } = await import('../../src/datapath/ebpf/upgrade.ts');
const { close } = await import('../../src/sys/libc.ts');
const { waitUntil } = await import('../helpers/poll.ts');
const { heldFlow } = await import('../helpers/held-flow.ts');

const obj = (p: string): string => fileURLToPath(new URL(`../../build/${p}`, import.meta.url));
const V1 = obj('bpf/ambient.bpf.o');
const V2 = obj('test/ambient-v2.bpf.o');
const LOAD = 3000;
const PORT = 8080;

const skip = MODE !== 'ebpf' || DATAPLANE !== 'ambient' ? 'ambient eBPF only' : suiteSkip('ambient');

describe('hitless upgrade of the ambient eBPF datapath', { skip }, () => {
  let env: Lab;
  before(async () => {
    env = await MeshLab.create([{ node: 'node1', name: 'a', profile: 'istio' }, { node: 'node1', name: 'b', profile: 'istio' }], { tag: 'mwu' });
  });
  after(async () => { await env?.destroy(); });

  const podsValueSize = (): number => {
    const { fd, layout } = pinnedLayout(`${env.pinBase}/node1/maps/am_pods`);
    close(fd);
    return layout.valueSize;
  };

  async function underLoad(objectPath: string): Promise<Driver> {
    const a = env.pod('a');
    const b = env.pod('b');
    const flag = `/tmp/${env.prefix}-held`;
    const held = heldFlow(a.sb, b.ip(4), PORT, flag);
    try {
      await waitUntil('the held connection is open', held.connected, 10_000);
      const c0 = stat(a.driver, 'am_captured_out')!;
      const load = loadFrom(a.sb, b.ip(4), PORT, LOAD, 4);
      await waitUntil('the load is being captured', () => (stat(a.driver, 'am_captured_out') ?? 0n) > c0 + 50n, 20_000);
      await env.driver('node1').release();
      const d = new AmbientEbpfDriver({ ...env.driverOptions(env.node('node1')), pinRoot: `${env.pinBase}/node1`, objectPath });
      await d.start();
      env.drivers.set('node1', d);
      const mid = stat(d, 'am_captured_out')!;
      const r = await load;
      assert.deepEqual({ ok: r.ok, errors: r.errors }, { ok: r.total, errors: {} }, `load across the upgrade: ${JSON.stringify(r)}`);
      assert.ok(mid - c0 < BigInt(LOAD), 'the upgrade happened while the load was still running (make it longer)');
      const captured = stat(d, 'am_captured_out')! - c0;
      // Each request is captured once (+1 for the held connection, counted before c0).
      assert.ok(captured >= BigInt(r.total), `every connection captured: ${captured} for ${r.total} requests`);
      writeFileSync(flag, '');
      const reply = await held.reply;
      assert.equal(reply.name, 'b', 'the held connection completed');
      assert.equal(norm(reply.remote), env.proxy('node1').ip4, 'the held connection went through the node proxy');
      return d;
    } finally {
      held.kill();
      rmSync(flag, { force: true });
    }
  }

  it('upgrades to v2 under load and a held connection: 0 failed requests, every connection captured, am_pods migrated', async () => {
    assert.equal(podsValueSize(), 16);
    const d = await underLoad(V2);
    assert.equal(podsValueSize(), 24, 'the pin names the migrated am_pods (24 B value)');
    assert.deepEqual(d.upgradeReport?.migrated.map((m) => [m.map, m.entries]), [['am_pods', 4]], 'a and b, two addresses each');
  });

  it('downgrades back to v1 the same way', async () => {
    const d = await underLoad(V1);
    assert.equal(podsValueSize(), 16);
    assert.deepEqual(d.upgradeReport?.migrated.map((m) => m.map), ['am_pods']);
  });
});

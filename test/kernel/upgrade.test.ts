// SPDX-License-Identifier: Apache-2.0
// Hitless datapath upgrade (docs/upgrade.md) of the sidecar eBPF datapath, in a
// real lab (conformance harness: pod a meshed with the istio profile and its
// sidecar, pod b an unmeshed server, node1): under continuous new-connection
// load the node's driver is replaced by one with build/test/sidecar-v2.bpf.o
// (a changed program, pod_config with a trailing field), then back to
// build/bpf/sidecar.bpf.o; every request succeeds and every connection is
// captured. build/test/sidecar-badkey.bpf.o (a changed port_rules key) is
// refused, and the running datapath keeps capturing.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { APP_PORT, DATAPLANE, MODE, MeshLab, assertProxied, loadFrom, presetPods, stat, suiteSkip } from '../conformance/harness.ts';
import { SidecarEbpfDriver } from '../../src/datapath/sidecar/driver.ts';
import { pinnedLayout } from '../../src/datapath/ebpf/upgrade.ts';
import { close } from '../../src/sys/libc.ts';
import { Link } from '../../src/bpf/index.ts';
import { waitUntil } from '../helpers/poll.ts';
import { heldFlow } from '../helpers/held-flow.ts';
import { rmSync, writeFileSync } from 'node:fs';

const obj = (p: string): string => fileURLToPath(new URL(`../../build/${p}`, import.meta.url));
const V1 = obj('bpf/sidecar.bpf.o');
const V2 = obj('test/sidecar-v2.bpf.o');
const BADKEY = obj('test/sidecar-badkey.bpf.o');
const LOAD = 3000;

const skip = MODE !== 'ebpf' || DATAPLANE !== 'sidecar' ? 'sidecar eBPF only' : suiteSkip();

describe('hitless upgrade of the sidecar eBPF datapath', { skip }, () => {
  let env: MeshLab;
  before(async () => { env = await MeshLab.create(presetPods(['a', 'b']), { tag: 'mwu' }); });
  after(async () => { await env?.destroy(); });

  const podConfigValueSize = (): number => {
    const { fd, layout } = pinnedLayout(`${env.pinBase}/node1/maps/pod_config`);
    close(fd);
    return layout.valueSize;
  };

  const connectProg = (): number => {
    const l = Link.open(`${env.pinBase}/node1/links/mwsc_connect4`);
    try { return l.info().progId; } finally { l.close(); }
  };

  /** Replaces node1's driver by one on `objectPath` (the agent restarting with a new object). */
  async function restartWith(objectPath: string): Promise<SidecarEbpfDriver> {
    const old = env.driver('node1');
    await old.release();
    const d = new SidecarEbpfDriver({ ...env.driverOptions(env.node('node1')), objectPath });
    await d.start(); // a refusal throws here: nothing of the old datapath was changed
    env.drivers.set('node1', d);
    return d;
  }

  async function underLoad(objectPath: string): Promise<SidecarEbpfDriver> {
    const a = env.pod('a');
    const flag = `/tmp/${env.prefix}-held`;
    const held = heldFlow(a.sb, env.pod('b').ip(4), APP_PORT, flag);
    try {
      await waitUntil('the held connection is open', held.connected, 10_000);
      const d = await newConnectionsAcross(objectPath);
      writeFileSync(flag, '');
      const reply = await held.reply;
      assert.equal(reply.name, 'b', 'the held connection, opened before the upgrade, completed after it');
      return d;
    } finally {
      held.kill();
      rmSync(flag, { force: true });
    }
  }

  async function newConnectionsAcross(objectPath: string): Promise<SidecarEbpfDriver> {
    const a = env.pod('a');
    const c0 = stat(a.driver, 'captured_out')!;
    const prog0 = connectProg();
    const load = loadFrom(a.sb, env.pod('b').ip(4), APP_PORT, LOAD, 4);
    await waitUntil('the load is being captured', () => (stat(a.driver, 'captured_out') ?? 0n) > c0 + 50n, 20_000);
    const d = await restartWith(objectPath);
    const mid = stat(d, 'captured_out')!;
    assert.notEqual(connectProg(), prog0, 'the pinned connect4 link runs the new object\'s program');
    const r = await load;
    assert.deepEqual({ ok: r.ok, errors: r.errors }, { ok: r.total, errors: {} }, `load across the upgrade: ${JSON.stringify(r)}`);
    assert.ok(mid - c0 < BigInt(LOAD), 'the upgrade happened while the load was still running (make it longer)');
    const captured = stat(d, 'captured_out')! - c0;
    assert.ok(captured >= BigInt(r.total), `every connection captured: ${captured} captured for ${r.total} requests`);
    return d;
  }

  it('upgrades to v2 under load: 0 failed requests, every connection captured, pod_config migrated', async () => {
    assert.equal(podConfigValueSize(), 68);
    const d = await underLoad(V2);
    assert.equal(podConfigValueSize(), 72, 'the pin names the migrated pod_config (72 B value)');
    assert.deepEqual(d.upgradeReport?.migrated.map((m) => [m.map, m.entries]), [['pod_config', 1]]);
    assertProxied(await env.pod('a').connectTo(env.pod('b'), 4), 'b', 'captured after the upgrade');
  });

  it('downgrades back to v1 the same way', async () => {
    const d = await underLoad(V1);
    assert.equal(podConfigValueSize(), 68);
    assert.deepEqual(d.upgradeReport?.migrated.map((m) => m.map), ['pod_config']);
  });

  it('refuses an object whose map key changed, naming the map and both layouts; the old datapath keeps capturing', async () => {
    await assert.rejects(restartWith(BADKEY), (e: Error) => {
      assert.equal(e.name, 'UpgradeRefusedError');
      assert.match(e.message, /map port_rules: key changed and no converter is declared for it \(pinned: type \d+ key 16 B .*new object: type \d+ key 24 B/);
      assert.match(e.message, /key 16 B s\{netns_cookie@0:i8u,port@64:i2u,direction@80:i1u,_pad@88:\[5\]i1u\}16/, 'the BTF layouts, from the kernel and the object');
      return true;
    });
    assert.equal(podConfigValueSize(), 68, 'pins untouched');
    // No driver runs now (the old one released its handles): the pinned datapath alone captures.
    const a = env.pod('a');
    for (let i = 0; i < 5; i++) assertProxied(await a.connectTo(env.pod('b'), 4), 'b', `connection ${i} after the refusal goes through the sidecar`);
    const r = await loadFrom(a.sb, env.pod('b').ip(4), APP_PORT, 200, 4);
    assert.deepEqual({ ok: r.ok, errors: r.errors }, { ok: r.total, errors: {} });
    const c0 = stat(await restartWith(V1), 'captured_out')!;
    assertProxied(await a.connectTo(env.pod('b'), 4), 'b', 'the same version starts again over the pins');
    assert.ok(stat(a.driver, 'captured_out')! > c0);
  });
});

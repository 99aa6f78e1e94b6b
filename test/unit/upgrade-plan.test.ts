// SPDX-License-Identifier: Apache-2.0
// The upgrade's decision per pinned map (src/datapath/ebpf/upgrade-plan.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decide, resizeValue, type MapLayout } from '../../src/datapath/ebpf/upgrade-plan.ts';
import { MAP_TYPE } from '../../src/bpf/uapi.ts';

const hash: MapLayout = { type: MAP_TYPE.HASH, keySize: 8, valueSize: 68, maxEntries: 1024, flags: 1 };

test('an unchanged layout is reused', () => {
  assert.deepEqual(decide('pod_config', hash, { ...hash }), { action: 'reuse' });
});

test('a grown value is migrated with the new trailing bytes zero-filled; a shrunk one drops them', () => {
  const up = decide('pod_config', hash, { ...hash, valueSize: 72 });
  assert.equal(up.action, 'migrate');
  if (up.action !== 'migrate') return;
  const v = Buffer.alloc(68, 0xab);
  const [k, nv] = up.convert(Buffer.alloc(8, 1), v);
  assert.deepEqual(k, Buffer.alloc(8, 1));
  assert.equal(nv.length, 72);
  assert.deepEqual(nv.subarray(0, 68), v);
  assert.deepEqual(nv.subarray(68), Buffer.alloc(4));
  const down = decide('pod_config', { ...hash, valueSize: 72 }, hash);
  assert.equal(down.action, 'migrate');
  if (down.action === 'migrate') assert.deepEqual(down.convert(Buffer.alloc(8), Buffer.alloc(72, 7))[1], Buffer.alloc(68, 7));
});

test('max_entries or flags changed: entries copied as they are', () => {
  const d = decide('m', hash, { ...hash, maxEntries: 4096 });
  assert.equal(d.action, 'migrate');
  if (d.action === 'migrate') assert.deepEqual(d.convert(Buffer.from('k'), Buffer.from('v')), [Buffer.from('k'), Buffer.from('v')]);
});

test('a changed key without a converter is refused, naming the map and both layouts', () => {
  const d = decide('port_rules', { ...hash, keySize: 16, valueSize: 1 }, { ...hash, keySize: 24, valueSize: 1 });
  assert.equal(d.action, 'refuse');
  if (d.action !== 'refuse') return;
  assert.match(d.reason, /^map port_rules: key changed and no converter is declared/);
  assert.match(d.reason, /pinned: type 1 key 16 B value 1 B .*new object: type 1 key 24 B value 1 B/);
});

test('a declared converter migrates a changed key', () => {
  const conv = (k: Buffer, v: Buffer): [Buffer, Buffer] => [Buffer.concat([k, Buffer.alloc(8)]), v];
  const d = decide('port_rules', { ...hash, keySize: 16 }, { ...hash, keySize: 24 }, conv);
  assert.equal(d.action, 'migrate');
  if (d.action === 'migrate') assert.equal(d.convert(Buffer.alloc(16), Buffer.alloc(68))[0].length, 24);
});

test('maps userspace cannot walk are refused when they change; ring buffers start fresh', () => {
  const sk: MapLayout = { type: MAP_TYPE.SK_STORAGE, keySize: 4, valueSize: 40, maxEntries: 0, flags: 1 };
  assert.equal(decide('origin_by_sock', sk, { ...sk, valueSize: 48 }).action, 'refuse');
  assert.equal(decide('origin_by_sock', sk, { ...sk }).action, 'reuse');
  const rb: MapLayout = { type: MAP_TYPE.RINGBUF, keySize: 0, valueSize: 0, maxEntries: 1 << 20, flags: 0 };
  assert.equal(decide('trace_events', rb, { ...rb, maxEntries: 1 << 21 }).action, 'fresh');
  assert.equal(decide('t', { ...hash, type: MAP_TYPE.HASH }, { ...hash, type: MAP_TYPE.ARRAY }).action, 'refuse');
});

test('resizeValue keeps the prefix', () => {
  assert.deepEqual(resizeValue(3)(Buffer.alloc(1), Buffer.from([1, 2, 3, 4, 5]))[1], Buffer.from([1, 2, 3]));
});

test('withTail: an agent older than the object writes the unknown trailing bytes zero', async () => {
  const { withTail, struct, u32 } = await import('../../src/bpf/codec.ts');
  const c = withTail(struct<{ a: number }>('s', [['a', u32]]), 8);
  const buf = Buffer.alloc(8, 0xff);
  c.encode({ a: 1 }, buf);
  assert.deepEqual(buf, Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]));
  assert.deepEqual(c.decode(Buffer.from([2, 0, 0, 0, 9, 9, 9, 9])), { a: 2 });
});

test('BTF: a value that only grew trailing members migrates; reordered or same-size changes, or a changed key type, are refused', async () => {
  const { onlyTrailingMembers } = await import('../../src/datapath/ebpf/upgrade-plan.ts');
  const v1 = 's{a@0:i4u,b@32:i4u}8';
  const v2 = 's{a@0:i4u,b@32:i4u,c@64:i4u}12';
  assert.equal(onlyTrailingMembers(v1, v2), true);
  assert.equal(onlyTrailingMembers('s{a@0:i4u,bb@32:i4u}8', v2), false, 'a prefix of the text but not of the members');
  assert.equal(onlyTrailingMembers('s{b@0:i4u,a@32:i4u}8', v2), false);
  const base: MapLayout = { ...hash, valueSize: 8, valueBtf: v1, keyBtf: 'i8u' };
  assert.deepEqual(decide('m', base, { ...base }), { action: 'reuse' });
  assert.equal(decide('m', base, { ...base, valueSize: 12, valueBtf: v2 }).action, 'migrate');
  assert.equal(decide('m', { ...base, valueSize: 12, valueBtf: v2 }, base).action, 'migrate', 'downgrade');
  const swapped = decide('m', base, { ...base, valueBtf: 's{b@0:i4u,a@32:i4u}8' });
  assert.equal(swapped.action, 'refuse');
  if (swapped.action === 'refuse') assert.match(swapped.reason, /value layout changed beyond trailing members.*pinned: .*s\{a@0:i4u,b@32:i4u\}8.*new object: .*s\{b@0:i4u,a@32:i4u\}8/);
  assert.equal(decide('m', base, { ...base, valueSize: 12, valueBtf: 's{x@0:i4u,b@32:i4u,c@64:i4u}12' }).action, 'refuse');
  const key = decide('m', base, { ...base, keyBtf: 'i8s' });
  assert.equal(key.action, 'refuse');
  if (key.action === 'refuse') assert.match(key.reason, /^map m: key changed/);
  assert.deepEqual(decide('m', { ...base, valueBtf: undefined }, base), { action: 'reuse' }, 'a side without BTF compares by shape');
});

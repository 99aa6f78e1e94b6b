// SPDX-License-Identifier: Apache-2.0
// The node proxy announcement (docs/ambient.md): what is accepted, and that every bad
// field is a 400 naming it; the mark mask split.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseNodeProxyRequest } from '../../src/agent/api.ts';
import { markBits } from '../../src/datapath/ambient/driver.ts';

const good = { id: 'ztunnel-abc', netns: '/proc/1/ns/net', ifName: 'eth0', ports: { outbound: 15001, inbound: 15006, hbone: 15008 }, ready: true };

test('a well-formed announcement is accepted as is', () => {
  assert.deepEqual(parseNodeProxyRequest(good), good);
  const { hbone: _, ...noHbone } = good.ports;
  assert.deepEqual(parseNodeProxyRequest({ ...good, ports: noHbone }).ports, noHbone);
  const withDns = { ...good, ports: { ...good.ports, dns: 15053 } };
  assert.deepEqual(parseNodeProxyRequest(withDns), withDns, 'a DNS listener (ztunnel: 15053)');
});

test('every bad field is a 400 that names it', () => {
  const bad: [unknown, RegExp][] = [
    [null, /JSON object/], [[], /JSON object/], [{ ...good, id: '' }, /^id/], [{ ...good, id: 'a b' }, /^id/],
    [{ ...good, netns: 'relative' }, /^netns/], [{ ...good, ifName: 'x'.repeat(16) }, /^ifName/], [{ ...good, ready: 'yes' }, /^ready/],
    [{ ...good, ports: undefined }, /^ports/], [{ ...good, ports: { ...good.ports, outbound: 0 } }, /ports.outbound/],
    [{ ...good, ports: { ...good.ports, inbound: 70000 } }, /ports.inbound/], [{ ...good, ports: { ...good.ports, inbound: 15001 } }, /must differ/],
    [{ ...good, ports: { ...good.ports, dns: 'x' } }, /ports.dns/], [{ ...good, ports: { ...good.ports, dns: 15008 } }, /must differ/],
  ];
  for (const [body, re] of bad) {
    assert.throws(() => parseNodeProxyRequest(body), (e: Error & { status?: number }) => e.status === 400 && re.test(e.message), JSON.stringify(body));
  }
});

test('the mark mask must be exactly two bits: lower = outbound, higher = local', () => {
  assert.deepEqual(markBits(0x30), { out: 0x10, local: 0x20 });
  assert.deepEqual(markBits(0x80000001), { out: 1, local: 0x80000000 });
  for (const m of [0, 0x10, 0x70, -1, 1.5]) assert.throws(() => markBits(m), /markMask/);
});

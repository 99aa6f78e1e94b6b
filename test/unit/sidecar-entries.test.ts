// SPDX-License-Identifier: Apache-2.0
// PodPolicy -> sidecar map entries (the semantics of bpf/include/meshwarp.h).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { podEntries, toIpAddr } from '../../src/datapath/sidecar/entries.ts';
import { DIR, POD_F, RULE } from '../../src/datapath/sidecar/structs.ts';
import { resolvePodPolicy } from '../../src/profiles/index.ts';

const cookie = 0x0102030405060708n;
const pod = { ip4: '10.244.1.2', ip6: 'fd00:244:1::2', ifindex: 7 };
const hex = (u: Uint8Array) => Buffer.from(u).toString('hex');

test('addresses are 16 bytes, IPv4 v4-mapped', () => {
  assert.equal(hex(toIpAddr('10.1.2.3').addr), '00000000000000000000ffff0a010203');
  assert.equal(hex(toIpAddr('fd00::1').addr), 'fd000000000000000000000000000001');
});

test('osm defaults: config, local pods for both families, inbound exclusions for the proxy ports', () => {
  const e = podEntries(cookie, pod, resolvePodPolicy('osm'));
  assert.equal(e.config.outbound_port, 15001);
  assert.equal(e.config.inbound_port, 15003);
  assert.equal(e.config.proxy_uid, 1500);
  assert.equal(e.config.flags, 0);
  assert.deepEqual(e.localPods.map(([k, v]) => [hex(k.addr), v.netns_cookie, v.inbound_port, v.ifindex]), [
    ['00000000000000000000ffff0af40102', cookie, 15003, 7],
    ['fd000244000100000000000000000002', cookie, 15003, 7],
  ]);
  const inbound = e.portRules.filter(([k]) => k.direction === DIR.IN).map(([k, v]) => [k.port, v]);
  assert.ok(inbound.some(([p, v]) => p === 15003 && v === RULE.EXCLUDE));
  assert.ok(e.portRules.every(([k]) => k.netns_cookie === cookie));
});

test('include lists set flags; exclusions win over includes', () => {
  const e = podEntries(cookie, pod, resolvePodPolicy('istio', {
    'traffic.sidecar.istio.io/includeInboundPorts': '8080,9090',
    'traffic.sidecar.istio.io/excludeInboundPorts': '9090',
    'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.0.0.0/8,10.1.0.0/16,fd00::/8',
    'traffic.sidecar.istio.io/excludeOutboundIPRanges': '10.1.0.0/16',
  }));
  assert.equal(e.config.flags, POD_F.HAS_INCLUDE_IN_PORTS | POD_F.HAS_INCLUDE_OUT_CIDRS);
  const inRule = (p: number) => e.portRules.find(([k]) => k.direction === DIR.IN && k.port === p)?.[1];
  assert.equal(inRule(8080), RULE.INCLUDE);
  assert.equal(inRule(9090), RULE.EXCLUDE);
  // 10.1.0.0/16 is excluded: its include copy must not be written (longest match would win).
  const cidrs = e.cidrRules.map(([k, v]) => [k.prefixlen, hex(k.addr), v]);
  assert.deepEqual(cidrs, [
    [64 + 96 + 16, '00000000000000000000ffff0a010000', RULE.EXCLUDE],
    [64 + 96 + 8, '00000000000000000000ffff0a000000', RULE.INCLUDE],
    [64 + 8, 'fd000000000000000000000000000000', RULE.INCLUDE],
  ]);
  assert.equal(hex(e.cidrRules[0][0].netns_cookie), '0102030405060708', 'cookie big-endian in the trie key');
});

test('includeOutboundPorts "*" captures every port: no CIDR include flag', () => {
  const e = podEntries(cookie, pod, resolvePodPolicy('istio', {
    'traffic.sidecar.istio.io/includeOutboundIPRanges': '10.0.0.0/8',
    'traffic.sidecar.istio.io/includeOutboundPorts': '*',
  }));
  assert.equal(e.config.flags & POD_F.HAS_INCLUDE_OUT_CIDRS, 0);
});

test('more excluded uids than the datapath holds is a clear error', () => {
  const policy = resolvePodPolicy('osm', {}, { excludeUids: [1, 2, 3, 4, 5] });
  assert.throws(() => podEntries(cookie, pod, policy), /at most 4 excluded uids/);
});

test('an IPv6 range covering the v4-mapped space does not apply to IPv4 destinations', () => {
  const e = podEntries(cookie, pod, resolvePodPolicy('istio', { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': '::/0' }));
  assert.deepEqual(e.cidrRules.map(([k, v]) => [k.prefixlen, hex(k.addr), v]), [
    [64, '00000000000000000000000000000000', RULE.EXCLUDE],
    [64 + 96, '00000000000000000000ffff00000000', 0],
  ]);
  const narrow = podEntries(cookie, pod, resolvePodPolicy('istio', { 'traffic.sidecar.istio.io/excludeOutboundIPRanges': 'fd00::/8' }));
  assert.equal(narrow.cidrRules.length, 1, 'no shield when the range does not cover it');
});

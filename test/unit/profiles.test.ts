// SPDX-License-Identifier: Apache-2.0
// Mesh profiles, per-pod annotation parsing and IP/CIDR parsing (S5, S7).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockList } from 'node:net';
import {
  PolicyError, parseIp, parseCidr, formatIp, formatCidr, cidrContains,
  profileNames, getProfile, customProfile, detectProfile,
  resolvePodPolicy, capturesInbound, capturesOutbound,
  type Cidr, type PodPolicy,
} from '../../src/profiles/index.ts';

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
const texts = (cs: Cidr[] | 'all') => (cs === 'all' ? 'all' : cs.map((c) => c.text));
const canon = (cs: Cidr[] | 'all') => (cs === 'all' ? 'all' : cs.map(formatCidr));

/** Asserts a PolicyError whose field and message name `field` and whose message matches `re`. */
function throwsPolicy(fn: () => unknown, field: string, re?: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PolicyError, `expected PolicyError, got ${String(e)}`);
    assert.equal(e.field, field);
    assert.ok(e.message.startsWith(`${field}: `), e.message);
    if (re) assert.match(e.message, re);
    return true;
  });
}

const IA = 'traffic.sidecar.istio.io/';
const istio = (a: Record<string, string>) => resolvePodPolicy('istio', a);

// ---------------------------------------------------------------- profiles

test('built-in profile names', () => {
  assert.deepEqual(profileNames(), ['istio', 'linkerd', 'kuma', 'osm', 'fsm']);
});

test('istio profile values', () => {
  const p = getProfile('istio');
  assert.equal(p.outboundPort, 15001);
  assert.equal(p.inboundPort, 15006);
  assert.equal(p.proxyUid, 1337);
  assert.equal(p.dnsPort, 15053);
  assert.equal(p.statusPort, 15021);
  assert.equal(p.metricsPort, 15090);
  assert.equal(p.hbonePort, 15008);
  assert.deepEqual(p.adminPorts, [15000]);
  assert.deepEqual([...p.defaultExcludeInboundPorts].sort(), [15000, 15001, 15006, 15008, 15020, 15021, 15090]);
  assert.deepEqual(p.defaultExcludeOutboundPorts, []);
  assert.equal(p.dialect, 'istio');
  assert.deepEqual(p.sidecar, { containerName: 'istio-proxy' });
});

test('linkerd profile values', () => {
  const p = getProfile('linkerd');
  assert.deepEqual([p.outboundPort, p.inboundPort, p.proxyUid], [4140, 4143, 2102]);
  assert.equal(p.dnsPort, undefined);
  assert.deepEqual(p.adminPorts, [4190, 4191]);
  assert.ok(p.defaultExcludeInboundPorts.includes(4190) && p.defaultExcludeInboundPorts.includes(4191));
  assert.equal(p.dialect, 'linkerd');
  assert.deepEqual(p.sidecar, { containerName: 'linkerd-proxy' });
});

test('kuma profile values', () => {
  const p = getProfile('kuma');
  assert.deepEqual([p.outboundPort, p.inboundPort, p.proxyUid, p.dnsPort], [15001, 15006, 5678, 15053]);
  assert.deepEqual(p.adminPorts, [9901]);
  assert.equal(p.dialect, 'kuma');
  assert.deepEqual(p.sidecar, { containerName: 'kuma-sidecar' });
});

test('osm profile values, fsm is osm with its own dialect and label', () => {
  const osm = getProfile('osm');
  assert.deepEqual([osm.outboundPort, osm.inboundPort, osm.proxyUid], [15001, 15003, 1500]);
  assert.deepEqual(osm.adminPorts, [15000]);
  assert.equal(osm.metricsPort, 15010);
  for (const port of [15000, 15010, 15901, 15902, 15903, 15904]) assert.ok(osm.defaultExcludeInboundPorts.includes(port), String(port));
  assert.equal(osm.dialect, 'osm');
  assert.deepEqual(osm.sidecar, { label: 'osm-proxy-uuid' });

  const fsm = getProfile('fsm');
  const { name: _n, dialect: _d, sidecar: _s, ...fsmRest } = fsm;
  const { name: _n2, dialect: _d2, sidecar: _s2, ...osmRest } = osm;
  assert.deepEqual(fsmRest, osmRest);
  assert.equal(fsm.dialect, 'fsm');
  assert.deepEqual(fsm.sidecar, { label: 'fsm-proxy-uuid' });
});

test('built-in profiles are frozen', () => {
  const p = getProfile('istio');
  assert.throws(() => {
    (p as { outboundPort: number }).outboundPort = 1;
  }, TypeError);
  assert.throws(() => (p.adminPorts as number[]).push(1), TypeError);
});

test('getProfile: unknown name lists the known ones; custom points to customProfile', () => {
  throwsPolicy(() => getProfile('consul'), 'profile', /"consul".*istio, linkerd, kuma, osm, fsm, or custom/);
  throwsPolicy(() => getProfile('Istio'), 'profile', /unknown mesh profile/);
  throwsPolicy(() => getProfile('custom'), 'profile', /customProfile/);
});

test('customProfile builds a validated profile', () => {
  const p = customProfile({ outboundPort: 7001, inboundPort: 7002, proxyUid: 0, adminPorts: [7003], dnsPort: 7053, excludeOutboundPorts: [22] });
  assert.equal(p.name, 'custom');
  assert.equal(p.dialect, 'none');
  const pol = resolvePodPolicy(p, { [`${IA}excludeInboundPorts`]: '9' });
  assert.equal(pol.profile, 'custom');
  assert.deepEqual(pol.excludeInboundPorts, [7001, 7002, 7003]); // dialect none: annotations not read
  assert.deepEqual(pol.excludeOutboundPorts, [22]);
  assert.equal(pol.dnsPort, 7053);
  assert.equal(pol.proxyUid, 0);

  const withDialect = customProfile({ name: 'my-envoy', outboundPort: 1, inboundPort: 2, proxyUid: 10, dialect: 'istio' });
  assert.deepEqual(resolvePodPolicy(withDialect, { [`${IA}excludeInboundPorts`]: '9' }).excludeInboundPorts, [1, 2, 9]);
});

test('customProfile rejects bad values, naming the option', () => {
  const base = { outboundPort: 7001, inboundPort: 7002, proxyUid: 1000 };
  throwsPolicy(() => customProfile({ ...base, outboundPort: 0 }), 'outboundPort', /not a port/);
  throwsPolicy(() => customProfile({ ...base, outboundPort: 65536 }), 'outboundPort', /65536/);
  throwsPolicy(() => customProfile({ ...base, inboundPort: 80.5 }), 'inboundPort');
  throwsPolicy(() => customProfile({ ...base, inboundPort: '80' as unknown as number }), 'inboundPort');
  throwsPolicy(() => customProfile({ ...base, inboundPort: 7001 }), 'inboundPort', /differ/);
  throwsPolicy(() => customProfile({ ...base, proxyUid: -1 }), 'proxyUid', /uid/);
  throwsPolicy(() => customProfile({ ...base, proxyUid: 1.5 }), 'proxyUid');
  throwsPolicy(() => customProfile({ ...base, proxyUid: 0xffffffff }), 'proxyUid');
  throwsPolicy(() => customProfile({ ...base, proxyUid: NaN }), 'proxyUid');
  throwsPolicy(() => customProfile({ outboundPort: 1, inboundPort: 2 } as never), 'proxyUid');
  throwsPolicy(() => customProfile({ ...base, dnsPort: 0 }), 'dnsPort');
  throwsPolicy(() => customProfile({ ...base, adminPorts: [1, 99999] }), 'adminPorts[1]');
  throwsPolicy(() => customProfile({ ...base, adminPorts: 15000 as never }), 'adminPorts', /array/);
  throwsPolicy(() => customProfile({ ...base, dialect: 'consul' as never }), 'dialect', /istio, linkerd/);
  throwsPolicy(() => customProfile({ ...base, name: 'istio' }), 'name', /built-in/);
  throwsPolicy(() => customProfile({ ...base, name: 'Bad Name' }), 'name');
  throwsPolicy(() => customProfile({ ...base, outbondPort: 1 } as never), 'outbondPort', /unknown custom profile option/);
  throwsPolicy(() => customProfile({ ...base, sidecar: 'x' as never }), 'sidecar');
});

test('resolvePodPolicy validates hand-built Profile objects', () => {
  const bad = { ...getProfile('istio'), name: 'x', inboundPort: 0 };
  throwsPolicy(() => resolvePodPolicy(bad, {}), 'inboundPort');
});

test('detectProfile by sidecar container or label', () => {
  assert.equal(detectProfile({ containerNames: ['app', 'istio-proxy'] })?.name, 'istio');
  assert.equal(detectProfile({ containerNames: ['linkerd-proxy'] })?.name, 'linkerd');
  assert.equal(detectProfile({ containerNames: ['kuma-sidecar'] })?.name, 'kuma');
  assert.equal(detectProfile({ containerNames: ['app'], labels: { 'osm-proxy-uuid': 'x' } })?.name, 'osm');
  assert.equal(detectProfile({ containerNames: ['app'], labels: { 'fsm-proxy-uuid': '' } })?.name, 'fsm');
  assert.equal(detectProfile({ containerNames: ['app'], labels: { app: 'x' } }), undefined);
  throwsPolicy(() => detectProfile({ containerNames: ['istio-proxy', 'linkerd-proxy'] }), 'sidecar', /istio, linkerd/);
});

// ---------------------------------------------------------------- IP and CIDR parsing

test('parseIp: IPv4', () => {
  assert.deepEqual(parseIp('10.1.2.3'), { family: 4, bytes: Uint8Array.from([10, 1, 2, 3]) });
  assert.equal(hex(parseIp('255.255.255.255').bytes), 'ffffffff');
  assert.equal(hex(parseIp(' 0.0.0.0 ').bytes), '00000000');
});

test('parseIp: IPv6 compression, case and embedded IPv4', () => {
  const cases: [string, string][] = [
    ['::', '00000000000000000000000000000000'],
    ['::1', '00000000000000000000000000000001'],
    ['1::', '00010000000000000000000000000000'],
    ['2001:db8::1', '20010db8000000000000000000000001'],
    ['2001:DB8::A:b', '20010db80000000000000000000a000b'],
    ['1:2:3:4:5:6:7::', '00010002000300040005000600070000'], // "::" for a single zero word
    ['::2:3:4:5:6:7:8', '00000002000300040005000600070008'],
    ['1:2:3:4:5:6:7:8', '00010002000300040005000600070008'],
    ['fe80:0:0:0:0:0:0:1', 'fe800000000000000000000000000001'],
    ['::ffff:1.2.3.4', '00000000000000000000ffff01020304'],
    ['::FFFF:192.168.0.1', '00000000000000000000ffffc0a80001'],
    ['64:ff9b::10.0.0.1', '0064ff9b0000000000000000' + '0a000001'],
    ['1:2:3:4:5:6:1.2.3.4', '00010002000300040005000601020304'],
    ['::1.2.3.4', '00000000000000000000000001020304'],
    ['0:0:0:0:0:ffff:255.255.255.255', '00000000000000000000ffffffffffff'],
  ];
  for (const [text, bytes] of cases) {
    const ip = parseIp(text);
    assert.equal(ip.family, 6, text);
    assert.equal(hex(ip.bytes), bytes, text);
  }
});

test('parseIp rejects malformed addresses', () => {
  for (const bad of [
    '', ' ', '1.2.3', '1.2.3.4.5', '256.1.1.1', '010.0.0.1', '1.2.3.-1', '1.2.3.4/32', 'localhost',
    ':::', '1::2::3', '12345::', 'g::1', '1:2:3:4:5:6:7:8:9', '1:2:3:4:5:6:7:8::', '::1.2.3',
    '1.2.3.4::', '1:2:3:4:5:6:7:1.2.3.4', '::ffff:1.2.3.4:1', '::ffff:256.1.1.1', 'fe80::1%eth0',
    '[::1]', '1:2', ':1::', '1::2:',
  ]) {
    throwsPolicy(() => parseIp(bad), 'ip');
  }
});

test('formatIp: RFC 5952 text, matches the WHATWG URL serializer', () => {
  assert.equal(formatIp(parseIp('2001:0db8:0:0:1:0:0:1')), '2001:db8::1:0:0:1'); // first of equal runs
  assert.equal(formatIp(parseIp('2001:db8:0:1:1:1:1:1')), '2001:db8:0:1:1:1:1:1'); // single zero kept
  assert.equal(formatIp(parseIp('::ffff:10.0.0.1')), '::ffff:10.0.0.1');
  assert.equal(formatIp(parseIp('10.0.0.1')), '10.0.0.1');
  let seed = 12345;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) >> 8;
  for (let n = 0; n < 2000; n++) {
    // Many zero words so that compression paths are exercised.
    const bytes = new Uint8Array(16);
    for (let w = 0; w < 8; w++) {
      if (rnd() % 3 === 0) continue;
      bytes[2 * w] = rnd() & 0xff;
      bytes[2 * w + 1] = rnd() & 0xff;
    }
    const text = formatIp({ family: 6, bytes });
    assert.equal(hex(parseIp(text).bytes), hex(bytes), text); // round trip
    const isMapped = hex(bytes).startsWith('00000000000000000000ffff');
    if (!isMapped) assert.equal(`[${text}]`, new URL(`http://[${text}]/`).hostname, text);
  }
});

test('parseCidr: bare address, prefix, host bits zeroed, text kept', () => {
  const a = parseCidr('10.1.2.3');
  assert.deepEqual([a.family, hex(a.addr), a.prefixLen, a.text], [4, '0a010203', 32, '10.1.2.3']);
  const b = parseCidr(' 10.1.2.3/8 ');
  assert.deepEqual([hex(b.addr), b.prefixLen, b.text], ['0a000000', 8, '10.1.2.3/8']);
  assert.equal(formatCidr(b), '10.0.0.0/8');
  assert.equal(formatCidr(parseCidr('0.0.0.0/0')), '0.0.0.0/0');
  assert.equal(formatCidr(parseCidr('255.255.255.255/0')), '0.0.0.0/0');
  assert.equal(formatCidr(parseCidr('10.255.255.255/9')), '10.128.0.0/9');
  assert.equal(formatCidr(parseCidr('::1')), '::1/128');
  assert.equal(formatCidr(parseCidr('2001:db8::ffff/33')), '2001:db8::/33');
  assert.equal(formatCidr(parseCidr('2001:db8:8000::/33')), '2001:db8:8000::/33');
  assert.equal(formatCidr(parseCidr('::/0')), '::/0');
  assert.equal(formatCidr(parseCidr('fe80::1:2:3:4/127')), 'fe80::1:2:3:4/127');
  assert.equal(formatCidr(parseCidr('fe80::1:2:3:5/127')), 'fe80::1:2:3:4/127');
  assert.equal(formatCidr(parseCidr('::ffff:10.1.2.3/104')), '::ffff:10.0.0.0/104');
  assert.equal(formatCidr(parseCidr('::ffff:10.1.2.3/90')), '::ffc0:0:0/90');
  assert.equal(formatCidr(parseCidr('::ffff:10.1.2.3/80')), '::/80');
  assert.equal(parseCidr('::ffff:10.1.2.3/120').family, 6);
});

test('parseCidr rejects bad prefixes and addresses', () => {
  for (const bad of [
    '10.0.0.0/33', '10.0.0.0/-1', '10.0.0.0/', '10.0.0.0/08', '10.0.0.0/+8', '10.0.0.0/8/8', '10.0.0.0/a',
    '::/129', '::/1000', '/8', '10.0.0/8', '10.0.0.0 /8', '10.0.0.0/ 8', 'fe80::1%eth0/64', '*', '', '10.0.0.0/8,',
  ]) {
    throwsPolicy(() => parseCidr(bad), 'cidr');
  }
  assert.match(String((() => { try { parseCidr('10.0.0.0/33'); } catch (e) { return (e as Error).message; } })()), /0-32 for IPv4/);
  assert.match(String((() => { try { parseCidr('::/129'); } catch (e) { return (e as Error).message; } })()), /0-128 for IPv6/);
});

test('cidrContains agrees with node:net BlockList', () => {
  let seed = 777;
  const rnd = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) >> 8;
  const v4 = () => [rnd() & 0xff, rnd() & 3, rnd() & 0xff, rnd() & 0xff].join('.');
  const v6 = () => formatIp({ family: 6, bytes: Uint8Array.from({ length: 16 }, (_, i) => (i < 4 ? 0x20 : rnd() & (i % 5 === 0 ? 0xff : 1))) });
  for (let n = 0; n < 500; n++) {
    const fam = n % 2 === 0 ? 4 : 6;
    const net = fam === 4 ? v4() : v6();
    const len = rnd() % (fam === 4 ? 33 : 129);
    const c = parseCidr(`${net}/${len}`);
    const bl = new BlockList();
    bl.addSubnet(formatIp({ family: fam, bytes: c.addr }), len, fam === 4 ? 'ipv4' : 'ipv6');
    for (let k = 0; k < 8; k++) {
      const probe = fam === 4 ? v4() : v6();
      assert.equal(cidrContains(c, parseIp(probe)), bl.check(probe, fam === 4 ? 'ipv4' : 'ipv6'), `${net}/${len} ∋ ${probe}`);
    }
    assert.ok(cidrContains(c, parseIp(net)));
  }
  assert.equal(cidrContains(parseCidr('10.0.0.0/8'), parseIp('::ffff:10.0.0.1')), false); // family differs
});

// ---------------------------------------------------------------- policy defaults

test('istio default policy: proxy ports excluded inbound, everything else captured', () => {
  const p = istio({});
  assert.deepEqual(p, {
    profile: 'istio',
    outboundPort: 15001,
    inboundPort: 15006,
    proxyUid: 1337,
    dnsPort: 15053,
    statusPort: 15021,
    excludeInboundPorts: [15000, 15001, 15006, 15008, 15020, 15021, 15090],
    includeInboundPorts: 'all',
    excludeOutboundPorts: [],
    includeOutboundPorts: [],
    excludeOutboundCidrs: [],
    includeOutboundCidrs: 'all',
    excludeUids: [],
  } satisfies PodPolicy);
  assert.deepEqual(resolvePodPolicy('istio'), p); // annotations optional
});

test('each profile excludes its own inbound, outbound, admin and status ports inbound', () => {
  for (const name of profileNames()) {
    const prof = getProfile(name);
    const pol = resolvePodPolicy(name, {});
    for (const port of [prof.inboundPort, prof.outboundPort, ...prof.adminPorts, ...prof.defaultExcludeInboundPorts]) {
      assert.ok(pol.excludeInboundPorts.includes(port), `${name} ${port}`);
      assert.equal(capturesInbound(pol, port), false);
    }
    if (prof.statusPort !== undefined) assert.ok(pol.excludeInboundPorts.includes(prof.statusPort));
    assert.deepEqual(pol.excludeOutboundPorts, [...prof.defaultExcludeOutboundPorts].sort((a, b) => a - b));
    assert.equal(pol.proxyUid, prof.proxyUid);
    assert.equal(pol.dnsPort, prof.dnsPort);
    assert.equal(capturesInbound(pol, 8080), true);
  }
  assert.deepEqual(resolvePodPolicy('linkerd').excludeInboundPorts, [4140, 4143, 4190, 4191, 4567, 4568]);
  assert.deepEqual(resolvePodPolicy('osm').excludeInboundPorts, [15000, 15001, 15003, 15010, 15901, 15902, 15903, 15904]);
  assert.deepEqual(resolvePodPolicy('kuma').excludeInboundPorts, [9901, 15001, 15006]);
});

// ---------------------------------------------------------------- Istio annotations

test('istio excludeInboundPorts / excludeOutboundPorts: merged, deduplicated, sorted', () => {
  const p = istio({ [`${IA}excludeInboundPorts`]: ' 9090, 80 ,9090,15021', [`${IA}excludeOutboundPorts`]: '5432,3306,5432' });
  assert.deepEqual(p.excludeInboundPorts, [80, 9090, 15000, 15001, 15006, 15008, 15020, 15021, 15090]);
  assert.deepEqual(p.excludeOutboundPorts, [3306, 5432]);
  assert.equal(capturesInbound(p, 9090), false);
});

test('istio includeInboundPorts: "*" all, "" none, list only those (exclusions still win)', () => {
  assert.equal(istio({ [`${IA}includeInboundPorts`]: '*' }).includeInboundPorts, 'all');
  assert.equal(istio({ [`${IA}includeInboundPorts`]: ' * ' }).includeInboundPorts, 'all');
  const none = istio({ [`${IA}includeInboundPorts`]: '' });
  assert.deepEqual(none.includeInboundPorts, []);
  assert.equal(capturesInbound(none, 8080), false);
  assert.deepEqual(istio({ [`${IA}includeInboundPorts`]: '  ' }).includeInboundPorts, []);
  const some = istio({ [`${IA}includeInboundPorts`]: '9080,8080,15021,8080' });
  assert.deepEqual(some.includeInboundPorts, [8080, 9080, 15021]);
  assert.equal(capturesInbound(some, 8080), true);
  assert.equal(capturesInbound(some, 8081), false);
  assert.equal(capturesInbound(some, 15021), false);
});

test('istio includeOutboundPorts: extra ports captured whatever the address', () => {
  const p = istio({ [`${IA}includeOutboundIPRanges`]: '', [`${IA}includeOutboundPorts`]: '8080, 443' });
  assert.deepEqual(p.includeOutboundPorts, [443, 8080]);
  assert.deepEqual(p.includeOutboundCidrs, []);
  const ext = parseIp('93.184.216.34');
  assert.equal(capturesOutbound(p, ext, 443, 1000), true);
  assert.equal(capturesOutbound(p, ext, 80, 1000), false);
  assert.equal(istio({ [`${IA}includeOutboundPorts`]: '*' }).includeOutboundPorts, 'all');
  assert.deepEqual(istio({ [`${IA}includeOutboundPorts`]: '' }).includeOutboundPorts, []);
});

test('istio excludeOutboundIPRanges / includeOutboundIPRanges', () => {
  const p = istio({
    [`${IA}excludeOutboundIPRanges`]: '169.254.169.254/32, 10.96.0.1, fd00::/8,10.96.0.1/32',
    [`${IA}includeOutboundIPRanges`]: '10.0.0.0/8,2001:db8::/32, 10.1.2.3/8',
  });
  assert.deepEqual(texts(p.excludeOutboundCidrs), ['10.96.0.1', '169.254.169.254/32', 'fd00::/8']);
  assert.deepEqual(canon(p.excludeOutboundCidrs), ['10.96.0.1/32', '169.254.169.254/32', 'fd00::/8']);
  assert.deepEqual(canon(p.includeOutboundCidrs), ['10.0.0.0/8', '2001:db8::/32']);
  assert.equal(capturesOutbound(p, parseIp('10.2.3.4'), 80, 1000), true);
  assert.equal(capturesOutbound(p, parseIp('10.96.0.1'), 443, 1000), false);
  assert.equal(capturesOutbound(p, parseIp('192.168.1.1'), 80, 1000), false);
  assert.equal(capturesOutbound(p, parseIp('2001:db8::5'), 80, 1000), true);
  assert.equal(capturesOutbound(p, parseIp('fd00::1'), 80, 1000), false);
  assert.equal(capturesOutbound(p, parseIp('::ffff:10.2.3.4'), 80, 1000), true); // v4-mapped
  assert.equal(istio({ [`${IA}includeOutboundIPRanges`]: '*' }).includeOutboundCidrs, 'all');
  const none = istio({ [`${IA}includeOutboundIPRanges`]: '' });
  assert.deepEqual(none.includeOutboundCidrs, []);
  assert.equal(capturesOutbound(none, parseIp('10.0.0.1'), 80, 1000), false);
});

test('istio status port annotation: replaces the status port, which is then excluded; 0 disables', () => {
  const p = istio({ 'status.sidecar.istio.io/port': ' 15030 ' });
  assert.equal(p.statusPort, 15030);
  assert.ok(p.excludeInboundPorts.includes(15030));
  assert.ok(p.excludeInboundPorts.includes(15021)); // still a default exclusion
  const off = istio({ 'status.sidecar.istio.io/port': '0' });
  assert.equal(off.statusPort, undefined);
  assert.ok(!('statusPort' in off));
  throwsPolicy(() => istio({ 'status.sidecar.istio.io/port': 'http' }), 'status.sidecar.istio.io/port', /"http" is not a port/);
  throwsPolicy(() => istio({ 'status.sidecar.istio.io/port': '' }), 'status.sidecar.istio.io/port');
  throwsPolicy(() => istio({ 'status.sidecar.istio.io/port': '15020,15021' }), 'status.sidecar.istio.io/port');
  throwsPolicy(() => istio({ 'status.sidecar.istio.io/port': '70000' }), 'status.sidecar.istio.io/port');
});

test('istio exclusion lists do not take "*"; "*" cannot be mixed into a list', () => {
  throwsPolicy(() => istio({ [`${IA}excludeInboundPorts`]: '*' }), `${IA}excludeInboundPorts`, /"\*" is not accepted/);
  throwsPolicy(() => istio({ [`${IA}excludeOutboundIPRanges`]: '*' }), `${IA}excludeOutboundIPRanges`);
  throwsPolicy(() => istio({ [`${IA}includeInboundPorts`]: '*,80' }), `${IA}includeInboundPorts`, /whole value/);
  throwsPolicy(() => istio({ [`${IA}includeOutboundIPRanges`]: '10.0.0.0/8,*' }), `${IA}includeOutboundIPRanges`, /whole value/);
});

test('istio excludeInterfaces is refused, not ignored', () => {
  throwsPolicy(() => istio({ [`${IA}excludeInterfaces`]: 'eth1' }), `${IA}excludeInterfaces`, /not supported/);
});

// ---------------------------------------------------------------- malformed values

test('malformed ports: the error names the annotation, the whole value and the bad entry', () => {
  const key = `${IA}excludeOutboundPorts`;
  assert.throws(() => istio({ [key]: '80,abc' }), {
    name: 'PolicyError',
    message: 'traffic.sidecar.istio.io/excludeOutboundPorts: "80,abc": "abc" is not a port (1-65535)',
  });
  const bad: [string, RegExp][] = [
    ['0', /"0" is not a port/],
    ['65536', /"65536" is not a port/],
    ['-1', /"-1" is not a port/],
    ['80.5', /"80.5"/],
    ['0x50', /"0x50"/],
    ['1e3', /"1e3"/],
    ['+80', /"\+80"/],
    ['8 0', /"8 0"/],
    ['100000', /"100000"/],
    ['80,,443', /empty entry/],
    ['80,', /empty entry/],
    [',80', /empty entry/],
    ['8000-9000', /ranges are not accepted/],
    ['80;443', /"80;443"/],
  ];
  for (const [value, re] of bad) throwsPolicy(() => istio({ [key]: value }), key, re);
  for (const k of ['excludeInboundPorts', 'includeInboundPorts', 'includeOutboundPorts']) {
    throwsPolicy(() => istio({ [`${IA}${k}`]: '80,abc' }), `${IA}${k}`, /"abc" is not a port/);
  }
});

test('malformed CIDRs, IPv6 edge cases included', () => {
  const key = `${IA}excludeOutboundIPRanges`;
  const bad = [
    '10.0.0.0/33', '10.0.0/8', '10.0.0.256', 'example.com', '::/129', '1::2::3/64', 'fe80::1%eth0/64',
    '12345::/16', '::ffff:1.2.3/96', '1.2.3.4::/64', '2001:db8::/032', '10.0.0.0/8,,10.1.0.0/16', '10.0.0.0/8 10.1.0.0/16',
  ];
  for (const value of bad) throwsPolicy(() => istio({ [key]: value }), key);
  assert.throws(() => istio({ [key]: '10.0.0.0/8, 10.0.0.0/33' }), {
    message: `${key}: "10.0.0.0/8, 10.0.0.0/33": "10.0.0.0/33" has a bad prefix length (0-32 for IPv4)`,
  });
  assert.throws(() => istio({ [`${IA}includeOutboundIPRanges`]: 'nope' }), { message: /includeOutboundIPRanges: "nope": "nope" is not an IP address or CIDR/ });
});

test('non-string annotation values and non-object annotations are refused', () => {
  throwsPolicy(() => istio({ [`${IA}excludeInboundPorts`]: 80 as unknown as string }), `${IA}excludeInboundPorts`, /strings/);
  throwsPolicy(() => resolvePodPolicy('istio', null as never), 'annotations');
  throwsPolicy(() => resolvePodPolicy('istio', '80' as never), 'annotations');
});

test('nothing partial: one bad annotation fails the whole policy', () => {
  const a = { [`${IA}excludeInboundPorts`]: '8080', [`${IA}excludeOutboundIPRanges`]: '10.0.0.0/8,bad' };
  throwsPolicy(() => istio(a), `${IA}excludeOutboundIPRanges`);
  // The profile is untouched by a failed or successful resolution.
  assert.deepEqual(istio({}).excludeInboundPorts, [15000, 15001, 15006, 15008, 15020, 15021, 15090]);
});

test('annotations of other meshes are not read', () => {
  const a = {
    'traffic.kuma.io/exclude-inbound-ports': 'garbage',
    'openservicemesh.io/inbound-port-exclusion-list': '1',
    'config.linkerd.io/skip-inbound-ports': '2',
    [`${IA}excludeInboundPorts`]: '3',
  };
  assert.deepEqual(istio(a).excludeInboundPorts.slice(0, 1), [3]);
  assert.ok(!resolvePodPolicy('osm', a).excludeInboundPorts.includes(3));
  assert.ok(resolvePodPolicy('osm', a).excludeInboundPorts.includes(1));
  assert.ok(resolvePodPolicy('linkerd', a).excludeInboundPorts.includes(2));
  throwsPolicy(() => resolvePodPolicy('kuma', a), 'traffic.kuma.io/exclude-inbound-ports');
});

// ---------------------------------------------------------------- OSM / FSM

test('osm annotations', () => {
  const p = resolvePodPolicy('osm', {
    'openservicemesh.io/inbound-port-exclusion-list': '6379, 7070',
    'openservicemesh.io/outbound-port-exclusion-list': '5432,5432',
    'openservicemesh.io/outbound-ip-range-exclusion-list': '1.1.1.1/32, 2.2.2.2/24',
    'openservicemesh.io/outbound-ip-range-inclusion-list': '10.0.0.0/8',
    'flomesh.io/outbound-port-exclusion-list': '9999', // FSM spelling: not OSM's
  });
  assert.ok(p.excludeInboundPorts.includes(6379) && p.excludeInboundPorts.includes(7070));
  assert.deepEqual(p.excludeOutboundPorts, [5432]);
  assert.deepEqual(canon(p.excludeOutboundCidrs), ['1.1.1.1/32', '2.2.2.0/24']);
  assert.deepEqual(canon(p.includeOutboundCidrs), ['10.0.0.0/8']);
  assert.deepEqual(p.includeOutboundPorts, []);
  assert.equal(p.includeInboundPorts, 'all');
});

test('osm: empty inclusion list is refused, empty exclusion list means none, no "*"', () => {
  const inc = 'openservicemesh.io/outbound-ip-range-inclusion-list';
  throwsPolicy(() => resolvePodPolicy('osm', { [inc]: '' }), inc, /remove the annotation/);
  throwsPolicy(() => resolvePodPolicy('osm', { [inc]: '*' }), inc);
  throwsPolicy(() => resolvePodPolicy('osm', { 'openservicemesh.io/inbound-port-exclusion-list': 'http' }), 'openservicemesh.io/inbound-port-exclusion-list', /"http" is not a port/);
  assert.deepEqual(resolvePodPolicy('osm', { 'openservicemesh.io/outbound-port-exclusion-list': '' }).excludeOutboundPorts, []);
});

test('fsm reads both openservicemesh.io/ and flomesh.io/ annotations and merges them', () => {
  const p = resolvePodPolicy('fsm', {
    'openservicemesh.io/inbound-port-exclusion-list': '7070',
    'flomesh.io/inbound-port-exclusion-list': '6379,7070',
    'openservicemesh.io/outbound-port-exclusion-list': '25',
    'flomesh.io/outbound-port-exclusion-list': '26',
    'openservicemesh.io/outbound-ip-range-exclusion-list': '1.1.1.1/32',
    'flomesh.io/outbound-ip-range-exclusion-list': '1.1.1.1, 8.8.8.8/32',
    'openservicemesh.io/outbound-ip-range-inclusion-list': '10.0.0.0/8',
    'flomesh.io/outbound-ip-range-inclusion-list': '192.168.0.0/16',
  });
  assert.ok(p.excludeInboundPorts.includes(6379) && p.excludeInboundPorts.includes(7070));
  assert.deepEqual(p.excludeOutboundPorts, [25, 26]);
  assert.deepEqual(canon(p.excludeOutboundCidrs), ['1.1.1.1/32', '8.8.8.8/32']);
  assert.deepEqual(texts(p.excludeOutboundCidrs), ['1.1.1.1/32', '8.8.8.8/32']); // first text kept
  assert.deepEqual(canon(p.includeOutboundCidrs), ['10.0.0.0/8', '192.168.0.0/16']);
  throwsPolicy(() => resolvePodPolicy('fsm', { 'flomesh.io/outbound-ip-range-exclusion-list': '1.1.1.1/40' }), 'flomesh.io/outbound-ip-range-exclusion-list');
});

// ---------------------------------------------------------------- Kuma

test('kuma annotations', () => {
  const p = resolvePodPolicy('kuma', {
    'traffic.kuma.io/exclude-inbound-ports': '1234,5678',
    'traffic.kuma.io/exclude-outbound-ports': '53, 5432',
    'traffic.kuma.io/exclude-outbound-ips': '192.168.10.1,fd10::/16',
  });
  assert.deepEqual(p.excludeInboundPorts, [1234, 5678, 9901, 15001, 15006]);
  assert.deepEqual(p.excludeOutboundPorts, [53, 5432]);
  assert.deepEqual(canon(p.excludeOutboundCidrs), ['192.168.10.1/32', 'fd10::/16']);
  throwsPolicy(() => resolvePodPolicy('kuma', { 'traffic.kuma.io/exclude-outbound-ports': '1-10' }), 'traffic.kuma.io/exclude-outbound-ports', /ranges are not accepted/);
  throwsPolicy(() => resolvePodPolicy('kuma', { 'traffic.kuma.io/exclude-inbound-ips': '10.0.0.0/8' }), 'traffic.kuma.io/exclude-inbound-ips', /not supported/);
  throwsPolicy(() => resolvePodPolicy('kuma', { 'traffic.kuma.io/exclude-outbound-ports-for-uids': '1000' }), 'traffic.kuma.io/exclude-outbound-ports-for-uids', /not supported/);
});

// ---------------------------------------------------------------- Linkerd

test('linkerd annotations: skip ports with ranges, skip subnets', () => {
  const p = resolvePodPolicy('linkerd', {
    'config.linkerd.io/skip-inbound-ports': '25, 3306-3308',
    'config.linkerd.io/skip-outbound-ports': '443,8000-8002,8001',
    'config.linkerd.io/skip-subnets': '10.0.0.0/8,fd00::/8',
  });
  assert.deepEqual(p.excludeInboundPorts, [25, 3306, 3307, 3308, 4140, 4143, 4190, 4191, 4567, 4568]);
  assert.deepEqual(p.excludeOutboundPorts, [443, 4567, 4568, 8000, 8001, 8002]);
  assert.deepEqual(canon(p.excludeOutboundCidrs), ['10.0.0.0/8', 'fd00::/8']);
  const key = 'config.linkerd.io/skip-outbound-ports';
  throwsPolicy(() => resolvePodPolicy('linkerd', { [key]: '10-5' }), key, /"10-5" is not a port range/);
  throwsPolicy(() => resolvePodPolicy('linkerd', { [key]: '0-5' }), key, /port range/);
  throwsPolicy(() => resolvePodPolicy('linkerd', { [key]: '1-65536' }), key, /port range/);
  throwsPolicy(() => resolvePodPolicy('linkerd', { [key]: 'x' }), key, /"x" is not a port \(1-65535\) or a range a-b/);
  assert.equal(resolvePodPolicy('linkerd', { [key]: '1-65535' }).excludeOutboundPorts.length, 65535);
});

// ---------------------------------------------------------------- overrides

test('overrides add node-wide exclusions and uids', () => {
  const p = resolvePodPolicy(
    'istio',
    { [`${IA}excludeOutboundPorts`]: '80' },
    {
      excludeInboundPorts: [22, 22],
      excludeOutboundPorts: [53, 80],
      excludeOutboundCidrs: ['10.96.0.0/12', { family: 6, addr: parseIp('fd00::1').bytes, prefixLen: 8, text: '' }],
      excludeUids: [0, 1337, 0, 65534],
    },
  );
  assert.ok(p.excludeInboundPorts.includes(22));
  assert.deepEqual(p.excludeOutboundPorts, [53, 80]);
  assert.deepEqual(canon(p.excludeOutboundCidrs), ['10.96.0.0/12', 'fd00::/8']);
  assert.deepEqual(texts(p.excludeOutboundCidrs), ['10.96.0.0/12', 'fd00::/8']);
  assert.deepEqual(p.excludeUids, [0, 65534]); // the proxy uid is implicit
  assert.equal(capturesOutbound(p, parseIp('8.8.8.8'), 443, 0), false);
  assert.equal(capturesOutbound(p, parseIp('8.8.8.8'), 443, 1337), false);
  assert.equal(capturesOutbound(p, parseIp('8.8.8.8'), 443, 1000), true);
  assert.equal(capturesOutbound(p, parseIp('8.8.8.8'), 53, 1000), false);
});

test('overrides are validated', () => {
  throwsPolicy(() => resolvePodPolicy('istio', {}, { excludeInboundPorts: [0] }), 'overrides.excludeInboundPorts[0]');
  throwsPolicy(() => resolvePodPolicy('istio', {}, { excludeOutboundPorts: 80 as never }), 'overrides.excludeOutboundPorts', /array/);
  throwsPolicy(() => resolvePodPolicy('istio', {}, { excludeOutboundCidrs: ['10.0.0.0/8', '10.0.0.0/99'] }), 'overrides.excludeOutboundCidrs[1]', /prefix length/);
  throwsPolicy(() => resolvePodPolicy('istio', {}, { excludeOutboundCidrs: [{ family: 4, addr: new Uint8Array(16), prefixLen: 8, text: '' }] }), 'overrides.excludeOutboundCidrs[0]');
  throwsPolicy(() => resolvePodPolicy('istio', {}, { excludeUids: [-5] }), 'overrides.excludeUids[0]', /uid/);
  throwsPolicy(() => resolvePodPolicy('istio', {}, { excludeUid: [5] } as never), 'overrides.excludeUid', /unknown option/);
});

test('capturesOutbound: exclusions beat inclusions, the proxy uid is never captured', () => {
  const p = istio({
    [`${IA}excludeOutboundPorts`]: '8443',
    [`${IA}includeOutboundPorts`]: '8443,9000',
    [`${IA}excludeOutboundIPRanges`]: '10.1.0.0/16',
    [`${IA}includeOutboundIPRanges`]: '10.0.0.0/8',
  });
  assert.equal(capturesOutbound(p, parseIp('10.2.0.1'), 8443, 1000), false); // excluded port
  assert.equal(capturesOutbound(p, parseIp('10.1.0.1'), 9000, 1000), false); // excluded range
  assert.equal(capturesOutbound(p, parseIp('172.16.0.1'), 9000, 1000), true); // included port
  assert.equal(capturesOutbound(p, parseIp('10.2.0.1'), 80, 1000), true); // included range
  assert.equal(capturesOutbound(p, parseIp('10.2.0.1'), 80, 1337), false); // proxy
});

// SPDX-License-Identifier: Apache-2.0
// The iptables scripts generated from a PodPolicy: exact text for the common case, and a
// small evaluator of the generated rules checked against capturesOutbound/capturesInbound
// plus the datapath-wide rules of the eBPF mode (loopback, own pod IP, node IPs).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CHAIN, OUR_CHAINS, chainRules, foreignReferences, meshScript, parseNatSave, unmeshScript, type Family,
} from '../../src/datapath/iptables/rules.ts';
import { IptablesDriver } from '../../src/datapath/iptables/driver.ts';
import { createDriver, parseMode } from '../../src/datapath/index.ts';
import {
  capturesInbound, capturesOutbound, cidrContains, parseCidr, parseIp, resolvePodPolicy, unmapV4, type PodPolicy,
} from '../../src/profiles/index.ts';

const IA = 'traffic.sidecar.istio.io/';
const istio = (a: Record<string, string> = {}) => resolvePodPolicy('istio', a);
const POD4 = '10.244.1.2';
const POD6 = 'fd00:244:1::2';
const NODE_IPS = ['10.255.0.1', '10.244.1.1', 'fd00:255::1', 'fd00:244:1::1'];

test('istio defaults, IPv4: exact rules', () => {
  assert.deepEqual(chainRules(4, istio(), { podIp: POD4, nodeIps: NODE_IPS }), [
    '-A MESHWARP_OUTPUT -d 127.0.0.0/8 -j RETURN',
    '-A MESHWARP_OUTPUT -m owner --uid-owner 1337 -j RETURN',
    '-A MESHWARP_OUTPUT -d 10.244.1.2/32 -j RETURN',
    '-A MESHWARP_OUTPUT -j MESHWARP_REDIRECT',
    '-A MESHWARP_REDIRECT -p tcp -j REDIRECT --to-ports 15001',
    '-A MESHWARP_INBOUND ! -d 10.244.1.2/32 -j RETURN',
    '-A MESHWARP_INBOUND -s 10.255.0.1/32 -j RETURN',
    '-A MESHWARP_INBOUND -s 10.244.1.1/32 -j RETURN',
    '-A MESHWARP_INBOUND -p tcp -m multiport --dports 15000,15001,15006,15008,15020,15021,15090 -j RETURN',
    '-A MESHWARP_INBOUND -j MESHWARP_IN_REDIRECT',
    '-A MESHWARP_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006',
  ]);
});

test('IPv6 uses ::1, /128 and only IPv6 node IPs; v4-mapped node IPs count as IPv4', () => {
  const r = chainRules(6, istio(), { podIp: POD6, nodeIps: [...NODE_IPS, '::ffff:10.9.9.9'] });
  assert.equal(r[0], '-A MESHWARP_OUTPUT -d ::1/128 -j RETURN');
  assert.ok(r.includes('-A MESHWARP_OUTPUT -d fd00:244:1::2/128 -j RETURN'));
  assert.deepEqual(r.filter((l) => l.includes(' -s ')), [
    '-A MESHWARP_INBOUND -s fd00:255::1/128 -j RETURN', '-A MESHWARP_INBOUND -s fd00:244:1::1/128 -j RETURN',
  ]);
  assert.ok(chainRules(4, istio(), { podIp: POD4, nodeIps: ['::ffff:10.9.9.9'] }).includes('-A MESHWARP_INBOUND -s 10.9.9.9/32 -j RETURN'));
});

test('exclusions, include lists and extra uids', () => {
  const p = istio({
    [`${IA}excludeOutboundPorts`]: '25,587',
    [`${IA}excludeOutboundIPRanges`]: '10.96.0.0/12,fd00:96::/108',
    [`${IA}includeOutboundIPRanges`]: '10.0.0.0/8',
    [`${IA}includeOutboundPorts`]: '443',
    [`${IA}includeInboundPorts`]: '8080,9090,15021',
  });
  p.excludeUids = [0, 1337, 7];
  const r4 = chainRules(4, p, { podIp: POD4, nodeIps: [] });
  assert.deepEqual(r4.filter((l) => l.startsWith('-A MESHWARP_OUTPUT')), [
    '-A MESHWARP_OUTPUT -d 127.0.0.0/8 -j RETURN',
    '-A MESHWARP_OUTPUT -m owner --uid-owner 1337 -j RETURN',
    '-A MESHWARP_OUTPUT -m owner --uid-owner 0 -j RETURN',
    '-A MESHWARP_OUTPUT -m owner --uid-owner 7 -j RETURN',
    '-A MESHWARP_OUTPUT -d 10.244.1.2/32 -j RETURN',
    '-A MESHWARP_OUTPUT -p tcp -m multiport --dports 25,587 -j RETURN',
    '-A MESHWARP_OUTPUT -d 10.96.0.0/12 -j RETURN',
    '-A MESHWARP_OUTPUT -p tcp --dport 443 -j MESHWARP_REDIRECT',
    '-A MESHWARP_OUTPUT -d 10.0.0.0/8 -j MESHWARP_REDIRECT',
  ]);
  // 15021 is the status port: excluded even though included.
  assert.ok(r4.includes('-A MESHWARP_INBOUND -p tcp -m multiport --dports 8080,9090 -j MESHWARP_IN_REDIRECT'));
  assert.ok(!r4.includes('-A MESHWARP_INBOUND -j MESHWARP_IN_REDIRECT'));
  // IPv6: no IPv6 include range, so only the include port is captured.
  const r6 = chainRules(6, p, { podIp: POD6, nodeIps: [] }).filter((l) => l.includes('MESHWARP_REDIRECT') && l.startsWith('-A MESHWARP_OUTPUT'));
  assert.deepEqual(r6, ['-A MESHWARP_OUTPUT -p tcp --dport 443 -j MESHWARP_REDIRECT']);
});

test('more than 15 ports are split into multiport groups', () => {
  const ports = Array.from({ length: 20 }, (_, i) => 1000 + i);
  const p = istio({ [`${IA}excludeOutboundPorts`]: ports.join(',') });
  const r = chainRules(4, p, { podIp: POD4, nodeIps: [] }).filter((l) => l.includes('dport'));
  assert.deepEqual(r, [
    `-A MESHWARP_OUTPUT -p tcp -m multiport --dports ${ports.slice(0, 15).join(',')} -j RETURN`,
    `-A MESHWARP_OUTPUT -p tcp -m multiport --dports ${ports.slice(15).join(',')} -j RETURN`,
    '-A MESHWARP_INBOUND -p tcp -m multiport --dports 15000,15001,15006,15008,15020,15021,15090 -j RETURN',
  ]);
});

test('without a pod IP of a family: no inbound capture and no own-IP bypass (as eBPF)', () => {
  const r = chainRules(6, istio(), { nodeIps: NODE_IPS });
  assert.ok(!r.some((l) => l.startsWith(`-A ${CHAIN.inbound}`) || l.startsWith(`-A ${CHAIN.inRedirect}`)));
  assert.ok(r.includes('-A MESHWARP_OUTPUT -j MESHWARP_REDIRECT'));
});

test('bad input is refused with the field named', () => {
  const p = istio();
  assert.throws(() => chainRules(4, { ...p, outboundPort: 70000 }, { nodeIps: [] }), /outboundPort: 70000/);
  assert.throws(() => chainRules(4, { ...p, excludeOutboundPorts: [1.5] }, { nodeIps: [] }), /excludeOutboundPorts\[0\]/);
  assert.throws(() => chainRules(4, { ...p, excludeUids: [-1] }, { nodeIps: [] }), /excludeUids\[0\]/);
  assert.throws(() => chainRules(4, p, { podIp: POD6, nodeIps: [] }), /not IPv4/);
  assert.throws(() => chainRules(4, p, { podIp: '10.0.0.1; -j DROP', nodeIps: [] }), /pod IP/);
  assert.throws(() => new IptablesDriver({ nodeIps: ['10.0.0.300'] }), /node IP: "10.0.0.300"/);
});

const SAVE = `# Generated by iptables-save v1.8.9 (nf_tables) on Sat Nov 21 09:57:01 2026
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:FOREIGN - [0:0]
:MESHWARP_OTHER - [0:0]
:MESHWARP_OUTPUT - [0:0]
:MESHWARP_REDIRECT - [0:0]
:MESHWARP_INBOUND - [0:0]
:MESHWARP_IN_REDIRECT - [0:0]
-A PREROUTING -p tcp -j MESHWARP_INBOUND
-A OUTPUT -p tcp -j MESHWARP_OUTPUT
-A OUTPUT -p udp -j FOREIGN
-A OUTPUT -p tcp -j MESHWARP_OUTPUT
-A MESHWARP_OUTPUT -j MESHWARP_REDIRECT
-A MESHWARP_REDIRECT -p tcp -j REDIRECT --to-ports 15001
COMMIT
# Completed on Sat Nov 21 09:57:01 2026
`;

test('parseNatSave reads chains and rules of the nat table only', () => {
  const s = parseNatSave(`*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\nCOMMIT\n${SAVE}`);
  assert.deepEqual([...s.chains].slice(4), ['FOREIGN', 'MESHWARP_OTHER', ...['MESHWARP_OUTPUT', 'MESHWARP_REDIRECT', 'MESHWARP_INBOUND', 'MESHWARP_IN_REDIRECT']]);
  assert.equal(s.rules.length, 6);
  assert.ok(!s.rules.includes('-A INPUT -j ACCEPT'));
});

test('meshScript: declares (= flushes) our chains, inserts missing jumps, drops duplicate jumps', () => {
  const empty = parseNatSave('');
  const first = meshScript(4, istio(), { podIp: POD4, nodeIps: [] }, empty).split('\n');
  assert.equal(first[0], '*nat');
  assert.deepEqual(first.slice(1, 1 + OUR_CHAINS.length), OUR_CHAINS.map((c) => `:${c} - [0:0]`));
  assert.ok(first.includes('-I OUTPUT 1 -p tcp -j MESHWARP_OUTPUT'));
  assert.ok(first.includes('-I PREROUTING 1 -p tcp -j MESHWARP_INBOUND'));
  assert.equal(first.at(-2), 'COMMIT');

  const again = meshScript(4, istio(), { podIp: POD4, nodeIps: [] }, parseNatSave(SAVE)).split('\n');
  assert.ok(!again.some((l) => l.startsWith('-I ') && !l.includes(CHAIN.dns)), 'jumps already there are not inserted again');
  assert.deepEqual(again.filter((l) => l.startsWith('-D ')), ['-D OUTPUT -p tcp -j MESHWARP_OUTPUT']);
  assert.ok(!again.some((l) => l.includes('FOREIGN') || l.includes('MESHWARP_OTHER')));
});

test('unmeshScript removes exactly our jumps and chains', () => {
  assert.equal(unmeshScript(parseNatSave('*nat\n:OUTPUT ACCEPT [0:0]\n:MESHWARP_OTHER - [0:0]\nCOMMIT\n')), null);
  assert.equal(unmeshScript(parseNatSave(SAVE)), [
    '*nat',
    '-D OUTPUT -p tcp -j MESHWARP_OUTPUT',
    '-D OUTPUT -p tcp -j MESHWARP_OUTPUT',
    '-D PREROUTING -p tcp -j MESHWARP_INBOUND',
    ...OUR_CHAINS.filter((c) => c !== CHAIN.dns).map((c) => `-F ${c}`),
    ...OUR_CHAINS.filter((c) => c !== CHAIN.dns).map((c) => `-X ${c}`),
    'COMMIT',
  ].join('\n') + '\n');
});

test('unmeshScript refuses when a foreign rule jumps into our chains', () => {
  const s = parseNatSave(SAVE.replace('-A OUTPUT -p udp -j FOREIGN', '-A FOREIGN -d 10.0.0.0/8 -j MESHWARP_REDIRECT'));
  assert.deepEqual(foreignReferences(s), ['-A FOREIGN -d 10.0.0.0/8 -j MESHWARP_REDIRECT']);
  assert.throws(() => unmeshScript(s), /did not create.*-A FOREIGN -d 10.0.0.0\/8 -j MESHWARP_REDIRECT/);
  // A jump to a chain that merely shares our prefix is not a reference.
  assert.deepEqual(foreignReferences(parseNatSave('*nat\n-A OUTPUT -j MESHWARP_OUTPUTX\n-A OUTPUT -p udp -j MESHWARP_OTHER\nCOMMIT\n')), []);
});

test('mode parsing and the factory: unknown modes are a clear error', async () => {
  assert.equal(parseMode('iptables'), 'iptables');
  assert.throws(() => parseMode('ipvs'), /unknown mode "ipvs" \(known: ebpf, iptables\)/);
  await assert.rejects(createDriver('nftables', { nodeIps: [] }), /unknown engine "nftables"/);
  await assert.rejects(createDriver('ebpf', { nodeIps: [] }), /engine ebpf needs options pinRoot and cgroupPath/);
  const d = await createDriver('iptables', { nodeIps: ['10.0.0.1'], pinRoot: '/ignored', cgroupPath: '/ignored' });
  assert.ok(d instanceof IptablesDriver);
  assert.equal(d.engine, 'iptables');
  assert.deepEqual((d as IptablesDriver).opts, { nodeIps: ['10.0.0.1'] });
  assert.ok(d.limitations().every((l) => l.feature && l.reason));
});

// ---- evaluator: the generated rules against the policy semantics ----

interface Pkt { family: Family; src: string; dst: string; port: number; uid?: number }
type Verdict = 'return' | number; // number: REDIRECT --to-ports

function matches(rule: string, p: Pkt): boolean {
  const t = rule.split(' ').slice(2); // drop "-A CHAIN"
  let neg = false;
  for (let i = 0; i < t.length; i++) {
    const [k, v] = [t[i], t[i + 1]];
    let ok: boolean;
    if (k === '!') { neg = true; continue; }
    if (k === '-j') break;
    if (k === '-d' || k === '-s') {
      ok = cidrContains(parseCidr(v), unmapV4(parseIp(k === '-d' ? p.dst : p.src)));
      i++;
    } else if (k === '-p') { ok = v === 'tcp'; i++; }
    else if (k === '-m') { i++; continue; }
    else if (k === '--dport') { ok = Number(v) === p.port; i++; }
    else if (k === '--dports') { ok = v.split(',').map(Number).includes(p.port); i++; }
    else if (k === '--uid-owner') { ok = p.uid !== undefined && Number(v) === p.uid; i++; }
    else throw new Error(`evaluator: unknown token ${k} in ${rule}`);
    if (ok === neg) return false;
    neg = false;
  }
  return true;
}

function evaluate(rules: string[], chain: string, p: Pkt): Verdict {
  for (const r of rules.filter((l) => l.startsWith(`-A ${chain} `))) {
    if (!matches(r, p)) continue;
    const target = r.split(' -j ')[1];
    if (target === 'RETURN') return 'return';
    if (target.startsWith('REDIRECT')) return Number(target.split(' ').at(-1));
    const v = evaluate(rules, target, p);
    if (v !== 'return') return v;
  }
  return 'return';
}

test('generated rules decide exactly like the policy semantics (both families, many policies)', () => {
  const policies: PodPolicy[] = [
    istio(),
    istio({ [`${IA}excludeOutboundPorts`]: '25', [`${IA}excludeOutboundIPRanges`]: '10.96.0.0/12,fd00:96::/32' }),
    istio({ [`${IA}includeOutboundIPRanges`]: '10.0.0.0/8,fd00::/16', [`${IA}excludeOutboundIPRanges`]: '10.1.0.0/16' }),
    istio({ [`${IA}includeOutboundIPRanges`]: '', [`${IA}includeOutboundPorts`]: '443,8443' }),
    istio({ [`${IA}includeOutboundIPRanges`]: '10.0.0.0/8', [`${IA}includeOutboundPorts`]: '*', [`${IA}excludeOutboundPorts`]: '443' }),
    istio({ [`${IA}includeInboundPorts`]: '8080,15006', [`${IA}excludeInboundPorts`]: '9090' }),
    istio({ [`${IA}includeInboundPorts`]: '', 'status.sidecar.istio.io/port': '9000' }),
    resolvePodPolicy('linkerd', {}, { excludeUids: [0, 1000], excludeOutboundCidrs: ['0.0.0.0/0'] }),
  ];
  const dsts = ['10.1.2.3', '10.96.0.10', '10.244.1.2', '10.244.1.3', '127.0.0.5', '192.168.0.1',
    'fd00:96::1', 'fd00:244:1::2', 'fd00:244:1::3', '::1', '2001:db8::1'];
  const srcs = ['10.244.2.2', '10.255.0.1', 'fd00:244:2::2', 'fd00:255::1'];
  const ports = [25, 80, 443, 8080, 9000, 9090, 15006, 15021, 4143, 4191];
  const uids = [0, 1000, 1337, 2102, 4242];
  let checked = 0;
  for (const policy of policies) {
    for (const family of [4, 6] as Family[]) {
      const podIp = family === 4 ? POD4 : POD6;
      const rules = chainRules(family, policy, { podIp, nodeIps: NODE_IPS });
      for (const dst of dsts.filter((d) => parseIp(d).family === family)) {
        const d = parseIp(dst);
        for (const port of ports) {
          for (const uid of uids) {
            const loopback = dst.startsWith('127.') || dst === '::1';
            const want = !loopback && dst !== podIp && capturesOutbound(policy, d, port, uid);
            const got = evaluate(rules, CHAIN.output, { family, src: podIp, dst, port, uid });
            assert.equal(got, want ? policy.outboundPort : 'return', `${policy.profile} out ${dst}:${port} uid ${uid}`);
            checked++;
          }
          for (const src of srcs.filter((s) => parseIp(s).family === family)) {
            const want = dst === podIp && !NODE_IPS.includes(src) && port !== policy.inboundPort && capturesInbound(policy, port);
            const got = evaluate(rules, CHAIN.inbound, { family, src, dst, port });
            assert.equal(got, want ? policy.inboundPort : 'return', `${policy.profile} in ${src} -> ${dst}:${port}`);
            checked++;
          }
        }
      }
    }
  }
  assert.ok(checked > 3000, `${checked} cases`);
});

test('DNS capture (S6): UDP and TCP 53 to the nameservers of each family go to the DNS port, proxy uid excluded', () => {
  const input = { podIp: POD4, nodeIps: [], dnsServers: ['10.96.0.10', 'fd00:96::a', '10.96.0.11'] };
  const dns4 = chainRules(4, istio(), input).filter((l) => l.startsWith(`-A ${CHAIN.dns}`));
  assert.deepEqual(dns4, [
    '-A MESHWARP_DNS -m owner --uid-owner 1337 -j RETURN',
    '-A MESHWARP_DNS -d 10.96.0.10/32 -p udp -j REDIRECT --to-ports 15053',
    '-A MESHWARP_DNS -d 10.96.0.10/32 -p tcp -j REDIRECT --to-ports 15053',
    '-A MESHWARP_DNS -d 10.96.0.11/32 -p udp -j REDIRECT --to-ports 15053',
    '-A MESHWARP_DNS -d 10.96.0.11/32 -p tcp -j REDIRECT --to-ports 15053',
  ]);
  const dns6 = chainRules(6, istio(), { ...input, podIp: POD6 }).filter((l) => l.startsWith(`-A ${CHAIN.dns}`));
  assert.deepEqual(dns6.slice(1), [
    '-A MESHWARP_DNS -d fd00:96::a/128 -p udp -j REDIRECT --to-ports 15053',
    '-A MESHWARP_DNS -d fd00:96::a/128 -p tcp -j REDIRECT --to-ports 15053',
  ]);
  // Capture-all: any destination; per pod by annotation, per node by override; the annotation wins.
  const all = resolvePodPolicy('istio', { 'meshwarp.io/dns-capture-all': 'true' });
  assert.deepEqual(chainRules(4, all, { podIp: POD4, nodeIps: [] }).filter((l) => l.startsWith(`-A ${CHAIN.dns}`)).slice(1), [
    '-A MESHWARP_DNS -p udp -j REDIRECT --to-ports 15053',
    '-A MESHWARP_DNS -p tcp -j REDIRECT --to-ports 15053',
  ]);
  assert.equal(resolvePodPolicy('istio', {}, { dnsCaptureAll: true }).dnsCaptureAll, true);
  assert.equal(resolvePodPolicy('istio', { 'meshwarp.io/dns-capture-all': 'false' }, { dnsCaptureAll: true }).dnsCaptureAll, undefined);
  assert.throws(() => resolvePodPolicy('istio', { 'meshwarp.io/dns-capture-all': 'yes' }), /dns-capture-all.*"true" or "false"/);
  // No DNS port (the profile's mesh has no DNS proxy), or no servers: an empty chain.
  assert.deepEqual(chainRules(4, resolvePodPolicy('linkerd'), input).filter((l) => l.includes(CHAIN.dns)), []);
  assert.deepEqual(chainRules(4, istio(), { podIp: POD4, nodeIps: [] }).filter((l) => l.includes(CHAIN.dns)), []);
  assert.throws(() => chainRules(4, istio(), { ...input, dnsServers: ['10.96.0.x'] }), /nameserver/);
  // The DNS jumps come before the TCP capture jump in OUTPUT.
  const script = meshScript(4, istio(), input, parseNatSave('')).split('\n').filter((l) => l.startsWith('-I OUTPUT'));
  assert.deepEqual(script, ['-I OUTPUT 1 -p tcp -j MESHWARP_OUTPUT', '-I OUTPUT 1 -p udp -m udp --dport 53 -j MESHWARP_DNS',
    '-I OUTPUT 1 -p tcp -m tcp --dport 53 -j MESHWARP_DNS']);
});

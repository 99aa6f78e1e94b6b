// SPDX-License-Identifier: Apache-2.0
// The ambient in-pod rules (src/datapath/ambient-iptables/rules.ts): pure script generation.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseNodeProxy } from '../../src/datapath/ambient/proxy.ts';
import { cgroupArg, dnsChainRules, dnsMeshScript, dnsUnmeshScript, parseTableSave, podChainRules, podMeshScript, podUnmeshScript, probeScript, type PodRulesInput } from '../../src/datapath/ambient-iptables/rules.ts';

const input = (over: Partial<PodRulesInput> = {}): PodRulesInput => ({
  ips: ['10.244.1.5', 'fd00:244:1::5', '10.244.1.6'], ports: { outbound: 15001, inbound: 15006 }, mark: 0x20,
  proxyCgroups: ['/lab/node1/ztunnel'], mode: 'redirect', ...over,
});
const empty = parseTableSave('', 'mangle');

describe('ambient in-pod rules', () => {
  it('redirect: only SYNs are captured (older flows untouched), each pod address inbound, the proxy cgroup exempt', () => {
    const r = podChainRules(4, input());
    const synRules = r.filter((l) => l.includes('TPROXY') || l.includes('am_captured_out'));
    assert.ok(r.some((l) => l.includes('-i lo -p tcp -m mark --mark 0x20/0x20 -j TPROXY --on-port 15001')));
    for (const ip of ['10.244.1.5/32', '10.244.1.6/32']) assert.ok(r.some((l) => l.includes(`-d ${ip}`) && l.includes('--tcp-flags FIN,SYN,RST,ACK SYN') && l.includes('--on-port 15006')));
    assert.ok(synRules.filter((l) => !l.includes('-i lo')).every((l) => l.includes('--tcp-flags FIN,SYN,RST,ACK SYN')));
    assert.ok(r.some((l) => l.includes('-m cgroup --path /lab/node1/ztunnel') && l.endsWith('-j RETURN')));
    assert.ok(!r.some((l) => l.includes('fd00')), 'IPv4 rules hold no IPv6 address');
    // Anti-spoof: every own address returns, anything else is dropped.
    assert.deepEqual(r.filter((l) => l.startsWith('-A MESHWARP_AM_SRC')), [
      '-A MESHWARP_AM_SRC -s 10.244.1.5/32 -j RETURN', '-A MESHWARP_AM_SRC -s 10.244.1.6/32 -j RETURN',
      '-A MESHWARP_AM_SRC -m comment --comment am_spoof -j DROP']);
    const r6 = podChainRules(6, input());
    assert.ok(r6.some((l) => l.includes('-s fe80::/10 -p ipv6-icmp -j RETURN')), 'NDP passes');
  });

  it('DNS: the proxy cgroup first, then REDIRECT to the DNS listener for each nameserver (UDP and TCP); no DNS port: the servers answer', () => {
    const dns = { dnsServers: ['10.96.0.10', 'fd00:96::a'], dnsPort: 15053 };
    assert.deepEqual(dnsChainRules(4, input(dns)), [
      '-A MESHWARP_AM_DNS -m cgroup --path /lab/node1/ztunnel -m comment --comment dns_bypass_proxy -j RETURN',
      '-A MESHWARP_AM_DNS -d 10.96.0.10/32 -p udp -m comment --comment dns_captured -j REDIRECT --to-ports 15053',
      '-A MESHWARP_AM_DNS -d 10.96.0.10/32 -p tcp -m comment --comment dns_captured -j REDIRECT --to-ports 15053']);
    assert.ok(dnsChainRules(6, input(dns)).some((l) => l.includes('-d fd00:96::a/128 -p udp') && l.includes('REDIRECT')));
    for (const over of [{ dnsPort: undefined }, { mode: 'closed' as const }, { mode: 'open' as const }]) {
      const r = dnsChainRules(4, input({ ...dns, ...over }));
      assert.ok(!r.some((l) => l.includes('REDIRECT')), JSON.stringify(over));
      assert.ok(r.some((l) => l.includes('-d 10.96.0.10/32 -p udp -m comment --comment dns_no_listener -j RETURN')), JSON.stringify(over));
    }
    // mangle: UDP 53 to the servers is never dropped by `closed`; TCP 53 is left to nat while capturing or with no ready proxy.
    const closed = podChainRules(4, input({ ...dns, mode: 'closed' }));
    const iRet = closed.indexOf('-A MESHWARP_AM_OUT -d 10.96.0.10/32 -p udp -m udp --dport 53 -j RETURN');
    assert.ok(iRet >= 0 && iRet < closed.findIndex((l) => l.includes('am_fail_closed') && l.startsWith('-A MESHWARP_AM_OUT')), closed.join('\n'));
    assert.ok(closed.includes('-A MESHWARP_AM_OUT -d 10.96.0.10/32 -p tcp -m tcp --dport 53 -j RETURN'));
    assert.ok(closed.includes('-A MESHWARP_AM_PRE -s 10.96.0.10/32 -p udp -m udp --sport 53 -j RETURN'), 'the server\'s replies get in');
    assert.ok(!podChainRules(4, input({ ...dns, dnsPort: undefined })).some((l) => l.includes('-p tcp -m tcp --dport 53')), 'no DNS port: TCP 53 is ordinary TCP');
    const script = dnsMeshScript(4, input(dns), parseTableSave('', 'nat'));
    assert.match(script, /^\*nat\n:MESHWARP_AM_DNS - \[0:0\]\n/);
    assert.ok(script.includes('-I OUTPUT 1 -p udp -m udp --dport 53 -j MESHWARP_AM_DNS') && script.includes('-I OUTPUT 1 -p tcp -m tcp --dport 53 -j MESHWARP_AM_DNS'));
    const cur = parseTableSave('*nat\n:MESHWARP_AM_DNS - [0:0]\n-A OUTPUT -p udp -m udp --dport 53 -j MESHWARP_AM_DNS\nCOMMIT\n', 'nat');
    assert.equal(dnsUnmeshScript(cur), '*nat\n-D OUTPUT -p udp -m udp --dport 53 -j MESHWARP_AM_DNS\n-F MESHWARP_AM_DNS\n-X MESHWARP_AM_DNS\nCOMMIT\n');
  });

  it('closed drops new TCP and UDP, open returns; neither redirects', () => {
    const closed = podChainRules(4, input({ mode: 'closed' }));
    assert.ok(!closed.some((l) => l.includes('TPROXY')));
    assert.ok(closed.some((l) => l.includes('am_fail_closed') && l.includes('-p udp') && l.endsWith('-j DROP')));
    const open = podChainRules(4, input({ mode: 'open' }));
    assert.ok(!open.some((l) => l.includes('TPROXY') || l.endsWith('-j DROP') && !l.includes('am_spoof')));
  });

  it('scripts touch only our chains and jumps; removal refuses foreign jumps into ours', () => {
    const s = podMeshScript(4, input(), empty);
    assert.match(s, /^\*mangle\n/);
    assert.ok(s.includes('-I PREROUTING 1 -j MESHWARP_AM_PRE') && s.includes('-I OUTPUT 1 -j MESHWARP_AM_OUT'));
    const cur = parseTableSave('*mangle\n:PREROUTING ACCEPT [0:0]\n:MESHWARP_AM_PRE - [0:0]\n-A PREROUTING -j MESHWARP_AM_PRE\n-A PREROUTING -j KEEP\nCOMMIT\n', 'mangle');
    assert.ok(!podMeshScript(4, input(), cur).includes('-I PREROUTING'), 'an existing jump is not added twice');
    const rm = podUnmeshScript(cur)!;
    assert.ok(rm.includes('-D PREROUTING -j MESHWARP_AM_PRE') && rm.includes('-X MESHWARP_AM_PRE') && !rm.includes('KEEP'));
    const foreign = parseTableSave('*mangle\n:MESHWARP_AM_PRE - [0:0]\n-A FORWARD -j MESHWARP_AM_PRE\nCOMMIT\n', 'mangle');
    assert.throws(() => podUnmeshScript(foreign), /did not create/);
    assert.equal(podUnmeshScript(empty), null);
  });

  it('counters by rule comment; probe SNAT per enrolled address by --socket-exists; bad input refused', () => {
    const st = parseTableSave('*mangle\n[7:420] -A MESHWARP_AM_OUT -m comment --comment am_spoof -j DROP\n[2:1] -A MESHWARP_AM_SRC -m comment --comment "am_spoof" -j DROP\nCOMMIT\n', 'mangle');
    assert.equal(st.counts.get('am_spoof'), 9n);
    const p = probeScript(6, ['10.1.1.1', 'fd00::7'], parseTableSave('', 'nat'))!;
    assert.ok(p.includes('-A MESHWARP_AM_PROBE -d fd00::7/128 -p tcp -m owner --socket-exists -j SNAT --to-source fd16:9254:7127:1337:ffff:ffff:ffff:ffff'));
    assert.equal(probeScript(4, [], parseTableSave('', 'nat')), null);
    assert.throws(() => cgroupArg('/a b'), /not a plain cgroup path/);
    assert.throws(() => cgroupArg('/a/../b'), /not a plain cgroup path/);
    assert.throws(() => podChainRules(4, input({ mark: 0x30 })), /one bit/);
    assert.throws(() => podChainRules(4, input({ ips: ['10.1.1'] })), /pod IP/);
  });

  it('the announcement takes control and cgroup as absolute paths', () => {
    const base = { id: 'z1', netns: '/run/netns/x', ifName: 'eth0', ports: { outbound: 15001, inbound: 15006 }, ready: true };
    assert.deepEqual(parseNodeProxy({ ...base, control: '/run/z.sock', cgroup: '/sys/fs/cgroup/z' }).control, '/run/z.sock');
    assert.throws(() => parseNodeProxy({ ...base, control: 'z.sock' }), /^Error: control:/);
    assert.throws(() => parseNodeProxy({ ...base, cgroup: '/a/../b' }), /^Error: cgroup:/);
  });
});

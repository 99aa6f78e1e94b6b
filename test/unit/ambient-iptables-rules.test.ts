// SPDX-License-Identifier: Apache-2.0
// The ambient in-pod rules (src/datapath/ambient-iptables/rules.ts): pure script generation.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { parseNodeProxy } from '../../src/datapath/ambient/proxy.ts';
import { cgroupArg, parseTableSave, podChainRules, podMeshScript, podUnmeshScript, probeScript, type PodRulesInput } from '../../src/datapath/ambient-iptables/rules.ts';

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

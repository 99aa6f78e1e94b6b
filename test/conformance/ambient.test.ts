// SPDX-License-Identifier: Apache-2.0
// Ambient dataplane (MESHWARP_DATAPLANE=ambient): enrolled pods' TCP goes through the
// node proxy of their node (src/lab/node-proxy.ts: haproxy, transparent).
// Engine ebpf: the proxy connects upstream from its own address, so the app server of a
// captured connection sees the node proxy's address as the client: outbound capture shows
// the client node's proxy, inbound capture the server node's; the proxy's own connections
// are not captured again.
// Engine iptables (in-pod): the proxy's listeners and upstream sockets live in the pod's
// netns, so upstream connections carry the pod's own address: an enrolled server sees its
// own address (its inbound listener connected to it), a server that is not enrolled sees
// the enrolled client's address from another port than the client's (its outbound listener).
//   node1: a, b (enrolled)  u (not enrolled)  ztunnel (node proxy)
//   node2: d (enrolled)     w (not enrolled)  ztunnel (node proxy)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import { BpfObject, Link, TcFilter, codec, tcxPrograms } from '../../src/bpf/index.ts';
import { selftestObject } from '../../src/bpf/selftest.ts';
import { withNetns } from '../../src/sys/netns.ts';
import { FAMILIES, MODE, MeshLab, assertDirect, assertProxied, connectFrom, loadFrom, famName, norm, stat, suiteSkip, SUITE, type ConnectResult, type Family, type MeshPod } from './harness.ts';
import { PROBE_SOURCE } from '../../src/datapath/ambient-iptables/rules.ts';
import { waitUntil } from '../helpers/poll.ts';
import { heldFlow } from '../helpers/held-flow.ts';

const INPOD = MODE === 'iptables';

const PODS = [
  { node: 'node1', name: 'a', profile: 'istio' },
  { node: 'node1', name: 'b', profile: 'istio' },
  { node: 'node1', name: 'u' },
  { node: 'node2', name: 'd', profile: 'istio' },
  { node: 'node2', name: 'w' },
];

/** The request went through the node proxy whose address (of family fam) the server saw. */
function assertVia(r: ConnectResult, server: string, proxyIp: string, what: string): void {
  if (INPOD) assertProxied(r, server, what);
  assert.ok(r.ok && r.reply, `${what}: request failed: ${JSON.stringify(r)}`);
  assert.equal(r.reply.name, server, `${what}: answered by ${r.reply.name}`);
  assert.equal(norm(r.reply.remote), proxyIp, `${what}: the server saw ${r.reply.remote}, not the node proxy ${proxyIp}`);
}

async function pyConnect(pod: MeshPod, src: string, dst: string, port: number): Promise<string> {
  const code = `import socket,sys\ns=socket.socket(socket.AF_INET6 if ':' in sys.argv[2] else socket.AF_INET)\ns.settimeout(1.5)\n` +
    `s.bind((sys.argv[1],0))\ntry:\n s.connect((sys.argv[2],int(sys.argv[3])));print('connected')\nexcept Exception as e:\n print(type(e).__name__)\n`;
  const r = await pod.sb.run(['python3', '-c', code, src, dst, String(port)], { timeoutMs: 10_000 });
  return r.stdout.trim();
}

/** One ICMP echo from `pod` (raw socket; the lab has no ping): neighbour discovery and ICMP must pass. */
async function icmpEcho(pod: MeshPod, dst: string): Promise<void> {
  const code = `import socket,struct,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\ns.settimeout(2)\n` +
    `def ck(b):\n t=sum(struct.unpack('!%dH'%(len(b)//2),b));t=(t>>16)+(t&0xffff);t+=t>>16;return ~t&0xffff\n` +
    `h=struct.pack('!BBHHH',8,0,0,77,1)+b'meshwarp';h=h[:2]+struct.pack('!H',ck(h))+h[4:]\ns.sendto(h,(sys.argv[1],0))\n` +
    `while True:\n d,a=s.recvfrom(2048)\n if a[0]==sys.argv[1] and d[20]==0:\n  print('reply');break\n`;
  const r = await pod.sb.run(['python3', '-c', code, dst], { timeoutMs: 10_000 });
  assert.equal(r.stdout.trim(), 'reply', `ICMP echo ${pod.name} -> ${dst}: ${r.stderr.trim()}`);
}

describe(`ambient capture through the node proxy (${SUITE})`, { skip: suiteSkip('ambient') }, () => {
  let env: MeshLab;
  const px = (node: string, fam: Family) => (fam === 4 ? env.proxy(node).ip4 : env.proxy(node).ip6);
  /** The client address a server sees for a captured connection from `client` (see the header). */
  const seen = (client: MeshPod, server: MeshPod, fam: Family, node: string): string =>
    !INPOD ? px(node, fam) : server.policy ? server.ip(fam) : client.ip(fam);

  before(async () => { env = await MeshLab.create(PODS, { tag: 'mam' }); });
  after(async () => { await env?.destroy(); });

  for (const fam of FAMILIES) {
    it(`outbound capture, same node: enrolled -> enrolled and -> not enrolled (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const n0 = stat(a.driver, 'am_captured_out')!;
      assertVia(await a.connectTo(env.pod('b'), fam), 'b', seen(a, env.pod('b'), fam, 'node1'), 'a -> b');
      assertVia(await a.connectTo(env.pod('u'), fam), 'u', seen(a, env.pod('u'), fam, 'node1'), 'a -> u');
      assert.ok(stat(a.driver, 'am_captured_out')! >= n0 + 2n, 'am_captured_out counted both');
      assert.ok(stat(a.driver, 'am_bypass_proxy')! > 0n, 'the proxy\'s own connection to b was not captured again');
    });

    it(`cross node: outbound on node1, inbound on node2 (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const d = env.pod('d');
      const in0 = stat(d.driver, 'am_captured_in')!;
      assertVia(await a.connectTo(d, fam), 'd', seen(a, d, fam, 'node2'), 'a -> d');
      assert.ok(stat(d.driver, 'am_captured_in')! > in0, 'node2 captured the inbound flow');
      // Not enrolled client, enrolled server on another node: inbound capture only.
      assertVia(await env.pod('w').connectTo(a, fam), 'a', seen(env.pod('w'), a, fam, 'node1'), 'w -> a');
    });

    it(`pods that are not enrolled and the node itself are untouched (${famName(fam)})`, async () => {
      assertDirect(await env.pod('w').connectTo(env.pod('u'), fam), 'u', 'w -> u');
      const a = env.pod('a');
      const h0 = stat(a.driver, 'am_bypass_host')!;
      // A process of the node (kubelet's probes) reaches the enrolled pod directly (in-pod: SNATed
      // on the node to the probe address, as Istio does, so the pod's rules can tell it).
      const r = await connectFrom(env.node('node1'), a.ip(fam), 8080);
      if (!INPOD) assertDirect(r, 'a', 'node1 -> a');
      else {
        assert.ok(r.ok && r.reply?.name === 'a', `node1 -> a: ${JSON.stringify(r)}`);
        assert.deepEqual([norm(r.reply!.remote), r.reply!.remotePort], [PROBE_SOURCE[fam], r.localPort], 'the probe reached the app, not the proxy');
      }
      assert.ok(stat(a.driver, 'am_bypass_host')! > h0, 'am_bypass_host counted the probe');
    });
  }

  for (const fam of FAMILIES) {
    it(`a flow older than the enrolment keeps going untouched; new flows are captured (${famName(fam)})`, async () => {
      const u = env.pod('u');
      const w = env.pod('w');
      const flag = `/tmp/${env.prefix}-pre-${fam}`;
      // Half a request before enrolment, the rest after: the server answers with the client end it saw.
      const code = `import socket,sys,os,time\ns=socket.create_connection((sys.argv[1],8080),timeout=20)\nprint(s.getsockname()[1],flush=True)\n` +
        `s.sendall(b'GET / HTTP/1.0\\r\\nHost: x\\r\\n')\nwhile not os.path.exists(sys.argv[2]): time.sleep(0.02)\ns.sendall(b'\\r\\n')\n` +
        `d=b''\nwhile True:\n b=s.recv(4096)\n if not b: break\n d+=b\nprint(d.split(b'\\r\\n\\r\\n',1)[1].decode(),flush=True)\n`;
      const child = u.sb.spawn(['/usr/bin/python3', '-c', code, w.ip(fam), flag], { uid: 1000 });
      let out = '';
      let err = '';
      child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
      child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      try {
        for (let i = 0; i < 200 && !out.includes('\n'); i++) await new Promise((r) => setTimeout(r, 20));
        const port = Number(out.split('\n')[0]);
        assert.ok(port > 0, `the old flow connected: ${out} ${err}`);
        await u.mesh('istio');
        assertVia(await u.connectTo(w, fam), 'w', seen(u, w, fam, 'node1'), 'a new flow of the enrolled pod is captured');
        writeFileSync(flag, '');
        await exited;
        const reply = JSON.parse(out.split('\n')[1]) as { name: string; remotePort: number };
        assert.equal(reply.name, 'w');
        assert.equal(reply.remotePort, port, 'the old flow reached the server directly, on its own connection');
      } finally {
        child.kill();
        rmSync(flag, { force: true });
        await u.unmesh();
      }
    });
  }

  it('anti-spoof: a source address that is not the pod\'s is dropped and counted', async () => {
    const a = env.pod('a');
    const fake = '10.244.1.250';
    await a.sb.check(['ip', 'addr', 'add', `${fake}/32`, 'dev', 'eth0']);
    try {
      const s0 = stat(a.driver, 'am_spoof')!;
      assert.notEqual(await pyConnect(a, fake, env.pod('u').ip(4), 8080), 'connected');
      assert.ok(stat(a.driver, 'am_spoof')! > s0, 'am_spoof grew');
      assert.equal(await pyConnect(a, a.ip(4), env.pod('u').ip(4), 8080), 'connected', 'its own address still works');
    } finally {
      await a.sb.check(['ip', 'addr', 'del', `${fake}/32`, 'dev', 'eth0']);
    }
  });

  it('no proxy ready: closed drops new flows (ARP/ICMP pass), open lets them through uncaptured', async () => {
    const a = env.pod('a');
    const b = env.pod('b');
    const d = env.ambientDriver('node1');
    const ann = env.proxy('node1').announcement(false);
    await d.setNodeProxy(ann); // not ready: takes no new flows
    try {
      const c0 = stat(a.driver, 'am_fail_closed')!;
      const r = await a.connect(b.ip(4), 8080, { timeoutMs: 1000 });
      assert.equal(r.ok, false, `fail-closed: the request must fail, got ${JSON.stringify(r)}`);
      assert.ok(stat(a.driver, 'am_fail_closed')! > c0, 'am_fail_closed grew');
      await a.sb.check(['ip', 'neigh', 'flush', 'dev', 'eth0']);
      await icmpEcho(a, b.ip(4));
      d.setFailPolicy('open');
      const o0 = stat(a.driver, 'am_fail_open')!;
      for (const fam of FAMILIES) assertDirect(await a.connectTo(b, fam), 'b', `fail-open a -> b (${famName(fam)})`);
      assert.ok(stat(a.driver, 'am_fail_open')! > o0, 'am_fail_open grew');
    } finally {
      d.setFailPolicy('closed');
      await d.setNodeProxy({ ...ann, ready: true });
    }
    assertVia(await a.connectTo(b, 4), 'b', seen(a, b, 4, 'node1'), 'captured again once the proxy is ready');
  });

  it('a second proxy instance (upgrade) takes new flows once ready; capture goes on after the old one is removed', async () => {
    const a = env.pod('a');
    const old = env.proxy('node1');
    const next = await env.startNodeProxy('node1', 'zt2', true);
    const b = env.pod('b');
    try {
      const s0 = INPOD ? await next.sessions() : 0;
      assertVia(await a.connectTo(b, 4), 'b', INPOD ? seen(a, b, 4, 'node1') : next.ip4, 'new flows go to the new instance');
      if (INPOD) assert.ok(await next.sessions() > s0, 'the new instance served it');
      await env.ambientDriver('node1').removeNodeProxy(old.id);
      assertVia(await a.connectTo(b, 6), 'b', INPOD ? seen(a, b, 6, 'node1') : next.ip6, 'still the new instance after the old one left');
    } finally {
      await env.ambientDriver('node1').setNodeProxy(old.announcement(true));
      await env.ambientDriver('node1').removeNodeProxy(next.id);
      await next.stop();
    }
  });

  // In-pod: both instances listen in the pod's netns (one SO_REUSEPORT group); the old one
  // pauses its listeners before its reload drops them (src/lab/node-proxy.ts listenIn).
  it('proxy upgrade under continuous traffic: 0 failed requests, new connections on the new instance, old flows finish on the old one', async () => {
    const a = env.pod('a');
    const b = env.pod('b');
    const old = env.proxy('node1');
    const drv = env.ambientDriver('node1');
    const flag = `/tmp/${env.prefix}-upg`;
    const held = heldFlow(a.sb, b.ip(4), 8080, flag);
    let next: Awaited<ReturnType<MeshLab['startNodeProxy']>> | undefined;
    let withdrawn = false;
    try {
      await waitUntil('the long-lived flow connected through the old instance', held.connected, 10_000);
      if (!INPOD) assert.ok(await old.sessions('current') >= 1, 'the old instance holds the long-lived flow');
      const c0 = stat(a.driver, 'am_captured_out')!;
      let done = false;
      const load = loadFrom(a.sb, b.ip(4), 8080, 4000, 4).finally(() => { done = true; });
      await waitUntil('the load is being captured', () => stat(a.driver, 'am_captured_out')! > c0 + 20n, 20_000);
      next = await env.startNodeProxy('node1', 'zt3', false); // announced not ready first: takes nothing yet
      const n0 = await next.sessions();
      await drv.setNodeProxy(next.announcement(true));
      await waitUntil('new connections land on the new instance', async () => await next!.sessions() > n0 + 20, 20_000);
      assert.equal(done, false, 'the load was still running after the switch (make it longer)');
      assertVia(await a.connectTo(b, 4), 'b', INPOD ? seen(a, b, 4, 'node1') : next.ip4, 'a new connection after the switch goes to the new instance');
      writeFileSync(flag, ''); // the old flow ends now
      const reply = await held.reply;
      assert.equal(reply.name, 'b', 'the long-lived flow finished');
      assert.equal(norm(reply.remote), INPOD ? b.ip(4) : old.ip4, 'the long-lived flow finished on the old instance');
      if (!INPOD) await waitUntil('the old instance has no flow left', async () => await old.sessions('current') === 0, 20_000);
      await drv.removeNodeProxy(old.id); // withdrawn once its flows ended
      withdrawn = true;
      const r = await load;
      assert.deepEqual({ ok: r.ok, errors: r.errors }, { ok: r.total, errors: {} }, `load across the upgrade: ${JSON.stringify(r)}`);
      assertVia(await a.connectTo(b, 6), 'b', INPOD ? seen(a, b, 6, 'node1') : next.ip6, 'the new instance alone after the old one left');
    } finally {
      held.kill();
      rmSync(flag, { force: true });
      if (next) {
        await drv.setNodeProxy(old.announcement(true));
        await drv.removeNodeProxy(next.id);
        await next.stop();
      } else if (withdrawn) await drv.setNodeProxy(old.announcement(true));
    }
    assertVia(await a.connectTo(b, 4), 'b', seen(a, b, 4, 'node1'), 'the old instance is back for the next scenarios');
  });

  // A SYN that meets the proxy's TIME_WAIT socket of the same tuple: the kernel refuses to
  // assign it to the listener (a request socket beside a live one), so eBPF hands it to the
  // kernel's TIME_WAIT path and answers that path's listener lookup with BPF sk_lookup
  // (mwam_tw_lookup); the in-pod engine's TPROXY target takes the same kernel path.
  it('a new connection that reuses a tuple the node proxy holds in TIME_WAIT is accepted at once (no SYN lost)', async (t) => {
    const a = env.pod('a');
    // Kernels that refuse a sockmap update from tc (7.x) load without the hand-off (loadAmbientObject).
    if (!INPOD && (a.driver as { twHandoff?: boolean }).twHandoff === false) { t.skip('this kernel refuses a sockmap update from tc: no TIME_WAIT hand-off'); return; }
    const u = env.pod('u');
    // 16 client ports for 160 connections: every port comes back while the proxy still
    // holds the last connection of that tuple in TIME_WAIT (it closes first). Each SYN
    // that met that socket used to be dropped (the stack looks for a listener on the
    // original port) and cost the client a 1 s retransmission.
    const synRetrans = async (): Promise<number> => {
      const lines = (await a.sb.check(['cat', '/proc/net/netstat'])).split('\n').filter((l) => l.startsWith('TcpExt:'));
      const [names, values] = lines.map((l) => l.trim().split(/\s+/));
      return Number(values[names.indexOf('TCPSynRetrans')]);
    };
    const range = (await a.sb.check(['sysctl', '-n', 'net.ipv4.ip_local_port_range'])).trim().split(/\s+/).join(' ');
    try {
      await a.sb.check(['sysctl', '-qw', 'net.ipv4.ip_local_port_range=40000 40015']);
      for (const fam of FAMILIES) {
        const before = await synRetrans();
        const tw0 = stat(a.driver, 'am_tw_assigned') ?? 0n;
        const r = await loadFrom(a.sb, u.ip(fam), 8080, 160, 2);
        assert.deepEqual({ ok: r.ok, errors: r.errors }, { ok: 160, errors: {} }, `${famName(fam)}: ${JSON.stringify(r)}`);
        assert.equal(await synRetrans() - before, 0, `${famName(fam)}: SYN retransmissions in the client pod`);
        // The scenario really met TIME_WAIT sockets (else it proves nothing): 16 ports, 160 connections.
        if (!INPOD) assert.ok((stat(a.driver, 'am_tw_assigned') ?? 0n) - tw0 >= 100n, `${famName(fam)}: SYNs handed over by mwam_tw_lookup`);
      }
    } finally {
      await a.sb.check(['sysctl', '-qw', `net.ipv4.ip_local_port_range=${range}`]);
    }
  });

  it('a pod deleted and created again with the same addresses (new veth and MAC) is reached at once and starts unenrolled', async () => {
    const a = env.pod('a');
    // Where the upstream SYN of a captured connection leaves: the node proxy's netns, or (in-pod) a's.
    const upstream = INPOD ? a.sb : env.proxy('node1').pod;
    const synRetrans = async (): Promise<number> => {
      const lines = (await upstream.check(['cat', '/proc/net/netstat'])).split('\n').filter((l) => l.startsWith('TcpExt:'));
      const [names, values] = lines.map((l) => l.trim().split(/\s+/));
      return Number(values[names.indexOf('TCPSynRetrans')]);
    };
    const macOf = async (p: MeshPod): Promise<string> => JSON.parse(await p.sb.check(['ip', '-j', 'link', 'show', 'dev', 'eth0']))[0].address;
    let r = await env.addPod('node1', 'r');
    await r.mesh('istio');
    // The proxy learns r's MAC (neighbour entries of both families).
    for (const fam of FAMILIES) assertVia(await a.connectTo(r, fam), 'r', seen(a, r, fam, 'node1'), `a -> r (${famName(fam)})`);
    const old = { ips: [r.ip(4), r.ip(6)], mac: await macOf(r), veth: r.sb.hostVeth };
    r = await env.recreate('r');
    assert.deepEqual([r.ip(4), r.ip(6)], old.ips, 'the new pod has the old pod\'s addresses');
    assert.notEqual(await macOf(r), old.mac, 'and another MAC');
    assert.notEqual(r.sb.hostVeth, old.veth, 'and another veth');
    const syn0 = await synRetrans();
    for (const fam of FAMILIES) {
      // Nothing of the old pod's enrolment applies to the new one: its traffic is not captured.
      assertDirect(await r.connectTo(env.pod('u'), fam), 'u', `new r -> u (${famName(fam)})`);
      assert.equal(norm((await r.connectTo(env.pod('w'), fam)).reply?.remote), r.ip(fam), `new r -> w is not captured (${famName(fam)})`);
    }
    await r.mesh('istio');
    if (INPOD) {
      // In-pod, upstream connections leave from a's own netns and cross node1's: their neighbour
      // caches are the platform's, which a runtime refreshes (the bridge plugin's gratuitous
      // ARP), as it must without any mesh. The eBPF engine's proxy netns is meshwarp's to flush.
      for (const ns of [a.sb, env.node('node1')]) for (const ip of old.ips) await ns.check(['ip', 'neigh', 'flush', 'to', ip]);
    }
    for (const fam of FAMILIES) {
      assertVia(await a.connectTo(r, fam), 'r', seen(a, r, fam, 'node1'), `a -> new r (${famName(fam)})`);
      assertVia(await env.pod('d').connectTo(r, fam), 'r', seen(env.pod('d'), r, fam, 'node1'), `d -> new r (${famName(fam)})`);
    }
    // The old MAC would have cost the proxy's SYN a retransmission (1 s), or the connection.
    assert.equal(await synRetrans() - syn0, 0, 'SYN retransmissions where the upstream connections leave');
  });

  it('10,000 connections through the node proxy leave no per-connection datapath entry behind', async () => {
    const a = env.pod('a');
    const u = env.pod('u');
    const c0 = stat(a.driver, 'am_captured_out')!;
    // eBPF: the ambient maps keep no per-connection state (flows are found by socket lookup),
    // so their entry counts must not move. In-pod: the pod netns's conntrack table must return
    // to its baseline once the flows' TIME_WAIT/CLOSE entries expire (shortened in this pod).
    const counts0 = a.driver.features.mapCounts?.();
    const ct = async (): Promise<number> => (await a.sb.check(['cat', '/proc/net/nf_conntrack'])).split('\n').filter((l) => l.trim() !== '').length;
    const CT = ['net.netfilter.nf_conntrack_tcp_timeout_time_wait', 'net.netfilter.nf_conntrack_tcp_timeout_close'];
    const saved = INPOD ? await Promise.all(CT.map(async (k) => (await a.sb.check(['sysctl', '-n', k])).trim())) : [];
    try {
      if (INPOD) for (const k of CT) await a.sb.check(['sysctl', '-qw', `${k}=1`]);
      const base = INPOD ? await ct() : 0;
      for (let batch = 0; batch < 5; batch++) {
        const r = await loadFrom(a.sb, u.ip(4), 8080, 2000, 8);
        assert.deepEqual({ ok: r.ok, errors: r.errors }, { ok: 2000, errors: {} }, `batch ${batch}: ${JSON.stringify(r)}`);
        if (counts0) assert.deepEqual(a.driver.features.mapCounts!(), counts0, `map entry counts after batch ${batch}`);
      }
      assert.ok(stat(a.driver, 'am_captured_out')! >= c0 + 10_000n, 'all 10,000 were captured');
      if (INPOD) {
        assert.ok(await ct() > base, 'the conntrack table saw the flows (the check can fail)');
        await waitUntil('the pod\'s conntrack entries are back to the baseline', async () => await ct() <= base, 60_000);
      }
    } finally {
      for (const [i, v] of saved.entries()) await a.sb.check(['sysctl', '-qw', `${CT[i]}=${v}`]);
    }
  });
});

describe(`ambient next to foreign tc programs on the same veth (${SUITE})`, { skip: suiteSkip('ambient') }, () => {
  let env: MeshLab;
  const theirs: BpfObject[] = [];
  let tcx: Link | undefined;
  let veth = 0;
  let nodeNs = '';
  const count = (o: BpfObject): bigint => o.map('st_counters', codec.u32, codec.u64).get(1);
  const inNode = <T>(f: () => T): T => withNetns(nodeNs, f);

  before(async () => {
    env = await MeshLab.create([{ node: 'node1', name: 'a' }, { node: 'node1', name: 'u' }], {
      tag: 'maf',
      beforeDrivers: (lab) => {
        const a = lab.pod('node1', 'a');
        veth = a.hostIfindex;
        nodeNs = lab.node('node1').netnsPath;
        theirs.push(BpfObject.load(selftestObject), BpfObject.load(selftestObject));
        // What Istio 1.20 did: prio 1, handle 1, on both directions; plus a tcx program.
        inNode(() => {
          for (const dir of ['ingress', 'egress'] as const) TcFilter.attach(theirs[0].program('st_tc_count'), veth, dir, { priority: 1, handle: 1 });
          tcx = Link.attachTcx(theirs[1].program('st_tc_count'), veth, 'ingress');
        });
      },
    });
  });

  after(async () => {
    try {
      tcx?.destroy();
      for (const o of theirs) o.close();
    } finally {
      await env?.destroy();
    }
  });

  it('after enrolment, traffic and removal both foreign programs are attached and ran', async () => {
    const a = env.pod('a');
    const u = env.pod('u');
    const stillThere = (): void => inNode(() => {
      for (const dir of ['ingress', 'egress'] as const) assert.ok((TcFilter.at(veth, dir, 1, 1).progId() ?? 0) > 0, `foreign ${dir} filter`);
      assert.ok(tcxPrograms(veth, 'ingress').length >= 1, 'foreign tcx program');
    });
    await a.mesh('istio');
    stillThere();
    const [f0, x0] = [count(theirs[0]), count(theirs[1])];
    assertVia(await a.connectTo(u, 4), 'u', INPOD ? a.ip(4) : env.proxy('node1').ip4, 'a -> u captured');
    await icmpEcho(a, u.ip(4));
    assert.ok(count(theirs[0]) > f0, 'the foreign cls_bpf filter ran');
    assert.ok(count(theirs[1]) > x0, 'the foreign tcx program ran');
    await a.unmesh();
    stillThere();
    const [f1, x1] = [count(theirs[0]), count(theirs[1])];
    assertDirect(await a.connectTo(u, 4), 'u', 'a -> u after removal');
    assert.ok(count(theirs[0]) > f1 && count(theirs[1]) > x1, 'both still run after removal');
  });
});

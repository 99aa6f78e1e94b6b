// SPDX-License-Identifier: Apache-2.0
// S6 DNS capture: a meshed pod's queries to its nameservers reach its sidecar's DNS proxy
// (which answers mesh names itself and forwards the rest), with the real server shown as
// the reply's source; the proxy's own queries, other servers and (eBPF) a proxy that is
// down leave queries to the real server.
//   node1: a (istio, meshed by the test: sidecar with a DNS proxy on 15053)  b (unmeshed: 2nd DNS server)
//   node2: w (unmeshed: the cluster DNS, dnsmasq on its IPv4 and IPv6)
// svc.mesh is 192.0.2.1 at the real servers and 192.0.2.2 at the proxy: the answer says who answered.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { labRunDir } from '../../src/lab/index.ts';
import { APP_UID, MODE, MeshLab, Sidecar, presetPods, skipIfLimited, startDnsmasq, stat, suiteSkip, SUITE } from './harness.ts';
import { waitUntil } from '../helpers/poll.ts';
import type { TraceRecord } from '../../src/datapath/trace.ts';

const REAL = '192.0.2.1';
const MESH = '192.0.2.2';
const EXT = '192.0.2.10';
/** A mesh name the proxy answers over UDP only with TC set (no records): clients retry over TCP. */
const BIG = 'big.mesh';
const BIG_ADDR = '192.0.2.3';
/** A stub resolver inside the pod, as systemd-resolved's. */
const STUB = '127.0.0.53';
const TOOL = fileURLToPath(new URL('./dnstool.ts', import.meta.url));
/** Static musl client (test/tools/musl-resolve.c, built by `make bpf`). */
const MUSL = fileURLToPath(new URL('../../build/bin/mw-musl-resolve', import.meta.url));
const NODE = [process.execPath, '--disable-warning=ExperimentalWarning'];
const ENV = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };

describe(`DNS capture (${SUITE})`, { skip: suiteSkip() }, () => {
  let env: MeshLab;
  let ns: { w4: string; w6: string; b4: string; b6: string };
  let resolvConf: string;

  const run = async (argv: string[], uid = APP_UID): Promise<string> => {
    const r = await env.pod('a').sb.run(argv, { uid, env: ENV, resolvConf, timeoutMs: 60_000 });
    if (r.code !== 0 && !argv.includes('+short')) throw new Error(`${argv.join(' ')}: exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout.trim();
  };
  const dig = (server: string, name: string, opts: { tcp?: boolean; uid?: number } = {}) =>
    run(['dig', '+short', '+time=2', '+tries=1', ...(opts.tcp ? ['+tcp'] : []), `@${server}`, name], opts.uid);
  const tool = async (args: string[]) => JSON.parse(await run([...NODE, TOOL, ...args]));
  const meshA = async (annotations: Record<string, string> = {}) => { await env.pod('a').mesh('istio', annotations); };

  before(async () => {
    env = await MeshLab.create(presetPods(['a', 'b', 'w'], { unmeshed: ['a'] }), { tag: 'mdn' });
    const [a, b, w] = ['a', 'b', 'w'].map((n) => env.pod(n));
    ns = { w4: w.sb.ip4, w6: w.sb.ip6, b4: b.sb.ip4, b6: b.sb.ip6 };
    const records = [`svc.mesh,${REAL}`, `ext.test,${EXT},2001:db8::10`];
    await startDnsmasq(w.sb, [ns.w4, ns.w6], records);
    await startDnsmasq(b.sb, [ns.b4, ns.b6], records);
    // As kubelet writes it: the cluster DNS first. b6 is a DNS server the pod does not use.
    const dir = `${labRunDir(env.prefix)}/dns`;
    mkdirSync(dir, { recursive: true });
    resolvConf = `${dir}/a-resolv.conf`;
    writeFileSync(resolvConf, `nameserver ${ns.w4}\nnameserver ${ns.b4}\nnameserver ${ns.w6}\noptions timeout:2 attempts:2\n`);
    a.dnsServers = [ns.w4, ns.b4, ns.w6];
    a.resolvConf = resolvConf;
    a.sidecarArgs = ['--dns-port', '15053', '--dns-name', `svc.mesh=${MESH}`, '--dns-name', `${BIG}=${BIG_ADDR}`, '--dns-truncate', BIG];
    await meshA();
  });

  after(async () => {
    await env?.destroy();
  });

  it('glibc getaddrinfo (connected UDP, A and AAAA in parallel) gets the proxy\'s answer for a mesh name', async () => {
    assert.match(await run(['getent', 'ahosts', 'svc.mesh']), new RegExp(`^${MESH.replaceAll('.', '\\.')}\\s`, 'm'));
    // A name the mesh does not know: forwarded by the proxy to the real server, both families answered.
    const ext = await run(['getent', 'ahosts', 'ext.test']);
    assert.ok(ext.includes(EXT) && ext.includes('2001:db8::10'), ext);
    const line = await env.pod('a').sidecar!.waitFor((l) => l.dir === 'dns' && l.name === 'ext.test' && l.answer === 'upstream', 'ext.test forwarded');
    assert.ok(line);
  });

  it('a static musl client (sendto to every nameserver at once on one v6 socket, v4-mapped) gets the proxy\'s answer', async () => {
    // musl drops a reply whose source is not one of its nameservers: an answer means every
    // captured query's reply came back from the server it was sent to. resolv.conf has an
    // IPv6 nameserver, so musl sends the IPv4 ones as v4-mapped addresses on an AF_INET6 socket.
    const captured = stat(env.pod('a').driver, 'dns_captured');
    assert.equal(await run([MUSL, 'svc.mesh']), MESH);
    assert.equal(await run([MUSL, 'ext.test']), EXT, 'a name the mesh does not know: forwarded');
    if (captured !== undefined) assert.ok(stat(env.pod('a').driver, 'dns_captured')! > captured, 'the queries were captured');
  });

  it('dig over UDP and over TCP (+tcp), IPv4 and IPv6 nameserver, sees the proxy\'s answer from the server it asked', async () => {
    // dig drops replies from another address than the server it asked: an answer means the source was restored.
    assert.equal(await dig(ns.w4, 'svc.mesh'), MESH);
    assert.equal(await dig(ns.w4, 'svc.mesh', { tcp: true }), MESH);
    assert.equal(await dig(ns.w6, 'svc.mesh'), MESH);
    assert.equal(await dig(ns.w6, 'svc.mesh', { tcp: true }), MESH);
  });

  it('Node\'s resolver (c-ares) and a connected socket\'s peer name', async () => {
    assert.deepEqual((await tool(['resolve', '--server', ns.w4, '--name', 'svc.mesh'])).a, [MESH]);
    const c = await tool(['connected', '--server', ns.w4, '--name', 'svc.mesh']);
    assert.equal(c.reply?.a, MESH, JSON.stringify(c));
    assert.equal(c.reply?.from, ns.w4, 'reply source');
    if (MODE === 'ebpf') assert.deepEqual([c.peer, c.peerPort], [ns.w4, 53], 'getpeername shows the server (eBPF getpeername hook)');
  });

  it('two nameservers on one unconnected socket (sendto): each reply comes from a server that was asked', async () => {
    const r = await tool(['multi', '--servers', `${ns.w4},${ns.b4}`, '--name', 'svc.mesh']);
    assert.equal(r.replies.length, 2, JSON.stringify(r));
    assert.deepEqual(r.replies.map((x: { from: string }) => x.from).sort(), [ns.w4, ns.b4].sort(), JSON.stringify(r));
    for (const x of r.replies) assert.deepEqual([x.port, x.a], [53, MESH]);
  });

  it('the proxy\'s own queries and queries to a server not in resolv.conf reach the real server', async () => {
    assert.equal(await dig(ns.w4, 'svc.mesh', { uid: env.pod('a').policy!.proxyUid }), REAL, 'proxy uid');
    assert.equal(await dig(ns.b6, 'svc.mesh'), REAL, 'not a nameserver of the pod');
    assert.equal(await dig(ns.b6, 'svc.mesh', { tcp: true }), REAL, 'not a nameserver of the pod (TCP)');
  });

  it('capture-all (annotation): port 53 to any server goes to the proxy; off again restores the default', async () => {
    await meshA({ 'meshwarp.io/dns-capture-all': 'true' });
    assert.equal(await dig(ns.b6, 'svc.mesh'), MESH);
    assert.equal(await dig(ns.w4, 'svc.mesh', { uid: env.pod('a').policy!.proxyUid }), REAL, 'proxy uid still excluded');
    await meshA({ 'meshwarp.io/dns-capture-all': 'false' });
    assert.equal(await dig(ns.b6, 'svc.mesh'), REAL);
  });

  it('a truncated UDP answer: glibc and dig retry over TCP, which is captured to the proxy too', async () => {
    const sc = env.pod('a').sidecar!;
    const m = sc.mark();
    assert.match(await run(['getent', 'ahostsv4', BIG]), new RegExp(`^${BIG_ADDR.replaceAll('.', '\\.')}\\s`, 'm'));
    await sc.waitFor((l) => l.dir === 'dns' && l.name === BIG && l.proto === 'udp' && l.answer === 'truncated', 'glibc: UDP answered with TC', m);
    await sc.waitFor((l) => l.dir === 'dns' && l.name === BIG && l.proto === 'tcp' && l.answer === 'local', 'glibc: the TCP retry reached the proxy', m);
    const m2 = sc.mark();
    assert.equal(await dig(ns.w4, BIG), BIG_ADDR, 'dig retries over TCP after TC');
    await sc.waitFor((l) => l.dir === 'dns' && l.name === BIG && l.proto === 'tcp', 'dig: the TCP retry reached the proxy', m2);
  });

  it('a stub resolver inside the pod (127.0.0.53): app -> proxy -> stub -> cluster DNS, no loop', async () => {
    const a = env.pod('a');
    const saved = { resolvConf: a.resolvConf, dnsServers: a.dnsServers };
    // dnsmasq as the pod's stub on 127.0.0.53 (as root, like systemd-resolved is not the proxy), forwarding to
    // the cluster DNS; the pod's resolv.conf names only the stub.
    const stubLog: string[] = [];
    const stub = a.sb.spawn(['dnsmasq', '-k', '-C', '/dev/null', '--no-resolv', '--no-hosts', '--no-poll', '--pid-file=', '--user=root',
      '--bind-interfaces', `--listen-address=${STUB}`, '--port=53', `--server=${ns.w4}`, '--cache-size=0', '--log-queries', '--log-facility=-'],
    { stdio: ['ignore', 'ignore', 'pipe'] });
    stub.stderr!.setEncoding('utf8');
    stub.stderr!.on('data', (d: string) => { stubLog.push(...d.split('\n').filter(Boolean)); });
    const stubConf = `${labRunDir(env.prefix)}/dns/a-stub-resolv.conf`;
    writeFileSync(stubConf, `nameserver ${STUB}\noptions timeout:2 attempts:2\n`);
    try {
      await waitUntil('the stub started', () => stubLog.some((l) => /started, version/.test(l)), 10_000);
      await a.sidecar?.stop();
      a.sidecar = undefined;
      a.resolvConf = stubConf;
      a.dnsServers = [STUB];
      await meshA();
      const sc = a.sidecar!;
      // A mesh name: captured on the way to the stub, answered by the proxy; the stub never sees it.
      assert.equal(await run(['dig', '+short', '+time=2', '+tries=1', `@${STUB}`, 'svc.mesh']), MESH);
      // Another name: the proxy forwards to its nameserver (the stub, not captured: proxy uid), the stub to
      // the cluster DNS (not a nameserver of the pod: not captured). Exactly one query each way.
      const m = sc.mark();
      const seen = stubLog.length;
      assert.equal(await run(['dig', '+short', '+time=2', '+tries=1', `@${STUB}`, 'ext.test']), EXT);
      await sc.waitFor((l) => l.dir === 'dns' && l.name === 'ext.test' && l.answer === 'upstream' && l.upstream === STUB, 'forwarded to the stub', m);
      await waitUntil('the stub forwarded ext.test', () => stubLog.slice(seen).some((l) => l.includes(`forwarded ext.test to ${ns.w4}`)));
      assert.equal(sc.lines.slice(m).filter((l) => l.dir === 'dns' && l.name === 'ext.test').length, 1, JSON.stringify(sc.lines.slice(m)));
      assert.equal(stubLog.slice(seen).filter((l) => /query\[A\] ext\.test /.test(l)).length, 1, stubLog.slice(seen).join('\n'));
      assert.ok(!stubLog.some((l) => /query\[A\] svc\.mesh /.test(l)), 'the mesh name never reached the stub');
    } finally {
      await a.sidecar?.stop();
      a.sidecar = undefined;
      Object.assign(a, saved);
      stub.kill();
      await meshA();
    }
  });

  it('trace: a DNS event for each verdict (captured, restored, not a nameserver, the proxy\'s own query)', async (t) => {
    if (skipIfLimited(t, env, 'trace')) return;
    const src = env.driver('node1').features.trace!;
    const events: TraceRecord[] = [];
    src.setEnabled(true);
    const reader = src.read((r) => events.push(r));
    try {
      const multi = await tool(['multi', '--servers', `${ns.w4},${ns.b4}`, '--name', 'svc.mesh']);
      assert.equal(multi.replies.length, 2, JSON.stringify(multi));
      await dig(ns.w4, 'svc.mesh', { tcp: true });
      await dig(ns.b6, 'svc.mesh');
      await dig(ns.w4, 'svc.mesh', { uid: env.pod('a').policy!.proxyUid });
      const has = (what: string, f: (e: TraceRecord) => boolean) => waitUntil(`${what}\n${JSON.stringify(events, null, 1)}`, () => events.some(f));
      for (const srv of [ns.w4, ns.b4]) {
        await has(`sendmsg4 captured to ${srv}`, (e) => e.program === 'sendmsg4' && e.verdict === 'captured' && e.reason === 'dns_captured'
          && e.orig === `${srv}:53` && e.to === '127.0.0.1:15053' && e.uid === APP_UID);
        await has(`recvmsg4 restored ${srv}`, (e) => e.program === 'recvmsg4' && e.verdict === 'restored' && e.orig === '127.0.0.1:15053' && e.to === `${srv}:53`);
      }
      await has('TCP connect4 captured', (e) => e.program === 'connect4' && e.reason === 'dns_captured' && e.orig === `${ns.w4}:53` && e.to === '127.0.0.1:15053');
      await has('not a nameserver', (e) => e.verdict === 'bypassed' && e.reason === 'dns_not_server' && e.orig === `[${ns.b6}]:53`);
      await has('the proxy\'s own query', (e) => e.verdict === 'bypassed' && e.reason === 'dns_bypass_proxy' && e.orig === `${ns.w4}:53`
        && e.uid === env.pod('a').policy!.proxyUid);
    } finally {
      reader.close();
      src.setEnabled(false);
    }
  });

  it('10,000 queries, a socket each: all answered by the proxy, no per-query state left', async (t) => {
    const d = env.driver('node1');
    const before = d.features.mapCounts?.();
    const captured = stat(d, 'dns_captured');
    const r = await tool(['many', '--server', ns.w4, '--name', 'svc.mesh', '--count', '10000']);
    assert.equal(r.ok, 10000, JSON.stringify(r));
    if (captured !== undefined) assert.ok(stat(d, 'dns_captured')! - captured >= 10000n, 'every query counted as captured');
    // Per-socket state is socket storage (freed with the socket); no map grew.
    if (before) assert.deepEqual(d.features.mapCounts?.(), before);
    else t.diagnostic(`${MODE}: no maps to count; conntrack expires its own entries`);
  });

  it('proxy down: queries reach the real server (fail open), counted; back up: captured again', async (t) => {
    if (skipIfLimited(t, env, 'dns-fail-open')) return;
    const a = env.pod('a');
    const d = env.driver('node1');
    const n = stat(d, 'dns_no_listener');
    await a.sidecar!.stop();
    try {
      // The whole sidecar down: UDP queries go to the real server (TCP, like all TCP of the pod, has no proxy to reach).
      assert.equal(await dig(ns.w4, 'svc.mesh'), REAL, 'UDP, sidecar down');
      assert.match(await run(['getent', 'ahosts', 'svc.mesh']), new RegExp(REAL.replaceAll('.', '\\.')));
      if (n !== undefined) assert.ok(stat(d, 'dns_no_listener')! > n, 'dns_no_listener counted');
      // The sidecar up without its DNS proxy: UDP direct; TCP 53 is then ordinary TCP, relayed to the real server.
      a.sidecar = await Sidecar.start(a.sb, a.policy!, { resolvConf });
      assert.equal(await dig(ns.w4, 'svc.mesh'), REAL, 'UDP, no DNS listener');
      assert.equal(await dig(ns.w4, 'svc.mesh', { tcp: true }), REAL, 'TCP, no DNS listener');
    } finally {
      await a.sidecar?.stop();
      a.sidecar = undefined;
      await meshA();
    }
    assert.equal(await dig(ns.w4, 'svc.mesh'), MESH);
    assert.equal(await dig(ns.w4, 'svc.mesh', { tcp: true }), MESH);
  });
});

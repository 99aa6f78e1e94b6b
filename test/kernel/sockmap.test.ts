// SPDX-License-Identifier: Apache-2.0
// S4 sockmap acceleration: the behaviour gate, and traffic through real meshed
// pods (src/proxy sidecar, app echo client/server) with S4 forced on and off.
// Every transfer is checked byte for byte (position-dependent pattern + sha256),
// and with S4 on the counters must show it went through sockmap.
//   node1: c, c2 (osm, meshed clients)  s (echo server, unmeshed)  sm (echo server, meshed: inbound leg)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { MeshLab, suiteSkip, MODE } from '../conformance/harness.ts';
import { runSockmapGate } from '../../src/datapath/sidecar/sockgate.ts';
import { waitUntil } from '../helpers/poll.ts';
import { waitForLine, type Sandbox } from '../../src/lab/index.ts';

const ECHO = fileURLToPath(new URL('./fixtures/echo.ts', import.meta.url));
const NODE = [process.execPath, '--disable-warning=ExperimentalWarning', ECHO];
const PORT = 9100;
const UID = 1000;

interface EchoResult { ok: boolean; sent: number; got: number; sha256Sent: string; sha256Got: string; firstBad: number; err?: string }

async function echo(from: Sandbox, host: string, bytes: number, o: { seed?: number; bindPort?: number; chunk?: number } = {}): Promise<EchoResult> {
  const r = await from.run([...NODE, 'send', host, String(PORT), String(bytes), String(o.seed ?? 7), o.bindPort ? String(o.bindPort) : '', String(o.chunk ?? 65536)],
    { uid: UID, env: { PATH: process.env.PATH }, timeoutMs: 90_000 });
  assert.equal(r.code, 0, `echo client failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as EchoResult;
}

const stat = (env: MeshLab, name: string): bigint => BigInt(env.driver('node1').features.stats?.()[name] ?? 0n);
const pairs = (env: MeshLab): number => env.driver('node1').features.mapCounts?.().sock_pairs ?? -1;
const SIZES = [1, 1000, 65_536, 2 << 20, 16 << 20];

describe('S4 behaviour gate', { skip: MODE !== 'ebpf' ? 'eBPF only' : suiteSkip() }, () => {
  it('every check passes on plain TCP (the checks themselves are sound)', async () => {
    const v = await runSockmapGate({ noEnrol: true, cycles: 200, maxMb: 4 });
    assert.ok(v.checks.length >= 30, `only ${v.checks.length} checks ran`);
    for (const name of ['fionread-native-2MiB', 'splice-out-1MiB', 'epoll-edge-200', 'msg-peek', 'half-close', 'slow-reader-bound']) {
      assert.equal(v.checks.filter((c) => c.check === name).length, 2, `${name}: one check per family`);
    }
    assert.deepEqual(v.checks.filter((c) => !c.ok), [], v.reason);
  });

  it('through sockmap, reports a verdict that drove the redirect path, and names every failed check', async () => {
    const v = await runSockmapGate({ cycles: 200, maxMb: 4 });
    assert.ok(v.redirected > 0, `no message was redirected: ${v.reason}`);
    assert.equal(v.pass, v.checks.every((c) => c.ok));
    for (const c of v.checks.filter((x) => !x.ok)) assert.match(v.reason, new RegExp(c.check), 'every failed check is in the reason');
    // What this kernel does (reported, not asserted): see docs/sockmap.md.
    process.stdout.write(`# gate on ${v.kernel}: ${v.pass ? 'pass' : `fail: ${v.reason}`}\n`);
  });

  it('the order guard: bytes sent before the peer was accepted are never overtaken by later ones (send before accept, 7-byte writes)', async () => {
    // Deterministic: the client writes before its peer is accepted and enrolled (a miss), then goes on.
    // A build without the guard redirects the later writes, which the reader serves first: byte 0 differs.
    const v = await runSockmapGate({ only: 'send-before-accept-order' });
    assert.equal(v.checks.length, 2, v.reason);
    assert.deepEqual(v.checks.filter((c) => !c.ok), [], v.reason);
    assert.ok((v.miss ?? 0) >= 2, `the early sends missed the peer (miss ${v.miss})`);
    assert.ok((v.native ?? 0) > 0, `the later sends stayed on TCP (native ${v.native})`);
    assert.equal(v.redirected, 0, 'nothing of that stream was redirected after a native send');
  });
});

for (const mode of ['force', 'off'] as const) {
  describe(`S4 ${mode === 'force' ? 'on (forced)' : 'off'}: traffic through meshed pods stays byte-exact`, { skip: MODE !== 'ebpf' ? 'eBPF only' : suiteSkip() }, () => {
    let env: MeshLab;
    let sAddr: string;
    before(async () => {
      env = await MeshLab.create([
        { node: 'node1', name: 'c', profile: 'osm', serve: [] },
        { node: 'node1', name: 'c2', profile: 'osm', serve: [] },
        { node: 'node1', name: 's', serve: [] },
        { node: 'node1', name: 'sm', profile: 'osm', serve: [] },
      ], { tag: mode === 'force' ? 'smf' : 'smo', driver: { sockmap: mode } });
      const s = env.pod('s').sb;
      await waitForLine(s.spawn([...NODE, 'serve', String(PORT)], { uid: UID, env: { PATH: process.env.PATH } }), /^listening$/, 10_000);
      await waitForLine(env.pod('sm').sb.spawn([...NODE, 'serve', String(PORT)], { uid: UID, env: { PATH: process.env.PATH } }), /^listening$/, 10_000);
      sAddr = s.ip4;
    });
    after(async () => { await env?.destroy(); });

    it('the switch says what the mode asked', () => {
      const st = env.driver('node1').features.sockmapState!();
      assert.equal(st.enabled, mode === 'force', st.reason);
      assert.equal(env.driver('node1').features.sockmap, mode === 'force');
    });

    for (const fam of [4, 6] as const) {
      it(`IPv${fam}: 1 B … 16 MiB echoed through the sidecar, sha256 equal both ways`, async () => {
        const host = fam === 4 ? sAddr : env.pod('s').sb.ip6;
        const before = stat(env, 'sockmap_msgs');
        for (const n of SIZES) {
          const r = await echo(env.pod('c').sb, host, n, { seed: n & 0xff });
          assert.ok(r.ok, `${n} bytes: ${JSON.stringify(r)}`);
        }
        const redirected = stat(env, 'sockmap_msgs') - before;
        if (mode === 'force') assert.ok(redirected > 0n, 'S4 on: no message went through sockmap');
        else assert.equal(redirected, 0n, 'S4 off: messages were redirected');
      });
    }

    for (const fam of [4, 6] as const) {
      it(`IPv${fam}: to a meshed server pod, both same-netns legs are enrolled (client app <-> sidecar, server sidecar -> app over the pod's address); 4 MiB echoed exact`, async () => {
        const sm = env.pod('sm').sb;
        const b = { added: stat(env, 'sockmap_added'), msgs: stat(env, 'sockmap_msgs'), off: stat(env, 'sockmap_off') };
        const r = await echo(env.pod('c').sb, fam === 4 ? sm.ip4 : sm.ip6, 4 << 20, { seed: 40 + fam });
        assert.ok(r.ok, JSON.stringify(r));
        const added = stat(env, 'sockmap_added') - b.added;
        if (mode === 'force') {
          assert.equal(added, 4n, 'two sockets per leg: the client pod\'s loopback pair and the server pod\'s sidecar -> app pair');
          assert.ok(stat(env, 'sockmap_msgs') - b.msgs > 0n);
        } else {
          assert.equal(added, 0n);
          assert.ok(stat(env, 'sockmap_off') - b.off >= 4n, 'S4 off: each of the four sockets counted as not enrolled');
        }
        await waitUntil('sock_pairs drained', () => pairs(env) === 0, 10_000);
      });
    }

    it('small pipelined writes right after connect keep their order', async () => {
      const r = await echo(env.pod('c').sb, sAddr, 1 << 20, { chunk: 7 });
      assert.ok(r.ok, JSON.stringify(r));
    });

    it('an epoll-driven client (Node/libuv): 10 000 request/response cycles on one connection, none waits 2 s', async () => {
      const before = stat(env, 'sockmap_msgs');
      const r = await env.pod('c').sb.run([...NODE, 'pingpong', sAddr, String(PORT), '10000'], { uid: UID, env: { PATH: process.env.PATH }, timeoutMs: 120_000 });
      assert.equal(r.code, 0, r.stderr);
      const res = JSON.parse(r.stdout);
      assert.ok(res.ok, r.stdout);
      const redirected = stat(env, 'sockmap_msgs') - before;
      if (mode === 'force') assert.ok(redirected >= 20_000n, `S4 on: each request and each reply is redirected (${redirected})`);
      else assert.equal(redirected, 0n);
      process.stdout.write(`# pingpong, S4 ${mode}: slowest cycle ${res.maxMs} ms\n`);
    });

    it('two pods with identical loopback tuples at once: no byte crosses pods', async () => {
      const before = stat(env, 'sockmap_eexist');
      // Same app source port in both pods -> both hold 127.0.0.1:41000 <-> 127.0.0.1:15001.
      const [a, b] = await Promise.all([
        echo(env.pod('c').sb, sAddr, 4 << 20, { seed: 11, bindPort: 41000 }),
        echo(env.pod('c2').sb, sAddr, 4 << 20, { seed: 22, bindPort: 41000 }),
      ]);
      assert.ok(a.ok, `pod c: ${JSON.stringify(a)}`);
      assert.ok(b.ok, `pod c2: ${JSON.stringify(b)}`);
      assert.equal(stat(env, 'sockmap_eexist') - before, 0n, 'the netns cookie keeps the keys apart');
    });

    if (mode === 'force') {
      it('off-switch flip mid-stream: 0 lost or reordered bytes; new connections enrolled again', async () => {
        const d = env.driver('node1');
        const run = echo(env.pod('c').sb, sAddr, 64 << 20, { seed: 5 });
        const start = stat(env, 'sockmap_msgs');
        await waitUntil('redirects during the stream', () => stat(env, 'sockmap_msgs') > start + 50n, 20_000);
        d.features.setSockmap!(false);
        const r = await run;
        d.features.setSockmap!(true);
        assert.ok(r.ok, JSON.stringify(r));
        assert.ok(stat(env, 'sockmap_off') + stat(env, 'sockmap_native') > 0n, 'the flip did not reach the stream');
        const again = stat(env, 'sockmap_added');
        assert.ok((await echo(env.pod('c').sb, sAddr, 1000)).ok);
        assert.ok(stat(env, 'sockmap_added') > again, 'a new connection is enrolled once the switch is on');
      });
    }

    it('10k closed connections leave 0 sock_pairs entries', async () => {
      const added = stat(env, 'sockmap_added');
      const r = await env.pod('c').sb.run([...NODE, 'many', sAddr, String(PORT), '10000', '16'], { uid: UID, env: { PATH: process.env.PATH }, timeoutMs: 300_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(JSON.parse(r.stdout).ok, r.stdout);
      if (mode === 'force') assert.ok(stat(env, 'sockmap_added') - added >= 10_000n, 'the connections were enrolled');
      await waitUntil('sock_pairs drained', () => pairs(env) === 0, 10_000);
    });
  });
}

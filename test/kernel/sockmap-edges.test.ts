// SPDX-License-Identifier: Apache-2.0
// S4 edge cases through real meshed pods, with S4 forced on (the redirect runs
// whatever the gate says) and off (the control): `Connection: close` bodies, RST
// from either end, a slow reader (bounded memory), peer close while the sender
// blocks, kTLS; haproxy as the sidecar with curl and wrk; agent SIGKILL mid-stream.
//   node1: c (osm, src/proxy sidecar)  h (osm, haproxy sidecar)  s (unmeshed: echo, http, sink)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { APP_PORT, APP_UID, MeshLab, suiteSkip, MODE } from '../conformance/harness.ts';
import { runSockmapGate } from '../../src/datapath/sidecar/sockgate.ts';
import { Lab, LabAgent, uniquePrefix, waitForLine, type Sandbox } from '../../src/lab/index.ts';
import { eventually, waitUntil } from '../helpers/poll.ts';
import { sidecarTest } from '../helpers/kernel.ts';
import { body } from './fixtures/edge.ts';

const fixture = (f: string) => [process.execPath, '--disable-warning=ExperimentalWarning', fileURLToPath(new URL(`./fixtures/${f}`, import.meta.url))];
const EDGE = fixture('edge.ts');
const ECHO = fixture('echo.ts');
const ECHO_PORT = 9100, HTTP_PORT = 9200, SINK_PORT = 9300;
const ENV = { PATH: process.env.PATH };

const ULPS = (() => { try { return readFileSync('/proc/sys/net/ipv4/tcp_available_ulp', 'utf8').trim(); } catch { return ''; } })();
const KTLS_SKIP = ULPS.split(/\s+/).includes('tls') ? false : `kernel has no tls ULP (tcp_available_ulp: "${ULPS}")`;

// Finding (6.18.44, S4 forced): redirected bytes queued for a paused reader are not bounded by its
// receive buffer: the sidecar's writes to the paused app never block, so the app's sender pushes
// all 128 MiB. Kept as a todo that runs (and fails) until the redirect is bounded or the gate checks it.
const UNBOUNDED = 'finding: with S4 on, a paused reader does not hold back its sender (redirect queue unbounded)';

/** Spawns a fixture and collects its stdout lines. */
function spawnLines(sb: Sandbox, argv: string[]): { p: ChildProcess; lines: string[]; exit: Promise<void> } {
  const p = sb.spawn(argv, { uid: APP_UID, env: ENV });
  const lines: string[] = [];
  let buf = '';
  p.stdout!.on('data', (d: Buffer) => { buf += d; const parts = buf.split('\n'); buf = parts.pop()!; lines.push(...parts); });
  const exit = new Promise<void>((r) => p.once('exit', () => { if (buf) lines.push(buf); r(); }));
  return { p, lines, exit };
}

/** Bounded wait until the pusher stalled: its last `w` figure repeated over 5 polls. */
async function stalled(lines: string[]): Promise<number> {
  let last = -1, same = 0;
  await waitUntil('the sender stalls', () => {
    const w = lines.filter((l) => l.startsWith('w ')).pop();
    const n = w ? Number(w.slice(2)) : -1;
    same = n >= 0 && n === last ? same + 1 : 0;
    last = n;
    return same >= 5;
  }, 15_000).catch((e) => { throw new Error(`${e.message}: ${lines.length} lines, last ${JSON.stringify(lines.slice(-3))}`); });
  return last;
}

for (const mode of ['force', 'off'] as const) {
  describe(`S4 ${mode === 'force' ? 'on (forced)' : 'off'}: edge cases through a meshed pod`, { skip: MODE !== 'ebpf' ? 'eBPF only' : suiteSkip() }, () => {
    let env: MeshLab;
    let dir: string;
    let n = 0;
    const stat = (name: string): bigint => BigInt(env.driver('node1').features.stats?.()[name] ?? 0n);
    const pairs = (): number => env.driver('node1').features.mapCounts?.().sock_pairs ?? -1;
    const c = () => env.pod('c').sb;
    const s = () => env.pod('s').sb;
    const url = (path: string) => `http://${s().ip4}:${HTTP_PORT}${path}`;
    /** Redirect counters moved with S4 on, stayed with S4 off. */
    const redirected = (before: bigint) => {
      const d = stat('sockmap_msgs') - before;
      if (mode === 'force') assert.ok(d > 0n, 'S4 on: no message went through sockmap');
      else assert.equal(d, 0n, 'S4 off: messages were redirected');
    };

    before(async () => {
      env = await MeshLab.create([
        { node: 'node1', name: 'c', profile: 'osm', serve: [] },
        { node: 'node1', name: 's', serve: [] },
      ], { tag: mode === 'force' ? 'sef' : 'seo', driver: { sockmap: mode } });
      dir = mkdtempSync(join(tmpdir(), 'mw-sockedge-'));
      chmodSync(dir, 0o755);
      await waitForLine(s().spawn([...ECHO, 'serve', String(ECHO_PORT)], { uid: APP_UID, env: ENV }), /^listening$/, 10_000);
      await waitForLine(s().spawn([...EDGE, 'http', String(HTTP_PORT)], { uid: APP_UID, env: ENV }), /^listening$/, 10_000);
    });
    after(async () => {
      try { await env?.destroy(); } finally { if (dir) rmSync(dir, { recursive: true, force: true }); }
    });

    it('`Connection: close` body of 8 MiB ended by the FIN arrives whole and in order (curl)', async () => {
      const before = stat('sockmap_msgs');
      const size = 8 << 20;
      const r = await c().run(['curl', '-sS', '--max-time', '60', '-H', 'Connection: close', url(`/close/${size}`)], { uid: APP_UID, timeoutMs: 90_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.length, size, 'every byte before the FIN');
      assert.ok(r.stdout === body(0, size).toString('latin1'), 'bytes in order');
      redirected(before);
    });

    it('RST from the server mid-body: the app gets a correct prefix and an end, nothing hangs', async () => {
      const size = 4 << 20;
      const r = await c().run(['curl', '-sS', '--max-time', '60', url(`/rst/${size}`)], { uid: APP_UID, timeoutMs: 90_000 });
      assert.notEqual(r.code, 28, 'curl timed out: the reset never reached the app');
      assert.ok(r.stdout.length <= size);
      assert.ok(r.stdout === body(0, r.stdout.length).toString('latin1'), 'the bytes before the reset are a correct prefix');
      await waitUntil('sock_pairs drained', () => pairs() === 0, 10_000);
    });

    it('RST from the app mid-stream: the sidecar lets go of both legs, sock_pairs drains', async () => {
      const before = stat('sockmap_msgs');
      const r = await c().run([...EDGE, 'rst', s().ip4, String(ECHO_PORT)], { uid: APP_UID, env: ENV, timeoutMs: 90_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(JSON.parse(r.stdout).ok, r.stdout);
      redirected(before);
      await waitUntil('sock_pairs drained', () => pairs() === 0, 10_000);
      await waitUntil('the server side closed too', async () => (await s().check(['ss', '-Htn', 'state', 'established', `sport = :${ECHO_PORT}`])).trim() === '', 10_000);
    });

    it('slow reader: a paused app holds back its sender (bounded memory), then gets all 128 MiB in order', mode === 'force' ? { todo: UNBOUNDED } : {}, async () => {
      const before = stat('sockmap_msgs');
      const total = 128 << 20;
      const gate = join(dir, `gate-${n++}`);
      const run = spawnLines(c(), [...EDGE, 'push', s().ip4, String(ECHO_PORT), String(total), gate]);
      try {
        const accepted = await stalled(run.lines);
        assert.ok(accepted < total / 2, `the sender pushed ${accepted} of ${total} bytes while nobody read: memory not bounded`);
      } finally {
        writeFileSync(gate, '');
      }
      await run.exit;
      const res = JSON.parse(run.lines.at(-1)!);
      assert.ok(res.ok, JSON.stringify(res));
      redirected(before);
    });

    it('peer close while the sender blocks: the sender gets an error or EOF, no hang, sock_pairs drains', async () => {
      const gate = join(dir, `gate-${n++}`);
      const sink = spawnLines(s(), [...EDGE, 'sink', String(SINK_PORT), gate]);
      try {
        await waitUntil('sink listening', () => sink.lines.includes('listening'), 10_000);
        const run = spawnLines(c(), [...EDGE, 'push', s().ip4, String(SINK_PORT), String(256 << 20), gate]);
        await stalled(run.lines);
        writeFileSync(gate, '');
        await run.exit;
        const res = JSON.parse(run.lines.at(-1)!);
        assert.notEqual(res.err, 'timeout', `the blocked sender never woke up: ${JSON.stringify(res)}`);
        assert.equal(res.ok, false, 'the sink read nothing, so the echo cannot be complete');
        await waitUntil('sock_pairs drained', () => pairs() === 0, 10_000);
      } finally {
        writeFileSync(gate, '');
        await sink.exit;
      }
    });

    it('kTLS: setting the tls ULP on an app socket leaves its traffic byte-exact', { skip: KTLS_SKIP }, async () => {
      // The app can only set TCP_ULP once connected, i.e. after sock_ops enrolled it, so the
      // kernel decides: it refuses the ULP on a sockmap socket, or the socket leaves the map.
      const py = `import socket,hashlib,json
s=socket.create_connection(("${s().ip4}",${ECHO_PORT}))
try:
  s.setsockopt(6,31,b"tls"); ulp="ok"
except OSError as e: ulp=e.errno
d=bytes((i*7)&255 for i in range(1<<20)); s.sendall(d); s.shutdown(1)
g=b""
while True:
  x=s.recv(65536)
  if not x: break
  g+=x
print(json.dumps({"ulp":ulp,"ok":g==d}))`;
      const r = await c().run(['python3', '-c', py], { uid: APP_UID, env: ENV, timeoutMs: 60_000 });
      assert.equal(r.code, 0, r.stderr);
      const res = JSON.parse(r.stdout);
      assert.ok(res.ok, JSON.stringify(res));
      process.stdout.write(`# kTLS on an enrolled socket: ${JSON.stringify(res.ulp)}\n`);
    });
  });
}

describe('S4 on (forced): haproxy as the sidecar, curl and wrk as the app', { skip: MODE !== 'ebpf' ? 'eBPF only' : suiteSkip() }, () => {
  let env: MeshLab;
  let dir: string;
  let haproxy: ChildProcess | undefined;
  let outboundPort = 0, proxyUid = 0;
  const stat = (name: string): bigint => BigInt(env.driver('node1').features.stats?.()[name] ?? 0n);
  const h = () => env.pod('h').sb;

  async function startHaproxy(splice: boolean): Promise<void> {
    haproxy?.kill('SIGKILL');
    const cfg = join(dir, `haproxy-${splice ? 'splice' : 'plain'}.cfg`);
    writeFileSync(cfg, `global
  nbthread 1
  maxconn 512
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
${splice ? '  option splice-auto\n' : ''}listen out
  bind 0.0.0.0:${outboundPort}
  server orig 0.0.0.0:0
`, { mode: 0o644 });
    haproxy = h().spawn(['haproxy', '-db', '-f', cfg], { uid: proxyUid, env: ENV });
    const up = await eventually(async () => (await h().check(['ss', '-Hltn', `sport = :${outboundPort}`])).trim() !== '', 5000, 50);
    assert.ok(up, 'haproxy did not listen');
  }

  before(async () => {
    env = await MeshLab.create([
      { node: 'node1', name: 'h', serve: [] },
      { node: 'node1', name: 's' },
    ], { tag: 'shp', driver: { sockmap: 'force' } });
    const policy = await env.pod('h').mesh('osm', {}, { sidecar: false });
    outboundPort = policy.outboundPort;
    proxyUid = policy.proxyUid;
    dir = mkdtempSync(join(tmpdir(), 'mw-sockhap-'));
    chmodSync(dir, 0o755);
    await waitForLine(env.pod('s').sb.spawn([...EDGE, 'http', String(HTTP_PORT)], { uid: APP_UID, env: ENV }), /^listening$/, 10_000);
  });
  after(async () => {
    try {
      haproxy?.kill('SIGKILL');
      await env?.destroy();
    } finally { if (dir) rmSync(dir, { recursive: true, force: true }); }
  });

  for (const splice of [false, true]) {
    it(`curl: 4 MiB \`Connection: close\` body exact, and wrk (2 s, 8 connections) with no error${splice ? ', haproxy option splice-auto' : ''}`, async (t) => {
      if (splice) {
        const v = await runSockmapGate({ cycles: 50, maxMb: 1 });
        const bad = v.checks.filter((c) => !c.ok && c.check.startsWith('splice')).map((c) => c.check);
        if (bad.length) { t.skip(`the gate finds splice broken through sockmap on this kernel (${bad.join(', ')}): S4 stays off there`); return; }
      }
      await startHaproxy(splice);
      const before = stat('sockmap_msgs');
      const size = 4 << 20;
      const r = await h().run(['curl', '-sS', '--max-time', '60', `http://${env.pod('s').sb.ip4}:${HTTP_PORT}/close/${size}`], { uid: APP_UID, timeoutMs: 90_000 });
      assert.equal(r.code, 0, r.stderr);
      assert.ok(r.stdout === body(0, size).toString('latin1'), `body differs (${r.stdout.length} bytes)`);
      const w = await h().run(['wrk', '-t1', '-c8', '-d2s', '--timeout', '5s', `http://${env.pod('s').sb.ip4}:${APP_PORT}/`], { uid: APP_UID, timeoutMs: 60_000 });
      assert.equal(w.code, 0, w.stderr);
      const reqs = Number(/(\d+) requests in/.exec(w.stdout)?.[1] ?? 0);
      assert.ok(reqs > 0, w.stdout);
      assert.doesNotMatch(w.stdout, /Socket errors|Non-2xx/, w.stdout);
      assert.ok(stat('sockmap_msgs') - before > 0n, 'no message went through sockmap');
    });
  }
});

sidecarTest('agent SIGKILL mid-stream with S4 forced: 0 lost or reordered bytes; the restarted agent enrols again', async (t) => {
  const lab = await Lab.create({ prefix: uniquePrefix('sak') });
  t.after(() => lab.destroy());
  const n1 = lab.addNode('node1');
  const client = lab.addPod(n1, 'client');
  const server = lab.addPod(n1, 'server');
  await waitForLine(server.spawn([...ECHO, 'serve', String(ECHO_PORT)], { uid: APP_UID, env: ENV }), /^listening$/, 10_000);
  const proxy = client.spawn([...fixture('../../../src/proxy/main.ts'), '--outbound', '15001', '--inbound', '15003'], { uid: 1500 });
  await waitForLine(proxy, /ready/);
  const agent = new LabAgent(n1, { args: ['--sockmap', 'force'] });
  await agent.start();
  t.after(() => agent.kill());
  await agent.request('POST', '/v1/cni/add', {
    containerId: `c-${client.name}`, netns: client.netnsPath, ifName: 'eth0', podNamespace: 'default', podName: client.name,
    prevResult: { cniVersion: '1.0.0', ips: [{ address: `${client.ip4}/24` }, { address: `${client.ip6}/64` }] },
  });
  const dp = async (k: string): Promise<number> => (await agent.request<any>('GET', '/v1/status')).datapath[k] ?? 0;
  const echo = (bytes: number) => client.run([...ECHO, 'send', server.ip4, String(ECHO_PORT), String(bytes), '9'], { uid: APP_UID, env: ENV, timeoutMs: 120_000 });

  let finished = false;
  const run = echo(64 << 20).finally(() => { finished = true; });
  const start = await dp('sockmap_msgs');
  await waitUntil('redirects during the stream', async () => (await dp('sockmap_msgs')) > start + 50, 20_000);
  await agent.kill();
  assert.equal(finished, false, 'the stream was still running when the agent died');
  await agent.start();
  const r = await run;
  assert.equal(r.code, 0, r.stderr);
  const res = JSON.parse(r.stdout);
  assert.ok(res.ok, `stream across the SIGKILL: ${r.stdout}`);
  const st = await agent.request<any>('GET', '/v1/status');
  assert.ok(Object.values(st.sockmap as Record<string, { enabled: boolean }>).some((x) => x.enabled), 'S4 on after restart');
  const added = await dp('sockmap_added');
  const again = JSON.parse((await echo(1000)).stdout);
  assert.ok(again.ok, JSON.stringify(again));
  assert.ok((await dp('sockmap_added')) > added, 'a new connection is enrolled by the restarted agent');
}, { needs: ['tcx'], timeout: 180_000 });

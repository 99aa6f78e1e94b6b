// SPDX-License-Identifier: Apache-2.0
// Ambient between nodes (MESHWARP_DATAPLANE=ambient, eBPF engine): the node proxies are the
// lab's HBONE proxy (src/lab/hbone/), identities and certificates from a per-run lab CA
// (LabMesh, openssl). A captured connection from an enrolled pod to an enrolled pod on the other
// node crosses as an HTTP/2 CONNECT stream over mutual TLS to the destination pod's address on
// 15008, which node2's eBPF delivers to its proxy's HBONE listener; node2's proxy connects to the
// pod from its own address, so the app sees node2's proxy as the client.
//   node1: a, b (enrolled)   proxy ztunnel (HBONE)
//   node2: d (enrolled), w (not enrolled)   proxy ztunnel (HBONE)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { labRunDir } from '../../src/lab/cleanup.ts';
import { LabCa } from '../../src/lab/hbone/ca.ts';
import { LabMesh, type LabHboneProxy } from '../../src/lab/hbone/lab.ts';
import { MAX_STREAMS_PER_CONNECTION } from '../../src/lab/hbone/proxy.ts';
import type { Sandbox } from '../../src/lab/index.ts';
import { FAMILIES, MODE, MeshLab, famName, norm, suiteSkip, SUITE, type ConnectResult, type Family, type MeshPod } from './harness.ts';
import { eventually } from '../helpers/poll.ts';

const TOOL = fileURLToPath(new URL('./hbonetool.ts', import.meta.url));
const CHILD_ENV: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };

const PODS = [
  { node: 'node1', name: 'a', profile: 'istio' },
  { node: 'node1', name: 'b', profile: 'istio' },
  { node: 'node2', name: 'd', profile: 'istio' },
  { node: 'node2', name: 'w' },
];

function skip(): string | false {
  const s = suiteSkip('ambient');
  if (s) return s;
  return MODE === 'ebpf' ? false : `HBONE lab proxy runs with the eBPF engine (this run: ${MODE}; the in-pod engine's node proxy is haproxy)`;
}

async function tool(sb: Sandbox, args: string[], timeoutMs = 20_000, uid = 1000): Promise<Record<string, unknown>> {
  const r = await sb.run([process.execPath, '--disable-warning=ExperimentalWarning', TOOL, ...args], { env: CHILD_ENV, timeoutMs, uid });
  if (r.code !== 0) throw new Error(`hbonetool ${args[0]} in ${sb.name} failed (${r.code ?? r.signal}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Record<string, unknown>;
}

describe(`ambient across nodes over HBONE (${SUITE})`, { skip: skip() }, () => {
  let env: MeshLab;
  let mesh: LabMesh;
  let p1: LabHboneProxy;
  let p2: LabHboneProxy;
  const pip = (p: LabHboneProxy, fam: Family) => (fam === 4 ? p.ip4 : p.ip6);
  const c = async (p: LabHboneProxy, name: string) => p.counter(name);

  before(async () => {
    env = await MeshLab.create(PODS, { tag: 'mhb', ambient: { nodeProxy: false } });
    mesh = LabMesh.create(env.lab);
    p1 = await mesh.startProxy(env.node('node1'));
    p2 = await mesh.startProxy(env.node('node2'));
    for (const s of PODS) mesh.add(env.pod(s.name).sb, { hbone: s.profile !== undefined });
    await mesh.push();
    for (const [n, p] of [['node1', p1], ['node2', p2]] as const) await env.ambientDriver(n).setNodeProxy(p.announcement());
  });
  after(async () => {
    await mesh?.stop();
    await env?.destroy();
  });

  for (const fam of FAMILIES) {
    it(`cross node: a (node1) -> d (node2) is one HBONE stream with both SPIFFE identities (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const d = env.pod('d');
      const [o0, s0] = [await c(p1, 'out_hbone_status_200'), await c(p2, 'hbone_status_200')];
      const r = await a.connectTo(d, fam);
      assert.ok(r.ok && r.reply, `a -> d: ${JSON.stringify(r)}`);
      assert.equal(r.reply.name, 'd');
      assert.equal(norm(r.reply.remote), pip(p2, fam), 'd saw node2\'s proxy as the client (its HBONE listener connected to it)');
      assert.equal(await c(p1, 'out_hbone_status_200'), o0 + 1, 'node1 opened one CONNECT stream, answered 200');
      assert.equal(await c(p2, 'hbone_status_200'), s0 + 1, 'node2 accepted one CONNECT stream');
      const idA = mesh.identity(a.sb);
      const idD = mesh.identity(d.sb);
      assert.equal(idA, 'spiffe://cluster.local/ns/default/sa/a');
      const authority = fam === 4 ? `${d.ip(4)}:8080` : `[${d.ip(6)}]:8080`;
      const client = (await p1.hops()).filter((h) => h.side === 'client' && h.authority === authority).pop();
      assert.ok(client, `node1 has a client hop to ${authority}`);
      assert.deepEqual([client.srcId, client.dstId, client.status, client.peer], [idA, idD, 200, fam === 4 ? `${d.ip(4)}:15008` : `[${d.ip(6)}]:15008`]);
      const forwardedFor = fam === 4 ? `${norm(r.local)}:${r.localPort}` : `[${norm(r.local)}]:${r.localPort}`;
      const server = (await p2.hops()).filter((h) => h.side === 'server' && h.forwardedFor === forwardedFor).pop();
      assert.ok(server, `node2 has a server hop with Forwarded: for="${forwardedFor}" (the client pod's own end)`);
      assert.deepEqual([server.srcId, server.dstId, server.authority, server.status], [idA, idD, authority, 200]);
      assert.ok(server.peer.startsWith(fam === 4 ? `${p1.ip4}:` : `[${p1.ip6}]:`), `the HBONE connection came from node1's proxy: ${server.peer}`);
      assert.match(server.baggage ?? '', /k8s\.namespace\.name=default,k8s\.pod\.name=a/);
      assert.match(server.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
      assert.ok(await c(p2, 'hbone_connections') >= 1);
    });

    it(`same node stays inside the proxy (no TLS); a pod outside the mesh gets plain TCP; plaintext inbound (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const [l0, t0, h0, i0] = [await c(p1, 'out_local'), await c(p1, 'out_passthrough'), await c(p1, 'out_hbone'), await c(p1, 'in_plain')];
      const rb = await a.connectTo(env.pod('b'), fam);
      assert.ok(rb.ok && rb.reply?.name === 'b' && norm(rb.reply.remote) === pip(p1, fam), `a -> b: ${JSON.stringify(rb)}`);
      const rw = await a.connectTo(env.pod('w'), fam);
      assert.ok(rw.ok && rw.reply?.name === 'w' && norm(rw.reply.remote) === pip(p1, fam), `a -> w: ${JSON.stringify(rw)}`);
      assert.equal(await c(p1, 'out_local'), l0 + 1, 'a -> b relayed by the proxy itself');
      assert.equal(await c(p1, 'out_passthrough'), t0 + 1, 'a -> w passed through as plain TCP');
      assert.equal(await c(p1, 'out_hbone'), h0, 'neither took an HBONE stream');
      // Not enrolled -> enrolled across nodes: node1 captures it inbound (15006, plaintext).
      const ri = await env.pod('w').connectTo(a, fam);
      assert.ok(ri.ok && ri.reply?.name === 'a' && norm(ri.reply.remote) === pip(p1, fam), `w -> a: ${JSON.stringify(ri)}`);
      assert.equal(await c(p1, 'in_plain'), i0 + 1);
    });

    it(`a destination that refuses: 503, and the client's connection fails at once (${famName(fam)})`, async () => {
      const [o0, s0] = [await c(p1, 'out_hbone_status_503'), await c(p2, 'hbone_status_503')];
      const t = Date.now();
      const r: ConnectResult = await env.pod('a').connect(env.pod('d').ip(fam), 9999, { timeoutMs: 10_000 });
      const ms = Date.now() - t;
      assert.ok(!r.reply, `no reply expected: ${JSON.stringify(r)}`);
      assert.equal(r.code, 'ECONNRESET', `the client's connection is reset, it does not hang: ${JSON.stringify(r)}`);
      assert.ok(ms < 3000, `failed within ${ms} ms`);
      assert.equal(await c(p2, 'hbone_status_503'), s0 + 1, 'node2 answered 503');
      assert.equal(await c(p1, 'out_hbone_status_503'), o0 + 1, 'node1 got the 503');
    });
  }

  it('64 MiB each way through HBONE, with a half-close in the middle: every byte back, in order', async () => {
    const d = env.pod('d');
    // An echo server on d:9090 that ends its side when the client has ended its own.
    d.sb.spawn([process.execPath, '-e', "require('net').createServer({allowHalfOpen:true},(s)=>s.pipe(s)).listen(9090,'::',()=>console.log('listening'))"], { uid: 1000, env: CHILD_ENV });
    await eventually(async () => (await d.sb.run(['sh', '-c', "ss -Htln 'sport = :9090' | grep -q ."])).code === 0, 5000, 50);
    for (const fam of FAMILIES) {
      const o0 = await c(p1, 'out_hbone_status_200');
      const r = await tool(env.pod('a').sb, ['echo', '--host', d.ip(fam), '--port', '9090', '--bytes', String(64 << 20)], 120_000);
      assert.deepEqual(r, { sent: 64 << 20, received: 64 << 20, same: true }, `${famName(fam)}: ${JSON.stringify(r)}`);
      assert.equal(await c(p1, 'out_hbone_status_200'), o0 + 1, 'it went over HBONE');
    }
  });

  it('a workload whose policy denies the source: 401, the connection fails', async () => {
    const b = env.pod('b');
    mesh.add(env.pod('d').sb, { denyFrom: [mesh.identity(b.sb)] });
    await mesh.push();
    try {
      const s0 = await c(p2, 'hbone_status_401');
      const r = await b.connectTo(env.pod('d'), 4);
      assert.equal(r.code, 'ECONNRESET', JSON.stringify(r));
      assert.equal(await c(p2, 'hbone_status_401'), s0 + 1);
      const ra = await env.pod('a').connectTo(env.pod('d'), 4);
      assert.equal(ra.reply?.name, 'd', 'a is still allowed');
    } finally {
      mesh.add(env.pod('d').sb);
      await mesh.push();
    }
  });

  it('the client checks the server: node2 presenting another identity than the registry gives d fails the connection', async () => {
    // node1 is told d runs as sa/impostor; node2's proxy still proves sa/d, which node1 must refuse.
    const cfg = mesh.config('node1');
    cfg.workloads = cfg.workloads.map((w) => (w.name === 'd' ? { ...w, serviceAccount: 'impostor' } : w));
    await p1.configure(cfg);
    try {
      const [f0, ok0] = [await c(p1, 'out_h2_connection_errors'), await c(p1, 'out_hbone_status_200')];
      const r = await env.pod('a').connectTo(env.pod('d'), 4);
      assert.ok(!r.reply && r.code === 'ECONNRESET', `a -> d must fail: ${JSON.stringify(r)}`);
      assert.equal(await c(p1, 'out_h2_connection_errors'), f0 + 1, 'the TLS connection failed on the server identity');
      assert.equal(await c(p1, 'out_hbone_status_200'), ok0);
    } finally {
      await mesh.push();
    }
    assert.equal((await env.pod('a').connectTo(env.pod('d'), 4)).reply?.name, 'd', 'with the right registry again it works');
  });

  describe('the HBONE listener checks its clients (a client of our own in node1\'s proxy netns)', () => {
    let dir: string;
    let foreign: LabCa;
    const files = (name: string, cert: { cert: string; key: string }) => {
      writeFileSync(join(dir, `${name}.crt`), cert.cert, { mode: 0o644 });
      writeFileSync(join(dir, `${name}.key`), cert.key, { mode: 0o644 });
      return ['--cert', join(dir, `${name}.crt`), '--key', join(dir, `${name}.key`)];
    };
    const connect = (fam: Family, extra: string[], authority?: string) => {
      const d = env.pod('d');
      return tool(p1.pod, ['connect', '--host', d.ip(fam), '--authority', authority ?? (fam === 4 ? `${d.ip(4)}:8080` : `[${d.ip(6)}]:8080`),
        '--ca', join(dir, 'ca.crt'), '--id', mesh.identity(d.sb), ...extra], 20_000, 0); // root: the key files are the lab's
    };

    before(() => {
      dir = join(labRunDir(env.prefix), 'hbone-client');
      mkdirSync(dir, { recursive: true, mode: 0o755 });
      writeFileSync(join(dir, 'ca.crt'), mesh.ca.certPem, { mode: 0o644 });
      foreign = LabCa.create(join(labRunDir(env.prefix), 'foreign-ca'));
    });
    after(() => { foreign?.destroy(); rmSync(dir, { recursive: true, force: true }); });

    for (const fam of FAMILIES) {
      it(`a's certificate from node1's address: 200 and a reply; wrong authority: 400 (${famName(fam)})`, async () => {
        const own = files('a', mesh.certFor('node1', mesh.identity(env.pod('a').sb)));
        const ok = await connect(fam, own);
        assert.equal(ok.tls, 'ok', JSON.stringify(ok));
        assert.equal(ok.status, 200, JSON.stringify(ok));
        assert.equal((ok.reply as { name?: string } | null)?.name, 'd', JSON.stringify(ok));
        const bad = await connect(fam, own, fam === 4 ? `${env.pod('w').ip(4)}:8080` : `[${env.pod('w').ip(6)}]:8080`);
        assert.equal(bad.status, 400, `authority naming another address than the connection's: ${JSON.stringify(bad)}`);
      });
    }

    it('a certificate from another CA is refused and counted', async () => {
      const r0 = await c(p2, 'hbone_tls_refused_chain');
      const r = await connect(4, files('foreign', foreign.issue(mesh.identity(env.pod('a').sb))));
      assert.equal(r.status, undefined, `no CONNECT answered: ${JSON.stringify(r)}`);
      assert.ok(r.error, JSON.stringify(r));
      assert.equal(await c(p2, 'hbone_tls_refused_chain'), r0 + 1);
    });

    it('no client certificate is refused and counted', async () => {
      const r0 = await c(p2, 'hbone_tls_refused');
      const r = await connect(6, []);
      assert.equal(r.status, undefined, JSON.stringify(r));
      assert.equal(await c(p2, 'hbone_tls_refused'), r0 + 1);
    });

    it('a mesh certificate of a workload of another node (d\'s, from node1) is refused and counted', async () => {
      const r0 = await c(p2, 'hbone_tls_refused_identity');
      const r = await connect(4, files('d', mesh.certFor('node2', mesh.identity(env.pod('d').sb))));
      assert.equal(r.status, undefined, JSON.stringify(r));
      assert.equal(await c(p2, 'hbone_tls_refused_identity'), r0 + 1);
    });
  });

  it('1,000 concurrent connections a -> d are 1,000 streams over ten HBONE connections of at most 100 streams', async () => {
    const a: MeshPod = env.pod('a');
    const d = env.pod('d');
    const flag = `/tmp/${env.prefix}-hold`;
    rmSync(flag, { force: true });
    const conns0 = await c(p1, 'out_h2_connections');
    const run = tool(a.sb, ['hold', '--host', d.ip(4), '--port', '8080', '--count', '1000', '--flag', flag], 120_000);
    try {
      const key = `${mesh.identity(a.sb)}|${mesh.identity(d.sb)}|${d.ip(4)}`;
      const all = await eventually(async () => {
        const s = await p1.stats();
        const streams = s.pool.filter((p) => p.key === key).reduce((n, p) => n + p.streams, 0);
        return streams >= 1000 && (await c(p2, 'hbone_streams_active')) >= 1000;
      }, 60_000, 200);
      const s1 = await p1.stats();
      assert.ok(all, `1000 streams open at once: node1 pool ${JSON.stringify(s1.pool)}, node2 active ${await c(p2, 'hbone_streams_active')}`);
      const mine = s1.pool.filter((p) => p.key === key);
      assert.equal(mine.length, 1000 / MAX_STREAMS_PER_CONNECTION, `pooled connections for (a, d): ${JSON.stringify(mine)}`);
      assert.ok(mine.every((p) => p.streams === MAX_STREAMS_PER_CONNECTION), `each carries ${MAX_STREAMS_PER_CONNECTION} streams: ${JSON.stringify(mine)}`);
      assert.ok(s1.counters.out_h2_connections - conns0 <= mine.length, `no more connections than that (${s1.counters.out_h2_connections - conns0})`);
    } finally {
      writeFileSync(flag, '');
    }
    const res = await run;
    rmSync(flag, { force: true });
    assert.deepEqual(res, { ok: 1000, errors: {}, names: { d: 1000 } });
    assert.ok(await c(p1, 'out_hbone_streams_max') >= 1000);
  });
});

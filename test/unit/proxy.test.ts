// SPDX-License-Identifier: Apache-2.0
// Loopback tests of the transparent proxy (injected original destinations; no eBPF, no NAT).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { startProxy, type Proxy, type ProxyOptions } from '../../src/proxy/proxy.ts';
import { decodeSockaddr, originalDst, type OrigDst } from '../../src/proxy/origdst.ts';

type TestCtx = { after(fn: () => unknown): void };

/** A server on host; onConn handles each accepted socket (default: echo, half-close aware). */
async function server(t: TestCtx, host: string, onConn = (s: net.Socket) => { s.pipe(s); }): Promise<OrigDst> {
  const conns = new Set<net.Socket>();
  const srv = net.createServer({ allowHalfOpen: true }, (s) => {
    conns.add(s.on('error', () => {}).on('close', () => conns.delete(s)));
    onConn(s);
  });
  srv.listen(0, host);
  await once(srv, 'listening');
  t.after(() => new Promise((r) => { srv.close(r); for (const s of conns) s.destroy(); }));
  return { address: host, port: (srv.address() as net.AddressInfo).port, family: host.includes(':') ? 6 : 4 };
}

async function proxy(t: TestCtx, resolveOrigDst: ProxyOptions['resolveOrigDst'], extra: Partial<ProxyOptions> = {}): Promise<Proxy> {
  const p = await startProxy({ outbound: 0, inbound: 0, resolveOrigDst, ...extra });
  t.after(() => p.close());
  return p;
}

/** Connects, writes data, half-closes, and collects everything until the peer ends. */
async function exchange(port: number, data: Buffer, host = '127.0.0.1'): Promise<{ got: Buffer; ended: boolean }> {
  const c = net.connect({ port, host, allowHalfOpen: true });
  const chunks: Buffer[] = [];
  let ended = false;
  c.on('data', (d) => chunks.push(d)).on('end', () => { ended = true; c.end(); });
  c.on('error', () => {});
  c.end(data);
  await once(c, 'close');
  return { got: Buffer.concat(chunks), ended };
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const settle = () => new Promise((r) => setTimeout(r, 50));

test('decodeSockaddr: sockaddr_in and sockaddr_in6', () => {
  const v4 = Buffer.alloc(16);
  v4.writeUInt16LE(2, 0); v4.writeUInt16BE(8080, 2); Buffer.from([10, 1, 2, 3]).copy(v4, 4);
  assert.deepEqual(decodeSockaddr(v4), { address: '10.1.2.3', port: 8080, family: 4 });
  const v6 = (hex: string, port: number) => {
    const b = Buffer.alloc(28);
    b.writeUInt16LE(10, 0); b.writeUInt16BE(port, 2); Buffer.from(hex, 'hex').copy(b, 8);
    return decodeSockaddr(b);
  };
  assert.deepEqual(v6('20010db8000000000000000000000001', 443), { address: '2001:db8::1', port: 443, family: 6 });
  assert.equal(v6('00000000000000000000000000000001', 1).address, '::1');
  assert.equal(v6('00000000000000000000ffff0a000001', 1).address, '::ffff:10.0.0.1');
  assert.equal(v6('fd000000000100000000000000000abc', 65535).address, 'fd00:0:1::abc');
  assert.equal(v6('20010db8000000010000000000000001', 1).address, '2001:db8:0:1::1');
  assert.throws(() => decodeSockaddr(Buffer.alloc(16)), /unexpected sockaddr/);
});

test('originalDst: a plain loopback connection has no NAT entry and does not throw', async (t) => {
  for (const [listen, connect] of [['127.0.0.1', '127.0.0.1'], ['::1', '::1'], ['::', '127.0.0.1']]) {
    const accepted = new Promise<net.Socket>((r) => { void server(t, listen, r).then((a) => net.connect(a.port, connect).on('error', () => {})); });
    const s = await accepted;
    const r = originalDst(s);
    // With conntrack loaded and tracking loopback, the kernel answers the un-NATed destination itself.
    if (r !== null) assert.deepEqual([r.address, r.port], [s.localAddress?.replace(/^::ffff:/, ''), s.localPort]);
    s.destroy();
  }
});

test('8 MB in both directions arrives intact, with stats', async (t) => {
  const echo = await server(t, '127.0.0.1');
  const p = await proxy(t, () => echo);
  const data = randomBytes(8 << 20);
  const { got, ended } = await exchange(p.outboundPort, data);
  assert.ok(ended);
  assert.equal(got.length, data.length);
  assert.equal(sha(got), sha(data));
  await settle();
  assert.equal(p.stats.bytesIn, data.length);
  assert.equal(p.stats.bytesOut, data.length);
  assert.deepEqual([p.stats.connections, p.stats.active, p.stats.errors], [1, 0, 0]);
});

test('inbound over IPv6 with a tag: HTTP bytes are not modified', async (t) => {
  let seen = Buffer.alloc(0);
  const app = await server(t, '::1', (s) => { s.on('data', (d) => { seen = Buffer.concat([seen, d]); }).on('end', () => s.end('HTTP/1.1 204 No Content\r\n\r\n')); });
  const dirs: string[] = [];
  const p = await proxy(t, (_s, dir) => { dirs.push(dir); return app; }, { tag: 'pod-a' });
  const req = Buffer.from('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n');
  const { got } = await exchange(p.inboundPort, req, '::1');
  assert.deepEqual(seen, req);
  assert.equal(got.toString(), 'HTTP/1.1 204 No Content\r\n\r\n');
  assert.deepEqual(dirs, ['inbound']);
});

test('half-close: the upstream can still reply after the client has ended', async (t) => {
  const up = await server(t, '127.0.0.1', (s) => {
    s.resume().on('end', () => setTimeout(() => s.end('after-fin'), 50));
  });
  const p = await proxy(t, () => up);
  const { got, ended } = await exchange(p.outboundPort, Buffer.from('bye'));
  assert.equal(got.toString(), 'after-fin');
  assert.ok(ended);
});

test('errors close both sides: upstream reset and upstream refused', async (t) => {
  const up = await server(t, '127.0.0.1', (s) => { s.once('data', () => s.resetAndDestroy()); });
  const p = await proxy(t, () => up);
  const c = net.connect(p.outboundPort, '127.0.0.1').on('error', () => {});
  c.write('x');
  await once(c, 'close');
  // A port nobody listens on any more: connect is refused and the client is closed.
  const dead = net.createServer().listen(0, '127.0.0.1');
  await once(dead, 'listening');
  const deadPort = (dead.address() as net.AddressInfo).port;
  await new Promise((r) => dead.close(r));
  const p2 = await proxy(t, () => ({ address: '127.0.0.1', port: deadPort, family: 4 }));
  const c2 = net.connect(p2.outboundPort, '127.0.0.1').on('error', () => {});
  await once(c2, 'close');
  await settle();
  assert.deepEqual([p.stats.errors, p2.stats.errors], [1, 1]);
  assert.deepEqual([p.stats.active, p2.stats.active], [0, 0]);
});

test('no original destination: the client is closed and counted', async (t) => {
  const p = await proxy(t, () => null);
  const { got, ended } = await exchange(p.outboundPort, Buffer.from('hello'));
  assert.ok(ended);
  assert.equal(got.length, 0);
  assert.equal(p.stats.noOrigDst, 1);
});

test('a resolver that throws closes the client and counts an error', async (t) => {
  const p = await proxy(t, () => { throw new Error('boom'); });
  await exchange(p.outboundPort, Buffer.from('x'));
  assert.equal(p.stats.errors, 1);
});

test('self-loop: an original destination on the proxy own ports is refused', async (t) => {
  let p!: Proxy;
  const targets = () => [
    { address: '127.0.0.1', port: p.outboundPort, family: 4 as const },
    { address: '::1', port: p.inboundPort, family: 6 as const },
    { address: '::ffff:127.0.0.1', port: p.outboundPort, family: 6 as const },
  ];
  let i = 0;
  p = await proxy(t, () => targets()[i++]);
  for (let n = 0; n < 3; n++) {
    const { got } = await exchange(n === 1 ? p.inboundPort : p.outboundPort, Buffer.from('loop'));
    assert.equal(got.length, 0);
  }
  await settle();
  assert.equal(p.stats.selfLoop, 3);
  assert.equal(p.stats.connections, 3); // nothing connected back to itself
});

test('main.ts: prints ready, closes un-redirected connections, logs JSON, exits on SIGTERM', async (t) => {
  const free = async () => { const s = net.createServer().listen(0, '127.0.0.1'); await once(s, 'listening'); const port = (s.address() as net.AddressInfo).port; s.close(); return port; };
  const [outbound, inbound] = [await free(), await free()];
  const child = spawn(process.execPath, ['src/proxy/main.ts', '--outbound', `${outbound}`, '--inbound', `${inbound}`, '--log'], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  let out = '', err = '';
  child.stderr.on('data', (d) => { err += d; });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d) => { out += d; if (out.includes('\n')) resolve(); });
    child.once('exit', (code) => reject(new Error(`exited ${code}: ${err}`)));
  });
  assert.equal(out, 'ready\n');
  // A direct connection was not redirected: no NAT entry (noOrigDst) or the proxy itself (selfLoop).
  const { got, ended } = await exchange(outbound, Buffer.from('x'));
  assert.ok(ended);
  assert.equal(got.length, 0);
  await settle();
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 0);
  const line = JSON.parse(err.trim().split('\n')[0]);
  assert.equal(line.dir, 'outbound');
  assert.ok(line.error === 'noOrigDst' || line.error === 'selfLoop');
  for (const k of ['client', 'origDst', 'upstream', 'bytesIn', 'bytesOut', 'ms']) assert.ok(k in line, k);
});

test('services: parseService, and outbound connections to a service address go to its endpoints in turn', async () => {
  const { parseService } = await import('../../src/proxy/proxy.ts');
  assert.deepEqual(parseService('10.96.0.10:8080=10.244.1.5:8080,[fd00::5]:8081'), ['10.96.0.10:8080', [
    { address: '10.244.1.5', port: 8080, family: 4 }, { address: 'fd00::5', port: 8081, family: 6 }]]);
  assert.throws(() => parseService('10.96.0.10:8080'), /expected VIP:PORT=ENDPOINT/);
  assert.throws(() => parseService('10.96.0.10:8080=nohost:1'), /is not IP:PORT/);
  const seen: string[] = [];
  const servers = await Promise.all(['a', 'b'].map(async (name) => {
    const s = net.createServer((c) => { seen.push(name); c.end(name); });
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return s;
  }));
  const eps = servers.map((s) => ({ address: '127.0.0.1', port: (s.address() as net.AddressInfo).port, family: 4 as const }));
  const { startProxy } = await import('../../src/proxy/proxy.ts');
  const proxy = await startProxy({
    outbound: 0, inbound: 0, host: '127.0.0.1',
    services: new Map([['10.96.0.10:80', eps]]),
    resolveOrigDst: () => ({ address: '10.96.0.10', port: 80, family: 4 }),
  });
  try {
    for (let i = 0; i < 4; i++) {
      await new Promise<void>((resolve) => {
        const c = net.connect(proxy.outboundPort, '127.0.0.1');
        c.resume().on('end', () => resolve());
      });
    }
    assert.deepEqual(seen, ['a', 'b', 'a', 'b']);
  } finally {
    await proxy.close();
    for (const s of servers) s.close();
  }
});

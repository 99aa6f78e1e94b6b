// SPDX-License-Identifier: Apache-2.0
// In-pod programs of the HBONE scenarios (test/conformance/hbone.test.ts):
//   hold    --host H --port P --count N --flag F   N connections open at once, each with half an
//           HTTP/1.0 request; prints {"connected":n,"failed":m}, completes every request once the
//           file F exists, then prints {"ok":n,"errors":{...},"names":{...}}
//   echo    --host H --port P --bytes N   sends N random bytes, half-closes, reads until the server's
//           FIN; prints {"sent":n,"received":m,"same":bool} (the server echoes: both directions,
//           flow control and half-close through the relays)
//   connect --host H --authority A --ca F [--cert F --key F] [--id ID]   an HBONE client of its own:
//           TLS 1.3 + h2 to H:15008, CONNECT A, a request through the tunnel when the answer is
//           200; prints {"tls":"ok"|code,"status":n,"reply":{...}|null,"error":...}
import { existsSync, readFileSync } from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    host: { type: 'string', default: '' },
    port: { type: 'string', default: '8080' },
    count: { type: 'string', default: '1' },
    flag: { type: 'string', default: '' },
    authority: { type: 'string', default: '' },
    ca: { type: 'string', default: '' },
    cert: { type: 'string' },
    key: { type: 'string' },
    id: { type: 'string' },
    bytes: { type: 'string', default: '0' },
  },
});

const out = (v: unknown) => process.stdout.write(JSON.stringify(v) + '\n');
const HEAD = 'GET / HTTP/1.0\r\nHost: hbone\r\n';

async function hold(): Promise<void> {
  const n = Number(values.count);
  const socks: { s: net.Socket; data: string; err?: string; closed: Promise<void> }[] = [];
  let failed = 0;
  // 100 connects in flight at a time: every connection stays open, only the SYNs are paced.
  for (let i = 0; i < n; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, n - i) }, () => new Promise<void>((resolve) => {
      const s = net.connect({ host: values.host, port: Number(values.port) });
      const e = { s, data: '', err: undefined as string | undefined, closed: Promise.resolve() };
      e.closed = new Promise<void>((r) => s.once('close', () => r()));
      s.on('data', (b: Buffer) => (e.data += b.toString()));
      s.on('error', (x: NodeJS.ErrnoException) => { e.err = x.code ?? 'ERROR'; });
      s.once('connect', () => { s.write(HEAD); socks.push(e); resolve(); });
      s.once('error', () => { failed++; resolve(); });
    })));
  }
  out({ connected: socks.length, failed });
  while (!existsSync(values.flag)) await new Promise((r) => setTimeout(r, 20));
  for (const e of socks) e.s.write('\r\n');
  await Promise.all(socks.map((e) => e.closed));
  const errors: Record<string, number> = {};
  const names: Record<string, number> = {};
  let ok = 0;
  for (const e of socks) {
    const body = e.data.split('\r\n\r\n')[1];
    let name: string | undefined;
    try { name = (JSON.parse(body) as { name: string }).name; } catch { /* no reply */ }
    if (name && !e.err) { ok++; names[name] = (names[name] ?? 0) + 1; } else { const k = e.err ?? 'NO_REPLY'; errors[k] = (errors[k] ?? 0) + 1; }
  }
  out({ ok, errors, names });
}

async function connect(): Promise<void> {
  const res: { tls: string; peerId?: string; status?: number; reply?: unknown; error?: string } = { tls: 'pending' };
  const timer = setTimeout(() => { res.error = 'TIMEOUT'; out(res); process.exit(0); }, 8000);
  try {
    const session = http2.connect(`https://${net.isIPv6(values.host) ? `[${values.host}]` : values.host}:15008`, {
      createConnection: () => {
        const s = tls.connect({
          host: values.host, port: 15008, minVersion: 'TLSv1.3', ALPNProtocols: ['h2'], ca: readFileSync(values.ca),
          ...(values.cert ? { cert: readFileSync(values.cert), key: readFileSync(values.key!) } : {}),
          checkServerIdentity: (_h, c) => {
            res.peerId = c.subjectaltname;
            return values.id && c.subjectaltname !== `URI:${values.id}` ? new Error(`server identity ${c.subjectaltname}`) : undefined;
          },
        });
        s.once('secureConnect', () => { res.tls = 'ok'; });
        s.on('error', (e: NodeJS.ErrnoException) => { if (res.tls !== 'ok') res.tls = e.code ?? e.message; res.error ??= e.code ?? e.message; });
        return s;
      },
    });
    session.on('error', (e: NodeJS.ErrnoException) => { res.error ??= e.code ?? e.message; });
    const req = session.request({ ':method': 'CONNECT', ':authority': values.authority, forwarded: 'for="192.0.2.1:1"' }, { endStream: false });
    const status = await new Promise<number>((resolve, reject) => {
      req.once('response', (h) => resolve(Number(h[':status'])));
      req.once('error', reject);
      req.once('close', () => reject(new Error(`stream closed (rst ${req.rstCode})`)));
    });
    res.status = status;
    if (status === 200) {
      req.write(`${HEAD}\r\n`);
      let data = '';
      req.on('data', (b: Buffer) => (data += b.toString()));
      await new Promise((r) => req.once('end', r));
      try { res.reply = JSON.parse(data.split('\r\n\r\n')[1]); } catch { res.reply = null; }
    }
    session.close();
  } catch (e) {
    res.error ??= (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  }
  clearTimeout(timer);
  out(res);
  process.exit(0);
}

async function echo(): Promise<void> {
  const { createHash, randomBytes } = await import('node:crypto');
  const data = randomBytes(Number(values.bytes));
  const got = createHash('sha256');
  let received = 0;
  const res = await new Promise<Record<string, unknown>>((resolve) => {
    const s = net.connect({ host: values.host, port: Number(values.port), allowHalfOpen: true });
    s.on('data', (b: Buffer) => { received += b.length; got.update(b); });
    s.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message, received }));
    s.on('end', () => { s.end(); resolve({ sent: data.length, received, same: got.digest('hex') === createHash('sha256').update(data).digest('hex') }); });
    s.once('connect', () => s.end(data)); // write everything, then FIN: the echo must still come back
  });
  out(res);
}

const commands: Record<string, () => Promise<void>> = { hold, connect, echo };
const cmd = commands[positionals[0] ?? ''];
if (!cmd) {
  process.stderr.write('usage: hbonetool.ts hold|connect|echo [options]\n');
  process.exit(2);
}
await cmd();

// SPDX-License-Identifier: Apache-2.0
// DNS clients run inside lab pods by dns.test.ts; each prints one JSON line.
//   multi --servers IP,IP --name N      one unconnected socket, sendto() to every server (musl's way);
//                                       prints each reply's source and first A answer
//   connected --server IP --name N      connected UDP socket: its getpeername() and the reply
//   resolve --server IP --name N        Node's resolver (c-ares) with that server
//   many --server IP --name N --count C a new socket per query, C queries; prints how many got answers
import dgram from 'node:dgram';
import dns from 'node:dns';
import net from 'node:net';
import { parseArgs } from 'node:util';
import { question } from '../../src/proxy/dns.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: { servers: { type: 'string' }, server: { type: 'string' }, name: { type: 'string' }, count: { type: 'string' } },
});
const name = values.name ?? 'svc.mesh';

function query(id: number): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(0x0100, 2);
  head.writeUInt16BE(1, 4);
  return Buffer.concat([head, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

/** The first A record of a reply, as text. */
function firstA(msg: Buffer): string | undefined {
  const q = question(msg);
  if (!q || msg.readUInt16BE(6) === 0) return undefined;
  let o = q.end;
  if ((msg[o] & 0xc0) === 0xc0) o += 2; else { while (msg[o] !== 0) o += 1 + msg[o]; o += 1; }
  return msg.readUInt16BE(o) === 1 ? [...msg.subarray(o + 10, o + 14)].join('.') : undefined;
}

const sockType = (ip: string) => (net.isIP(ip) === 6 ? 'udp6' : 'udp4');
const out = (o: unknown) => { process.stdout.write(JSON.stringify(o) + '\n'); };
const timeout = (ms: number) => new Promise<never>((_, rej) => setTimeout(() => rej(new Error('timeout')), ms).unref());

async function multi(): Promise<void> {
  const servers = (values.servers ?? '').split(',');
  const s = dgram.createSocket(sockType(servers[0]));
  const replies: { from: string; port: number; a?: string }[] = [];
  const done = new Promise<void>((resolve) => {
    s.on('message', (m, r) => { replies.push({ from: r.address, port: r.port, a: firstA(m) }); if (replies.length === servers.length) resolve(); });
  });
  servers.forEach((srv, i) => s.send(query(0x1000 + i), 53, srv));
  await Promise.race([done, timeout(3000)]).catch(() => {});
  s.close();
  out({ replies });
}

async function connected(): Promise<void> {
  const srv = values.server!;
  const s = dgram.createSocket(sockType(srv));
  await new Promise<void>((r) => s.connect(53, srv, () => r()));
  const peer = s.remoteAddress();
  const reply = new Promise<{ from: string; a?: string }>((resolve) => s.on('message', (m, r) => resolve({ from: r.address, a: firstA(m) })));
  s.send(query(0x2000));
  const r = await Promise.race([reply, timeout(3000)]).catch(() => undefined);
  s.close();
  out({ peer: peer.address, peerPort: peer.port, reply: r });
}

async function resolve(): Promise<void> {
  const r = new dns.promises.Resolver({ timeout: 2000, tries: 1 });
  r.setServers([values.server!]);
  try { out({ a: await r.resolve4(name) }); } catch (e) { out({ error: (e as NodeJS.ErrnoException).code }); }
}

async function many(): Promise<void> {
  const srv = values.server!;
  const count = Number(values.count ?? '1000');
  let ok = 0;
  let next = 0;
  const one = async (): Promise<void> => {
    while (next < count) {
      const id = next++ & 0xffff;
      const s = dgram.createSocket(sockType(srv));
      const got = new Promise<void>((r) => s.on('message', (m) => { if (m.readUInt16BE(0) === id && firstA(m)) ok++; r(); }));
      s.send(query(id), 53, srv);
      await Promise.race([got, timeout(2000)]).catch(() => {});
      s.close();
    }
  };
  await Promise.all(Array.from({ length: 32 }, one));
  out({ count, ok });
}

const cmds: Record<string, () => Promise<void>> = { multi, connected, resolve, many };
const cmd = cmds[positionals[0]];
if (!cmd) { process.stderr.write(`unknown command ${positionals[0]}\n`); process.exit(2); }
await cmd();

// SPDX-License-Identifier: Apache-2.0
// The DNS client bench/dns-cost.ts runs inside a lab pod: COUNT queries for NAME to SERVER:53,
// one after the other, a new UDP socket each (as a resolver call makes one), either
//   sendto     unconnected (musl's way: the sendmsg hook), or
//   connected  connect() then send() (glibc's way: the connect hook).
// Prints {"count","answered"} as JSON.
import dgram from 'node:dgram';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values: v } = parseArgs({
  options: { server: { type: 'string' }, name: { type: 'string', default: 'svc.mesh' }, count: { type: 'string', default: '1000' }, mode: { type: 'string', default: 'sendto' } },
  strict: true,
});
const server = v.server!;
const count = Number(v.count);
if (net.isIP(server) === 0 || !Number.isInteger(count) || count < 1 || !['sendto', 'connected'].includes(v.mode!)) {
  process.stderr.write('usage: dns-burst.ts --server IP [--name N] [--count C] [--mode sendto|connected]\n');
  process.exit(2);
}

function query(id: number): Buffer {
  const labels = v.name!.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(0x0100, 2); // RD
  head.writeUInt16BE(1, 4);
  return Buffer.concat([head, ...labels, Buffer.from([0, 0, 1, 0, 1])]);
}

async function one(id: number): Promise<boolean> {
  const s = dgram.createSocket(net.isIP(server) === 6 ? 'udp6' : 'udp4');
  try {
    const got = new Promise<boolean>((resolve) => {
      s.on('message', (m) => resolve(m.length >= 12 && m.readUInt16BE(0) === id && m.readUInt16BE(6) > 0));
      setTimeout(() => resolve(false), 2000).unref();
    });
    if (v.mode === 'connected') {
      await new Promise<void>((r) => s.connect(53, server, () => r()));
      s.send(query(id));
    } else {
      s.send(query(id), 53, server);
    }
    return await got;
  } finally {
    s.close();
  }
}

let answered = 0;
for (let i = 0; i < count; i++) if (await one(i & 0xffff)) answered++;
process.stdout.write(`${JSON.stringify({ count, answered })}\n`);

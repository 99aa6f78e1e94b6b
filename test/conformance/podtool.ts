// SPDX-License-Identifier: Apache-2.0
// The conformance suite's in-pod programs, run inside a lab pod (or node) netns:
//   serve    --name N --ports 8080,9090        HTTP/1.0 server answering with who it is and
//                                             which connection it saw (remote/local ends)
//   connect  --host H --port P [--timeout ms]  one request; prints the client's own ends + reply
//   load     --host H --port P --count N --concurrency C   many short requests; prints a summary
//   probe    --host H [--remote H:P]           getsockopt results on uncaptured sockets (S2)
// Every result is one JSON line on stdout, so tests compare values, not log text.
import net from 'node:net';
import { parseArgs } from 'node:util';
import type { ServerReply } from './harness.ts'; // type only: erased, podtool stays standalone

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    name: { type: 'string', default: '' },
    ports: { type: 'string', default: '8080' },
    host: { type: 'string', default: '' },
    port: { type: 'string', default: '8080' },
    timeout: { type: 'string', default: '3000' },
    count: { type: 'string', default: '1' },
    concurrency: { type: 'string', default: '1' },
    remote: { type: 'string' },
  },
});


const REQUEST = 'GET / HTTP/1.0\r\nHost: conformance\r\n\r\n';

function serve(): void {
  const ports = values.ports.split(',').map(Number);
  let pending = ports.length;
  for (const port of ports) {
    const srv = net.createServer((s) => {
      s.on('error', () => {});
      let head = '';
      const answer = (): void => {
        const body = JSON.stringify({
          name: values.name, uid: process.getuid?.(), remote: s.remoteAddress, remotePort: s.remotePort,
          local: s.localAddress, localPort: s.localPort,
        } satisfies Partial<ServerReply>);
        s.end(`HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      };
      s.on('data', (b: Buffer) => {
        head += b.toString('latin1');
        if (head.includes('\r\n\r\n')) { s.removeAllListeners('data'); s.resume(); answer(); }
      });
    });
    srv.listen({ port, host: '::', ipv6Only: false, backlog: 1024 }, () => {
      if (--pending === 0) process.stdout.write('listening\n');
    });
  }
}

/** The body of an HTTP/1.0 response, or null when there is none. */
function body(raw: string): string | null {
  const i = raw.indexOf('\r\n\r\n');
  return i < 0 ? null : raw.slice(i + 4);
}

interface OneResult {
  ok: boolean;
  local?: string; localPort?: number; peer?: string; peerPort?: number;
  reply?: ServerReply | null; code?: string; message?: string;
}

function request(host: string, port: number, timeoutMs: number): Promise<OneResult> {
  return new Promise((resolve) => {
    const res: OneResult = { ok: false };
    let raw = '';
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(res);
    };
    const s = net.connect({ host, port });
    const timer = setTimeout(() => { res.code ??= 'TIMEOUT'; finish(); }, timeoutMs);
    s.on('connect', () => {
      Object.assign(res, { ok: true, local: s.localAddress, localPort: s.localPort, peer: s.remoteAddress, peerPort: s.remotePort });
      s.write(REQUEST);
    });
    s.on('data', (b: Buffer) => { raw += b.toString('utf8'); });
    s.on('end', () => {
      const b = body(raw);
      try { res.reply = b === null || b === '' ? null : JSON.parse(b) as ServerReply; } catch { res.reply = null; }
      finish();
    });
    s.on('error', (e: NodeJS.ErrnoException) => {
      // After a successful connect an error still counts as a broken request.
      res.code = e.code ?? 'ERROR';
      res.message = e.message;
      if (res.reply === undefined) res.reply = null;
      finish();
    });
  });
}

async function connectOnce(): Promise<void> {
  const r = await request(values.host, Number(values.port), Number(values.timeout));
  process.stdout.write(JSON.stringify(r) + '\n');
}

async function load(): Promise<void> {
  const total = Number(values.count);
  const conc = Math.max(1, Number(values.concurrency));
  const errors: Record<string, number> = {};
  let next = 0;
  let ok = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < total) {
      next++;
      const r = await request(values.host, Number(values.port), Number(values.timeout));
      if (r.ok && r.reply && r.code === undefined) ok++;
      else {
        const k = r.code ?? (r.ok ? 'NO_REPLY' : 'FAILED');
        errors[k] = (errors[k] ?? 0) + 1;
      }
    }
  };
  await Promise.all(Array.from({ length: conc }, worker));
  process.stdout.write(JSON.stringify({ total, ok, errors, ms: Math.round(performance.now() - t0) }) + '\n');
}

/**
 * getsockopt answers on ordinary sockets, to compare with and without the datapath (S2).
 * Values that differ per connection (ports, timers) are not printed, only what must be
 * identical: return code, errno, optlen, and bytes that do not depend on the connection.
 */
async function probe(): Promise<void> {
  const { getsockopt, errno, SOL_IP, SOL_IPV6, SOL_SOCKET, SO_ORIGINAL_DST } = await import('../../src/sys/libc.ts');
  const { socketFd } = await import('../../src/proxy/origdst.ts');
  const IPPROTO_TCP = 6;
  const TCP_INFO = 11;
  const TCP_CONGESTION = 13;
  const SO_TYPE = 3;
  const SO_PEERNAME = 28;
  /**
   * One getsockopt. A sockaddr answer whose port is the socket's own destination port
   * (conntrack answers untranslated connections with their own ends) gets that port
   * masked as "pppp": it differs per connection, the rest must not.
   */
  const call = (fd: number, level: number, name: number, len: number, keepBytes: number, ownPort?: number) => {
    const buf = Buffer.alloc(len, 0xa5); // a fill pattern shows bytes the kernel did not write
    const optlen = [len];
    const ret = getsockopt(fd, level, name, buf, optlen) as number;
    const err = ret < 0 ? errno() : 0;
    let bytes = buf.subarray(0, keepBytes).toString('hex');
    if (ret === 0 && ownPort !== undefined && keepBytes >= 4 && buf.readUInt16BE(2) === ownPort) bytes = `${bytes.slice(0, 4)}pppp${bytes.slice(8)}`;
    return { ret, errno: err, optlen: optlen[0], bytes };
  };
  const battery = (fd: number, dstPort: number | undefined) => ({
    // SO_ORIGINAL_DST of a socket nobody redirected: the kernel's own answer.
    origDst4: call(fd, SOL_IP, SO_ORIGINAL_DST, 16, 16, dstPort),
    origDst6: call(fd, SOL_IPV6, SO_ORIGINAL_DST, 28, 28, dstPort),
    // Large buffers (> one page): the cgroup hook sees at most a page; the result must not change.
    origDst4Large: call(fd, SOL_IP, SO_ORIGINAL_DST, 8192, 64, dstPort),
    origDst6Large: call(fd, SOL_IPV6, SO_ORIGINAL_DST, 8192, 64, dstPort),
    congestionLarge: call(fd, IPPROTO_TCP, TCP_CONGESTION, 8192, 32),
    // tcp_info contents change with timing; its length does not.
    tcpInfoLarge: call(fd, IPPROTO_TCP, TCP_INFO, 8192, 0),
    peerName: call(fd, SOL_SOCKET, SO_PEERNAME, 128, 2), // family only: ports differ
    peerNameLarge: call(fd, SOL_SOCKET, SO_PEERNAME, 8192, 2),
    soType: call(fd, SOL_SOCKET, SO_TYPE, 4, 4),
  });
  const host = values.host;
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen({ port: 0, host }, r));
  const accepted = new Promise<net.Socket>((r) => srv.once('connection', r));
  const c = net.connect({ host, port: (srv.address() as net.AddressInfo).port });
  await new Promise<void>((r, j) => { c.once('connect', r); c.once('error', j); });
  const a = await accepted;
  const out: Record<string, unknown> = { accepted: battery(socketFd(a), a.localPort), connected: battery(socketFd(c), c.remotePort) };
  if (values.remote) {
    // A client socket whose connect() a mesh may have redirected: only an accepted proxy
    // socket is ever answered, so this one must get the kernel's answer too.
    const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(values.remote);
    if (!m) throw new Error(`bad --remote ${values.remote}`);
    const r = net.connect({ host: m[1], port: Number(m[2]) });
    await new Promise<void>((res, j) => { r.once('connect', res); r.once('error', j); });
    out.remoteClient = battery(socketFd(r), undefined);
    r.destroy();
  }
  a.destroy();
  c.destroy();
  srv.close();
  process.stdout.write(JSON.stringify(out) + '\n');
}

const commands: Record<string, () => void | Promise<void>> = { serve, connect: connectOnce, load, probe };
const cmd = commands[positionals[0] ?? ''];
if (!cmd) {
  process.stderr.write(`usage: podtool.ts serve|connect|load|probe [options]\n`);
  process.exit(2);
}
await cmd();

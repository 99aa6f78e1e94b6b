// SPDX-License-Identifier: Apache-2.0
// A small transparent TCP proxy: the sidecar stand-in for tests and the lab.
// It relays bytes unchanged to the connection's original destination.
import net from 'node:net';
import os from 'node:os';
import { originalDst, type OrigDst } from './origdst.ts';

export type Direction = 'outbound' | 'inbound';

export interface ProxyOptions {
  outbound: number;
  inbound: number;
  /** Listen address; default '::' dual-stack (falls back to 0.0.0.0 without IPv6). */
  host?: string;
  /** Injectable for tests; defaults to SO_ORIGINAL_DST. */
  resolveOrigDst?: (socket: net.Socket, dir: Direction) => OrigDst | null;
  /** One JSON line per connection on stderr. */
  log?: boolean;
  /** A label added to log lines only: bytes are never modified, so HTTP stays transparent. */
  tag?: string;
  /**
   * Services the mesh's control plane told this sidecar about: an outbound
   * connection to a service address ("10.96.0.10:8080") goes to its endpoints
   * in turn (round robin), as a mesh sidecar balances a Kubernetes Service.
   */
  services?: Map<string, OrigDst[]>;
}

/** Parses "VIP:PORT=IP:PORT,IP:PORT" (IPv6 in brackets) into a services entry. */
export function parseService(spec: string): [string, OrigDst[]] {
  const m = /^(.+?)=(.+)$/.exec(spec);
  if (!m) throw new Error(`--service: expected VIP:PORT=ENDPOINT[,ENDPOINT...], got ${JSON.stringify(spec)}`);
  const ep = (t: string): OrigDst => {
    const x = /^\[?([0-9a-fA-F:.]+?)\]?:(\d{1,5})$/.exec(t.trim());
    if (!x || !net.isIP(x[1]) || Number(x[2]) > 65535) throw new Error(`--service: ${JSON.stringify(t)} is not IP:PORT`);
    return { address: x[1], port: Number(x[2]), family: net.isIP(x[1]) as 4 | 6 };
  };
  const vip = ep(m[1]);
  return [hostPort(vip.address, vip.port), m[2].split(',').map(ep)];
}

export interface ProxyStats {
  connections: number;
  active: number;
  bytesIn: number;
  bytesOut: number;
  errors: number;
  noOrigDst: number;
  selfLoop: number;
}

export interface Proxy {
  outboundPort: number;
  inboundPort: number;
  stats: ProxyStats;
  close(): Promise<void>;
}

const hostPort = (a: string | undefined, p: number | undefined) => (a?.includes(':') ? `[${a}]:${p}` : `${a}:${p}`);

function isLocalAddress(address: string): boolean {
  const a = address.replace(/^::ffff:(?=\d+\.)/i, '');
  if (a.startsWith('127.') || a === '::1' || a === '0.0.0.0' || a === '::') return true;
  return Object.values(os.networkInterfaces()).some((l) => l?.some((i) => i.address === a));
}

async function listen(server: net.Server, port: number, host: string | undefined): Promise<void> {
  const attempt = (h: string) => new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ port, host: h, ipv6Only: false }, () => { server.off('error', reject); resolve(); });
  });
  if (host !== undefined) return attempt(host);
  try {
    await attempt('::');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EAFNOSUPPORT' && (e as NodeJS.ErrnoException).code !== 'EADDRNOTAVAIL') throw e;
    await attempt('0.0.0.0');
  }
}

/** Starts both listeners; resolves once both are listening. */
export async function startProxy(opts: ProxyOptions): Promise<Proxy> {
  const resolve = opts.resolveOrigDst ?? ((s: net.Socket) => originalDst(s));
  const stats: ProxyStats = { connections: 0, active: 0, bytesIn: 0, bytesOut: 0, errors: 0, noOrigDst: 0, selfLoop: 0 };
  const sockets = new Set<net.Socket>();
  const ownPorts = new Set<number>();
  const rr = new Map<OrigDst[], number>();

  function handle(dir: Direction, client: net.Socket): void {
    const t0 = performance.now();
    const peer = hostPort(client.remoteAddress, client.remotePort);
    stats.connections++;
    sockets.add(client);
    client.once('close', () => sockets.delete(client));
    let dst: OrigDst | null = null;
    let upstreamAt: string | null = null;
    let error: string | undefined;
    const done = () => {
      stats.bytesIn += client.bytesRead;
      stats.bytesOut += client.bytesWritten;
      if (!opts.log) return;
      process.stderr.write(JSON.stringify({
        dir, tag: opts.tag, client: peer, origDst: dst && hostPort(dst.address, dst.port), upstream: upstreamAt,
        bytesIn: client.bytesRead, bytesOut: client.bytesWritten, ms: Math.round(performance.now() - t0), error,
      }) + '\n');
    };
    try {
      dst = resolve(client, dir);
    } catch (e) {
      stats.errors++;
      error = (e as Error).message;
    }
    // No destination, or one that is this proxy itself: close rather than loop.
    if (error === undefined && dst === null) { stats.noOrigDst++; error = 'noOrigDst'; }
    else if (dst && ownPorts.has(dst.port) && isLocalAddress(dst.address)) { stats.selfLoop++; error = 'selfLoop'; }
    if (error !== undefined || dst === null) {
      client.on('error', () => {}).once('close', done).resume().end();
      setTimeout(() => client.destroy(), 2000).unref(); // a client that never sends FIN
      return;
    }
    // Inbound: the original destination is the pod's own IP:port, where the app listens.
    // Outbound to a known service: its next endpoint.
    let target: OrigDst = dst;
    const endpoints = dir === 'outbound' ? opts.services?.get(hostPort(dst.address, dst.port)) : undefined;
    if (endpoints?.length) {
      const i = (rr.get(endpoints) ?? 0) % endpoints.length;
      rr.set(endpoints, i + 1);
      target = endpoints[i];
    }
    const upstream = net.connect({ host: target.address, port: target.port, allowHalfOpen: true });
    upstream.once('connect', () => { upstreamAt = hostPort(upstream.remoteAddress, upstream.remotePort); });
    sockets.add(upstream);
    stats.active++;
    const fail = (e: Error) => {
      if (error === undefined) { error = e.message; stats.errors++; }
      client.destroy();
      upstream.destroy();
    };
    let closed = 0;
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      a.on('error', fail);
      a.pipe(b); // backpressure; ends b when a ends (half-close)
      a.once('close', () => {
        if (!a.readableEnded) b.destroy(); // gone without a FIN: nothing more will flow
        if (++closed < 2) return;
        sockets.delete(upstream);
        stats.active--;
        done();
      });
    }
  }

  const servers = (['outbound', 'inbound'] as const).map((dir) =>
    net.createServer({ allowHalfOpen: true }, (s) => handle(dir, s)));
  try {
    await listen(servers[0], opts.outbound, opts.host);
    await listen(servers[1], opts.inbound, opts.host);
  } catch (e) {
    for (const s of servers) s.close();
    throw e;
  }
  const ports = servers.map((s) => (s.address() as net.AddressInfo).port);
  for (const p of ports) ownPorts.add(p);
  return {
    outboundPort: ports[0],
    inboundPort: ports[1],
    stats,
    close: async () => {
      const closing = servers.map((s) => new Promise<void>((r) => s.close(() => r())));
      for (const s of sockets) s.destroy();
      await Promise.all(closing);
    },
  };
}

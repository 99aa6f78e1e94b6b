// SPDX-License-Identifier: Apache-2.0
// The lab sidecar's DNS proxy (S6), Istio's agent in miniature: listens on the
// profile's DNS port on loopback (UDP and TCP, IPv4 and IPv6), answers the
// mesh's own names itself and forwards every other query to the pod's real
// nameservers (its resolv.conf). It runs as the proxy uid, so its upstream
// queries are never captured again.
import dgram from 'node:dgram';
import net from 'node:net';
import { readFileSync } from 'node:fs';
import { SOL_IP, SOL_IPV6 } from '../bpf/uapi.ts';
import { errno, setsockopt, strerror } from '../sys/libc.ts';

const IP_TRANSPARENT = 19;
const IPV6_TRANSPARENT = 75;

/** Sets IP(V6)_TRANSPARENT on a listening server's socket (checked per connection request, so after listen() is fine). */
function setTransparent(srv: net.Server, v6: boolean): void {
  const fd = (srv as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (fd === undefined || fd < 0) throw new Error('DNS proxy: no fd for the TCP listener');
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  if (setsockopt(fd, v6 ? SOL_IPV6 : SOL_IP, v6 ? IPV6_TRANSPARENT : IP_TRANSPARENT, one, 4) !== 0) throw new Error(`DNS proxy: IP_TRANSPARENT: ${strerror(errno())}`);
}

/** A mesh name and the addresses the proxy answers for it. */
export interface MeshName { name: string; addrs: string[] }

export interface DnsProxyOptions {
  port: number;
  /** Names answered locally (A/AAAA), case-insensitive, without the trailing dot. */
  names: MeshName[];
  /** Where other queries go; default: the nameservers of /etc/resolv.conf. */
  upstream?: string[];
  /** Mesh names answered over UDP only with the TC bit and no records (the client retries over TCP). */
  truncate?: string[];
  /** One JSON line per query on stderr. */
  log?: boolean;
  tag?: string;
  timeoutMs?: number;
  /** Addresses to listen on (UDP and TCP each); default loopback, 127.0.0.1 and ::1. */
  listen?: string[];
  /**
   * IP_TRANSPARENT on the TCP listeners: a node proxy (ambient, eBPF) gets queries
   * bpf_sk_assign-ed with the server's address as destination, and the accepted connection
   * answers from it. (UDP needs nothing: its replies leave from the proxy's own address
   * and the datapath puts the server back as their source.)
   */
  transparent?: boolean;
  /** SO_REUSEPORT on every socket: an upgrade's new instance listens next to the old one (in-pod). */
  reusePort?: boolean;
}

export interface DnsProxy { port: number; close(): Promise<void> }

const TYPE_A = 1;
const TYPE_AAAA = 28;

/** "nameserver" lines of a resolv.conf. */
export function resolvConfServers(text: string): string[] {
  return text.split('\n').map((l) => /^\s*nameserver\s+(\S+)/.exec(l)?.[1]).filter((s): s is string => !!s && net.isIP(s) !== 0);
}

/** Parses "name=ip[,ip...]". */
export function parseMeshName(spec: string): MeshName {
  const m = /^([^=]+)=(.+)$/.exec(spec);
  const addrs = m ? m[2].split(',') : [];
  if (!m || addrs.some((a) => net.isIP(a) === 0)) throw new Error(`--dns-name: expected NAME=IP[,IP...], got ${JSON.stringify(spec)}`);
  return { name: m[1].toLowerCase().replace(/\.$/, ''), addrs };
}

/** The question of a query: name, type, and where it ends; undefined if malformed. */
export function question(msg: Buffer): { name: string; type: number; end: number } | undefined {
  if (msg.length < 12 || msg.readUInt16BE(4) !== 1) return undefined;
  const labels: string[] = [];
  let o = 12;
  while (o < msg.length) {
    const n = msg[o];
    if (n === 0) break;
    if (n > 63 || o + 1 + n > msg.length) return undefined;
    labels.push(msg.toString('latin1', o + 1, o + 1 + n));
    o += 1 + n;
  }
  if (o + 5 > msg.length) return undefined;
  return { name: labels.join('.').toLowerCase(), type: msg.readUInt16BE(o + 1), end: o + 5 };
}

/** The proxy's own answer to a query for a mesh name (NODATA for other types). */
export function answer(query: Buffer, q: { type: number; end: number }, addrs: string[]): Buffer {
  const fam = q.type === TYPE_A ? 4 : q.type === TYPE_AAAA ? 6 : 0;
  const rrs = addrs.filter((a) => net.isIP(a) === fam).map((a) => {
    const rdata = fam === 4 ? Buffer.from(a.split('.').map(Number)) : ipv6Bytes(a);
    const rr = Buffer.alloc(12);
    rr.writeUInt16BE(0xc00c, 0); // the question's name
    rr.writeUInt16BE(q.type, 2);
    rr.writeUInt16BE(1, 4); // IN
    rr.writeUInt32BE(5, 6); // short TTL: the lab changes answers
    rr.writeUInt16BE(rdata.length, 10);
    return Buffer.concat([rr, rdata]);
  });
  const head = Buffer.from(query.subarray(0, q.end));
  head.writeUInt16BE(0x8400 | (query.readUInt16BE(2) & 0x0100) | 0x0080, 2); // QR AA, RD copied, RA
  head.writeUInt16BE(1, 4);
  head.writeUInt16BE(rrs.length, 6);
  head.writeUInt32BE(0, 8);
  return Buffer.concat([head, ...rrs]);
}

function ipv6Bytes(a: string): Buffer {
  const [l, r = ''] = a.split('::');
  const parts = (s: string) => (s ? s.split(':') : []);
  const left = parts(l);
  const right = a.includes('::') ? parts(r) : [];
  const words = [...left, ...Array(8 - left.length - right.length).fill('0'), ...right];
  const b = Buffer.alloc(16);
  words.forEach((w, i) => b.writeUInt16BE(parseInt(w, 16), i * 2));
  return b;
}

/** Sends a query to upstream servers over UDP, first answer wins. */
function forward(query: Buffer, servers: string[], timeoutMs: number): Promise<{ reply: Buffer; from: string }> {
  return new Promise((resolve, reject) => {
    if (servers.length === 0) { reject(new Error('no upstream nameserver')); return; }
    const socks: dgram.Socket[] = [];
    let done = false;
    const finish = (fn: () => void) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      for (const s of socks) s.close();
      fn();
    };
    const timer = setTimeout(() => finish(() => reject(new Error('upstream timeout'))), timeoutMs);
    for (const srv of servers) {
      const s = dgram.createSocket(net.isIP(srv) === 6 ? 'udp6' : 'udp4');
      socks.push(s);
      s.on('error', () => {});
      s.on('message', (reply, rinfo) => {
        if (reply.length >= 2 && reply.readUInt16BE(0) === query.readUInt16BE(0)) finish(() => resolve({ reply, from: rinfo.address }));
      });
      s.send(query, 53, srv);
    }
  });
}

export async function startDnsProxy(opts: DnsProxyOptions): Promise<DnsProxy> {
  const names = new Map(opts.names.map((n) => [n.name, n.addrs]));
  const upstream = opts.upstream ?? resolvConfServers(readFileSync('/etc/resolv.conf', 'utf8'));
  const timeoutMs = opts.timeoutMs ?? 2000;
  const truncate = new Set((opts.truncate ?? []).map((n) => n.toLowerCase().replace(/\.$/, '')));
  const log = (o: Record<string, unknown>) => {
    if (opts.log) process.stderr.write(JSON.stringify({ dir: 'dns', tag: opts.tag, ...o }) + '\n');
  };

  /** The reply to one query (undefined: drop it). */
  async function resolve(query: Buffer, client: string, proto: string): Promise<Buffer | undefined> {
    const q = question(query);
    if (!q) return undefined;
    const local = names.get(q.name.replace(/\.$/, ''));
    if (local && proto === 'udp' && truncate.has(q.name.replace(/\.$/, ''))) {
      log({ proto, client, name: q.name, type: q.type, answer: 'truncated' });
      const r = answer(query, q, []);
      r.writeUInt16BE(r.readUInt16BE(2) | 0x0200, 2); // TC
      return r;
    }
    if (local) {
      log({ proto, client, name: q.name, type: q.type, answer: 'local' });
      return answer(query, q, local);
    }
    try {
      const r = await forward(query, upstream, timeoutMs);
      log({ proto, client, name: q.name, type: q.type, answer: 'upstream', upstream: r.from });
      return r.reply;
    } catch (e) {
      log({ proto, client, name: q.name, type: q.type, answer: 'none', error: (e as Error).message });
      return undefined;
    }
  }

  const closers: (() => Promise<void>)[] = [];
  for (const host of opts.listen ?? ['127.0.0.1', '::1']) {
    const v6 = net.isIP(host) === 6;
    const s = dgram.createSocket({ type: v6 ? 'udp6' : 'udp4', ipv6Only: v6, reusePort: opts.reusePort ?? false });
    s.on('message', (msg, rinfo) => {
      void resolve(msg, `${rinfo.address}:${rinfo.port}`, 'udp').then((r) => { if (r) s.send(r, rinfo.port, rinfo.address); });
    });
    await new Promise<void>((ok, fail) => { s.once('error', fail); s.bind(opts.port, host, () => { s.off('error', fail); ok(); }); });
    closers.push(() => new Promise((r) => s.close(() => r())));
    const srv = net.createServer((c) => {
      let buf = Buffer.alloc(0);
      c.on('error', () => {});
      c.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          const msg = buf.subarray(2, 2 + buf.readUInt16BE(0));
          buf = buf.subarray(2 + msg.length);
          void resolve(Buffer.from(msg), `${c.remoteAddress}:${c.remotePort}`, 'tcp').then((r) => {
            if (!r || c.destroyed) return;
            const len = Buffer.alloc(2);
            len.writeUInt16BE(r.length);
            c.write(Buffer.concat([len, r]));
          });
        }
      });
    });
    await new Promise<void>((ok, fail) => { srv.once('error', fail); srv.listen({ port: opts.port, host, ipv6Only: v6, reusePort: opts.reusePort ?? false }, () => { srv.off('error', fail); ok(); }); });
    if (opts.transparent) setTransparent(srv, v6);
    closers.push(() => new Promise((r) => srv.close(() => r())));
  }
  return { port: opts.port, close: async () => { await Promise.all(closers.map((c) => c())); } };
}

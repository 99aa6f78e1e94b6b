// SPDX-License-Identifier: Apache-2.0
// The lab's HBONE node proxy (ztunnel's role, the interoperable subset of
// docs/research/ambient.md §3), on Node's http2 (nghttp2) and tls (OpenSSL):
//
//   15001 outbound  the original destination is the accepted socket's local address
//                   (bpf_sk_assign kept it). Source must be a workload of this node.
//                   Destination an enrolled pod of another node: HBONE, an HTTP/2 CONNECT
//                   stream `podIP:port` over mutual TLS to podIP:15008 (the other node's
//                   eBPF delivers it to its proxy), pooled connections per (source
//                   identity, destination address), up to 100 streams on each. Enrolled pod
//                   of this node: relayed inside the proxy, no TLS. Anything else: plain TCP.
//   15006 inbound   plaintext from outside the mesh: relayed to the original destination.
//   15008 HBONE     TLS 1.3, ALPN h2; the certificate presented is the one of the workload the
//                   connection was sent to (original destination address, no SNI); the client
//                   chain must lead to the mesh root, its SPIFFE id be in the trust domain and
//                   belong to a workload of the node the connection comes from (its proxy's
//                   address), else the handshake is refused and counted. Per CONNECT: 400 for
//                   a non-CONNECT or an authority that does not parse or names another address
//                   than the connection's, 503 for a workload that is not here or an upstream
//                   that refuses, 401 for a denied source; 200 only once the upstream connected.
//
// Upstream connections leave from the proxy's own address (no spoofing), as with haproxy.
import { X509Certificate, randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import type { Duplex } from 'node:stream';
import tls from 'node:tls';
import { canonicalIp, hostPort, identityOf, parseAuthority, type HboneConfig, type HboneWorkload } from './config.ts';
import { transparentServers } from './sockets.ts';

export interface HboneProxyPorts { outbound: number; inbound: number; hbone: number }

/** One HBONE hop as either end saw it (the demo prints them, tests check them). */
export interface HboneHop {
  side: 'client' | 'server';
  /** Client pod address:port (Forwarded for=) and the CONNECT authority. */
  forwardedFor: string;
  authority: string;
  srcId: string;
  dstId: string;
  /** The TCP peer of the HBONE connection (server side: the source node's proxy) or its destination (client side). */
  peer: string;
  status: number;
  baggage?: string;
  traceparent?: string;
  /** Client side: which pooled connection carried the stream. */
  connection?: number;
}

const H2_SETTINGS: http2.Settings = {
  enablePush: false,
  initialWindowSize: 4 << 20, // 4 MiB per stream, 16 MiB per connection (ztunnel's defaults)
  maxFrameSize: 1 << 20,
  maxConcurrentStreams: 10_000,
};
const CONN_WINDOW = 16 << 20;
const tlsOpts = (): Pick<tls.TlsOptions, 'minVersion' | 'maxVersion' | 'ALPNProtocols'> => ({ minVersion: 'TLSv1.3', maxVersion: 'TLSv1.3', ALPNProtocols: ['h2'] });
const CONNECT_TIMEOUT_MS = 5000;
const POOL_IDLE_MS = 60_000;
/** Streams one pooled connection carries before the next one opens (ztunnel's default): one TCP
 * flow and one nghttp2 session are not made to carry a whole node's traffic to a destination. */
export const MAX_STREAMS_PER_CONNECTION = 100;
const PING_EVERY_MS = 10_000;
const PING_TIMEOUT_MS = 20_000;
const HOPS_KEPT = 256;

type Counters = Record<string, number>;

/** The SPIFFE URI SAN of a certificate, or undefined. */
export function spiffeOf(cert: X509Certificate | undefined): string | undefined {
  const sans = cert?.subjectAltName?.split(', ') ?? [];
  const uris = sans.filter((s) => s.startsWith('URI:')).map((s) => s.slice(4));
  return uris.length === 1 && uris[0].startsWith('spiffe://') ? uris[0] : undefined;
}

/** Both directions of a TCP socket and an HTTP/2 stream (or another socket), half-closes and resets kept. */
function relay(a: net.Socket, b: Duplex, onEnd?: () => void): void {
  const resetA = () => { if (!a.destroyed) a.resetAndDestroy(); };
  const cancelB = () => {
    if (b.destroyed) return;
    if (b instanceof net.Socket) b.resetAndDestroy();
    else (b as http2.Http2Stream).close(http2.constants.NGHTTP2_CANCEL);
  };
  a.on('error', cancelB);
  b.on('error', resetA);
  b.on('aborted', resetA);
  if (!(b instanceof net.Socket)) {
    b.on('close', () => { if ((b as http2.Http2Stream).rstCode !== http2.constants.NGHTTP2_NO_ERROR) resetA(); });
  }
  let open = 2;
  const done = () => { if (--open === 0) onEnd?.(); };
  a.once('close', done);
  b.once('close', done);
  a.pipe(b);
  b.pipe(a);
}

interface Peer { id: string; node: string }
/** Pooling as ztunnel's: connections per (source identity, destination identity, destination
 * address), each carrying at most MAX_STREAMS_PER_CONNECTION streams. */
const poolKey = (srcId: string, dstId: string, dst: string) => `${srcId}|${dstId}|${dst}`;
interface Pooled { session: http2.ClientHttp2Session; n: number; streams: number; idle?: NodeJS.Timeout }

export class HboneProxy {
  readonly ports: HboneProxyPorts;
  readonly counters: Counters = {};
  readonly hops: HboneHop[] = [];
  #config: HboneConfig | undefined;
  #byIp = new Map<string, HboneWorkload>();
  #nodeByProxyIp = new Map<string, string>();
  #certs = new Map<string, { cert: string; key: string }>();
  #servers = new Map<string, http2.Http2SecureServer>();
  #pool = new Map<string, Pooled[]>();
  #poolSeq = 0;
  #peers = new WeakMap<http2.Http2Session, Peer | null>();
  #listeners: net.Server[] = [];
  #sockets = new Set<net.Socket>();
  #active = { out: 0, in: 0 };

  constructor(ports: HboneProxyPorts) {
    this.ports = ports;
  }

  count(name: string, by = 1): void {
    this.counters[name] = (this.counters[name] ?? 0) + by;
  }

  #gauge(name: 'out' | 'in', by: number): void {
    this.#active[name] += by;
    const k = `${name === 'out' ? 'out_hbone' : 'hbone'}_streams`;
    this.counters[`${k}_active`] = this.#active[name];
    this.counters[`${k}_max`] = Math.max(this.counters[`${k}_max`] ?? 0, this.#active[name]);
  }

  #hop(h: HboneHop): void {
    this.hops.push(h);
    if (this.hops.length > HOPS_KEPT) this.hops.splice(0, this.hops.length - HOPS_KEPT);
  }

  get config(): HboneConfig | undefined { return this.#config; }

  /** Replaces the snapshot. Pooled connections of identities or addresses that changed are closed. */
  setConfig(c: HboneConfig): void {
    const old = this.#config;
    this.#config = c;
    this.#byIp = new Map(c.workloads.flatMap((w) => w.ips.map((ip) => [canonicalIp(ip), w] as const)));
    this.#nodeByProxyIp = new Map(c.nodes.flatMap((n) => n.proxyIps.map((ip) => [canonicalIp(ip), n.name] as const)));
    const certs = new Map(c.identities.map((i) => [i.id, { cert: i.cert, key: i.key }]));
    const changed = (id: string) => old?.ca !== c.ca || certs.get(id)?.cert !== this.#certs.get(id)?.cert;
    for (const [id, srv] of this.#servers) if (changed(id)) { srv.close(); this.#servers.delete(id); }
    // A pooled connection proved (src id, dst id) for one address: keep it only while the registry still says so.
    for (const [k, list] of this.#pool) {
      const [src, dstId, ip] = k.split('|');
      const w = this.#byIp.get(ip);
      if (changed(src) || !w?.hbone || identityOf(c.trustDomain, w) !== dstId) { for (const p of list) p.session.close(); this.#pool.delete(k); }
    }
    this.#certs = certs;
  }

  async listen(): Promise<void> {
    const track = (fn: (s: net.Socket) => void) => (s: net.Socket) => {
      this.#sockets.add(s);
      s.once('close', () => this.#sockets.delete(s));
      s.on('error', () => {});
      fn(s);
    };
    this.#listeners.push(...await transparentServers(this.ports.outbound, track((s) => this.#outbound(s))));
    this.#listeners.push(...await transparentServers(this.ports.inbound, track((s) => this.#inboundPlain(s))));
    this.#listeners.push(...await transparentServers(this.ports.hbone, track((s) => this.#inboundHbone(s))));
  }

  async close(): Promise<void> {
    for (const l of this.#listeners) l.close();
    for (const list of this.#pool.values()) for (const p of list) p.session.destroy();
    this.#pool.clear();
    for (const s of this.#servers.values()) s.close();
    for (const s of this.#sockets) s.destroy();
  }

  #workload(ip: string | undefined): HboneWorkload | undefined {
    return ip ? this.#byIp.get(canonicalIp(ip)) : undefined;
  }

  #isOwnPort(port: number): boolean {
    return port === this.ports.outbound || port === this.ports.inbound || port === this.ports.hbone;
  }

  // ---- 15001 -----------------------------------------------------------------------------

  #outbound(c: net.Socket): void {
    const cfg = this.#config;
    const dst = canonicalIp(c.localAddress ?? '');
    const dport = c.localPort ?? 0;
    const src = this.#workload(c.remoteAddress);
    if (!cfg || !src || src.node !== cfg.node) {
      // ztunnel (shared mode) refuses a source that is no workload it serves.
      this.count('out_unknown_source');
      c.resetAndDestroy();
      return;
    }
    if (this.#isOwnPort(dport) && this.#nodeByProxyIp.get(dst) === cfg.node) {
      this.count('out_self_call');
      c.resetAndDestroy();
      return;
    }
    const dw = this.#workload(dst);
    if (!dw?.hbone) {
      this.count('out_passthrough');
      this.#tcp(c, dst, dport, 'out_passthrough_failed');
    } else if (dw.node === cfg.node) {
      this.count('out_local');
      this.#tcp(c, dst, dport, 'out_local_failed');
    } else {
      this.#hboneOut(c, cfg, src, dw, dst, dport);
    }
  }

  /** Plain TCP to ip:port from the proxy's own address, then both directions. */
  #tcp(c: net.Socket, ip: string, port: number, failed: string): void {
    c.pause();
    let connected = false;
    const up = net.connect({ host: ip, port, allowHalfOpen: true, noDelay: true, timeout: CONNECT_TIMEOUT_MS });
    up.once('timeout', () => { if (!connected) up.destroy(new Error('connect timeout')); });
    up.once('connect', () => { connected = true; up.setTimeout(0); relay(c, up); c.resume(); });
    up.once('error', () => {
      if (!connected) this.count(failed);
      c.resetAndDestroy();
    });
    c.once('close', () => { if (!connected) up.destroy(); });
  }

  #session(cfg: HboneConfig, srcId: string, dst: string, dstId: string): Pooled | undefined {
    const key = poolKey(srcId, dstId, dst);
    const list = this.#pool.get(key) ?? [];
    const have = list.find((p) => p.streams < MAX_STREAMS_PER_CONNECTION && !p.session.closed && !p.session.destroyed);
    if (have) return have;
    const cert = this.#certs.get(srcId);
    if (!cert) return undefined;
    const n = ++this.#poolSeq;
    const session = http2.connect(`https://${hostPort(dst, this.ports.hbone)}`, {
      settings: H2_SETTINGS,
      peerMaxConcurrentStreams: H2_SETTINGS.maxConcurrentStreams,
      maxSessionMemory: 256,
      createConnection: () => tls.connect({
        ...tlsOpts(), host: dst, port: this.ports.hbone, ca: cfg.ca, cert: cert.cert, key: cert.key,
        // No SNI (an IP is not allowed there and ztunnel sends none); the server is checked by
        // its SPIFFE id, the one the destination workload must have.
        checkServerIdentity: (_h, peer) => {
          const got = spiffeOf(peer.raw ? new X509Certificate(peer.raw) : undefined);
          return got === dstId ? undefined : Object.assign(new Error(`HBONE server ${dst}: identity ${got ?? '(none)'}, expected ${dstId}`), { code: 'ERR_MESHWARP_IDENTITY' });
        },
      }),
    });
    const entry: Pooled = { session, n, streams: 0 };
    this.count('out_h2_connections');
    session.on('connect', () => {
      session.setLocalWindowSize(CONN_WINDOW);
      // Keepalive as ztunnel's: a PING every 10 s, the connection dropped when one is not answered in 20 s.
      const ping = setInterval(() => {
        const dead = setTimeout(() => { this.count('out_h2_ping_timeouts'); session.destroy(); }, PING_TIMEOUT_MS);
        dead.unref();
        if (!session.ping((err) => { clearTimeout(dead); if (err) session.destroy(); })) clearTimeout(dead);
      }, PING_EVERY_MS);
      ping.unref();
      session.once('close', () => clearInterval(ping));
    });
    session.on('error', () => this.count('out_h2_connection_errors'));
    const drop = () => {
      const now = this.#pool.get(key)?.filter((p) => p !== entry) ?? [];
      if (now.length) this.#pool.set(key, now); else this.#pool.delete(key);
      if (entry.idle) clearTimeout(entry.idle);
    };
    session.on('close', drop);
    session.on('goaway', drop);
    this.#pool.set(key, [...list, entry]);
    return entry;
  }

  #hboneOut(c: net.Socket, cfg: HboneConfig, src: HboneWorkload, dw: HboneWorkload, dst: string, dport: number): void {
    const srcId = identityOf(cfg.trustDomain, src);
    const dstId = identityOf(cfg.trustDomain, dw);
    const entry = this.#session(cfg, srcId, dst, dstId);
    if (!entry) {
      this.count('out_hbone_no_identity');
      c.resetAndDestroy();
      return;
    }
    const key = poolKey(srcId, dstId, dst);
    const pooled = entry;
    if (pooled.idle) { clearTimeout(pooled.idle); pooled.idle = undefined; }
    pooled.streams++;
    this.count('out_hbone');
    this.#gauge('out', 1);
    c.pause();
    const forwardedFor = hostPort(canonicalIp(c.remoteAddress ?? ''), c.remotePort ?? 0);
    const authority = hostPort(dst, dport);
    const traceparent = `00-${randomBytes(16).toString('hex')}-${randomBytes(8).toString('hex')}-01`;
    const baggage = `k8s.cluster.name=${cfg.cluster},k8s.namespace.name=${src.namespace},k8s.pod.name=${src.name},service.name=${src.name},service.version=latest`;
    let req: http2.ClientHttp2Stream;
    try {
      req = entry.session.request({ ':method': 'CONNECT', ':authority': authority, forwarded: `for="${forwardedFor}"`, baggage, traceparent }, { endStream: false });
    } catch {
      this.count('out_hbone_failed');
      this.#gauge('out', -1);
      pooled.streams--;
      c.resetAndDestroy();
      return;
    }
    let status = 0;
    const timer = setTimeout(() => { if (!status) { this.count('out_hbone_timeout'); req.close(http2.constants.NGHTTP2_CANCEL); c.resetAndDestroy(); } }, 2 * CONNECT_TIMEOUT_MS);
    const finished = () => {
      clearTimeout(timer);
      this.#gauge('out', -1);
      if (--pooled.streams === 0 && this.#pool.get(key)?.includes(pooled)) {
        pooled.idle = setTimeout(() => { if (pooled.streams === 0) pooled.session.close(); }, POOL_IDLE_MS);
        pooled.idle.unref();
      }
    };
    req.once('close', finished);
    req.once('response', (h) => {
      status = Number(h[':status']);
      this.count(`out_hbone_status_${status}`);
      this.#hop({ side: 'client', forwardedFor, authority, srcId, dstId, peer: hostPort(dst, this.ports.hbone), status, baggage, traceparent, connection: entry.n });
      if (status !== 200) {
        // The destination refused: the client's connection fails now, it does not hang.
        c.resetAndDestroy();
        req.close();
        return;
      }
      relay(c, req);
      c.resume();
    });
    req.on('error', () => { if (!status) this.count('out_hbone_failed'); c.resetAndDestroy(); });
    c.on('error', () => { if (!req.destroyed) req.close(http2.constants.NGHTTP2_CANCEL); });
    c.once('close', () => { if (!status && !req.destroyed) req.close(http2.constants.NGHTTP2_CANCEL); });
  }

  // ---- 15006 -----------------------------------------------------------------------------

  #inboundPlain(c: net.Socket): void {
    const dst = canonicalIp(c.localAddress ?? '');
    const port = c.localPort ?? 0;
    const w = this.#workload(dst);
    if (!this.#config || !w || w.node !== this.#config.node || this.#isOwnPort(port)) {
      this.count('in_plain_refused');
      c.resetAndDestroy();
      return;
    }
    this.count('in_plain');
    this.#tcp(c, dst, port, 'in_plain_failed');
  }

  // ---- 15008 -----------------------------------------------------------------------------

  #inboundHbone(raw: net.Socket): void {
    const cfg = this.#config;
    const dst = canonicalIp(raw.localAddress ?? '');
    const w = this.#workload(dst);
    const id = cfg && w && w.node === cfg.node && w.hbone ? identityOf(cfg.trustDomain, w) : undefined;
    const srv = id && this.#server(cfg!, id);
    if (!srv) {
      // No workload here to present a certificate for.
      this.count('hbone_unknown_destination');
      raw.resetAndDestroy();
      return;
    }
    srv.emit('connection', raw);
  }

  /** The peer of an HBONE connection, or null when its certificate is not acceptable here. */
  #peer(sock: tls.TLSSocket): Peer | null {
    const cfg = this.#config;
    if (!cfg) return null;
    const id = spiffeOf(sock.getPeerX509Certificate());
    const node = this.#nodeByProxyIp.get(canonicalIp(sock.remoteAddress ?? ''));
    if (!id || !id.startsWith(`spiffe://${cfg.trustDomain}/`) || !node) return null;
    // The CA issues a node proxy only the identities of its node's workloads.
    const ok = cfg.workloads.some((x) => x.node === node && identityOf(cfg.trustDomain, x) === id);
    return ok ? { id, node } : null;
  }

  #server(cfg: HboneConfig, id: string): http2.Http2SecureServer | undefined {
    const have = this.#servers.get(id);
    if (have) return have;
    const cert = this.#certs.get(id);
    if (!cert) return undefined;
    const srv = http2.createSecureServer({
      ...tlsOpts(), ca: cfg.ca, cert: cert.cert, key: cert.key, requestCert: true,
      // The chain is checked below, after the handshake (Node's verify callback accepts every
      // chain during it), so that each refusal is counted by its reason.
      rejectUnauthorized: false,
      settings: H2_SETTINGS, maxSessionMemory: 256,
    });
    const refuse = (s: tls.TLSSocket, why: string) => {
      this.count('hbone_tls_refused');
      this.count(`hbone_tls_refused_${why}`);
      s.destroy();
    };
    srv.on('tlsClientError', () => this.count('hbone_tls_failed'));
    srv.on('unknownProtocol', (s: tls.TLSSocket) => refuse(s, 'alpn'));
    srv.on('secureConnection', (s: tls.TLSSocket) => {
      if (!s.getPeerX509Certificate()) return refuse(s, 'no_cert');
      if (!s.authorized) return refuse(s, 'chain'); // not issued by the mesh root
      const peer = this.#peer(s);
      if (!peer) return refuse(s, 'identity'); // not a workload of the node it comes from
      this.count('hbone_connections');
    });
    srv.on('session', (sess) => {
      sess.on('error', () => {});
      try { sess.setLocalWindowSize(CONN_WINDOW); } catch { /* closing */ }
    });
    srv.on('stream', (stream, headers) => this.#connect(stream, headers, canonicalIp(stream.session?.socket.localAddress ?? ''), id));
    this.#servers.set(id, srv);
    return srv;
  }

  #connect(stream: http2.ServerHttp2Stream, h: http2.IncomingHttpHeaders, dst: string, dstId: string): void {
    stream.on('error', () => {});
    const session = stream.session!;
    let peer = this.#peers.get(session);
    if (peer === undefined) { peer = this.#peer(session.socket as tls.TLSSocket); this.#peers.set(session, peer); }
    const authority = String(h[':authority'] ?? '');
    const forwardedFor = /for="?([^";,]+)"?/.exec(String(h.forwarded ?? ''))?.[1] ?? '';
    const hop = (status: number) => {
      this.count(`hbone_status_${status}`);
      this.#hop({
        side: 'server', forwardedFor, authority, srcId: peer?.id ?? '', dstId, peer: hostPort(canonicalIp(session.socket.remoteAddress ?? ''), session.socket.remotePort ?? 0), status,
        ...(h.baggage ? { baggage: String(h.baggage) } : {}), ...(h.traceparent ? { traceparent: String(h.traceparent) } : {}),
      });
    };
    const refuse = (status: number) => {
      hop(status);
      if (!stream.destroyed && !stream.headersSent) stream.respond({ ':status': status }, { endStream: true });
    };
    this.count('hbone_streams');
    if (!peer) return refuse(401);
    if (h[':method'] !== 'CONNECT') return refuse(400);
    const a = parseAuthority(authority);
    if (!a || a.ip !== dst) return refuse(400); // ztunnel's IPMismatch
    const w = this.#workload(a.ip);
    const cfg = this.#config!;
    if (!w || w.node !== cfg.node || !w.hbone || this.#isOwnPort(a.port)) return refuse(503);
    if (w.denyFrom?.includes(peer.id)) return refuse(401);
    this.#gauge('in', 1);
    stream.once('close', () => this.#gauge('in', -1));
    const up = net.connect({ host: a.ip, port: a.port, allowHalfOpen: true, noDelay: true, timeout: CONNECT_TIMEOUT_MS });
    let connected = false;
    up.once('timeout', () => up.destroy(new Error('connect timeout')));
    up.once('connect', () => {
      connected = true;
      up.setTimeout(0);
      if (stream.destroyed) { up.destroy(); return; }
      // 200 only now: the upstream accepted the connection.
      stream.respond({ ':status': 200 });
      hop(200);
      relay(up, stream);
    });
    up.once('error', () => {
      if (!connected) refuse(503);
      else if (!stream.destroyed) stream.close(http2.constants.NGHTTP2_CONNECT_ERROR);
    });
    stream.once('close', () => { if (!connected) up.destroy(); });
  }

  stats(): { counters: Counters; pool: { key: string; connection: number; streams: number }[] } {
    return { counters: { ...this.counters }, pool: [...this.#pool].flatMap(([key, list]) => list.map((p) => ({ key, connection: p.n, streams: p.streams }))) };
  }
}

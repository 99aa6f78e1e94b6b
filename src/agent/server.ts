// SPDX-License-Identifier: Apache-2.0
// HTTP over a root-only unix socket (for the CNI plugin and the CLI), and the
// Prometheus endpoint on TCP.
import http from 'node:http';
import type { Socket } from 'node:net';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { firstIps } from '../datapath/pod.ts';
import { ApiError, codeForStatus, parseNodeProxyRef, parseNodeProxyRequest } from './api.ts';
import { cniRoute, runCniExec } from './cni-exec.ts';
import { log, type Agent } from './agent.ts';
import { renderMetrics } from './metrics.ts';
import { idleTrimmer } from './trim.ts';
import type { PodRecord } from './state.ts';

const MAX_BODY = 1 << 20;
/** An oversized body is read (and dropped) up to this much so the client gets its 413; past it the connection is cut. */
const MAX_DRAIN = 64 << 20;

/** The client went away before we answered: nobody to answer, nothing failed here. */
class ClientGone extends Error {}

/** The request body as bytes (at most MAX_BODY plus 64 KiB: the exec body carries the environment too). */
function readRaw(req: http.IncomingMessage): Promise<Buffer> {
  const limit = MAX_BODY + (64 << 10);
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_DRAIN) { req.destroy(); return; }
      if (size <= limit) chunks.push(c);
    });
    req.on('end', () => (size > limit ? reject(new ApiError(413, `request body over ${limit} bytes`)) : resolve(Buffer.concat(chunks))));
    req.on('aborted', () => reject(new ClientGone()));
    req.on('close', () => { if (!req.complete) reject(new ClientGone()); });
    req.on('error', () => reject(new ClientGone()));
  });
}

function readBody(req: http.IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_DRAIN) { req.destroy(); return; }
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      if (size > MAX_BODY) return reject(new ApiError(413, `request body over ${MAX_BODY} bytes`));
      if (chunks.length === 0) return resolve(undefined);
      try { resolve(JSON.parse(Buffer.concat(chunks).toString('utf8'))); } catch (e) { reject(new ApiError(400, `invalid JSON: ${(e as Error).message}`, undefined, 'ERR_INVALID_JSON')); }
    });
    req.on('aborted', () => reject(new ClientGone()));
    req.on('close', () => { if (!req.complete) reject(new ClientGone()); });
    req.on('error', () => reject(new ClientGone()));
  });
}

/** GET /v1/pods: the pod model plus the flat fields older clients read. */
export function podView(r: PodRecord): Record<string, unknown> {
  const { ip4, ip6 } = firstIps(r.ips);
  return {
    containerId: r.key.sandboxId, podNamespace: r.key.namespace, podName: r.key.name, podUid: r.key.uid,
    netns: r.netns, ifName: r.ifName, ip4, ip6, ips: r.ips, hostVeth: r.hostVeth,
    dataplane: r.dataplane, profile: r.profile, annotations: r.annotations, dnsServers: r.dnsServers, meshedAt: r.meshedAt,
  };
}

const UNINSTALL_LINGER_MS = 2000;

function clientGone(sock: Socket, capMs: number): Promise<void> {
  return new Promise((resolve) => {
    if (sock.destroyed) return resolve();
    const t = setTimeout(resolve, capMs);
    sock.once('close', () => { clearTimeout(t); resolve(); });
  });
}

export function apiHandler(agent: Agent, onUninstall: () => void, socket = ''): http.RequestListener {
  return (req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(`${JSON.stringify(body, (_k, v) => (typeof v === 'bigint' ? Number(v) : v))}\n`);
    };
    (async () => {
      const path = new URL(req.url ?? '/', 'http://agent').pathname;
      if (req.method === 'GET' && path === '/v1/trace') return streamTrace(agent, req, res);
      const route = `${req.method} ${path}`;
      switch (route) {
        case 'POST /v1/cni/add': case 'POST /v1/cni/del': case 'POST /v1/cni/check': case 'POST /v1/cni/status': case 'POST /v1/cni/gc':
          return send(200, await cniRoute(agent, path, await readBody(req)));
        case 'POST /v1/cni/exec': {
          // 200 whatever the plugin's exit code; any other answer makes the forwarder run the
          // full plugin, which then talks to the agent and applies the failure policy itself.
          const via = req.headers['x-meshwarp-socket'];
          const out = await runCniExec(agent, typeof via === 'string' ? via : socket, await readRaw(req));
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': out.length });
          return res.end(out);
        }
        case 'POST /v1/ambient/proxy': return send(200, await agent.setNodeProxy(parseNodeProxyRequest(await readBody(req))));
        case 'POST /v1/ambient/proxy/remove': return send(200, await agent.removeNodeProxy(parseNodeProxyRef(await readBody(req)).id));
        case 'GET /v1/status': return send(200, agent.status());
        case 'GET /v1/pods': return send(200, { pods: agent.pods().map(podView) });
        case 'POST /v1/uninstall':
          await agent.uninstall();
          send(200, {});
          // The agent exits next; in a container that kills every process in it, the
          // `meshwarp uninstall` that asked among them. Let the client read the answer and
          // hang up first (bounded: a client that keeps the connection does not hold us).
          return void clientGone(req.socket, UNINSTALL_LINGER_MS).then(onUninstall);
        default: throw new ApiError(404, `no route ${route}`);
      }
    })().catch((e: unknown) => {
      if (e instanceof ClientGone) return;
      const status = e instanceof ApiError ? e.status : 500;
      if (status >= 500) { agent.countError(); log('error', 'request failed', { url: req.url, error: (e as Error).message }); }
      const body: Record<string, unknown> = { error: (e as Error).message, code: e instanceof ApiError ? e.code : codeForStatus(500) };
      if (e instanceof ApiError && e.cniCode !== undefined) body.cniCode = e.cniCode;
      if (!res.headersSent && !res.destroyed) send(status, body);
    });
  };
}

/**
 * GET /v1/trace[?pod=ns/name][&verdict=captured]: one JSON line per datapath
 * event until the client goes away. A client that cannot keep up loses
 * events (counted in the final line it would have seen) instead of growing
 * the agent's memory.
 */
function streamTrace(agent: Agent, req: http.IncomingMessage, res: http.ServerResponse): void {
  const q = new URL(req.url!, 'http://agent').searchParams;
  const pod = q.get('pod');
  const verdict = q.get('verdict');
  let dropped = 0;
  const unsubscribe = agent.subscribeTrace((r) => {
    if ((pod && r.pod !== pod) || (verdict && r.verdict !== verdict)) return;
    if (res.writableLength > 1 << 20) { dropped++; return; }
    res.write(`${JSON.stringify(dropped ? { ...r, droppedBefore: dropped } : r)}\n`);
    dropped = 0;
  });
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  res.flushHeaders();
  res.on('close', unsubscribe);
}

/** Listens on a unix socket only root can use (socket 0600 in a 0700 directory). */
export async function listenApi(agent: Agent, socket: string, onUninstall: () => void): Promise<http.Server> {
  mkdirSync(dirname(socket), { recursive: true, mode: 0o700 });
  chmodSync(dirname(socket), 0o700);
  rmSync(socket, { force: true }); // a stale socket from a killed agent
  const server = http.createServer(apiHandler(agent, onUninstall, socket));
  const idle = idleTrimmer();
  server.on('request', (_req, res: http.ServerResponse) => res.once('close', idle));
  const old = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(socket, resolve); });
  } finally {
    process.umask(old);
  }
  chmodSync(socket, 0o600);
  return server;
}

export async function listenMetrics(agent: Agent, address: string): Promise<http.Server> {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i).replace(/^\[|\]$/g, '');
  const port = Number(address.slice(i + 1));
  const server = http.createServer((req, res) => {
    if (req.url === '/readyz') {
      const r = agent.ready();
      res.writeHead(r.ready ? 200 : 503, { 'content-type': 'text/plain' }).end(r.ready ? 'ok\n' : `${r.reasons.join('\n')}\n`);
      return;
    }
    if (req.url !== '/metrics') { res.writeHead(404).end(); return; }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(renderMetrics(agent));
  });
  await new Promise<void>((resolve, reject) => { server.once('error', reject); server.listen(port, host, resolve); });
  return server;
}

// SPDX-License-Identifier: Apache-2.0
// The plugin's only way to the agent: one JSON POST over the agent's unix socket.
// Every outcome is classified so the plugin can apply its failure policy:
// "ok" (2xx), "rejected" (4xx: the agent refused, policy does not apply) or
// "unavailable" (no socket, refused, timeout, 5xx, unreadable answer).
import type * as Http from 'node:http';
import type { CniPodRequest } from '../agent/api.ts';

// An ESM `import` of node:http costs ~30 ms of start-up (the namespace pulls in every lazy
// export); the CommonJS object from getBuiltinModule costs ~2 ms. The plugin is start-up bound.
// Loaded at the first request, not at module evaluation: node:http's parser binding cannot go
// into the single executable's startup snapshot (V8 refuses its handles).
const request = (options: Http.RequestOptions, cb: (res: Http.IncomingMessage) => void): Http.ClientRequest =>
  (process.getBuiltinModule('node:http') as typeof Http).request(options, cb);

export type AgentResult =
  | { kind: 'ok'; status: number; body: Record<string, unknown> }
  | { kind: 'rejected'; status: number; error: string; details?: string; cniCode?: number }
  | { kind: 'unavailable'; reason: string };

/** A pod request (add, check, del), or the bodies of status and gc (docs/cni.md). */
export type AgentRequest =
  | CniPodRequest
  | { cniVersion: string; networkName: string; validAttachments?: { containerId: string; ifName: string }[] };

const MAX_REPLY = 64 * 1024;

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function postAgent(socketPath: string, path: string, body: AgentRequest, timeoutMs: number): Promise<AgentResult> {
  return new Promise((resolve) => {
    let settled = false;
    const done = (r: AgentResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const payload = Buffer.from(JSON.stringify(body));
    const req = request({
      socketPath,
      path,
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', 'content-length': payload.length, host: 'meshwarp-agent', connection: 'close' },
    }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on('data', (c: Buffer) => {
        size += c.length;
        if (size > MAX_REPLY) {
          req.destroy();
          done({ kind: 'unavailable', reason: `agent answer larger than ${MAX_REPLY} bytes` });
        } else chunks.push(c);
      });
      res.on('error', (e) => done({ kind: 'unavailable', reason: describe(e) }));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        const text = Buffer.concat(chunks).toString('utf8');
        let parsed: unknown = {};
        if (text.trim() !== '') {
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = undefined;
          }
        }
        if (status >= 200 && status < 300) {
          if (!isObject(parsed)) done({ kind: 'unavailable', reason: `agent answered ${status} with a body that is not a JSON object` });
          else done({ kind: 'ok', status, body: parsed });
        } else if (status >= 400 && status < 500) {
          const o = isObject(parsed) ? parsed : {};
          const r: AgentResult = { kind: 'rejected', status, error: typeof o.error === 'string' ? o.error : `agent answered HTTP ${status}` };
          if (typeof o.details === 'string') r.details = o.details;
          if (typeof o.cniCode === 'number') r.cniCode = o.cniCode;
          done(r);
        } else {
          const o = isObject(parsed) ? parsed : {};
          done({ kind: 'unavailable', reason: `agent answered HTTP ${status}${typeof o.error === 'string' ? `: ${o.error}` : ''}` });
        }
      });
    });
    const timer = setTimeout(() => {
      req.destroy();
      done({ kind: 'unavailable', reason: `no answer within ${timeoutMs} ms` });
    }, timeoutMs);
    req.on('error', (e) => done({ kind: 'unavailable', reason: describe(e) }));
    req.end(payload);
  });
}

function describe(e: unknown): string {
  if (e instanceof Error) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return 'ENOENT: the socket does not exist (agent not running on this node?)';
    if (code === 'ECONNREFUSED') return 'ECONNREFUSED: nothing listens on the socket (agent stopped?)';
    if (code === 'EACCES') return 'EACCES: permission denied on the socket (the plugin must run as root)';
    return code ? `${code}: ${e.message}` : e.message;
  }
  return String(e);
}

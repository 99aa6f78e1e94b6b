// SPDX-License-Identifier: Apache-2.0
// The CLI's client for the agent's unix-socket API.
import http from 'node:http';
import { DEFAULTS } from '../agent/config.ts';

export function agentRequest<T>(method: 'GET' | 'POST', path: string, body?: unknown, socket = DEFAULTS.socket as string): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path, headers: { 'content-type': 'application/json' }, timeout: 10_000 }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (data += c));
      res.on('end', () => {
        let v: any;
        try { v = JSON.parse(data); } catch { return reject(new Error(`agent answered ${res.statusCode} with non-JSON: ${data.slice(0, 200)}`)); }
        if ((res.statusCode ?? 500) >= 400) return reject(new Error(`agent: ${v.error ?? res.statusCode}`));
        resolve(v as T);
      });
    });
    req.on('timeout', () => req.destroy(new Error(`agent at ${socket} did not answer in 10 s`)));
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') reject(new Error(`no agent listening at ${socket} (is \`meshwarp agent\` running? pass --socket if it uses another path)`));
      else if (e.code === 'EACCES') reject(new Error(`permission denied on ${socket}: the agent's API is for root only`));
      else reject(e);
    });
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** Streams JSON lines from the agent (GET /v1/trace) until close() or the agent ends it. */
export function agentStream(path: string, onLine: (value: unknown) => void, socket = DEFAULTS.socket as string): Promise<{ close(): void; ended: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: socket, path }, (res) => {
      if (res.statusCode !== 200) { res.resume(); return reject(new Error(`agent answered ${res.statusCode} for ${path}`)); }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line) onLine(JSON.parse(line));
        }
      });
      const ended = new Promise<void>((r) => { res.on('close', () => r()); });
      resolve({ close: () => req.destroy(), ended });
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') reject(new Error(`no agent listening at ${socket}`));
      else reject(e);
    });
  });
}

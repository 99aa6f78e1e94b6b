// SPDX-License-Identifier: Apache-2.0
// A client for the agent's unix-socket API (used by the CLI, the lab and the demo; the CNI
// plugin has its own, src/cni/agent-client.ts, for start-up cost). Every failure is an
// AgentClientError with a stable `code`, so callers branch on that, never on the message.
import http from 'node:http';
import { DEFAULTS } from './config.ts';
import { codeForStatus } from './api.ts';

export class AgentClientError extends Error {
  readonly code: string;
  readonly socket: string;
  constructor(code: string, socket: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'AgentClientError';
    this.code = code;
    this.socket = socket;
  }
}

/** Nothing listens on the socket (no file, or connection refused): the agent is not running. */
export class AgentUnreachableError extends AgentClientError {
  declare readonly code: 'ERR_AGENT_UNREACHABLE';
  constructor(socket: string, message: string, cause: unknown) {
    super('ERR_AGENT_UNREACHABLE', socket, message, { cause });
    this.name = 'AgentUnreachableError';
  }
}

/** The agent answered with an error: its HTTP status and the `code` of its JSON error body. */
export class AgentApiError extends AgentClientError {
  readonly status: number;
  constructor(socket: string, status: number, code: string, message: string) {
    super(code, socket, message);
    this.name = 'AgentApiError';
    this.status = status;
  }
}

/** The error body's code; an agent that sends none gets the one its status implies. */
function apiError(socket: string, status: number, body: unknown, message: string): AgentApiError {
  const code = (body as { code?: unknown } | null)?.code;
  return new AgentApiError(socket, status, typeof code === 'string' ? code : codeForStatus(status), message);
}

function connectError(socket: string, e: NodeJS.ErrnoException, hint: string): Error {
  if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') return new AgentUnreachableError(socket, `no agent listening at ${socket}${hint}`, e);
  if (e.code === 'EACCES') return new AgentClientError('ERR_AGENT_ACCESS_DENIED', socket, `permission denied on ${socket}: the agent's API is for root only`, { cause: e });
  return e;
}

export function agentRequest<T>(method: 'GET' | 'POST', path: string, body?: unknown, socket = DEFAULTS.socket as string, timeoutMs = 10_000): Promise<T> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, method, path, headers: { 'content-type': 'application/json' }, timeout: timeoutMs }, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (data += c));
      res.on('end', () => {
        let v: any;
        try {
          v = JSON.parse(data);
        } catch {
          return reject(new AgentClientError('ERR_AGENT_BAD_ANSWER', socket, `agent answered ${res.statusCode} with non-JSON: ${data.slice(0, 200)}`));
        }
        const status = res.statusCode ?? 500;
        if (status >= 400) return reject(apiError(socket, status, v, `agent: ${v.error ?? status}`));
        resolve(v as T);
      });
    });
    req.on('timeout', () => req.destroy(new AgentClientError('ERR_AGENT_TIMEOUT', socket, `agent at ${socket} did not answer in ${timeoutMs / 1000} s`)));
    req.on('error', (e: NodeJS.ErrnoException) => {
      reject(e instanceof AgentClientError ? e : connectError(socket, e, ' (is `meshwarp agent` running? pass --socket if it uses another path)'));
    });
    req.end(body === undefined ? undefined : JSON.stringify(body));
  });
}

/** Streams JSON lines from the agent (GET /v1/trace) until close() or the agent ends it. */
export function agentStream(path: string, onLine: (value: unknown) => void, socket = DEFAULTS.socket as string): Promise<{ close(): void; ended: Promise<void> }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: socket, path }, (res) => {
      if (res.statusCode !== 200) {
        let data = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (data += c));
        res.on('end', () => {
          let v: { error?: unknown } | undefined;
          try { v = JSON.parse(data); } catch { /* the status alone says it */ }
          const why = typeof v?.error === 'string' ? `: ${v.error}` : '';
          reject(apiError(socket, res.statusCode ?? 500, v, `agent answered ${res.statusCode} for ${path}${why}`));
        });
        return;
      }
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
    req.on('error', (e: NodeJS.ErrnoException) => reject(connectError(socket, e, '')));
  });
}

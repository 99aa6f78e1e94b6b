// SPDX-License-Identifier: Apache-2.0
// A small Kubernetes API client on node:https (no dependency: see
// docs/kubernetes.md for why not @kubernetes/client-node). It does requests,
// merge patches and watch streams; credentials come from the in-cluster
// ServiceAccount (token re-read, so projected tokens rotate) or a kubeconfig.
import { readFileSync } from 'node:fs';
import { Agent, request, type RequestOptions } from 'node:https';

export interface KubeConfig {
  /** https://host:port of the API server. */
  server: string;
  ca?: Buffer;
  token?: string;
  /** Re-read at most every TOKEN_REREAD_MS (projected ServiceAccount tokens rotate). */
  tokenFile?: string;
  cert?: Buffer;
  key?: Buffer;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const TOKEN_REREAD_MS = 60_000;

/** In-cluster credentials; `server` overrides the service address (a hostNetwork agent may start before kube-proxy). */
export function inClusterConfig(env: NodeJS.ProcessEnv = process.env, server?: string): KubeConfig {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT ?? '443';
  if (!server && !host) throw new Error('not in a cluster (no KUBERNETES_SERVICE_HOST): pass --kubeconfig');
  const url = server ?? `https://${host!.includes(':') ? `[${host}]` : host}:${port}`;
  return { server: url, ca: readFileSync(`${SA_DIR}/ca.crt`), tokenFile: `${SA_DIR}/token` };
}

const field = (v: unknown, what: string): string => {
  if (typeof v !== 'string' || v === '') throw new Error(`kubeconfig: ${what} is missing`);
  return v;
};
const b64 = (v: unknown): Buffer | undefined => (typeof v === 'string' ? Buffer.from(v, 'base64') : undefined);
const file = (v: unknown): Buffer | undefined => (typeof v === 'string' ? readFileSync(v) : undefined);

/**
 * The current context of a kubeconfig written as JSON (`kubectl config view
 * --flatten -o json` prints one). YAML is not parsed: the agent has no YAML
 * dependency, and in a cluster it uses the ServiceAccount instead.
 */
export function loadKubeconfig(path: string): KubeConfig {
  let doc: any;
  try {
    doc = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`kubeconfig ${path}: ${(e as Error).message} (it must be JSON: kubectl config view --flatten -o json)`);
  }
  const ctxName = field(doc['current-context'], 'current-context');
  const ctx = doc.contexts?.find((c: any) => c.name === ctxName)?.context;
  if (!ctx) throw new Error(`kubeconfig ${path}: no context ${ctxName}`);
  const cluster = doc.clusters?.find((c: any) => c.name === ctx.cluster)?.cluster;
  const user = doc.users?.find((u: any) => u.name === ctx.user)?.user ?? {};
  if (!cluster) throw new Error(`kubeconfig ${path}: no cluster ${ctx.cluster}`);
  return {
    server: field(cluster.server, 'cluster.server'),
    ca: b64(cluster['certificate-authority-data']) ?? file(cluster['certificate-authority']),
    token: user.token, tokenFile: user.tokenFile,
    cert: b64(user['client-certificate-data']) ?? file(user['client-certificate']),
    key: b64(user['client-key-data']) ?? file(user['client-key']),
  };
}

/** A non-2xx answer: HTTP status and the Status object's reason/message. */
export class KubeError extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(`${status} ${reason}: ${message}`);
    this.status = status;
    this.reason = reason;
  }
  static fromBody(status: number, body: string): KubeError {
    try {
      const s = JSON.parse(body);
      return new KubeError(status, s.reason ?? 'Unknown', s.message ?? body);
    } catch {
      return new KubeError(status, 'Unknown', body.slice(0, 200));
    }
  }
}

export interface WatchEvent<T = any> { type: 'ADDED' | 'MODIFIED' | 'DELETED' | 'BOOKMARK' | 'ERROR'; object: T }

export class KubeClient {
  readonly cfg: KubeConfig;
  readonly #agent: Agent;
  #token: { value?: string; readAt: number } = { readAt: 0 };

  constructor(cfg: KubeConfig) {
    this.cfg = cfg;
    this.#agent = new Agent({ keepAlive: true, ca: cfg.ca, cert: cfg.cert, key: cfg.key });
  }

  #bearer(): string | undefined {
    if (this.cfg.token) return this.cfg.token;
    if (!this.cfg.tokenFile) return undefined;
    const now = Date.now();
    if (this.#token.value === undefined || now - this.#token.readAt > TOKEN_REREAD_MS) {
      this.#token = { value: readFileSync(this.cfg.tokenFile, 'utf8').trim(), readAt: now };
    }
    return this.#token.value;
  }

  #options(method: string, path: string, contentType?: string): RequestOptions & { url: URL } {
    const url = new URL(path, this.cfg.server);
    const headers: Record<string, string> = { accept: 'application/json' };
    const token = this.#bearer();
    if (token) headers.authorization = `Bearer ${token}`;
    if (contentType) headers['content-type'] = contentType;
    return { url, method, headers, agent: this.#agent };
  }

  /** One request; resolves with the parsed body of a 2xx, rejects with KubeError otherwise. */
  request<T = any>(method: string, path: string, body?: unknown, contentType = 'application/json', timeoutMs = 30_000): Promise<T> {
    const { url, ...opts } = this.#options(method, path, body === undefined ? undefined : contentType);
    return new Promise((resolve, reject) => {
      const req = request(url, opts, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          const status = res.statusCode ?? 0;
          if (status < 200 || status >= 300) return reject(KubeError.fromBody(status, text));
          if (!/json/.test(String(res.headers['content-type']))) return resolve(text as T); // e.g. /readyz: "ok"
          try { resolve(text ? JSON.parse(text) : undefined); } catch (e) { reject(e); }
        });
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${url.pathname}: no answer in ${timeoutMs} ms`)));
      req.on('error', reject);
      // A string with a non-JSON type (application/yaml) goes as it is: the API server parses YAML itself.
      req.end(body === undefined ? undefined : typeof body === 'string' && !contentType.includes('json') ? body : JSON.stringify(body));
    });
  }

  /** JSON merge patch (RFC 7386): `null` removes a key. */
  mergePatch<T = any>(path: string, patch: unknown): Promise<T> {
    return this.request<T>('PATCH', path, patch, 'application/merge-patch+json');
  }

  /**
   * Streams a watch: `onEvent` for each event until the server ends the
   * stream (resolves), `signal` aborts (resolves), or it fails (rejects; a
   * non-200 answer as KubeError). Silence longer than `idleMs` is a failure:
   * a half-open connection must not hang the watch forever.
   */
  watch(path: string, onEvent: (e: WatchEvent) => void, signal: AbortSignal, idleMs: number): Promise<void> {
    const { url, ...opts } = this.#options('GET', path);
    return new Promise((resolve, reject) => {
      if (signal.aborted) return resolve();
      const req = request(url, { ...opts, signal }, (res) => {
        const status = res.statusCode ?? 0;
        if (status !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => reject(KubeError.fromBody(status, Buffer.concat(chunks).toString('utf8'))));
          res.on('error', reject);
          return;
        }
        let buf = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          buf += chunk;
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl).trim();
            buf = buf.slice(nl + 1);
            if (!line) continue;
            try {
              onEvent(JSON.parse(line) as WatchEvent);
            } catch (e) {
              // A garbled line or an error event: this watch is over (reject first, then close).
              reject(e);
              req.destroy();
              return;
            }
          }
        });
        res.on('end', () => resolve());
        res.on('error', (e) => (signal.aborted ? resolve() : reject(e)));
        res.on('aborted', () => (signal.aborted ? resolve() : reject(new Error('watch connection aborted'))));
      });
      req.setTimeout(idleMs, () => req.destroy(new Error(`watch ${url.pathname}: silent for ${idleMs} ms`)));
      req.on('error', (e) => (signal.aborted ? resolve() : reject(e)));
      req.end();
    });
  }

  close(): void { this.#agent.destroy(); }
}

// SPDX-License-Identifier: Apache-2.0
// Shared by the cni-*.test.ts files: a fake agent on a unix socket and a runner that
// executes the plugin the way a container runtime does (a subprocess, env + stdin).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const PLUGIN_MAIN = fileURLToPath(new URL('../../src/cni/main.ts', import.meta.url));

export interface Recorded {
  path: string;
  body: Record<string, unknown>;
}

export type Reply = { status: number; body?: unknown; raw?: string } | 'hang';

export class FakeAgent {
  readonly dir: string;
  readonly socket: string;
  readonly requests: Recorded[] = [];
  /** Per endpoint (e.g. "/v1/cni/add") reply override. */
  readonly replies = new Map<string, Reply>();
  private server: Server | undefined;
  private hanging: ServerResponse[] = [];

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'mw-cni-'));
    this.socket = join(this.dir, 'agent.sock');
  }

  async start(): Promise<this> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      this.server!.once('error', reject);
      this.server!.listen(this.socket, resolve);
    });
    return this;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '';
      let body: Record<string, unknown> = {};
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>;
      } catch { /* recorded as {} */ }
      this.requests.push({ path, body });
      const r = this.replies.get(path) ?? defaultReply(path);
      if (r === 'hang') {
        this.hanging.push(res);
        return;
      }
      res.writeHead(r.status, { 'content-type': 'application/json' });
      res.end(r.raw ?? JSON.stringify(r.body ?? {}));
    });
  }

  count(path: string): number {
    return this.requests.filter((r) => r.path === path).length;
  }

  async stop(): Promise<void> {
    for (const h of this.hanging) h.destroy();
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    rmSync(this.dir, { recursive: true, force: true });
  }
}

function defaultReply(path: string): Reply {
  switch (path) {
    case '/v1/cni/add': return { status: 200, body: { meshed: true } };
    case '/v1/cni/check': return { status: 200, body: { ok: true } };
    case '/v1/cni/status': return { status: 200, body: { ready: true } };
    default: return { status: 200, body: {} };
  }
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `node src/cni/main.ts` with only the given environment (plus PATH), feeding stdin. */
export function runCni(env: Record<string, string | undefined>, stdin: string | Buffer, opts: { extraEnv?: boolean; argv0?: string[] } = {}): Promise<RunResult> {
  const start = performance.now();
  const cleanEnv: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
  for (const [k, v] of Object.entries(env)) if (v !== undefined) cleanEnv[k] = v;
  const argv = opts.argv0 ?? [process.execPath, '--disable-warning=ExperimentalWarning', PLUGIN_MAIN];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0], argv.slice(1), { env: cleanEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.stdin.on('error', () => { /* the plugin may stop reading oversized input */ });
    child.on('close', (code) => resolve({
      code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms: performance.now() - start,
    }));
    child.stdin.end(stdin);
  });
}

export const PREV_RESULT = {
  cniVersion: '1.0.0',
  interfaces: [
    { name: 'cni0', mac: '0a:58:0a:f4:01:01' },
    { name: 'veth1234', mac: 'be:ef:00:00:00:01' },
    { name: 'eth0', mac: '0a:58:0a:f4:01:05', sandbox: '/var/run/netns/cni-1234', mtu: 1500, 'x-vendor': { keep: [1, 2, { deep: true }] } },
  ],
  ips: [
    { interface: 2, address: '10.244.1.5/24', gateway: '10.244.1.1' },
    { interface: 2, address: 'fd00:10:244:1::5/64', gateway: 'fd00:10:244:1::1' },
  ],
  routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0', priority: 10 }],
  dns: { nameservers: ['10.96.0.10'], search: ['default.svc.cluster.local'], options: ['ndots:5'] },
  unknownTopLevel: { anything: 'goes', n: 3.5, nil: null },
};

export function netConf(socket: string, extra: Record<string, unknown> = {}, meshwarp: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    cniVersion: '1.0.0',
    name: 'k8s-pod-network',
    type: 'meshwarp-cni',
    meshwarp: { socket, ...meshwarp },
    prevResult: structuredClone(PREV_RESULT),
    ...extra,
  };
}

export function addEnv(cmd = 'ADD', over: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    CNI_COMMAND: cmd,
    CNI_CONTAINERID: 'f00dcafe0123456789abcdef',
    CNI_NETNS: '/var/run/netns/cni-1234',
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/opt/cni/bin',
    CNI_ARGS: 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=f00dcafe0123456789abcdef;K8S_POD_UID=1111-2222',
    ...over,
  };
}

/** Parses stdout as a CNI error JSON and checks its shape. */
export function parseCniError(stdout: string): { cniVersion: string; code: number; msg: string; details?: string } {
  const e = JSON.parse(stdout) as { cniVersion: unknown; code: unknown; msg: unknown; details?: unknown };
  if (typeof e.cniVersion !== 'string' || typeof e.code !== 'number' || typeof e.msg !== 'string' || e.msg === '') {
    throw new Error(`not a CNI error: ${stdout}`);
  }
  if (e.details !== undefined && typeof e.details !== 'string') throw new Error(`bad details: ${stdout}`);
  return e as { cniVersion: string; code: number; msg: string; details?: string };
}

// SPDX-License-Identifier: Apache-2.0
// A real control plane for tests: etcd + kube-apiserver (built by
// scripts/k8s-tools.sh at pinned versions) on loopback, random free ports,
// a temp dir, RBAC authorization, ServiceAccount token signing keys and an
// admin client certificate made with openssl. Outside CI a test skips when
// the binaries are missing; with CI=true that is a failure.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { test, type TestContext } from 'node:test';
import { KubeClient, type KubeConfig } from '../../src/k8s/client.ts';
import { eventually } from './poll.ts';

export const inCI = process.env.CI === 'true';
const REPO = resolve(import.meta.dirname, '../..');

/** Where scripts/k8s-tools.sh puts the binaries (MESHWARP_K8S_BIN overrides). */
export function kubeBinDir(): string {
  return process.env.MESHWARP_K8S_BIN ?? execFileSync(join(REPO, 'scripts/k8s-tools.sh'), ['--bin-dir'], { encoding: 'utf8' }).trim();
}

/** The tools missing from the cache, [] when all are there. */
export function missingKubeTools(tools = ['etcd', 'kube-apiserver']): string[] {
  const dir = kubeBinDir();
  return tools.filter((t) => !existsSync(join(dir, t)));
}

/** A test that needs the control-plane binaries (and root, when `root`). */
export function kubeTest(name: string, fn: (t: TestContext) => Promise<void>, opts: { timeout?: number; tools?: string[] } = {}): void {
  const missing = missingKubeTools(opts.tools);
  const why = missing.length ? `needs ${missing.join(', ')}: run scripts/k8s-tools.sh (make k8s-tools)` : undefined;
  if (why && !inCI) { test(name, { skip: why }, () => {}); return; }
  test(name, { timeout: opts.timeout ?? 120_000 }, async (t) => {
    if (why) throw new Error(`${why} (CI=true makes this a failure)`);
    await fn(t);
  });
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => res(p)); });
  });
}

const openssl = (args: string[], cwd: string) => execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });

/** CA, serving cert for 127.0.0.1, admin client cert (system:masters), SA signing key pair. */
function makePki(dir: string): void {
  openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=meshwarp-test-ca'], dir);
  const leaf = (name: string, subj: string, ext: string) => {
    openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subj], dir);
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`], dir);
  };
  leaf('serving', '/CN=kube-apiserver', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  leaf('admin', '/O=system:masters/CN=meshwarp-test-admin', 'extendedKeyUsage=clientAuth\n');
  openssl(['genrsa', '-out', 'sa.key', '2048'], dir);
  openssl(['rsa', '-in', 'sa.key', '-pubout', '-out', 'sa.pub'], dir);
}

export interface KubeServer {
  dir: string;
  server: string;
  etcdUrl: string;
  /** A client with the admin certificate (system:masters). */
  admin: KubeClient;
  adminConfig: KubeConfig;
  /** A client with bearer `token` (e.g. a ServiceAccount's). */
  clientWithToken(token: string): KubeClient;
  /** A JSON kubeconfig file for bearer `token`. */
  writeKubeconfig(token: string, path?: string): string;
  /** Stops the API server only (etcd keeps the data) and starts it again on the same port. */
  restartApiServer(beforeStart?: () => Promise<void>): Promise<void>;
  stopApiServer(): Promise<void>;
  startApiServer(): Promise<void>;
  /** etcd's current revision, and compaction up to it (makes older resourceVersions 410). */
  etcdRevision(): Promise<number>;
  compact(revision?: number): Promise<void>;
  stop(): Promise<void>;
}

async function waitExit(p: ChildProcess | undefined): Promise<void> {
  if (!p || p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
  await done;
  clearTimeout(t);
}

/** Starts etcd + kube-apiserver; stops and removes everything on `stop()` (register it with t.after). */
export async function startKube(opts: { extraArgs?: string[] } = {}): Promise<KubeServer> {
  const bin = kubeBinDir();
  const dir = mkdtempSync(join(tmpdir(), 'mw-kube-'));
  const procs: { etcd?: ChildProcess; api?: ChildProcess } = {};
  const stopAll = async () => {
    await waitExit(procs.api);
    await waitExit(procs.etcd);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    makePki(dir);
    const [etcdPort, peerPort, apiPort] = [await freePort(), await freePort(), await freePort()];
    const etcdUrl = `http://127.0.0.1:${etcdPort}`;
    const log = (name: string) => createWriteStream(join(dir, `${name}.log`));
    procs.etcd = spawn(join(bin, 'etcd'), [
      '--name', 'mw', '--data-dir', join(dir, 'etcd'), '--listen-client-urls', etcdUrl, '--advertise-client-urls', etcdUrl,
      '--listen-peer-urls', `http://127.0.0.1:${peerPort}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
      '--initial-cluster', `mw=http://127.0.0.1:${peerPort}`, '--log-level', 'warn', '--quota-backend-bytes', String(256 << 20),
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.etcd.stdout!.pipe(log('etcd')); procs.etcd.stderr!.pipe(log('etcd-err'));
    const f = (n: string) => join(dir, n);
    const apiArgs = [
      '--etcd-servers', etcdUrl, '--bind-address', '127.0.0.1', '--advertise-address', '127.0.0.1', '--secure-port', String(apiPort),
      '--tls-cert-file', f('serving.crt'), '--tls-private-key-file', f('serving.key'), '--client-ca-file', f('ca.crt'),
      '--authorization-mode', 'RBAC', '--anonymous-auth=false',
      '--service-account-issuer', 'https://kubernetes.default.svc', '--service-account-key-file', f('sa.pub'),
      '--service-account-signing-key-file', f('sa.key'), '--api-audiences', 'https://kubernetes.default.svc',
      '--service-cluster-ip-range', '10.96.0.0/24', '--cert-dir', f('certs'),
      // Loopback may not be the kubernetes Service's endpoint; nothing here routes to it.
      '--endpoint-reconciler-type', 'none',
      // As clusters that run CNI agents do (the chart's privileged=true).
      '--allow-privileged=true',
      // Without a controller-manager no "default" ServiceAccount exists; pods name theirs.
      '--disable-admission-plugins', 'ServiceAccount',
      // Watches go to etcd, so a compaction makes an old resourceVersion 410 every time
      // (with the watch cache it depends on the cache's window).
      '--watch-cache=false', '--enable-priority-and-fairness=false', '--profiling=false', '--v', '1',
      ...(opts.extraArgs ?? []),
    ];
    const adminConfig: KubeConfig = { server: `https://127.0.0.1:${apiPort}`, ca: readFileSync(f('ca.crt')), cert: readFileSync(f('admin.crt')), key: readFileSync(f('admin.key')) };
    const admin = new KubeClient(adminConfig);
    let starts = 0;
    let lastErr = '';
    const startApiServer = async () => {
      const p = spawn(join(bin, 'kube-apiserver'), apiArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
      procs.api = p;
      p.stdout!.pipe(log(`apiserver-${starts}`)); p.stderr!.pipe(log(`apiserver-${starts}-err`));
      starts++;
      const ok = await eventually(async () => {
        if (p.exitCode !== null) return true;
        try { await admin.request('GET', '/readyz'); return true; } catch (e) { lastErr = String(e); return false; }
      }, 90_000, 250);
      if (!ok || p.exitCode !== null) {
        const tail = (n: string) => { try { return readFileSync(join(dir, n), 'utf8').slice(-3000); } catch { return ''; } };
        throw new Error(`kube-apiserver did not become ready (exit ${p.exitCode}; last /readyz: ${lastErr}):\n${tail(`apiserver-${starts - 1}-err.log`)}\netcd:\n${tail('etcd-err.log')}`);
      }
    };
    const stopApiServer = () => waitExit(procs.api);
    await startApiServer();
    const etcdPost = async (path: string, body: unknown) => {
      const r = await fetch(`${etcdUrl}${path}`, { method: 'POST', body: JSON.stringify(body) });
      if (!r.ok) throw new Error(`etcd ${path}: ${r.status} ${await r.text()}`);
      return r.json() as Promise<any>;
    };
    const etcdRevision = async () => Number((await etcdPost('/v3/kv/range', { key: Buffer.from('/').toString('base64') })).header.revision);
    return {
      dir, server: adminConfig.server, etcdUrl, admin, adminConfig,
      clientWithToken: (token) => new KubeClient({ server: adminConfig.server, ca: adminConfig.ca, token }),
      writeKubeconfig: (token, path = f(`kubeconfig-${Math.random().toString(36).slice(2)}.json`)) => {
        writeFileSync(path, JSON.stringify({
          apiVersion: 'v1', kind: 'Config', 'current-context': 'test',
          clusters: [{ name: 'test', cluster: { server: adminConfig.server, 'certificate-authority-data': adminConfig.ca!.toString('base64') } }],
          users: [{ name: 'test', user: { token } }], contexts: [{ name: 'test', context: { cluster: 'test', user: 'test' } }],
        }), { mode: 0o600 });
        return path;
      },
      stopApiServer, startApiServer,
      restartApiServer: async (between) => { await stopApiServer(); await between?.(); await startApiServer(); },
      etcdRevision,
      compact: async (revision) => { await etcdPost('/v3/kv/compaction', { revision: String(revision ?? await etcdRevision()), physical: true }); },
      stop: async () => { admin.close(); await stopAll(); },
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

/** Creates ServiceAccount `ns/name` (and its namespace) and returns a bound token for it. */
export async function serviceAccountToken(k: KubeServer, ns: string, name: string): Promise<string> {
  await k.admin.request('POST', '/api/v1/namespaces', { metadata: { name: ns } }).catch((e) => { if (e.status !== 409) throw e; });
  await k.admin.request('POST', `/api/v1/namespaces/${ns}/serviceaccounts`, { metadata: { name } }).catch((e) => { if (e.status !== 409) throw e; });
  const tr = await k.admin.request('POST', `/api/v1/namespaces/${ns}/serviceaccounts/${name}/token`, {
    apiVersion: 'authentication.k8s.io/v1', kind: 'TokenRequest', spec: { audiences: ['https://kubernetes.default.svc'], expirationSeconds: 3600 },
  });
  return tr.status.token;
}

/** A unique lowercase prefix for object names of one test. */
export function kubePrefix(): string {
  return `mw${process.pid.toString(36)}${Math.random().toString(36).slice(2, 6)}`;
}

// SPDX-License-Identifier: Apache-2.0
// The lab side of HBONE: LabMesh plays istiod (workload registry + CA: which pods are in the
// mesh, on which node, with which identity; each node proxy gets the certificates of its own
// node's workloads only), LabHboneProxy runs one HBONE node proxy (src/lab/hbone/main.ts) in
// its own sandbox on a node, wired like a pod, as LabNodeProxy does with haproxy.
import type { ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import type { NodeProxy } from '../../datapath/ambient/proxy.ts';
import { labRunDir } from '../cleanup.ts';
import type { Lab, LabNode, LabPod } from '../lab.ts';
import { NODE_PROXY_PORTS } from '../node-proxy.ts';
import { LabDnsProxies, type NodeProxyDns, type NodeProxyDnsLine } from '../dns-proxy.ts';
import { stopChild, waitForLine } from '../proc.ts';
import { POD_IFNAME } from '../wire.ts';
import { LabCa, spiffeId, type IssuedCert } from './ca.ts';
import { identityOf, type HboneConfig, type HboneWorkload } from './config.ts';
import type { HboneHop } from './proxy.ts';
import { fromRoot } from '../../paths.ts';

const MAIN = fromRoot('src/lab/hbone/main.ts');

export interface HboneStats { counters: Record<string, number>; pool: { key: string; connection: number; streams: number }[] }

function request<T>(socketPath: string, method: 'GET' | 'PUT', path: string, body?: unknown): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({ socketPath, method, path, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} }, (res) => {
      let out = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (out += d));
      res.on('end', () => {
        let v: unknown;
        try { v = JSON.parse(out); } catch { v = out; }
        if (res.statusCode !== 200) reject(new Error(`${method} ${path}: ${res.statusCode} ${out}`));
        else resolve(v as T);
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

export class LabHboneProxy {
  readonly node: LabNode;
  readonly pod: LabPod;
  readonly id: string;
  readonly controlSocket: string;
  child: ChildProcess | undefined;
  #log = '';
  /** Its DNS proxy in its netns (opts.dns), announced as ports.dns. */
  #dns: LabDnsProxies | undefined;

  private constructor(node: LabNode, pod: LabPod, id: string, dir: string) {
    this.node = node;
    this.pod = pod;
    this.id = id;
    this.controlSocket = join(dir, 'control.sock');
  }

  /** Creates the proxy's sandbox `name` on `node`, starts the proxy; resolves once its listeners listen. */
  static async start(node: LabNode, name = 'ztunnel', opts: { dns?: NodeProxyDns } = {}): Promise<LabHboneProxy> {
    const pod = node.lab.addPod(node, name);
    const dir = join(labRunDir(node.lab.prefix), node.name, `hbone-${name}`);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const p = new LabHboneProxy(node, pod, `${node.name}-${name}`, dir);
    const c = pod.spawn([process.execPath, '--disable-warning=ExperimentalWarning', MAIN, '--control', p.controlSocket,
      '--outbound', String(NODE_PROXY_PORTS.outbound), '--inbound', String(NODE_PROXY_PORTS.inbound), '--hbone', String(NODE_PROXY_PORTS.hbone)]);
    p.child = c;
    c.stderr!.setEncoding('utf8');
    c.stderr!.on('data', (d: string) => { p.#log = (p.#log + d).slice(-4000); });
    try {
      await waitForLine(c, /^ready$/, 15_000);
    } catch (e) {
      c.kill('SIGKILL');
      throw new Error(`HBONE node proxy ${p.id} did not start: ${(e as Error).message}\n${p.#log}`);
    }
    if (opts.dns) {
      p.#dns = new LabDnsProxies(pod, `HBONE node proxy ${p.id}`, opts.dns);
      await p.#dns.start('proxy');
    }
    return p;
  }

  /** The announcement the agent gets (POST /v1/ambient/proxy); eBPF engine only. */
  announcement(ready = true): NodeProxy {
    const { dns, ...tcp } = NODE_PROXY_PORTS;
    return { id: this.id, netns: this.pod.netnsPath, ifName: POD_IFNAME, ports: this.#dns ? { ...tcp, dns } : { ...tcp }, ready };
  }

  async announceTo(agent: { request<T>(method: 'POST', path: string, body?: unknown): Promise<T> }, ready = true): Promise<void> {
    await agent.request('POST', '/v1/ambient/proxy', this.announcement(ready));
  }

  get ip4(): string { return this.pod.ip4; }
  get ip6(): string { return this.pod.ip6; }
  get log(): string { return this.#log; }
  /** Every query its DNS proxy logged. */
  get dnsLog(): NodeProxyDnsLine[] { return this.#dns?.log ?? []; }
  async setDns(dns: NodeProxyDns): Promise<void> {
    if (!this.#dns) throw new Error(`HBONE node proxy ${this.id}: started without DNS (its announcement has no DNS port)`);
    await this.#dns.set(dns);
  }

  configure(c: HboneConfig): Promise<unknown> { return request(this.controlSocket, 'PUT', '/v1/config', c); }
  stats(): Promise<HboneStats> { return request(this.controlSocket, 'GET', '/v1/stats'); }
  hops(): Promise<HboneHop[]> { return request(this.controlSocket, 'GET', '/v1/hops'); }
  /** One counter (0 when never counted). */
  async counter(name: string): Promise<number> { return (await this.stats()).counters[name] ?? 0; }

  async stop(): Promise<void> {
    await this.#dns?.stopAll();
    await stopChild(this.child);
  }
}

export interface MeshWorkloadOptions {
  namespace?: string;
  /** Default: the pod's name. */
  serviceAccount?: string;
  /** Enrolled (HBONE); false: known to the mesh but outside it (plain TCP). Default true. */
  hbone?: boolean;
  denyFrom?: string[];
}

/** istiod for the lab: the registry of workloads and nodes, and the CA. */
export class LabMesh {
  readonly lab: Lab;
  readonly ca: LabCa;
  readonly cluster: string;
  readonly proxies = new Map<string, LabHboneProxy>();
  #workloads = new Map<LabPod, HboneWorkload>();
  #issued = new Map<string, IssuedCert>();

  private constructor(lab: Lab, ca: LabCa, cluster: string) {
    this.lab = lab;
    this.ca = ca;
    this.cluster = cluster;
  }

  /** A mesh with a new root (in the lab's run dir: the lab's destroy removes it). */
  static create(lab: Lab, opts: { trustDomain?: string; cluster?: string } = {}): LabMesh {
    const ca = LabCa.create(join(labRunDir(lab.prefix), 'mesh-ca'), opts.trustDomain ?? 'cluster.local');
    return new LabMesh(lab, ca, opts.cluster ?? 'lab');
  }

  get trustDomain(): string { return this.ca.trustDomain; }

  /** Registers (or updates) `pod` as a workload; push() tells the proxies. */
  add(pod: LabPod, o: MeshWorkloadOptions = {}): HboneWorkload {
    const w: HboneWorkload = {
      name: pod.name, namespace: o.namespace ?? 'default', serviceAccount: o.serviceAccount ?? pod.name,
      node: pod.node.name, ips: [pod.ip4, pod.ip6], hbone: o.hbone ?? true, ...(o.denyFrom ? { denyFrom: o.denyFrom } : {}),
    };
    this.#workloads.set(pod, w);
    return w;
  }

  remove(pod: LabPod): void { this.#workloads.delete(pod); }

  identity(pod: LabPod): string {
    const w = this.#workloads.get(pod);
    if (!w) throw new Error(`pod ${pod.name} is not a workload of the mesh`);
    return identityOf(this.trustDomain, w);
  }

  /** A certificate for `id`, issued to `node`'s proxy (cached per node and identity). */
  certFor(node: string, id: string): IssuedCert {
    const k = `${node}|${id}`;
    let c = this.#issued.get(k);
    if (!c) { c = this.ca.issue(id); this.#issued.set(k, c); }
    return c;
  }

  /** What `node`'s proxy gets: every workload and node, certificates of its own node's identities. */
  config(node: string): HboneConfig {
    const workloads = [...this.#workloads.values()];
    const ids = new Set(workloads.filter((w) => w.node === node).map((w) => identityOf(this.trustDomain, w)));
    return {
      node, trustDomain: this.trustDomain, cluster: this.cluster, ca: this.ca.certPem,
      identities: [...ids].map((id) => this.certFor(node, id)),
      workloads,
      nodes: [...this.proxies].map(([n, p]) => ({ name: n, proxyIps: [p.ip4, p.ip6] })),
    };
  }

  /** Starts `node`'s HBONE proxy and registers it; push() gives it (and the others) the snapshot. */
  async startProxy(node: LabNode, name = 'ztunnel', opts: { dns?: NodeProxyDns } = {}): Promise<LabHboneProxy> {
    const p = await LabHboneProxy.start(node, name, opts);
    this.proxies.set(node.name, p);
    return p;
  }

  /** Sends the current snapshot to every proxy. */
  async push(): Promise<void> {
    await Promise.all([...this.proxies].map(([n, p]) => p.configure(this.config(n))));
  }

  async stop(): Promise<void> {
    for (const p of this.proxies.values()) await p.stop();
    this.ca.destroy();
  }
}

export { spiffeId };

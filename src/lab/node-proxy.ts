// SPDX-License-Identifier: Apache-2.0
// A node proxy for a lab node: its own netns wired to the node's bridge like a
// pod (a hostNetwork-less DaemonSet pod), running Debian's haproxy as a plain
// L4 transparent relay (C, so the benchmark measures redirection, not a slow
// proxy). `server orig 0.0.0.0:0` connects to the accepted socket's local
// address, which bpf_sk_assign left as the original destination. Upstream
// connections leave from the proxy's own address (no source spoofing).
//
// In-pod engine (iptables): the agent PUTs the snapshot of enrolled pods to the proxy's
// control socket; the proxy writes one outbound and one inbound section per pod netns
// (haproxy's `bind ... namespace` / `server ... namespace`: one process serves every pod,
// so an enrolment costs a reload, not a process) and reloads haproxy in master-worker mode
// (SIGUSR2: the new worker takes the listening sockets over, the old one finishes its
// sessions), then answers 200 once the listeners of every listed pod are open.
//
// DNS (opts.dns): its DNS proxies, see dns-proxy.ts.
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:http';
import net from 'node:net';
import { basename, dirname, join } from 'node:path';
import type { NodeProxy } from '../datapath/ambient/proxy.ts';
import { labRunDir } from './cleanup.ts';
import { Sandbox, type LabNode, type LabPod } from './lab.ts';
import { eventually, stopChild } from './proc.ts';
import { serveControl } from './control.ts';
import { POD_IFNAME } from './wire.ts';
import { LabDnsProxies, NODE_PROXY_DNS_PORT, type NodeProxyDns, type NodeProxyDnsLine } from './dns-proxy.ts';

/** ztunnel's ports; `dns` is announced only by a proxy started with a DNS proxy (opts.dns). */
export const NODE_PROXY_PORTS = { outbound: 15001, inbound: 15006, hbone: 15008, dns: NODE_PROXY_DNS_PORT } as const;

export type { NodeProxyDns, NodeProxyDnsLine } from './dns-proxy.ts';

/** haproxy names a netns by its name under /var/run/netns; the lab's pods live there. */
export function netnsName(path: string): string {
  const d = dirname(path);
  if (d !== '/run/netns' && d !== '/var/run/netns') throw new Error(`netns ${path}: the lab proxy opens listeners only in named netns (/run/netns/<name>)`);
  const n = basename(path);
  if (!/^[A-Za-z0-9_.-]+$/.test(n)) throw new Error(`netns ${path}: unexpected name`);
  return n;
}

function haproxyConfig(ports: { outbound: number; inbound: number }, podNetns: string[], stats: string): string {
  const listen = (name: string, port: number, ns?: string) => {
    const n = ns ? ` namespace ${ns}` : '';
    return `listen ${name}
  bind 0.0.0.0:${port} transparent${n}
  bind :::${port} v6only transparent${n}
  server orig 0.0.0.0:0${n}
`;
  };
  return `global
  maxconn 9000
  stats socket ${stats} mode 600 level admin
defaults
  mode tcp
  timeout connect 3s
  timeout client 60s
  timeout server 60s
${listen('outbound', ports.outbound)}${listen('inbound', ports.inbound)}${podNetns.map((ns, i) => listen(`out_${i}`, ports.outbound, ns) + listen(`in_${i}`, ports.inbound, ns)).join('')}`;
}

export class LabNodeProxy {
  readonly node: LabNode;
  readonly pod: LabPod;
  readonly id: string;
  child: ChildProcess | undefined;
  #dir = '';
  #control: Server | undefined;
  /** Pod netns names it listens in (the agent's last snapshot). */
  podNetns: string[] = [];
  /** Its DNS proxies (opts.dns): 'proxy' (its own netns) and one per pod netns it serves in-pod. */
  readonly #dns: LabDnsProxies | undefined;

  /** Where its processes run (the sandbox's cgroup unless started with another). */
  readonly proc: Sandbox;

  private constructor(node: LabNode, pod: LabPod, id: string, dns?: NodeProxyDns, cgroupPath?: string) {
    this.node = node;
    this.pod = pod;
    this.id = id;
    this.proc = cgroupPath ? new Sandbox(node.lab, `${pod.name}-proc`, pod.netns, cgroupPath) : pod;
    this.#dns = dns ? new LabDnsProxies(pod, `node proxy ${id}`, dns) : undefined;
  }

  /** Every query its DNS proxies logged. */
  get dnsLog(): NodeProxyDnsLine[] { return this.#dns?.log ?? []; }

  /**
   * Creates the proxy's sandbox `name` on `node` and starts haproxy (and its DNS proxy); resolves
   * once they listen. `cgroupPath`: run them in that cgroup instead of the sandbox's (the bench
   * keeps them out of the node's cgroup, where sidecar-mode programs are attached).
   */
  static async start(node: LabNode, name = 'ztunnel', opts: { dns?: NodeProxyDns; cgroupPath?: string } = {}): Promise<LabNodeProxy> {
    const pod = node.lab.addPod(node, name);
    const p = new LabNodeProxy(node, pod, `${node.name}-${name}`, opts.dns, opts.cgroupPath);
    await p.run();
    return p;
  }

  /** The announcement the agent gets (POST /v1/ambient/proxy). */
  announcement(ready = true): NodeProxy {
    const { dns, ...tcp } = NODE_PROXY_PORTS;
    return {
      id: this.id, netns: this.pod.netnsPath, ifName: POD_IFNAME, ports: this.#dns ? { ...tcp, dns } : { ...tcp }, ready,
      control: this.controlSocket, cgroup: this.proc.cgroupPath,
    };
  }

  #startDns(tag: string): Promise<void> { return this.#dns?.start(tag) ?? Promise.resolve(); }
  #stopDns(tag: string): Promise<void> { return this.#dns?.stop(tag) ?? Promise.resolve(); }

  /** New DNS settings (names known once pods exist): every running DNS proxy restarts with them. */
  async setDns(dns: NodeProxyDns): Promise<void> {
    if (!this.#dns) throw new Error(`node proxy ${this.id}: started without DNS (its announcement has no DNS port)`);
    await this.#dns.set(dns);
  }

  /** Stops (or starts again) the DNS proxy of its own netns: the eBPF datapath must then fail open. */
  async setDnsRunning(on: boolean): Promise<void> {
    if (on) await this.#startDns('proxy'); else await this.#stopDns('proxy');
  }

  get controlSocket(): string { return join(this.#dir, 'control.sock'); }
  get #stats(): string { return join(this.#dir, 'stats.sock'); }
  get #cfg(): string { return join(this.#dir, 'haproxy.cfg'); }

  #cli(cmd: string): Promise<string> {
    return new Promise<string>((resolve, reject) => {
      const c = net.connect(this.#stats);
      let out = '';
      c.on('data', (d) => (out += d));
      c.on('end', () => resolve(out));
      c.on('error', reject);
      c.end(`${cmd}\n`);
    });
  }

  /** The pid of the current haproxy worker (changes once a reload has finished). */
  async #workerPid(): Promise<number> {
    try { return Number(/^Pid: (\d+)/m.exec(await this.#cli('show info'))?.[1] ?? 0); } catch { return 0; }
  }

  /**
   * Sessions the current haproxy worker accepted (`total`) or holds now (`current`) on its
   * relay listeners (the proxy netns ones and the per-pod in-pod ones). A reload starts a new
   * worker: sessions the old worker still finishes are not in it.
   */
  async sessions(which: 'total' | 'current' = 'total'): Promise<number> {
    const csv = await this.#cli('show stat');
    let n = 0;
    for (const l of csv.split('\n')) {
      const f = l.split(',');
      if (/^((out|in)_\d+|outbound|inbound)$/.test(f[0]) && f[1] === 'FRONTEND') n += Number(f[which === 'total' ? 7 : 4]) || 0;
    }
    return n;
  }

  /** The control socket (node proxy contract, in-pod engine): PUT /v1/pods { pods: [{ netns }] }. */
  async #serveControl(): Promise<void> {
    this.#control = await serveControl(this.controlSocket, async (method, url, body) => {
      if (method !== 'PUT' || url !== '/v1/pods') return [404, { error: 'PUT /v1/pods only' }];
      let names: string[];
      try {
        const snap = JSON.parse(body) as { pods?: { netns?: unknown }[] };
        if (!Array.isArray(snap.pods)) throw new Error('pods: expected an array');
        names = snap.pods.map((p) => netnsName(String(p.netns)));
      } catch (e) {
        return [400, { error: (e as Error).message }];
      }
      await this.listenIn(names);
      return [200, { ok: true }];
    });
  }

  #reloads: Promise<void> = Promise.resolve();

  /** Opens the listeners in exactly these pod netns (reload); resolves once every one listens. */
  listenIn(names: string[]): Promise<void> {
    const next = this.#reloads.then(async () => {
      const same = names.length === this.podNetns.length && names.every((n, i) => n === this.podNetns[i]);
      if (same) return;
      // Both instances of an upgrade listen on the same ports in a pod netns (one SO_REUSEPORT
      // group): without tcp_migrate_req the kernel resets the handshakes queued on a listener
      // that closes (the old instance dropping the pod); with it they move to the new one.
      for (const n of new Set([...names, ...this.podNetns])) {
        await this.pod.run(['nsenter', `--net=/run/netns/${n}`, '--', 'sysctl', '-qw', 'net.ipv4.tcp_migrate_req=1']);
      }
      // DNS listeners first, like the others: the acknowledgement means every one is open.
      for (const n of names) await this.#startDns(n);
      const dropped = this.podNetns.filter((n) => !names.includes(n));
      // A pod netns this instance leaves (an upgrade's old instance): pause its listeners
      // first (haproxy `disable frontend`: the kernel takes them out of the SO_REUSEPORT group
      // and tcp_migrate_req hands their queues to the new instance), then reload. A reload
      // alone closed them in the old worker's soft-stop, which closed a few connections it
      // had just accepted unanswered (1–3 of 4000); once paused it accepts none, and the
      // sessions it has finish in the old worker as before.
      const leaving = this.podNetns.flatMap((n, i) => names.includes(n) ? [] : [`out_${i}`, `in_${i}`]);
      if (leaving.length > 0) {
        for (const fe of leaving) await this.#cli(`disable frontend ${fe}`);
        await new Promise((r) => setTimeout(r, 200)); // accepts already under way complete
      }
      this.podNetns = [...names];
      writeFileSync(this.#cfg, haproxyConfig(NODE_PROXY_PORTS, names, this.#stats), { mode: 0o644 });
      const c = this.child;
      if (!c || c.exitCode !== null) throw new Error(`node proxy ${this.id}: haproxy is not running`);
      // One reload at a time: a SIGUSR2 while the master re-executes itself would be lost.
      const before = await this.#workerPid();
      c.kill('SIGUSR2');
      if (!await eventually(async () => { const p = await this.#workerPid(); return p !== 0 && p !== before; }, 10_000, 20)) {
        throw new Error(`node proxy ${this.id}: haproxy did not reload`);
      }
      const want = [NODE_PROXY_PORTS.outbound, NODE_PROXY_PORTS.inbound];
      const up = await eventually(async () => {
        for (const n of names) {
          const r = await this.pod.run(['nsenter', `--net=/run/netns/${n}`, '--', 'ss', '-Hltn']);
          if (!want.every((port) => r.stdout.split('\n').filter((l) => l.includes(`:${port} `)).length >= 2)) return false;
        }
        return true;
      }, 10_000, 20);
      if (!up) throw new Error(`node proxy ${this.id}: listeners did not open in ${names.join(', ')}`);
      for (const n of dropped) await this.#stopDns(n);
    });
    this.#reloads = next.catch(() => {});
    return next;
  }

  /** Announces this instance to a node's agent over its socket (the node proxy contract, docs/ambient.md). */
  async announceTo(agent: { request<T>(method: 'POST', path: string, body?: unknown): Promise<T> }, ready = true): Promise<void> {
    await agent.request('POST', '/v1/ambient/proxy', this.announcement(ready));
  }

  /** Tells the agent this instance is gone. */
  async withdrawFrom(agent: { request<T>(method: 'POST', path: string, body?: unknown): Promise<T> }): Promise<void> {
    await agent.request('POST', '/v1/ambient/proxy/remove', { id: this.id });
  }

  get ip4(): string { return this.pod.ip4; }
  get ip6(): string { return this.pod.ip6; }

  async run(): Promise<void> {
    const dir = join(labRunDir(this.node.lab.prefix), this.node.name, `proxy-${this.pod.name}`);
    mkdirSync(dir, { recursive: true });
    chmodSync(dir, 0o755);
    this.#dir = dir;
    writeFileSync(this.#cfg, haproxyConfig(NODE_PROXY_PORTS, this.podNetns, this.#stats), { mode: 0o644 });
    // root: IP_TRANSPARENT needs CAP_NET_ADMIN, `namespace` CAP_SYS_ADMIN. -W: master-worker (reloads).
    this.child = this.proc.spawn(['haproxy', '-W', '-db', '-f', this.#cfg], { env: { PATH: process.env.PATH } });
    const want = [NODE_PROXY_PORTS.outbound, NODE_PROXY_PORTS.inbound];
    const up = await eventually(async () => {
      if (this.child?.exitCode !== null) return true;
      const r = await this.pod.run(['ss', '-Hltn']);
      return want.every((port) => r.stdout.split('\n').filter((l) => l.includes(`:${port} `)).length >= 2);
    }, 10_000, 50);
    if (!up || this.child.exitCode !== null) throw new Error(`node proxy ${this.id}: haproxy did not start listening (exit ${this.child.exitCode})`);
    if (!this.#control) await this.#serveControl();
    await this.#startDns('proxy');
  }

  async stop(): Promise<void> {
    await this.#dns?.stopAll();
    const srv = this.#control;
    this.#control = undefined;
    if (srv) { srv.closeAllConnections(); await new Promise((r) => srv.close(r)); }
    await stopChild(this.child);
  }
}

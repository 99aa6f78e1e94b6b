// SPDX-License-Identifier: Apache-2.0
// A node proxy for a lab node: its own netns wired to the node's bridge like a
// pod (a hostNetwork-less DaemonSet pod), running Debian's haproxy as a plain
// L4 transparent relay (C, so the benchmark measures redirection, not a slow
// proxy). `server orig 0.0.0.0:0` connects to the accepted socket's local
// address, which bpf_sk_assign left as the original destination. Upstream
// connections leave from the proxy's own address (no source spoofing).
import type { ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { NodeProxy } from '../datapath/ambient/proxy.ts';
import { labRunDir } from './cleanup.ts';
import type { LabNode, LabPod } from './lab.ts';
import { eventually } from './proc.ts';
import { POD_IFNAME } from './wire.ts';

export const NODE_PROXY_PORTS = { outbound: 15001, inbound: 15006, hbone: 15008 } as const;

function haproxyConfig(ports: { outbound: number; inbound: number }): string {
  const listen = (name: string, port: number) => `listen ${name}
  bind 0.0.0.0:${port} transparent
  bind :::${port} v6only transparent
  server orig 0.0.0.0:0
`;
  return `global
  maxconn 9000
defaults
  mode tcp
  timeout connect 3s
  timeout client 60s
  timeout server 60s
${listen('outbound', ports.outbound)}${listen('inbound', ports.inbound)}`;
}

export class LabNodeProxy {
  readonly node: LabNode;
  readonly pod: LabPod;
  readonly id: string;
  child: ChildProcess | undefined;

  private constructor(node: LabNode, pod: LabPod, id: string) {
    this.node = node;
    this.pod = pod;
    this.id = id;
  }

  /** Creates the proxy's sandbox `name` on `node` and starts haproxy; resolves once both listeners listen. */
  static async start(node: LabNode, name = 'ztunnel'): Promise<LabNodeProxy> {
    const pod = node.lab.addPod(node, name);
    const p = new LabNodeProxy(node, pod, `${node.name}-${name}`);
    await p.run();
    return p;
  }

  /** The announcement the agent gets (POST /v1/ambient/proxy). */
  announcement(ready = true): NodeProxy {
    return { id: this.id, netns: this.pod.netnsPath, ifName: POD_IFNAME, ports: { ...NODE_PROXY_PORTS }, ready };
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
    const cfg = join(dir, 'haproxy.cfg');
    writeFileSync(cfg, haproxyConfig(NODE_PROXY_PORTS), { mode: 0o644 });
    // root: IP_TRANSPARENT needs CAP_NET_ADMIN.
    this.child = this.pod.spawn(['haproxy', '-db', '-f', cfg], { env: { PATH: process.env.PATH } });
    const want = [NODE_PROXY_PORTS.outbound, NODE_PROXY_PORTS.inbound];
    const up = await eventually(async () => {
      if (this.child?.exitCode !== null) return true;
      const r = await this.pod.run(['ss', '-Hltn']);
      return want.every((port) => r.stdout.split('\n').filter((l) => l.includes(`:${port} `)).length >= 2);
    }, 10_000, 50);
    if (!up || this.child.exitCode !== null) throw new Error(`node proxy ${this.id}: haproxy did not start listening (exit ${this.child.exitCode})`);
  }

  async stop(): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
}

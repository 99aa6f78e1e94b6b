// SPDX-License-Identifier: Apache-2.0
// The DNS proxies of a lab node proxy (haproxy's LabNodeProxy or the HBONE proxy): the
// lab's DNS proxy (src/proxy/dns.ts, the sidecar's, run with --dns-only) answers mesh names
// itself and forwards the rest to the cluster DNS. Tag 'proxy': one in the node proxy's own
// netns, UDP and TCP on 0.0.0.0 and :: (TCP transparent), where mwam_proxy_in assigns the
// queries (eBPF engine). Any other tag is a pod netns (in-pod engine): one there on
// 127.0.0.1/::1, where the pod's rules REDIRECT its queries; its upstream queries leave from
// the node proxy's cgroup, which the pod's rules never capture.
import type { ChildProcess } from 'node:child_process';
import type { LabPod } from './lab.ts';
import { stopChild, waitForLine } from './proc.ts';
import { fromRoot } from '../paths.ts';

/** ztunnel's DNS port. */
export const NODE_PROXY_DNS_PORT = 15053;

/** The node proxy's DNS proxy: mesh names it answers itself (NAME=IP[,IP]), where the rest goes. */
export interface NodeProxyDns { names: string[]; upstream: string[]; truncate?: string[] }

/** One query the node proxy's DNS proxy logged (src/proxy/dns.ts); `tag` is `proxy` or the pod netns it served. */
export interface NodeProxyDnsLine { tag: string; proto: string; client: string; name: string; answer: string; upstream?: string }

const PROXY_MAIN = fromRoot('src/proxy/main.ts');

export class LabDnsProxies {
  /** Every query its DNS proxies logged. */
  readonly log: NodeProxyDnsLine[] = [];
  readonly #procs = new Map<string, ChildProcess>();
  readonly #pod: LabPod;
  readonly #what: string;
  #dns: NodeProxyDns;

  /** `pod`: the node proxy's sandbox (processes start in its netns and cgroup); `what` names it in errors. */
  constructor(pod: LabPod, what: string, dns: NodeProxyDns) {
    this.#pod = pod;
    this.#what = what;
    this.#dns = dns;
  }

  /** Starts the DNS proxy of `tag` ('proxy', or a pod netns name) unless it runs; resolves once it is ready. */
  async start(tag: string): Promise<void> {
    if (this.#procs.has(tag)) return;
    const d = this.#dns;
    const inPod = tag !== 'proxy';
    const args = ['--dns-only', '--dns-port', String(NODE_PROXY_DNS_PORT), '--log', '--tag', tag,
      ...(inPod ? ['--dns-listen', '127.0.0.1', '--dns-listen', '::1', '--dns-reuseport'] : ['--dns-listen', '0.0.0.0', '--dns-listen', '::', '--dns-transparent']),
      ...d.names.flatMap((n) => ['--dns-name', n]), ...(d.truncate ?? []).flatMap((n) => ['--dns-truncate', n]),
      ...d.upstream.flatMap((u) => ['--dns-upstream', u])];
    const node = [process.execPath, '--disable-warning=ExperimentalWarning', PROXY_MAIN, ...args];
    const child = this.#pod.spawn(inPod ? ['nsenter', `--net=/run/netns/${tag}`, '--', ...node] : node, { env: { PATH: process.env.PATH } });
    this.#procs.set(tag, child);
    let buf = '';
    child.stderr?.on('data', (b: Buffer) => {
      buf += b.toString('utf8');
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) { try { this.log.push(JSON.parse(l) as NodeProxyDnsLine); } catch { /* not a query line */ } }
    });
    try {
      await waitForLine(child, /^ready$/, 15_000);
    } catch (e) {
      this.#procs.delete(tag);
      child.kill('SIGKILL');
      throw new Error(`${this.#what}: DNS proxy (${tag}) did not start: ${(e as Error).message}`);
    }
  }

  async stop(tag: string): Promise<void> {
    const c = this.#procs.get(tag);
    this.#procs.delete(tag);
    await stopChild(c);
  }

  /** New settings (names known once pods exist): every running DNS proxy restarts with them. */
  async set(dns: NodeProxyDns): Promise<void> {
    this.#dns = dns;
    for (const tag of [...this.#procs.keys()]) {
      await this.stop(tag);
      await this.start(tag);
    }
  }

  async stopAll(): Promise<void> {
    for (const tag of [...this.#procs.keys()]) await this.stop(tag);
  }
}

// SPDX-License-Identifier: Apache-2.0
// A tiny container runtime for the lifecycle tests: what kubelet + containerd + libcni do
// with a lab node's conflist, plus the odd things a runtime (or a broken one) does that
// lab.addPodCni() does not offer: a second sandbox of the same Kubernetes pod, the
// meshwarp-cni plugin alone with a forged prevResult, CHECK and GC, raw HTTP to the
// agent, and a look at the tc hooks of a veth. Everything runs the real binaries:
// runChain/execPlugin from src/lab/cni.ts with CNI_* in the environment and the config
// on stdin, from inside the node's netns.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULTS } from '../../src/agent/config.ts';
import { tcxPrograms } from '../../src/bpf/index.ts';
import {
  CniChainError, LOOPBACK_CONFLIST, execPlugin, findPlugin, loadConflist, podNetworkFromResult, runChain,
  type ChainContext, type CniResult, type Conflist, type PluginRun,
} from '../../src/lab/cni.ts';
import type { TestContext } from 'node:test';
import { DEBIAN_CNI_DIR, Lab, LabAgent, uniquePrefix, type LabNode, type LabPod, type RunResult } from '../../src/lab/index.ts';
import { eventually as pollUntil } from '../../src/lab/proc.ts';
import { run } from '../../src/sys/exec.ts';
import { linkIndex, withNetns } from '../../src/sys/netns.ts';
import { inCI } from './kernel.ts';

export const NODE = process.execPath;
export const CLI = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

/** CNI_* variables of one attachment (what a runtime passes, without CNI_COMMAND / CNI_PATH). */
export function cniEnv(a: { containerId: string; netns: string; ifName?: string; podNamespace: string; podName: string; podUid?: string }): Record<string, string> {
  return {
    CNI_CONTAINERID: a.containerId, CNI_NETNS: a.netns, CNI_IFNAME: a.ifName ?? 'eth0',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${a.podNamespace};K8S_POD_NAME=${a.podName};` +
      `K8S_POD_INFRA_CONTAINER_ID=${a.containerId};K8S_POD_UID=${a.podUid ?? randomUUID()}`,
  };
}

/** A CNI error JSON as a plugin printed it, with the run it came from. */
export interface PluginOutcome extends PluginRun {
  /** Parsed stdout when it is JSON (a result, or {code, msg, details}). */
  json: Record<string, unknown> | undefined;
  code: number | null;
}

export function outcomeText(r: PluginOutcome): string {
  return `exit ${r.code ?? r.signal}${r.timedOut ? ' (timed out)' : ''}, stdout ${r.stdout.trim().slice(0, 600)}, stderr ${r.stderr.trim().slice(-600)}`;
}

/** The lab node's runtime side: its conflist, CNI_PATH, and the chain run from its netns. */
export class CniRuntime {
  readonly lab: Lab;
  readonly node: LabNode;

  constructor(lab: Lab, node: LabNode) {
    if (!node.cni) throw new Error(`node ${node.name}: lab.enableCni first`);
    this.lab = lab;
    this.node = node;
  }

  get ctx(): ChainContext {
    return { netnsPath: this.node.netnsPath, cniPath: cniPathOf(this.node), track: (c) => { this.lab.track(c); } };
  }

  /** The conflist a runtime loads now (re-read every time, as runtimes do). */
  conflist(): Conflist {
    return loadConflist(this.node.cni!.confDir);
  }

  /** The meshwarp-cni entry of the conflist, as the installer wrote it. */
  meshwarpEntry(): Record<string, unknown> {
    const e = this.conflist().plugins.find((p) => p.type === 'meshwarp-cni');
    if (!e) throw new Error(`no meshwarp-cni entry in ${this.node.cni!.confDir}`);
    return e;
  }

  /** Edits the primary network's host-local ranges (the node's own conflist file), e.g. to make IP reuse certain. */
  narrowIpam(lastHost: number): void {
    const file = join(this.node.cni!.confDir, '10-lab.conflist');
    const list = JSON.parse(readFileSync(file, 'utf8')) as Conflist;
    const ipam = (list.plugins[0] as { ipam: { ranges: { rangeStart: string; rangeEnd: string }[][] } }).ipam;
    for (const [r] of ipam.ranges) r.rangeEnd = r.rangeStart.replace(/\d+$/, String(lastHost));
    writeFileSync(file, `${JSON.stringify(list, null, 2)}\n`);
  }

  /**
   * A pod sandbox created as containerd does it, with the Kubernetes identity given apart
   * from the lab's sandbox name: so two sandboxes (two netns, two container ids) can belong
   * to the same `namespace/name`. lab.removePodCni() works on the result.
   */
  async addSandbox(sandboxName: string, pod: { podNamespace: string; podName: string; containerId?: string }): Promise<LabPod> {
    const sb = this.lab.addPod(this.node, sandboxName, { wire: false });
    const containerId = pod.containerId ?? `${this.lab.prefix}${sb.seq}${randomBytes(8).toString('hex')}`;
    const env = cniEnv({ containerId, netns: sb.netnsPath, podNamespace: pod.podNamespace, podName: pod.podName });
    const conflist = this.conflist();
    let result: CniResult | undefined;
    try {
      await runChain(this.ctx, LOOPBACK_CONFLIST, 'ADD', { ...env, CNI_IFNAME: 'lo' });
      result = await runChain(this.ctx, conflist, 'ADD', env);
      sb.setNetwork(podNetworkFromResult(result!, this.node.bridge, this.node.addrs, (ifname) => linkIndex(this.node.netns, ifname)));
      sb.cni = { containerId, namespace: pod.podNamespace, env, conflist, result: result! };
    } catch (e) {
      await runChain(this.ctx, conflist, 'DEL', env, { prevResult: result, keepGoing: true }).catch(() => {});
      this.lab.removePod(sb);
      throw e;
    }
    return sb;
  }

  /** CHECK through the whole chain with the ADD-time config and result (libcni's cache). Resolves, or rejects with CniChainError. */
  async check(pod: LabPod): Promise<void> {
    const a = pod.cni!;
    await runChain(this.ctx, a.conflist, 'CHECK', a.env, { prevResult: a.result });
  }

  /** Runs one plugin of the conflist (by type) with `cmd`; conf = the entry + cniVersion/name (+ prevResult), `patch` merged on top. */
  async plugin(type: string, cmd: string, env: Record<string, string>, opts: { prevResult?: unknown; patch?: Record<string, unknown>; cniVersion?: string; list?: Conflist } = {}): Promise<PluginOutcome> {
    const list = opts.list ?? this.conflist();
    const entry = list.plugins.find((p) => p.type === type);
    if (!entry) throw new Error(`no ${type} in the conflist`);
    const conf: Record<string, unknown> = { ...entry, cniVersion: opts.cniVersion ?? list.cniVersion, name: list.name, ...(opts.patch ?? {}) };
    if (opts.prevResult !== undefined) conf.prevResult = opts.prevResult;
    const bin = findPlugin(type, this.ctx.cniPath);
    if (!bin) throw new Error(`plugin ${type} not in ${this.ctx.cniPath.join(':')}`);
    const r = await execPlugin(this.node.netnsPath, bin, { ...env, CNI_COMMAND: cmd, CNI_PATH: this.ctx.cniPath.join(':') }, JSON.stringify(conf), this.ctx);
    let json: Record<string, unknown> | undefined;
    try { json = JSON.parse(r.stdout) as Record<string, unknown>; } catch { json = undefined; }
    return { ...r, json };
  }

  /** meshwarp-cni alone (as the last plugin of the chain), e.g. with a forged prevResult; `meshwarp` patches its settings. */
  meshwarp(cmd: string, env: Record<string, string>, opts: { prevResult?: unknown; meshwarp?: Record<string, unknown>; cniVersion?: string } = {}): Promise<PluginOutcome> {
    const settings = { ...(this.meshwarpEntry().meshwarp as Record<string, unknown>), ...(opts.meshwarp ?? {}) };
    return this.plugin('meshwarp-cni', cmd, env, { prevResult: opts.prevResult, cniVersion: opts.cniVersion, patch: { meshwarp: settings } });
  }

  /**
   * CNI GC as libcni does it for a 1.1.0 list: every plugin that speaks 1.1.0 (asked with
   * VERSION) gets GC with `cni.dev/valid-attachments`. Debian's plugins speak 1.0.0 only,
   * so in the lab this reaches meshwarp-cni. Returns each plugin's outcome.
   */
  async gc(valid: { containerId: string; ifName?: string }[]): Promise<Record<string, PluginOutcome>> {
    const out: Record<string, PluginOutcome> = {};
    for (const p of this.conflist().plugins) {
      const type = String(p.type);
      const v = await this.plugin(type, 'VERSION', {}, { cniVersion: '1.1.0' });
      const supported = (v.json?.supportedVersions ?? []) as string[];
      if (!supported.includes('1.1.0')) continue;
      out[type] = await this.plugin(type, 'GC', {}, {
        cniVersion: '1.1.0',
        patch: { 'cni.dev/valid-attachments': valid.map((a) => ({ containerID: a.containerId, ifname: a.ifName ?? 'eth0' })) },
      });
    }
    return out;
  }
}

/** CNI_PATH of a node with CNI enabled. */
export function cniPathOf(n: LabNode): string[] {
  if (!n.cni) throw new Error(`node ${n.name}: CNI not enabled`);
  return n.cni.cniPath;
}

// ---- the agent's API, raw ----

export interface HttpAnswer {
  /** 0 when the connection ended without a status line. */
  status: number;
  body: string;
  json: Record<string, unknown> | undefined;
  /** What happened to the connection (e.g. "EPIPE" or "closed"). */
  ended: string;
}

/**
 * One HTTP/1.1 request over the agent's unix socket, written by hand so a test sees
 * exactly what the agent answered (or that it answered nothing). `body` may be large: it is
 * written in chunks, and writing stops once an answer starts arriving.
 */
export function agentHttp(socket: string, method: string, path: string, body?: string | Buffer, timeoutMs = 20_000): Promise<HttpAnswer> {
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.isBuffer(body) ? body : Buffer.from(body);
  return new Promise((resolve) => {
    const s = net.connect(socket);
    const chunks: Buffer[] = [];
    let ended = 'closed';
    let answered = false;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      const raw = Buffer.concat(chunks).toString('utf8');
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(raw);
      const i = raw.indexOf('\r\n\r\n');
      const text = i >= 0 ? raw.slice(i + 4) : '';
      let json: Record<string, unknown> | undefined;
      try { json = JSON.parse(dechunk(raw.slice(0, i), text)) as Record<string, unknown>; } catch { json = undefined; }
      resolve({ status: m ? Number(m[1]) : 0, body: text, json, ended });
    };
    const timer = setTimeout(() => { ended = 'timeout'; finish(); }, timeoutMs);
    s.on('data', (c: Buffer) => { answered = true; chunks.push(c); });
    s.on('error', (e: NodeJS.ErrnoException) => { ended = e.code ?? e.message; });
    s.on('close', finish);
    s.on('end', () => { s.end(); });
    s.on('connect', async () => {
      s.write(`${method} ${path} HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: ${payload.length}\r\nConnection: close\r\n\r\n`);
      const CHUNK = 64 * 1024;
      for (let off = 0; off < payload.length && !answered && !s.destroyed; off += CHUNK) {
        if (!s.write(payload.subarray(off, off + CHUNK))) {
          await new Promise<void>((r) => { const go = () => { s.off('drain', go); s.off('close', go); s.off('data', go); r(); }; s.on('drain', go); s.on('close', go); s.on('data', go); });
        }
      }
    });
  });
}

function dechunk(head: string, body: string): string {
  if (!/transfer-encoding:\s*chunked/i.test(head)) return body;
  let out = '';
  let rest = body;
  for (;;) {
    const nl = rest.indexOf('\r\n');
    if (nl < 0) break;
    const n = parseInt(rest.slice(0, nl), 16);
    if (!n) break;
    out += rest.slice(nl + 2, nl + 2 + n);
    rest = rest.slice(nl + 2 + n + 2);
  }
  return out;
}

/**
 * Opens a connection, writes `partial` (a request cut short) and closes it: a client that
 * gave up (a CNI plugin killed by its runtime's timeout, a curl ^C).
 */
export function abortedRequest(socket: string, partial: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socket, () => { s.write(partial, () => { s.destroy(); resolve(); }); });
    s.on('error', reject);
  });
}

/** The agent's Prometheus text, read from inside the node netns (the lab agent listens on the node's loopback). */
export async function metricsText(n: LabNode, addr = DEFAULTS.metrics): Promise<string> {
  const r = await n.run(['curl', '-sS', '-m', '5', `http://${addr}/metrics`]);
  assert.equal(r.code, 0, `metrics: ${r.stderr}`);
  return r.stdout;
}

/** One sample of a metric (no labels), or undefined. */
export function metricValue(text: string, name: string): number | undefined {
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : undefined;
}

// ---- tc hooks of a veth ----

export interface TcProg { kind: 'tcx' | 'legacy'; name: string; id: number; pref?: number; handle?: string }

function progName(id: number): string {
  try {
    return (JSON.parse(run(['bpftool', '-j', 'prog', 'show', 'id', String(id)])) as { name?: string }).name ?? '';
  } catch {
    return '';
  }
}

/**
 * Every BPF program on one tc hook of `veth` in the node's netns: tcx links (kernel order)
 * and legacy cls_bpf filters (from `tc -j filter show`). Missing device: [].
 */
export function tcHook(n: LabNode, veth: string, dir: 'ingress' | 'egress'): TcProg[] {
  const out: TcProg[] = [];
  let ifindex: number;
  try { ifindex = linkIndex(n.netns, veth); } catch { return []; }
  try {
    for (const id of withNetns(n.netnsPath, () => tcxPrograms(ifindex, dir))) out.push({ kind: 'tcx', id, name: progName(id) });
  } catch { /* no tcx on this hook */ }
  let shown: unknown[] = [];
  try {
    shown = JSON.parse(run(['nsenter', `--net=${n.netnsPath}`, '--', 'tc', '-j', 'filter', 'show', 'dev', veth, dir]) || '[]') as unknown[];
  } catch { /* no clsact */ }
  for (const f of shown as { kind?: string; pref?: number; options?: { handle?: string; bpf_name?: string; prog?: { id?: number; name?: string } } }[]) {
    if (f.kind !== 'bpf' || !f.options) continue;
    const id = f.options.prog?.id ?? 0;
    out.push({ kind: 'legacy', id, pref: f.pref, handle: f.options.handle, name: f.options.prog?.name ?? (id ? progName(id) : f.options.bpf_name ?? '') });
  }
  return out;
}

/** Our datapath's programs on a hook (mwsc_to_pod / mwsc_from_pod: the sidecar's tc programs, named `mwsc_` by meshwarp.h). */
export function ourTc(n: LabNode, veth: string, dir: 'ingress' | 'egress'): TcProg[] {
  return tcHook(n, veth, dir).filter((p) => p.name === 'mwsc_to_pod' || p.name === 'mwsc_from_pod');
}

/** Every non-BPF (or BPF) filter on a hook as `tc -j` prints them: for foreign-filter checks. */
export function tcFilters(n: LabNode, veth: string, dir: 'ingress' | 'egress'): { kind?: string; pref?: number }[] {
  try {
    return (JSON.parse(run(['nsenter', `--net=${n.netnsPath}`, '--', 'tc', '-j', 'filter', 'show', 'dev', veth, dir]) || '[]') as { kind?: string; pref?: number; options?: unknown }[])
      .filter((f) => f.options !== undefined);
  } catch {
    return [];
  }
}

/** Runs a command in the node netns (as root, no cgroup change); throws on failure. */
export function inNode(n: LabNode, argv: string[]): string {
  return run(['nsenter', `--net=${n.netnsPath}`, '--', ...argv]);
}

/**
 * The agent's tc pins of one sandbox: `<pin-root>/links/tc/<sandbox>/` holds `tcx-<dir>`
 * (a tcx link) or `cls-<ifindex>-<dir>` (the program of a legacy filter). Keyed by sandbox,
 * not ifindex (the kernel reuses ifindexes); bpffs names cannot hold '.', so it is %-encoded.
 */
export function tcPins(pinRoot: string, sandboxId: string): string[] {
  const dir = `${pinRoot}/links/tc/${encodeURIComponent(sandboxId).replace(/\./g, '%2E')}`;
  return existsSync(dir) ? readdirSync(dir).sort() : [];
}

/** The project's bounded polling (src/lab/proc.ts), with the longer defaults these agent-restart tests need. */
export const eventually = (fn: () => boolean | Promise<boolean>, ms = 5000, step = 50): Promise<boolean> => pollUntil(fn, ms, step);

export { CniChainError };

// ---- a lab with agents and the CNI chain ----

export type TcMode = 'tcx' | 'legacy';
export const TC_MODES: readonly TcMode[] = ['tcx', 'legacy'];

export interface CniLabOptions {
  /** Test-name tag (1-3 chars) for the lab prefix. */
  tag: string;
  /** How many nodes (default 1); node1 gets the agent. */
  nodes?: number;
  /** `--tc` of node1's agent (default: not passed, i.e. auto). */
  tc?: TcMode;
  agentArgs?: string[];
  failurePolicy?: 'closed' | 'open';
  /** meshwarp.dataplane of node1's CNI conf (default: not set, i.e. sidecar). */
  dataplane?: 'sidecar' | 'ambient';
  /** Start node1's agent (default true). */
  start?: boolean;
  /** Runs after the nodes exist and before the agent starts. */
  beforeAgent?: (lab: Lab, n1: LabNode) => void | Promise<void>;
}

export interface CniLab {
  lab: Lab;
  n1: LabNode;
  n2: LabNode | undefined;
  agent: LabAgent;
  rt: CniRuntime;
  /** The agent's stderr lines (JSON logs), across restarts. */
  agentLog: string[];
  /** Each plugin's stderr lines. */
  pluginLog: { line: string; plugin: string; command: string }[];
}

/** Lab + agent on node1 (as the lab starts it, with its documented flags) + node1's CNI chain; cleaned up after the test. */
export async function cniLab(t: TestContext, o: CniLabOptions): Promise<CniLab | undefined> {
  if (!existsSync(join(DEBIAN_CNI_DIR, 'bridge'))) {
    if (inCI) throw new Error(`${DEBIAN_CNI_DIR}/bridge missing (containernetworking-plugins)`);
    t.skip('containernetworking-plugins not installed');
    return undefined;
  }
  const lab = await Lab.create({ prefix: uniquePrefix(o.tag) });
  let agent: LabAgent | undefined;
  t.after(async () => {
    try { await agent?.kill(); } finally { await lab.destroy(); }
  });
  const n1 = lab.addNode('node1');
  const n2 = (o.nodes ?? 1) > 1 ? lab.addNode('node2') : undefined;
  const agentLog: string[] = [];
  agent = new LabAgent(n1, { args: [...(o.tc ? ['--tc', o.tc] : []), ...(o.agentArgs ?? [])], onLog: (l) => agentLog.push(l) });
  const pluginLog: CniLab['pluginLog'] = [];
  lab.enableCni(n1, { agentSocket: agent.socket, failurePolicy: o.failurePolicy ?? 'closed', dataplane: o.dataplane, onLog: (line, plugin, command) => pluginLog.push({ line, plugin, command }) });
  await o.beforeAgent?.(lab, n1);
  if (o.start !== false) await agent.start();
  return { lab, n1, n2, agent, rt: new CniRuntime(lab, n1), agentLog, pluginLog };
}

/** Agent log lines (parsed) at `level`. */
export function logsAt(lines: string[], level: string): Record<string, unknown>[] {
  return lines.flatMap((l) => { try { return [JSON.parse(l) as Record<string, unknown>]; } catch { return []; } }).filter((l) => l.level === level);
}

export interface PodView { containerId: string; podNamespace: string; podName: string; netns: string; ip4?: string; ip6?: string; hostVeth?: { name: string; ifindex: number } }

export async function agentPods(agent: LabAgent): Promise<PodView[]> {
  return (await agent.request<{ pods: PodView[] }>('GET', '/v1/pods')).pods;
}

export interface StatusView { pods: number; maps: Record<string, number>; counters: Record<string, number> }

export async function agentStatus(agent: LabAgent): Promise<StatusView> {
  return agent.request<StatusView>('GET', '/v1/status');
}

/** Pod-state maps (per-connection maps left out: they follow live connections, not pods). */
export const POD_MAPS = ['pod_config', 'local_pods', 'port_rules', 'cidr_rules'] as const;

export function podMaps(s: StatusView): Record<string, number> {
  return Object.fromEntries(POD_MAPS.map((m) => [m, s.maps[m]]));
}

/** `meshwarp <args>` (the CLI, run from sources) in the node netns; resolves with its outcome. */
export function cli(n: LabNode, args: string[]): Promise<RunResult> {
  return n.run([NODE, '--disable-warning=ExperimentalWarning', CLI, ...args], { timeoutMs: 60_000 });
}

// SPDX-License-Identifier: Apache-2.0
// The conformance suite's harness: a two-node lab whose meshed pods run a real sidecar
// (src/proxy, as the profile's proxy uid) and an app server, with one interception driver
// per node. The driver is picked from MESHWARP_MODE in createDriver() below, the only
// mode-specific place: every scenario file runs unchanged against every mode.
//
// How the scenarios tell captured from direct traffic: the app server answers with the
// remote end it saw. A direct connection shows exactly the client's own local end; one that
// went through a sidecar shows the sidecar's upstream socket (another port, and for inbound
// capture the server pod's own IP). The sidecar's --log lines add what it read with
// SO_ORIGINAL_DST (origDst) and the client end it accepted.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { createDriver as createModeDriver } from '../../src/datapath/index.ts';
import { limitations, parseDataplane, parseEngine, type Dataplane, type DatapathDriver, type Engine } from '../../src/datapath/driver.ts';
import type { AmbientEbpfDriver, AmbientEbpfOptions } from '../../src/datapath/ambient/driver.ts';
import { labTarget, type PodTarget } from '../../src/datapath/pod.ts';
import type { TcMode } from '../../src/datapath/ebpf/tc.ts';
import { Lab, LabNodeProxy, Sandbox, runAll, uniquePrefix, waitForLine, type LabNode, type LabPod } from '../../src/lab/index.ts';
import type { NodeProxyDns } from '../../src/lab/node-proxy.ts';
import { TIME_SCALE } from '../../src/lab/proc.ts';
import { resolvePodPolicy, type PodPolicy, type Profile } from '../../src/profiles/index.ts';
import { createCgroup } from '../../src/sys/cgroup.ts';
import { hostPort } from '../helpers/http.ts';
import { gateOn, inCI, kernelUnavailable } from '../helpers/kernel.ts';
import * as kernelFeatures from '../../src/bpf/features.ts';

export { hostPort };

/** The engine under test (MESHWARP_ENGINE; MESHWARP_MODE is its old name). */
export const MODE: Engine = parseEngine(process.env.MESHWARP_ENGINE ?? process.env.MESHWARP_MODE ?? 'ebpf');
/** The dataplane under test (MESHWARP_DATAPLANE: sidecar, the default, or ambient). */
export const DATAPLANE: Dataplane = parseDataplane(process.env.MESHWARP_DATAPLANE ?? 'sidecar');
/** tc attachment of the eBPF engine (MESHWARP_TC: auto, tcx or legacy cls_bpf). */
export const TC = parseTc(process.env.MESHWARP_TC ?? 'auto');
export const APP_PORT = 8080;

/** The suite's label: the engine, plus the tc method when one is forced. */
export const SUITE = `${DATAPLANE === 'sidecar' ? '' : `${DATAPLANE}/`}${TC === 'auto' ? MODE : `${MODE}, tc ${TC}`}`;

function parseTc(s: string): TcMode {
  if (s === 'auto' || s === 'tcx' || s === 'legacy') return s;
  throw new Error(`MESHWARP_TC: expected auto, tcx or legacy, got ${JSON.stringify(s)}`);
}
/** An ordinary application uid (not any mesh's proxy uid). */
export const APP_UID = 1000;
export const FAMILIES = [4, 6] as const;
export type Family = (typeof FAMILIES)[number];

export type ConformanceDriver = DatapathDriver;

/** What every mode's driver is constructed with, per node. */
export interface DriverNodeOptions {
  pinRoot: string;
  cgroupPath: string;
  nodeNetnsPath: string;
  nodeIps: string[];
  tc?: TcMode;
  ambient?: Partial<Omit<AmbientEbpfOptions, 'pinRoot' | 'nodeIps'>>;
  /** eBPF S4 (sockmap) mode; default the driver's (auto). */
  sockmap?: 'auto' | 'off' | 'force';
}

/**
 * The one place that maps MESHWARP_MODE to a driver: the project's own factory, so the
 * suite also covers how the agent picks a mode.
 */
export async function createDriver(opts: DriverNodeOptions, mode: Engine = MODE): Promise<ConformanceDriver> {
  return await createModeDriver(mode, opts, DATAPLANE);
}

/**
 * `describe` skip value: false when the suite can run; a reason outside CI; under CI a
 * missing kernel feature is a failure, never a skip.
 */
export function suiteSkip(dataplane: Dataplane = 'sidecar'): string | false {
  if (dataplane !== DATAPLANE) return `${dataplane} scenarios (this run: MESHWARP_DATAPLANE=${DATAPLANE})`;
  const why = kernelUnavailable();
  if (why && inCI) throw new Error(`conformance suite cannot run: ${why} (CI=true makes this a failure)`);
  if (why) return why;
  // The eBPF engine's datapath must load on this kernel (sidecar: Linux ≥ 5.15; docs/kernels.md).
  if (MODE === 'ebpf') {
    const gate = gateOn([`datapath.${dataplane}`], kernelFeatures);
    if ('fail' in gate) throw new Error(gate.fail);
    if ('skip' in gate) return gate.skip;
  }
  return false;
}

// ---- processes ----

const NODE = process.execPath;
const TOOL = fileURLToPath(new URL('./podtool.ts', import.meta.url));
const PROXY = fileURLToPath(new URL('../../src/proxy/main.ts', import.meta.url));
/** Children get a minimal environment (NODE_EXTRA_CA_CERTS alone costs ~40 ms per start). */
const CHILD_ENV: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' };

function nodeArgv(script: string, args: string[]): string[] {
  return [NODE, '--disable-warning=ExperimentalWarning', script, ...args];
}

/** What the app server saw of a connection. */
export interface ServerReply {
  name: string;
  uid: number;
  remote: string;
  remotePort: number;
  local: string;
  localPort: number;
}

/** One request from podtool `connect`: the client's own ends, then the server's reply. */
export interface ConnectResult {
  ok: boolean;
  local?: string;
  localPort?: number;
  peer?: string;
  peerPort?: number;
  reply?: ServerReply | null;
  code?: string;
  message?: string;
}

export interface LoadResult { total: number; ok: number; errors: Record<string, number>; ms: number }

/** IPv4 text without the ::ffff: of a dual-stack socket, so addresses compare as written. */
export function norm(addr: string | undefined): string {
  return (addr ?? '').replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/i, '');
}


/** Splits "1.2.3.4:80" / "[::1]:80" / "[::ffff:1.2.3.4]:80" into a normalised address and port. */
export function splitHostPort(s: string): { addr: string; port: number } {
  const m = /^\[?(.*?)\]?:(\d+)$/.exec(s);
  if (!m) throw new Error(`not host:port: ${s}`);
  return { addr: norm(m[1]), port: Number(m[2]) };
}

/** Starts the app server (podtool serve) in `sb` as `uid`; resolves once it listens on every port. */
export async function serveIn(sb: Sandbox, name: string, ports: number[], uid = APP_UID): Promise<ChildProcess> {
  const child = sb.spawn(nodeArgv(TOOL, ['serve', '--name', name, '--ports', ports.join(',')]), { uid, env: CHILD_ENV });
  await waitForLine(child, /^listening$/, 10_000);
  return child;
}

/** One request from inside `from` (pod or node) to host:port as `uid`. */
export async function connectFrom(from: Sandbox, host: string, port: number, opts: { uid?: number; timeoutMs?: number } = {}): Promise<ConnectResult> {
  const timeout = opts.timeoutMs ?? 3000;
  const r = await from.run(nodeArgv(TOOL, ['connect', '--host', host, '--port', String(port), '--timeout', String(timeout)]),
    { uid: opts.uid ?? APP_UID, env: CHILD_ENV, timeoutMs: timeout + 5000 });
  if (r.code !== 0) throw new Error(`podtool connect in ${from.name} failed (${r.code ?? r.signal}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as ConnectResult;
}

/** Many short requests from inside `from`, bounded concurrency. */
export async function loadFrom(from: Sandbox, host: string, port: number, count: number, concurrency: number, uid = APP_UID): Promise<LoadResult> {
  const r = await from.run(nodeArgv(TOOL, ['load', '--host', host, '--port', String(port), '--count', String(count),
    '--concurrency', String(concurrency), '--timeout', '5000']), { uid, env: CHILD_ENV, timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`podtool load in ${from.name} failed (${r.code ?? r.signal}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as LoadResult;
}

/** getsockopt battery (podtool probe) on sockets made in `from`; see podtool.ts. */
export async function probeFrom(from: Sandbox, host: string, remote?: string, uid = APP_UID): Promise<Record<string, unknown>> {
  const args = ['probe', '--host', host, ...(remote ? ['--remote', remote] : [])];
  const r = await from.run(nodeArgv(TOOL, args), { uid, env: CHILD_ENV, timeoutMs: 10_000 });
  if (r.code !== 0) throw new Error(`podtool probe in ${from.name} failed (${r.code ?? r.signal}): ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

/** The connection reached the server without anything in between. */
export function assertDirect(r: ConnectResult, server: string, what: string): void {
  assert.ok(r.ok && r.reply, `${what}: request failed: ${JSON.stringify(r)}`);
  assert.equal(r.reply.name, server, `${what}: answered by ${r.reply.name}`);
  assert.deepEqual([norm(r.reply.remote), r.reply.remotePort], [norm(r.local), r.localPort],
    `${what}: the server saw ${hostPort(norm(r.reply.remote), r.reply.remotePort)} but the client is ` +
    `${hostPort(norm(r.local), r.localPort ?? 0)} (connected to ${hostPort(norm(r.peer), r.peerPort ?? 0)}): not a direct connection`);
}

/** The request succeeded but the server saw another connection than the client's (a proxy in between). */
export function assertProxied(r: ConnectResult, server: string, what: string): ServerReply {
  assert.ok(r.ok && r.reply, `${what}: request failed: ${JSON.stringify(r)}`);
  assert.equal(r.reply.name, server, `${what}: answered by ${r.reply.name}`);
  assert.notDeepEqual([norm(r.reply.remote), r.reply.remotePort], [norm(r.local), r.localPort],
    `${what}: the server saw the client's own socket ${hostPort(norm(r.local), r.localPort ?? 0)}: the connection was not captured`);
  return r.reply;
}

// ---- DNS ----

/**
 * dnsmasq in `sb` on `addrs`:53 as a real nameserver answering `records` (`NAME,IP[,IP]`, its
 * --host-record); resolves once it started. `log` gets its query log lines (--log-queries).
 */
export async function startDnsmasq(sb: Sandbox, addrs: string[], records: string[], log?: string[]): Promise<ChildProcess> {
  const child = sb.spawn(['dnsmasq', '-k', '-C', '/dev/null', '--no-resolv', '--no-hosts', '--no-poll', '--pid-file=', '--user=root',
    '--bind-interfaces', ...addrs.map((a) => `--listen-address=${a}`), '--port=53', ...records.map((r) => `--host-record=${r}`),
    ...(log ? ['--log-queries'] : []), '--log-facility=-'], { stdio: ['ignore', 'ignore', 'pipe'] });
  const lines = log ?? [];
  child.stderr!.setEncoding('utf8');
  let buf = '';
  let started: () => void = () => {};
  const up = new Promise<void>((r) => { started = r; });
  child.stderr!.on('data', (d: string) => {
    buf += d;
    const parts = buf.split('\n');
    buf = parts.pop() ?? '';
    lines.push(...parts);
    if (parts.some((l) => /started, version/.test(l))) started();
  });
  let timer: NodeJS.Timeout | undefined;
  const failed = new Promise<never>((_, rej) => {
    child.once('exit', (c) => rej(new Error(`dnsmasq in ${sb.name} exited (${c}): ${lines.slice(-3).join(' | ')}`)));
    timer = setTimeout(() => rej(new Error(`dnsmasq in ${sb.name} did not start`)), 10_000);
  });
  failed.catch(() => {});
  try { await Promise.race([up, failed]); } finally { clearTimeout(timer); }
  return child;
}

// ---- sidecar ----

/** One --log line of src/proxy (written when a proxied connection has closed). */
export interface ProxyLogLine {
  /** 'dns': a query to the DNS proxy (name, answer 'local' | 'upstream' | 'truncated' | 'none', proto udp | tcp). */
  dir: 'outbound' | 'inbound' | 'dns';
  name?: string;
  proto?: string;
  answer?: string;
  tag?: string;
  client: string;
  origDst: string | null;
  upstream: string | null;
  bytesIn: number;
  bytesOut: number;
  ms: number;
  error?: string;
}

export class Sidecar {
  readonly child: ChildProcess;
  readonly name: string;
  /** The policy whose ports and uid it runs with. */
  readonly policy: PodPolicy;
  readonly lines: ProxyLogLine[] = [];
  /** Non-JSON stderr, kept for failure messages. */
  readonly noise: string[] = [];
  readonly #waiters = new Set<() => void>();

  private constructor(child: ChildProcess, name: string, policy: PodPolicy) {
    this.child = child;
    this.name = name;
    this.policy = policy;
    let buf = '';
    child.stderr?.on('data', (b: Buffer) => {
      buf += b.toString('utf8');
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      for (const l of parts) {
        try {
          this.lines.push(JSON.parse(l) as ProxyLogLine);
        } catch {
          if (l.trim() !== '') this.noise.push(l);
        }
      }
      for (const w of this.#waiters) w();
    });
  }

  /**
   * Starts src/proxy in `pod` as `uid` on the policy's ports and waits for "ready";
   * opts.args are more proxy options (its DNS proxy), opts.resolvConf the pod's resolv.conf.
   */
  static async start(pod: LabPod, policy: PodPolicy, opts: { args?: string[]; resolvConf?: string } = {}): Promise<Sidecar> {
    const child = pod.spawn(nodeArgv(PROXY, ['--outbound', String(policy.outboundPort), '--inbound', String(policy.inboundPort),
      '--log', '--tag', pod.name, ...opts.args ?? []]), { uid: policy.proxyUid, env: CHILD_ENV, resolvConf: opts.resolvConf });
    const sc = new Sidecar(child, pod.name, policy);
    await waitForLine(child, /^ready$/, 10_000);
    return sc;
  }

  /** Index to pass as `since`, so only lines logged after this point count. */
  mark(): number {
    return this.lines.length;
  }

  find(pred: (l: ProxyLogLine) => boolean, since = 0): ProxyLogLine | undefined {
    for (let i = since; i < this.lines.length; i++) if (pred(this.lines[i])) return this.lines[i];
    return undefined;
  }

  /** A log line from the client end `clientPort` (the port the sidecar accepted from). */
  /**
   * The line of the connection from client end (address, port). Both count: another pod may use
   * the same port number at the same time (a port-only match once mistook b's connection for a's).
   */
  fromClient(dir: ProxyLogLine['dir'], client: { local?: string; localPort?: number }): ProxyLogLine | undefined {
    return this.find((l) => {
      const c = splitHostPort(l.client);
      return l.dir === dir && c.port === client.localPort && norm(c.addr) === norm(client.local ?? '');
    });
  }

  /** Resolves with the first line matching `pred`; rejects after timeoutMs listing what was seen. */
  waitFor(pred: (l: ProxyLogLine) => boolean, what: string, since = 0, timeoutMs = 3000): Promise<ProxyLogLine> {
    const hit = this.find(pred, since);
    if (hit) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const h = this.find(pred, since);
        if (!h) return;
        done();
        resolve(h);
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`sidecar ${this.name}: no log line for ${what} within ${timeoutMs} ms; ` +
          `last lines: ${JSON.stringify(this.lines.slice(-5))}${this.noise.length ? `; stderr: ${this.noise.slice(-3).join(' | ')}` : ''}`));
      }, timeoutMs * TIME_SCALE);
      const done = (): void => { clearTimeout(timer); this.#waiters.delete(check); };
      this.#waiters.add(check);
    });
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 2000))]);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

// ---- lab ----

export interface PodSpec {
  node: string;
  name: string;
  /** App server ports (podtool serve, as APP_UID); default [APP_PORT]; [] for none. */
  serve?: number[];
  /** Mesh the pod at creation with this profile (sidecar started first). */
  profile?: string | Profile;
  annotations?: Record<string, string>;
}

/**
 * The pods the scenario files share, by name, so each file lists the ones it needs (and
 * its header draws its lab):
 *   a: node1, meshed (istio)   b, u: node1, unmeshed   c: node1, meshed by another mesh (osm)
 *   d: node2, meshed (istio)   w: node2, unmeshed
 */
const PRESET: Record<string, Omit<PodSpec, 'name'>> = {
  a: { node: 'node1', profile: 'istio' },
  b: { node: 'node1' },
  c: { node: 'node1', profile: 'osm' },
  d: { node: 'node2', profile: 'istio' },
  u: { node: 'node1' },
  w: { node: 'node2' },
};

/** Specs of the preset pods `names`, in that order; those in `unmeshed` start unmeshed (the test meshes them). */
export function presetPods(names: string[], opts: { unmeshed?: string[] } = {}): PodSpec[] {
  return names.map((name) => {
    const p = PRESET[name];
    if (!p) throw new Error(`no preset pod ${name}`);
    return opts.unmeshed?.includes(name) ? { node: p.node, name } : { ...p, name };
  });
}

export class MeshPod {
  readonly env: MeshLab;
  readonly sb: LabPod;
  policy: PodPolicy | undefined;
  sidecar: Sidecar | undefined;
  server: ChildProcess | undefined;
  /** The pod's nameservers (its resolv.conf), given to the driver with the pod. */
  dnsServers: string[] | undefined;
  /** The pod's resolv.conf file and more options for its sidecar (DNS scenarios). */
  resolvConf: string | undefined;
  sidecarArgs: string[] = [];

  constructor(env: MeshLab, sb: LabPod) {
    this.env = env;
    this.sb = sb;
  }

  get name(): string { return this.sb.name; }
  get nodeName(): string { return this.sb.node.name; }
  get driver(): ConformanceDriver { return this.env.driver(this.nodeName); }
  ip(fam: Family): string { return fam === 4 ? this.sb.ip4 : this.sb.ip6; }

  ref(): PodTarget {
    const t = labTarget(`${this.nodeName}.${this.name}`, this.sb.netnsPath, [this.sb.ip4, this.sb.ip6], { name: this.sb.hostVeth, ifindex: this.sb.hostIfindex });
    return this.dnsServers ? { ...t, dnsServers: this.dnsServers } : t;
  }

  async serve(ports: number[] = [APP_PORT]): Promise<void> {
    this.server = await serveIn(this.sb, this.name, ports);
  }

  /**
   * Starts our sidecar (if not running; opts.sidecar false: the test runs its own proxy)
   * and meshes the pod; returns the policy.
   */
  async mesh(profile: string | Profile, annotations: Record<string, string> = {}, opts: { sidecar?: boolean } = {}): Promise<PodPolicy> {
    const policy = resolvePodPolicy(profile, annotations);
    const cur = this.sidecar?.policy;
    const same = cur !== undefined && cur.proxyUid === policy.proxyUid && cur.outboundPort === policy.outboundPort &&
      cur.inboundPort === policy.inboundPort;
    if (DATAPLANE === 'ambient') opts = { ...opts, sidecar: false }; // the node proxy serves the pod
    if (opts.sidecar !== false && !same) {
      await this.sidecar?.stop();
      this.sidecar = await Sidecar.start(this.sb, policy, { args: this.sidecarArgs, resolvConf: this.resolvConf });
    }
    await this.driver.mesh(this.ref(), policy);
    this.policy = policy;
    return policy;
  }

  async unmesh(): Promise<void> {
    await this.driver.unmesh(this.ref());
    this.policy = undefined;
  }

  /** A request from this pod's app (APP_UID unless opts.uid). */
  connect(host: string, port: number = APP_PORT, opts: { uid?: number; timeoutMs?: number } = {}): Promise<ConnectResult> {
    return connectFrom(this.sb, host, port, opts);
  }

  /** A request from this pod to `target`'s IP of family `fam`. */
  connectTo(target: MeshPod, fam: Family, port: number = APP_PORT, opts: { uid?: number } = {}): Promise<ConnectResult> {
    return this.connect(target.ip(fam), port, opts);
  }
}

export interface MeshLabOptions {
  /** 1-3 lowercase chars, the start of the lab prefix. */
  tag?: string;
  /** Runs once nodes and pods exist, before any driver starts (e.g. to attach a foreign program first). */
  beforeDrivers?: (lab: Lab) => void | Promise<void>;
  /** Ambient: driver settings, and whether each node gets its node proxy at creation (default true). */
  ambient?: DriverNodeOptions['ambient'] & { nodeProxy?: boolean };
  /** Extra driver options for every node (e.g. sockmap). */
  driver?: Pick<DriverNodeOptions, 'sockmap'>;
  /** Ambient: the node proxies run a DNS proxy (and announce its port); called once the pods exist. */
  nodeProxyDns?: (env: MeshLab) => NodeProxyDns;
}

/** Two nodes (node1, node2), one driver each, and the pods of `specs`. */
export class MeshLab {
  readonly lab: Lab;
  readonly pinBase: string;
  readonly drivers = new Map<string, ConformanceDriver>();
  readonly pods = new Map<string, MeshPod>();
  /** Ambient: the node proxy of each node. */
  readonly proxies = new Map<string, LabNodeProxy>();
  #ambient: MeshLabOptions['ambient'];
  #proxyDns: NodeProxyDns | undefined;
  #bare: string | undefined;

  private constructor(lab: Lab) {
    this.lab = lab;
    this.pinBase = `/sys/fs/bpf/${lab.prefix}`;
  }

  static async create(specs: PodSpec[], opts: MeshLabOptions = {}): Promise<MeshLab> {
    const lab = await Lab.create({ prefix: uniquePrefix(opts.tag ?? 'mwc') });
    const env = new MeshLab(lab);
    env.#ambient = opts.ambient;
    try {
      for (const n of ['node1', 'node2']) lab.addNode(n);
      for (const s of specs) {
        if (env.pods.has(s.name)) throw new Error(`pod name ${s.name} used twice`);
        env.pods.set(s.name, new MeshPod(env, lab.addPod(s.node, s.name)));
      }
      await opts.beforeDrivers?.(lab);
      env.#proxyDns = opts.nodeProxyDns?.(env);
      for (const n of lab.nodes.values()) {
        const d = await createDriver({ ...env.driverOptions(n), ...opts.driver });
        env.drivers.set(n.name, d);
        assert.equal(d.engine, MODE, `driver for engine ${MODE} reports engine ${d.engine}`);
        await d.start();
        if (DATAPLANE === 'ambient' && opts.ambient?.nodeProxy !== false) await env.startNodeProxy(n.name);
      }
      await Promise.all(specs.map((s) => (s.serve ?? [APP_PORT]).length > 0 ? env.pod(s.name).serve(s.serve) : undefined));
      await Promise.all(specs.filter((s) => s.profile !== undefined).map((s) => env.pod(s.name).mesh(s.profile!, s.annotations)));
    } catch (e) {
      await env.destroy().catch(() => {});
      throw e;
    }
    return env;
  }

  /** Per-node driver options: its own pin root, its cgroup, its netns, and every address it owns. */
  driverOptions(n: LabNode): DriverNodeOptions {
    return {
      pinRoot: `${this.pinBase}/${n.name}`,
      cgroupPath: n.cgroupPath,
      nodeNetnsPath: n.netnsPath,
      // Probes to local pods leave the node from its bridge address; keep the transit IP too.
      nodeIps: [n.addrs.gw4, n.addrs.gw6, n.ip4, n.ip6],
      tc: TC,
      ...(this.#ambient ? { ambient: this.#ambient } : {}),
    };
  }

  /** Ambient: the node's ambient driver. */
  ambientDriver(node: string): Pick<AmbientEbpfDriver, 'setNodeProxy' | 'removeNodeProxy' | 'setFailPolicy' | 'nodeProxies'> {
    const d = this.driver(node);
    if (d.dataplane !== 'ambient') throw new Error(`driver of ${node} is ${d.dataplane}, not ambient`);
    return d as unknown as AmbientEbpfDriver;
  }

  /** Ambient: starts a node proxy (sandbox `name`) on `node` and announces it to the node's driver. */
  async startNodeProxy(node: string, name = 'ztunnel', ready = true): Promise<LabNodeProxy> {
    const p = await LabNodeProxy.start(this.node(node), name, { dns: this.#proxyDns });
    if (!this.proxies.has(node) || name === 'ztunnel') this.proxies.set(node, p);
    await this.ambientDriver(node).setNodeProxy(p.announcement(ready));
    return p;
  }

  proxy(node: string): LabNodeProxy {
    const p = this.proxies.get(node);
    if (!p) throw new Error(`no node proxy on ${node}`);
    return p;
  }

  get prefix(): string { return this.lab.prefix; }

  pod(name: string): MeshPod {
    const p = this.pods.get(name);
    if (!p) throw new Error(`no pod ${name}`);
    return p;
  }

  node(name: string): LabNode { return this.lab.node(name); }

  driver(node: string): ConformanceDriver {
    const d = this.drivers.get(node);
    if (!d) throw new Error(`no driver on ${node}`);
    return d;
  }

  /**
   * Deletes pod `name` as a runtime does (unmeshed first, as its CNI DEL would), and creates a
   * new pod of that name on the same node at once: new netns, veth and MAC, the same addresses
   * (the lab, like host-local, hands out the lowest free one). Serves APP_PORT; not meshed.
   */
  async recreate(name: string): Promise<MeshPod> {
    const old = this.pod(name);
    if (old.policy) await old.unmesh();
    await old.sidecar?.stop();
    old.server?.kill('SIGKILL');
    this.lab.removePod(old.sb);
    this.pods.delete(name);
    return this.addPod(old.nodeName, name);
  }

  /** A new pod on `node` after the lab was created, serving APP_PORT, not meshed. */
  async addPod(node: string, name: string): Promise<MeshPod> {
    if (this.pods.has(name)) throw new Error(`pod name ${name} used twice`);
    const pod = new MeshPod(this, this.lab.addPod(node, name));
    this.pods.set(name, pod);
    await pod.serve();
    return pod;
  }

  /** Stops one node's driver now (the lab stays); destroy() will not stop it again. */
  async stopDriver(node: string): Promise<void> {
    const d = this.driver(node);
    this.drivers.delete(node);
    await d.stop();
  }

  /** The pod's netns in a cgroup below the lab but outside every node: no driver program runs there. */
  bare(pod: MeshPod): Sandbox {
    this.#bare ??= createCgroup(`${this.prefix}/bare`);
    return new Sandbox(this.lab, `${pod.name}-bare`, pod.sb.netns, this.#bare);
  }

  /** Stops the drivers and sidecars, destroys the lab, removes the pin base; reports every failure. */
  async destroy(): Promise<void> {
    const drivers = [...this.drivers.values()];
    this.drivers.clear();
    await runAll(`teardown of ${this.prefix}`, [
      ...[...this.pods.values()].map((p) => () => p.sidecar?.stop()),
      ...[...this.proxies.values()].map((p) => () => p.stop()),
      ...drivers.map((d) => () => d.stop()),
      () => this.lab.destroy(),
      () => rmSync(this.pinBase, { recursive: true, force: true }),
    ]);
  }
}

/** Skips the test when the mode declares it cannot provide `feature`; returns true if skipped. */
export function skipIfLimited(t: { skip(msg?: string): void }, env: MeshLab, feature: string): boolean {
  for (const d of env.drivers.values()) {
    const l = limitations(d).find((x) => x.feature === feature);
    if (l) {
      t.skip(`${MODE} mode: ${l.reason}`);
      return true;
    }
  }
  return false;
}

/** A counter of the driver by its C name (e.g. tuple_failed); undefined when the mode has no stats. */
export function stat(d: ConformanceDriver, name: string): bigint | undefined {
  return d.features.stats?.()[name];
}

export function famName(fam: Family): string {
  return fam === 4 ? 'IPv4' : 'IPv6';
}

// SPDX-License-Identifier: Apache-2.0
// The container runtime's side of CNI, for the lab: what libcni does with a conflist
// (each plugin in turn, prevResult threaded through, DEL in reverse with the ADD-time
// config and result), run from inside the node's netns as kubelet + containerd would.
// A lab node's network is Debian's bridge + host-local on the node's pod bridge, with
// meshwarp-cni appended by the real installer (installCni).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { installCni } from '../cni/install.ts';
import { candidateNames, confToConflist, parseConfFile } from '../cni/conflist.ts';
import { cniErrorCode } from '../cni/errors.ts';
import type { NodeAddrs } from './addr.ts';
import type { PodNetwork } from './wire.ts';
import { TIME_SCALE } from './proc.ts';

export const DEBIAN_CNI_DIR = '/usr/lib/cni';
/** Debian's plugins speak at most 1.0.0. */
export const LAB_CNI_VERSION = '1.0.0';
export const LAB_NETWORK = 'k8s-pod-network';
/** host-local hands out .100-.254 (and ::100-::254); direct wiring stays below. */
export const CNI_FIRST_HOST = 100;
const PLUGIN_TIMEOUT_MS = 30_000;

export type CniCommand = 'ADD' | 'CHECK' | 'DEL';

export interface Conflist {
  cniVersion: string;
  name: string;
  plugins: Record<string, unknown>[];
  [k: string]: unknown;
}

/** The parts of a CNI 1.0 result the lab reads (the rest is kept as is). */
export interface CniResult {
  cniVersion: string;
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips?: { address: string; gateway?: string; interface?: number }[];
  [k: string]: unknown;
}

/** containerd sets up `lo` with its own built-in config, not from the conf dir. */
export const LOOPBACK_CONFLIST: Conflist = { cniVersion: LAB_CNI_VERSION, name: 'cni-loopback', plugins: [{ type: 'loopback' }] };

export interface PluginRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/**
 * A plugin of the chain failed. cniCode/msg/details are its CNI error; cniCode is -1 when it
 * printed none (not found, crash, timeout), and `code` is then 'ERR_CNI_PLUGIN_FAILED'.
 */
export class CniChainError extends Error {
  readonly code: string;
  readonly plugin: string;
  readonly command: CniCommand;
  readonly cniCode: number;
  readonly msg: string;
  readonly details: string;
  readonly stderr: string;

  constructor(plugin: string, command: CniCommand, cniCode: number, msg: string, details: string, stderr: string) {
    super(`CNI ${command}: plugin ${plugin} failed with code ${cniCode}: ${msg}${details ? ` (${details})` : ''}`);
    this.name = 'CniChainError';
    this.code = cniCode === -1 ? 'ERR_CNI_PLUGIN_FAILED' : cniErrorCode(cniCode);
    this.plugin = plugin;
    this.command = command;
    this.cniCode = cniCode;
    this.msg = msg;
    this.details = details;
    this.stderr = stderr;
  }
}

export interface ExecPluginOptions {
  timeoutMs?: number;
  /** Called with the child (e.g. Lab.track, so lab teardown kills a hanging plugin). */
  track?: (c: ChildProcess) => void;
}

/**
 * Runs one plugin binary with `nsenter --net=<netnsPath>`, a minimal environment (PATH plus
 * `env`, as runtimes pass), the config on stdin. Never rejects on the plugin's exit code.
 */
export function execPlugin(netnsPath: string, bin: string, env: Record<string, string>, stdin: string, opts: ExecPluginOptions = {}): Promise<PluginRun> {
  return new Promise((resolve, reject) => {
    const child = spawn('nsenter', [`--net=${netnsPath}`, '--', bin], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env } });
    opts.track?.(child);
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, opts.timeoutMs ?? PLUGIN_TIMEOUT_MS);
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString('utf8'); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString('utf8'); });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr, timedOut }); });
    child.stdin.on('error', () => { /* plugin exited without reading its config */ });
    child.stdin.end(stdin);
  });
}

/** The plugin binary for `type`: the first CNI_PATH directory that has it. */
export function findPlugin(type: string, cniPath: readonly string[]): string | undefined {
  return cniPath.map((d) => join(d, type)).find((f) => existsSync(f));
}

export interface ChainContext extends ExecPluginOptions {
  /** Netns the plugins run in: the node's (bridge sets sysctls and creates links where it runs). */
  netnsPath: string;
  /** CNI_PATH, searched in order for each plugin's binary. */
  cniPath: string[];
  /** Each plugin's stderr once it exited (only when it wrote some). */
  onStderr?: (plugin: string, command: CniCommand, text: string) => void;
  /** Each plugin's wall time, start of its process to exit (benchmarks: where a chain's time goes). */
  onPluginTime?: (plugin: string, command: CniCommand, ms: number) => void;
}

export interface RunChainOptions {
  /** ADD: none. CHECK/DEL: the result of the ADD (libcni's cached result). */
  prevResult?: unknown;
  /** DEL: run every plugin even after a failure, then throw the first error (runtime clean-up). */
  keepGoing?: boolean;
}

function chainError(type: string, cmd: CniCommand, r: PluginRun): CniChainError {
  try {
    const e = JSON.parse(r.stdout) as { code?: unknown; msg?: unknown; details?: unknown };
    if (typeof e.code === 'number' && typeof e.msg === 'string') {
      return new CniChainError(type, cmd, e.code, e.msg, typeof e.details === 'string' ? e.details : '', r.stderr);
    }
  } catch { /* not a CNI error */ }
  const how = r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit ${r.code}`;
  return new CniChainError(type, cmd, -1, `${how} without a CNI error: ${(r.stdout || r.stderr).trim().slice(0, 500)}`, '', r.stderr);
}

/**
 * What libcni does for a conflist: ADD/CHECK run the plugins in order, DEL in reverse; each
 * gets {cniVersion, name, ...entry, prevResult}. Resolves with the final ADD result.
 * Throws CniChainError for the first plugin that fails.
 */
export async function runChain(
  ctx: ChainContext, list: Conflist, cmd: CniCommand, env: Record<string, string>, opts: RunChainOptions = {},
): Promise<CniResult | undefined> {
  const order = cmd === 'DEL' ? [...list.plugins].reverse() : list.plugins;
  let result = opts.prevResult;
  let first: CniChainError | undefined;
  for (const p of order) {
    const type = String(p.type);
    const conf: Record<string, unknown> = { ...p, cniVersion: list.cniVersion, name: list.name };
    if (result !== undefined) conf.prevResult = result;
    const bin = findPlugin(type, ctx.cniPath);
    let err: CniChainError | undefined;
    if (bin === undefined) {
      err = new CniChainError(type, cmd, -1, `plugin ${type} not found in ${ctx.cniPath.join(':')}`, '', '');
    } else {
      const t0 = performance.now();
      const r = await execPlugin(ctx.netnsPath, bin, { ...env, CNI_COMMAND: cmd, CNI_PATH: ctx.cniPath.join(':') }, JSON.stringify(conf), ctx);
      ctx.onPluginTime?.(type, cmd, performance.now() - t0);
      if (r.stderr) ctx.onStderr?.(type, cmd, r.stderr);
      if (r.code !== 0) err = chainError(type, cmd, r);
      else if (cmd === 'ADD') {
        try {
          result = JSON.parse(r.stdout);
        } catch {
          err = new CniChainError(type, cmd, -1, `ADD printed no JSON result: ${r.stdout.trim().slice(0, 500)}`, '', r.stderr);
        }
      }
    }
    if (err) {
      if (!opts.keepGoing) throw err;
      first ??= err;
    }
  }
  if (first) throw first;
  return cmd === 'ADD' ? result as CniResult : undefined;
}

/** Where a lab node's CNI files live (under the lab run dir, so lab cleanup removes them). */
export interface NodeCniDirs {
  dir: string;
  binDir: string;
  confDir: string;
  /** meshwarp-cni installer state (and the plugin's compile cache). */
  stateDir: string;
  /** host-local's dataDir: one file per allocated IP under `<ipamDir>/<network>/`. */
  ipamDir: string;
}

export function nodeCniDirs(runDir: string, nodeName: string): NodeCniDirs {
  const dir = `${runDir}/${nodeName}/cni`;
  return { dir, binDir: `${dir}/bin`, confDir: `${dir}/net.d`, stateDir: `${dir}/state`, ipamDir: `${dir}/ipam` };
}

/**
 * The lab's primary CNI plugin (the CNI matrix, docs/kernels.md): Debian's `bridge`
 * (pods on the node's pod bridge, the default) or `ptp` (a veth per pod, routed /32 and
 * /128 from the node, the gateway address on every host veth, no bridge).
 * MESHWARP_CNI picks it for every lab of the process.
 */
export type LabCni = 'bridge' | 'ptp';
export const LAB_CNIS: readonly LabCni[] = ['bridge', 'ptp'];

export function labCni(env: NodeJS.ProcessEnv = process.env): LabCni {
  const v = env.MESHWARP_CNI ?? 'bridge';
  if (!(LAB_CNIS as readonly string[]).includes(v)) throw new Error(`MESHWARP_CNI=${v}: expected one of ${LAB_CNIS.join(', ')}`);
  return v as LabCni;
}

/** The node's own network (what the cluster's primary CNI would install): bridge or ptp + host-local, dual stack. */
export function labNodeConflist(a: NodeAddrs, bridge: string, ipamDir: string, cni: LabCni = labCni()): Conflist {
  const [p4, p6] = [a.podCidr4.split('/')[0].replace(/\.0$/, '.'), a.podCidr6.split('/')[0]];
  return {
    cniVersion: LAB_CNI_VERSION,
    name: LAB_NETWORK,
    plugins: [{
      ...(cni === 'ptp' ? { type: 'ptp', ipMasq: false } : { type: 'bridge', bridge, isGateway: true, ipMasq: false }),
      ipam: {
        type: 'host-local',
        ranges: [
          [{ subnet: a.podCidr4, rangeStart: `${p4}${CNI_FIRST_HOST}`, rangeEnd: `${p4}254`, gateway: a.gw4 }],
          [{ subnet: a.podCidr6, rangeStart: `${p6}${CNI_FIRST_HOST}`, rangeEnd: `${p6}254`, gateway: a.gw6 }],
        ],
        routes: [{ dst: '0.0.0.0/0' }, { dst: '::/0' }],
        dataDir: ipamDir,
      },
    }],
  };
}

export interface NodeCniSettings {
  agentSocket: string;
  failurePolicy?: 'closed' | 'open';
  excludeNamespaces?: string[];
  timeoutMs?: number;
  /** meshwarp.dataplane of the node's conf: the dataplane its pods join (default: the agent's sidecar). */
  dataplane?: 'sidecar' | 'ambient';
}

/**
 * Writes the node's conflist and runs the real installer on it, which appends meshwarp-cni
 * (or updates its settings) and writes the plugin wrapper. Safe to call again.
 */
export function installNodeCni(dirs: NodeCniDirs, a: NodeAddrs, bridge: string, s: NodeCniSettings): void {
  for (const d of [dirs.binDir, dirs.confDir, dirs.ipamDir]) mkdirSync(d, { recursive: true, mode: 0o755 });
  writeFileSync(join(dirs.confDir, '10-lab.conflist'), `${JSON.stringify(labNodeConflist(a, bridge, dirs.ipamDir), null, 2)}\n`);
  const settings = {
    socket: s.agentSocket, failurePolicy: s.failurePolicy ?? 'closed',
    ...(s.excludeNamespaces ? { excludeNamespaces: s.excludeNamespaces } : {}),
    // The plugin's own default (5 s) scaled for slow (emulated) kernels: MESHWARP_TIME_SCALE.
    ...(s.timeoutMs !== undefined ? { timeoutMs: s.timeoutMs } : TIME_SCALE > 1 ? { timeoutMs: Math.min(60_000, 5000 * TIME_SCALE) } : {}),
    ...(s.dataplane ? { dataplane: s.dataplane } : {}),
  };
  const r = installCni({ binDir: dirs.binDir, confDir: dirs.confDir, stateDir: dirs.stateDir, settings });
  if (!['inserted', 'updated', 'unchanged'].includes(r.action)) throw new Error(`meshwarp-cni install in ${dirs.confDir}: ${r.action} ${r.message ?? ''}`);
}

/** The network config a runtime loads from `confDir`: the lexically first file that parses. */
export function loadConflist(confDir: string): Conflist {
  for (const name of candidateNames(readdirSync(confDir))) {
    const p = parseConfFile(name, readFileSync(join(confDir, name), 'utf8'));
    if (p.kind === 'conflist') return p.obj as Conflist;
    if (p.kind === 'conf') return confToConflist(p.obj) as Conflist;
  }
  throw new Error(`no CNI network config in ${confDir}`);
}

/** The pod's network as the chain's final result describes it (host veth = the non-sandbox interface that is not the bridge). */
export function podNetworkFromResult(
  result: CniResult, bridge: string, gw: { gw4: string; gw6: string }, ifindexOf: (ifname: string) => number,
): PodNetwork {
  let ip4: { address: string; gateway?: string } | undefined;
  let ip6: { address: string; gateway?: string } | undefined;
  for (const ip of result.ips ?? []) {
    if (ip.address.includes(':')) ip6 ??= ip;
    else ip4 ??= ip;
  }
  const veth = (result.interfaces ?? []).find((i) => !i.sandbox && i.name !== bridge);
  if (!ip4 || !ip6 || !veth) throw new Error(`CNI result lacks an IPv4, an IPv6 or the host veth: ${JSON.stringify(result)}`);
  return {
    ip4: ip4.address.split('/')[0], ip6: ip6.address.split('/')[0],
    gw4: ip4.gateway ?? gw.gw4, gw6: ip6.gateway ?? gw.gw6,
    hostVeth: veth.name, hostIfindex: ifindexOf(veth.name),
  };
}

/** What a runtime keeps about a pod's network attachment (libcni's cache): DEL needs it. */
export interface PodCniAttachment {
  containerId: string;
  namespace: string;
  /** CNI_* variables of the pod (without CNI_COMMAND / CNI_PATH). */
  env: Record<string, string>;
  /** The conflist the ADD ran with, and its result. */
  conflist: Conflist;
  result: CniResult;
}

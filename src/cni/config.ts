// SPDX-License-Identifier: Apache-2.0
// Validation of what the runtime hands the plugin: CNI_* environment variables and the
// network configuration on stdin. Everything here is pure so it can be tested in-process.
import { CniCode, CniError } from './errors.ts';

export const SUPPORTED_VERSIONS: readonly string[] = ['1.0.0', '1.1.0'];
/** The version errors are reported in before a config was understood (understood by every 1.x runtime). */
export const FALLBACK_VERSION = '1.0.0';
export const DEFAULT_SOCKET = '/run/meshwarp/agent.sock';
export const DEFAULT_TIMEOUT_MS = 5000;
export const DEFAULT_EXCLUDE_NAMESPACES: readonly string[] = ['kube-system'];
/** The conflist "type": runtimes exec the binary of that name from CNI_PATH. */
export const PLUGIN_TYPE = 'meshwarp-cni';

export const COMMANDS = ['ADD', 'DEL', 'CHECK', 'VERSION', 'STATUS', 'GC'] as const;
export type Command = (typeof COMMANDS)[number];

export type FailurePolicy = 'closed' | 'open';

export interface MeshwarpSettings {
  socket: string;
  failurePolicy: FailurePolicy;
  excludeNamespaces: string[];
  timeoutMs: number;
  /** sidecar | ambient: the dataplane of the pods this network serves (`mode` is its old name). */
  dataplane?: 'sidecar' | 'ambient';
}

export interface NetConf {
  /** The parsed object as received (kept for fields we do not interpret). */
  raw: Record<string, unknown>;
  cniVersion: string;
  name: string;
  meshwarp: MeshwarpSettings;
  prevResult?: Record<string, unknown>;
}

export interface CniEnv {
  command: Command;
  containerId: string;
  netns: string;
  ifName: string;
  /** CNI_ARGS as key → value. */
  args: Map<string, string>;
}

export interface PodRef {
  namespace: string;
  name: string;
  infraContainerId: string;
}

const CONTAINER_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const NETWORK_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const VERSION_RE = /^\d+\.\d+\.\d+$/;
const MAX_ENV_LEN = 4096;

/** Which variables each command needs (spec 1.1, "Parameters"); STATUS/GC/VERSION need none we use. */
const REQUIRED_ENV: Record<Command, readonly string[]> = {
  ADD: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  CHECK: ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME'],
  DEL: ['CNI_CONTAINERID', 'CNI_IFNAME'],
  VERSION: [],
  STATUS: [],
  GC: [],
};

export function parseCommand(env: NodeJS.ProcessEnv): Command {
  const c = env.CNI_COMMAND;
  if (c === undefined || c === '') throw new CniError(CniCode.invalidEnv, 'missing environment variable CNI_COMMAND');
  if (!(COMMANDS as readonly string[]).includes(c)) {
    throw new CniError(CniCode.invalidEnv, `invalid environment variable CNI_COMMAND: unknown command ${JSON.stringify(c.slice(0, 64))}`,
      `supported commands: ${COMMANDS.join(', ')}`);
  }
  return c as Command;
}

function validIfName(s: string): boolean {
  return s !== '' && s !== '.' && s !== '..' && Buffer.byteLength(s) < 16 && !/[/:\s]/.test(s);
}

/** Parses `K=V;K2=V2` (spec: CNI_ARGS). */
export function parseCniArgs(s: string): Map<string, string> {
  const out = new Map<string, string>();
  if (s === '') return out;
  for (const pair of s.split(';')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new CniError(CniCode.invalidEnv, `invalid environment variable CNI_ARGS: malformed pair ${JSON.stringify(pair.slice(0, 64))}`, 'expected KEY=VALUE pairs separated by ";"');
    out.set(pair.slice(0, eq), pair.slice(eq + 1));
  }
  return out;
}

/** Checks the variables the command needs; the error names every offending variable. */
export function parseEnv(env: NodeJS.ProcessEnv, command: Command): CniEnv {
  const bad: string[] = [];
  const get = (k: string): string => env[k] ?? '';
  const required = REQUIRED_ENV[command];
  for (const k of required) if (get(k) === '') bad.push(`${k} (missing)`);
  const containerId = get('CNI_CONTAINERID');
  if (containerId !== '' && (!CONTAINER_ID_RE.test(containerId) || containerId.length > MAX_ENV_LEN)) bad.push('CNI_CONTAINERID (must start with an alphanumeric character followed by alphanumerics, "_", "." or "-")');
  const ifName = get('CNI_IFNAME');
  if (ifName !== '' && !validIfName(ifName)) bad.push('CNI_IFNAME (must be 1-15 bytes, not "." or "..", without "/", ":" or whitespace)');
  const netns = get('CNI_NETNS');
  if (netns.length > MAX_ENV_LEN || netns.includes('\0')) bad.push('CNI_NETNS (too long)');
  if (bad.length > 0) {
    throw new CniError(CniCode.invalidEnv, `invalid environment variables: ${bad.map((b) => b.split(' ')[0]).join(', ')}`, bad.join('; '));
  }
  const cniArgs = get('CNI_ARGS');
  if (cniArgs.length > MAX_ENV_LEN * 4) throw new CniError(CniCode.invalidEnv, 'invalid environment variable CNI_ARGS: too long');
  return { command, containerId, netns, ifName, args: parseCniArgs(cniArgs) };
}

export function podRef(env: CniEnv): PodRef {
  return {
    namespace: env.args.get('K8S_POD_NAMESPACE') ?? '',
    name: env.args.get('K8S_POD_NAME') ?? '',
    infraContainerId: env.args.get('K8S_POD_INFRA_CONTAINER_ID') ?? '',
  };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Decodes stdin bytes into a JSON object (code 6 on anything that is not a JSON object). */
export function decodeJsonObject(bytes: Buffer): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CniError(CniCode.decodeFailure, 'failed to decode network configuration: stdin is not valid UTF-8');
  }
  if (text.trim() === '') throw new CniError(CniCode.decodeFailure, 'failed to decode network configuration: stdin is empty');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new CniError(CniCode.decodeFailure, 'failed to decode network configuration: invalid JSON', e instanceof Error ? e.message : String(e));
  }
  if (!isObject(v)) throw new CniError(CniCode.decodeFailure, 'failed to decode network configuration: expected a JSON object');
  return v;
}

/** cniVersion if it is one we speak, for reporting errors in the caller's version. */
export function reportVersion(raw: unknown): string {
  const v = isObject(raw) ? raw.cniVersion : undefined;
  return typeof v === 'string' && SUPPORTED_VERSIONS.includes(v) ? v : FALLBACK_VERSION;
}

export function checkVersion(v: unknown): string {
  if (v === undefined) throw new CniError(CniCode.invalidConfig, 'invalid network configuration: missing field "cniVersion"');
  if (typeof v !== 'string' || !VERSION_RE.test(v)) {
    throw new CniError(CniCode.decodeFailure, `failed to decode version: cniVersion ${JSON.stringify(v)?.slice(0, 64)} is not a version string`);
  }
  if (!SUPPORTED_VERSIONS.includes(v)) {
    throw new CniError(CniCode.incompatibleVersion, `incompatible CNI version ${v}: meshwarp-cni supports ${SUPPORTED_VERSIONS.join(', ')}`,
      'chain the plugins with "cniVersion": "1.0.0" (or "1.1.0" when every plugin in the list supports it)');
  }
  return v;
}

const MESHWARP_KEYS = ['socket', 'failurePolicy', 'excludeNamespaces', 'timeoutMs', 'dataplane', 'mode'];

/** Validates the plugin's own `meshwarp` section; unknown keys are refused (code 2) so typos do not go unnoticed. */
export function parseMeshwarpSettings(v: unknown): MeshwarpSettings {
  const out: MeshwarpSettings = {
    socket: DEFAULT_SOCKET,
    failurePolicy: 'closed',
    excludeNamespaces: [...DEFAULT_EXCLUDE_NAMESPACES],
    timeoutMs: DEFAULT_TIMEOUT_MS,
  };
  if (v === undefined) return out;
  const bad = (msg: string): CniError => new CniError(CniCode.invalidConfig, `invalid network configuration: meshwarp.${msg}`);
  if (!isObject(v)) throw new CniError(CniCode.invalidConfig, 'invalid network configuration: "meshwarp" must be an object');
  for (const k of Object.keys(v)) {
    if (!MESHWARP_KEYS.includes(k)) {
      throw new CniError(CniCode.unsupportedField, `unsupported field in network configuration: meshwarp.${k.slice(0, 64)} = ${JSON.stringify(v[k])?.slice(0, 64)}`,
        `known fields: ${MESHWARP_KEYS.join(', ')}`);
    }
  }
  if (v.socket !== undefined) {
    const s = v.socket;
    if (typeof s !== 'string' || !s.startsWith('/') || s.includes('\0') || Buffer.byteLength(s) > 107) throw bad('socket must be an absolute path of at most 107 bytes');
    out.socket = s;
  }
  if (v.failurePolicy !== undefined) {
    if (v.failurePolicy !== 'closed' && v.failurePolicy !== 'open') throw bad('failurePolicy must be "closed" or "open"');
    out.failurePolicy = v.failurePolicy;
  }
  if (v.excludeNamespaces !== undefined) {
    const e = v.excludeNamespaces;
    if (!Array.isArray(e) || !e.every((x) => typeof x === 'string' && x !== '' && x.length <= 253)) throw bad('excludeNamespaces must be a list of namespace names');
    out.excludeNamespaces = e as string[];
  }
  if (v.timeoutMs !== undefined) {
    const t = v.timeoutMs;
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > 60000) throw bad('timeoutMs must be an integer between 1 and 60000');
    out.timeoutMs = t;
  }
  for (const k of ['dataplane', 'mode'] as const) {
    const d = v[k];
    if (d === undefined) continue;
    if (d !== 'sidecar' && d !== 'ambient') throw bad(`${k} must be "sidecar" or "ambient"${k === 'mode' ? ' (mode is the old name of dataplane)' : ''}`);
    if (out.dataplane !== undefined && out.dataplane !== d) throw bad('dataplane and its old name mode disagree');
    out.dataplane = d;
  }
  return out;
}

/** Validates the plugin configuration the runtime passes on stdin (already decoded). */
export function parseNetConf(raw: Record<string, unknown>): NetConf {
  const cniVersion = checkVersion(raw.cniVersion);
  const name = raw.name;
  if (typeof name !== 'string' || !NETWORK_NAME_RE.test(name)) {
    throw new CniError(CniCode.invalidConfig, 'invalid network configuration: "name" must start with an alphanumeric character followed by alphanumerics, "_", "." or "-"');
  }
  if (raw.type !== PLUGIN_TYPE) {
    throw new CniError(CniCode.invalidConfig, `invalid network configuration: "type" must be "${PLUGIN_TYPE}", got ${JSON.stringify(raw.type)?.slice(0, 64)}`);
  }
  const meshwarp = parseMeshwarpSettings(raw.meshwarp);
  const conf: NetConf = { raw, cniVersion, name, meshwarp };
  if (raw.prevResult !== undefined) {
    if (!isObject(raw.prevResult)) throw new CniError(CniCode.invalidConfig, 'invalid network configuration: "prevResult" must be an object');
    conf.prevResult = raw.prevResult;
  }
  return conf;
}

function skipValue(where: string, v: unknown): boolean {
  if (v === undefined || v === false || v === 'false') return false;
  if (v === true || v === 'true') return true;
  throw new CniError(CniCode.invalidConfig, `invalid network configuration: ${where} must be true or false`);
}

/**
 * Why this pod is left alone, or undefined when it is to be meshed. Opt-outs, in order:
 * runtimeConfig.meshwarp.skip, args.meshwarp.skip, then the namespace exclusion list.
 */
export function skipReason(conf: NetConf, pod: PodRef): string | undefined {
  const rc = conf.raw.runtimeConfig;
  if (isObject(rc) && rc.meshwarp !== undefined) {
    if (!isObject(rc.meshwarp)) throw new CniError(CniCode.invalidConfig, 'invalid network configuration: runtimeConfig.meshwarp must be an object');
    if (skipValue('runtimeConfig.meshwarp.skip', rc.meshwarp.skip)) return 'runtimeConfig.meshwarp.skip';
  }
  const args = conf.raw.args;
  if (isObject(args) && args.meshwarp !== undefined) {
    if (!isObject(args.meshwarp)) throw new CniError(CniCode.invalidConfig, 'invalid network configuration: args.meshwarp must be an object');
    if (skipValue('args.meshwarp.skip', args.meshwarp.skip)) return 'args.meshwarp.skip';
  }
  if (pod.namespace !== '' && conf.meshwarp.excludeNamespaces.includes(pod.namespace)) return `namespace ${pod.namespace} is excluded`;
  return undefined;
}

export interface Attachment {
  containerId: string;
  ifName: string;
}

/** GC input: `cni.dev/valid-attachments` (libcni also sends the older name `cni.dev/attachments`). */
export function validAttachments(raw: Record<string, unknown>): Attachment[] {
  const key = raw['cni.dev/valid-attachments'] !== undefined ? 'cni.dev/valid-attachments' : 'cni.dev/attachments';
  const list = raw[key];
  if (list === undefined) throw new CniError(CniCode.invalidConfig, 'invalid network configuration: GC needs "cni.dev/valid-attachments"');
  if (!Array.isArray(list)) throw new CniError(CniCode.invalidConfig, `invalid network configuration: "${key}" must be a list`);
  return list.map((a, i) => {
    if (!isObject(a) || typeof a.containerID !== 'string' || typeof a.ifname !== 'string') {
      throw new CniError(CniCode.invalidConfig, `invalid network configuration: ${key}[${i}] must be {"containerID": string, "ifname": string}`);
    }
    return { containerId: a.containerID, ifName: a.ifname };
  });
}

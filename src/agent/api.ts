// SPDX-License-Identifier: Apache-2.0
// The agent's HTTP API (over its root-only unix socket): request shapes and
// their validation. Every request is checked completely before anything
// changes; a bad one is a 400 with the reason.
//
//   POST /v1/cni/add    AddRequest            -> 200 { meshed, reason? }
//   POST /v1/cni/del    { containerId }       -> 200 { removed }
//   POST /v1/cni/check  { containerId }       -> 200 { ok, reason? }
//   POST /v1/cni/status {}                    -> 200 { ready, reason? }
//   POST /v1/cni/gc     { validAttachments: [{ containerId }] } -> 200 { removed: [...] }
// (the CNI plugin's side of this contract: docs/cni.md)
//   GET  /v1/status                           -> 200 Status
//   GET  /v1/pods                             -> 200 { pods: [...] }
//   POST /v1/uninstall                        -> 200 {} (removes everything, then exits)

// Errors answer `{ error, code }`: `error` is for people, `code` is what clients branch on.
//   ERR_BAD_REQUEST     400  the request is invalid (the message says which field)
//   ERR_INVALID_JSON    400  the body is not JSON
//   ERR_NOT_FOUND       404  no such route
//   ERR_BODY_TOO_LARGE  413
//   ERR_INTERNAL        500  anything unexpected (logged and counted by the agent)
//   ERR_UNSUPPORTED     501  the agent's mode lacks the feature (e.g. trace in iptables mode)
import { parseNodeProxy, type NodeProxy } from '../datapath/ambient/proxy.ts';
import { isIP } from 'node:net';

const STATUS_CODES: Record<number, string> = {
  400: 'ERR_BAD_REQUEST', 404: 'ERR_NOT_FOUND', 409: 'ERR_CONFLICT', 413: 'ERR_BODY_TOO_LARGE', 500: 'ERR_INTERNAL', 501: 'ERR_UNSUPPORTED',
};

/** The code an error of this HTTP status carries unless it names a more precise one. */
export function codeForStatus(status: number): string {
  return STATUS_CODES[status] ?? (status >= 500 ? 'ERR_INTERNAL' : 'ERR_BAD_REQUEST');
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  /** The CNI error code the plugin reports for this refusal (CniCode in src/cni/errors.ts). */
  readonly cniCode: number | undefined;
  constructor(status: number, message: string, cniCode?: number, code = codeForStatus(status)) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.cniCode = cniCode;
  }
}

/** CNI codes the agent names in its refusals (the plugin passes them through). */
export const AGENT_CNI_CODE = {
  /** CNI_NETNS / CNI_IFNAME / CNI_CONTAINERID name nothing usable (spec code 4). */
  invalidEnv: 4,
  invalidConfig: 7,
  /** An address of this pod is held by another live sandbox (meshwarp-specific). */
  ipConflict: 103,
  /** The pod asks for a dataplane this node's agent does not run (meshwarp-specific). */
  dataplaneUnavailable: 104,
} as const;

/** The plugin's name for the wire type (the body of /v1/cni/{add,check,del}). */
export type CniPodRequest = Omit<AddRequest, 'prevResult'> & { prevResult?: Record<string, unknown> };

/**
 * The one CNI wire type: what meshwarp-cni sends on ADD, CHECK and DEL (it
 * imports this with `import type`). Every field is read by the agent.
 */
export interface AddRequest {
  cniVersion?: string;
  networkName?: string;
  containerId: string;
  netns: string;
  ifName: string;
  /** Kubernetes namespace, name and uid from CNI_ARGS; '' when the runtime is not Kubernetes. */
  podNamespace: string;
  podName: string;
  podUid?: string;
  podInfraContainerId?: string;
  /** The previous plugins' result (IPs, interfaces), as CNI passed it. */
  prevResult: { ips?: { address: string; interface?: number }[]; interfaces?: { name: string; sandbox?: string; mac?: string }[] };
  /** sidecar | ambient, from the conflist's meshwarp entry (default: the pod's annotations, else sidecar). */
  dataplane?: string;
  /** The pod's nameservers, from the runtime (CNI `dns` capability: runtimeConfig.dns.servers). */
  dnsServers?: string[];
  /** Optional: per-pod annotations (Kubernetes supplies them through the watch; the lab passes them here). */
  annotations?: Record<string, string>;
  /** Optional: mesh profile override for this pod. */
  profile?: string;
}

const bad = (msg: string): never => { throw new ApiError(400, msg, AGENT_CNI_CODE.invalidEnv); };
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function str(o: Record<string, unknown>, k: string, re: RegExp, what: string, optional = false): string {
  const v = o[k];
  if (v === undefined && optional) return '';
  if (typeof v !== 'string') return bad(`${k}: expected a string (${what})`);
  if (v.length > 512 || !re.test(v)) return bad(`${k}: ${JSON.stringify(v.slice(0, 80))} is not ${what}`);
  return v;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;
const DNS_LABEL_OR_EMPTY = /^([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?)?$/;
const IFNAME = /^(?!\.\.?$)[^/\s:]{1,15}$/; // "." and ".." are no interface names
const ABS_PATH = /^\/[^\0]*$/;

export function parseContainerRef(body: unknown): { containerId: string } {
  if (!isObj(body)) bad('expected a JSON object');
  return { containerId: str(body as Record<string, unknown>, 'containerId', CONTAINER_ID, 'a container id') };
}

export function parseAddRequest(body: unknown): AddRequest {
  if (!isObj(body)) return bad('expected a JSON object');
  const o = body;
  const req: AddRequest = {
    containerId: str(o, 'containerId', CONTAINER_ID, 'a container id'),
    netns: str(o, 'netns', ABS_PATH, 'an absolute netns path'),
    ifName: str(o, 'ifName', IFNAME, 'an interface name'),
    podNamespace: str(o, 'podNamespace', DNS_LABEL_OR_EMPTY, 'a Kubernetes namespace name', true),
    podName: str(o, 'podName', DNS_LABEL_OR_EMPTY, 'a Kubernetes pod name', true),
    prevResult: {},
  };
  for (const k of ['cniVersion', 'networkName', 'podUid', 'podInfraContainerId'] as const) {
    if (o[k] !== undefined && o[k] !== '') req[k] = str(o, k, /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/, `a ${k}`);
  }
  if (o.dnsServers !== undefined) {
    const d = o.dnsServers;
    if (!Array.isArray(d) || d.length > 8 || !d.every((ip) => typeof ip === 'string' && isIP(ip) !== 0)) {
      bad('dnsServers: expected at most 8 IP addresses');
    }
    req.dnsServers = d as string[];
  }
  // `mode` is the plugin's old name for the dataplane.
  const dp = o.dataplane ?? o.mode;
  if (dp !== undefined) {
    if (dp !== 'sidecar' && dp !== 'ambient') bad(`dataplane: expected "sidecar" or "ambient", got ${JSON.stringify(dp)}`);
    req.dataplane = dp as string;
  }
  const pr = o.prevResult;
  if (!isObj(pr)) return bad('prevResult: expected the previous plugin\'s result object');
  if (pr.ips !== undefined && !Array.isArray(pr.ips)) bad('prevResult.ips: expected an array');
  if (pr.interfaces !== undefined && !Array.isArray(pr.interfaces)) bad('prevResult.interfaces: expected an array');
  req.prevResult = pr as AddRequest['prevResult'];
  for (const [i, ip] of (req.prevResult.ips ?? []).entries()) {
    if (!isObj(ip) || typeof ip.address !== 'string') bad(`prevResult.ips[${i}].address: expected a CIDR string`);
  }
  if (o.annotations !== undefined) {
    if (!isObj(o.annotations)) bad('annotations: expected an object of strings');
    for (const [k, v] of Object.entries(o.annotations as object)) if (typeof v !== 'string') bad(`annotations.${k}: expected a string`);
    req.annotations = o.annotations as Record<string, string>;
  }
  if (o.profile !== undefined) req.profile = str(o, 'profile', /^[a-z][a-z0-9-]*$/, 'a profile name');
  return req;
}

export function parseGcRequest(body: unknown): { valid: Set<string> } {
  if (!isObj(body) || !Array.isArray(body.validAttachments)) return bad('validAttachments: expected an array');
  return { valid: new Set((body.validAttachments as unknown[]).map((a, i) => {
    if (!isObj(a)) return bad(`validAttachments[${i}]: expected an object`);
    return str(a, 'containerId', CONTAINER_ID, 'a container id');
  })) };
}

/** POST /v1/ambient/proxy: a node proxy's announcement (docs/ambient.md); 400 naming the bad field. */
export function parseNodeProxyRequest(body: unknown): NodeProxy {
  try {
    return parseNodeProxy(body);
  } catch (e) {
    throw new ApiError(400, (e as Error).message, undefined, 'ERR_BAD_REQUEST');
  }
}

/** DELETE-like POST /v1/ambient/proxy/remove: { id }. */
export function parseNodeProxyRef(body: unknown): { id: string } {
  const id = (body as { id?: unknown } | undefined)?.id;
  if (typeof id !== 'string' || id === '') throw new ApiError(400, 'id: expected the node proxy instance id');
  return { id };
}

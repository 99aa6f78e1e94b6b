// SPDX-License-Identifier: Apache-2.0
// The chained CNI plugin's logic: one call per invocation, env + stdin in, exit code +
// stdout + log lines out. It never changes prevResult and never touches the kernel:
// the agent does the work, the plugin only tells it and applies the failure policy.
import type { CniPodRequest } from '../agent/api.ts';
import { postAgent, type AgentRequest, type AgentResult } from './agent-client.ts';
import {
  FALLBACK_VERSION, SUPPORTED_VERSIONS, decodeJsonObject, parseCommand, parseEnv, parseNetConf, podRef,
  reportVersion, skipReason, validAttachments, type CniEnv, type NetConf, type PodRef,
} from './config.ts';
import { CniCode, CniError, errorJson } from './errors.ts';
import type { AddRequest } from '../agent/api.ts';

export interface LogLine {
  level: 'info' | 'warn' | 'error';
  msg: string;
  [k: string]: unknown;
}

export interface PluginOutput {
  exitCode: 0 | 1;
  /** Exactly what goes to stdout (may be empty). */
  stdout: string;
  /** Structured lines for stderr. */
  logs: LogLine[];
}

export interface PluginDeps {
  post: (socketPath: string, path: string, body: AgentRequest, timeoutMs: number) => Promise<AgentResult>;
}

const defaultDeps: PluginDeps = { post: postAgent };

/** Body of POST /v1/cni/{add,check,del}: the agent's one wire type (a type import costs nothing at start-up). */
export type AgentPodRequest = Omit<AddRequest, 'prevResult'> & { prevResult?: Record<string, unknown> };

export async function runPlugin(env: NodeJS.ProcessEnv, stdin: Buffer, deps: PluginDeps = defaultDeps): Promise<PluginOutput> {
  const logs: LogLine[] = [];
  let version = FALLBACK_VERSION;
  try {
    const command = parseCommand(env);
    if (command === 'VERSION') return ok(versionReply(stdin), logs);
    let raw: Record<string, unknown> | undefined;
    let decodeError: unknown;
    try {
      raw = decodeJsonObject(stdin);
      version = reportVersion(raw);
    } catch (e) {
      decodeError = e;
    }
    const cniEnv = parseEnv(env, command);
    if (raw === undefined) throw decodeError;
    const conf = parseNetConf(raw);
    const ctx: Ctx = { conf, env: cniEnv, pod: podRef(cniEnv), logs, deps };
    switch (command) {
      case 'ADD': return ok(await cmdAdd(ctx), logs);
      case 'DEL': return ok(await cmdDel(ctx), logs);
      case 'CHECK': return ok(await cmdCheck(ctx), logs);
      case 'STATUS': return ok(await cmdStatus(ctx), logs);
      case 'GC': return ok(await cmdGc(ctx), logs);
    }
  } catch (e) {
    const err = e instanceof CniError ? e
      : new CniError(CniCode.internal, `internal error in meshwarp-cni: ${e instanceof Error ? e.message : String(e)}`);
    return { exitCode: 1, stdout: `${JSON.stringify(errorJson(version, err))}\n`, logs };
  }
}

/** The log lines as the plugin writes them to stderr: one JSON object a line. */
export function stderrText(logs: LogLine[]): string {
  const ts = new Date().toISOString();
  let err = '';
  for (const l of logs) err += `${JSON.stringify({ ts, component: 'meshwarp-cni', ...l })}\n`;
  return err;
}

/** Error output for failures before runPlugin could run (stdin too large, unreadable). */
export function errorOutput(err: CniError): PluginOutput {
  return { exitCode: 1, stdout: `${JSON.stringify(errorJson(FALLBACK_VERSION, err))}\n`, logs: [] };
}

interface Ctx {
  conf: NetConf;
  env: CniEnv;
  pod: PodRef;
  logs: LogLine[];
  deps: PluginDeps;
}

function ok(stdout: string, logs: LogLine[]): PluginOutput {
  return { exitCode: 0, stdout, logs };
}

function versionReply(stdin: Buffer): string {
  // VERSION must answer whatever the config looks like: echo the asked version when we speak it.
  let asked: unknown;
  try {
    asked = (JSON.parse(stdin.toString('utf8')) as { cniVersion?: unknown }).cniVersion;
  } catch { /* no or bad stdin: answer in our newest version */ }
  const cniVersion = typeof asked === 'string' && SUPPORTED_VERSIONS.includes(asked) ? asked : SUPPORTED_VERSIONS[SUPPORTED_VERSIONS.length - 1];
  return `${JSON.stringify({ cniVersion, supportedVersions: SUPPORTED_VERSIONS })}\n`;
}

function podRequest(ctx: Ctx): CniPodRequest {
  const { conf, env, pod } = ctx;
  const body: CniPodRequest = {
    cniVersion: conf.cniVersion,
    networkName: conf.name,
    containerId: env.containerId,
    netns: env.netns,
    ifName: env.ifName,
    podNamespace: pod.namespace,
    podName: pod.name,
    podUid: env.args.get('K8S_POD_UID') ?? '',
    podInfraContainerId: pod.infraContainerId,
  };
  if (conf.prevResult) body.prevResult = conf.prevResult;
  if (conf.meshwarp.dataplane) body.dataplane = conf.meshwarp.dataplane;
  // The runtime passes the pod's DNS (kubelet's --cluster-dns) when the conf declares the `dns` capability.
  const rc = conf.raw.runtimeConfig as { dns?: { servers?: unknown } } | undefined;
  const servers = rc?.dns?.servers;
  if (Array.isArray(servers) && servers.length > 0 && servers.every((s) => typeof s === 'string')) body.dnsServers = servers as string[];
  return body;
}

function requirePrevResult(ctx: Ctx, command: string): Record<string, unknown> {
  if (!ctx.conf.prevResult) {
    throw new CniError(CniCode.invalidConfig, `meshwarp is a chained plugin: ${command} needs "prevResult" from the plugins before it`,
      'list meshwarp after the plugin that creates the pod interface (e.g. bridge, ptp) in the conflist "plugins"');
  }
  return ctx.conf.prevResult;
}

/** prevResult as our result: same object, same key order, reported in the config's cniVersion. */
function passThrough(conf: NetConf, prev: Record<string, unknown>): string {
  const out = prev.cniVersion === undefined ? { cniVersion: conf.cniVersion, ...prev } : prev;
  if (out.cniVersion !== conf.cniVersion) out.cniVersion = conf.cniVersion;
  return `${JSON.stringify(out)}\n`;
}

function log(ctx: Ctx, level: LogLine['level'], msg: string, extra: Record<string, unknown> = {}): void {
  ctx.logs.push({
    level, msg, command: ctx.env.command, containerId: ctx.env.containerId || undefined,
    pod: ctx.pod.namespace ? `${ctx.pod.namespace}/${ctx.pod.name}` : undefined, socket: ctx.conf.meshwarp.socket, ...extra,
  });
}

const CLOSED_ADVICE = 'failurePolicy is "closed", so the pod is not started unmeshed. Check `meshwarp status` on this node and that the '
  + 'meshwarp agent (DaemonSet pod) is running, then let the runtime retry; or set "failurePolicy": "open" in the meshwarp entry of '
  + 'the CNI config (`meshwarp cni install --failure-policy open`) to start pods unmeshed while the agent is down.';

function unreachable(ctx: Ctx, reason: string, code: number = CniCode.tryAgainLater): CniError {
  return new CniError(code, `meshwarp agent unreachable at ${ctx.conf.meshwarp.socket}: ${reason}`, CLOSED_ADVICE);
}

function rejected(op: string, r: Extract<AgentResult, { kind: 'rejected' }>): CniError {
  const c = r.cniCode;
  const known = c !== undefined && Number.isInteger(c) && ([1, 2, 3, 4, 5, 6, 7, 11].includes(c) || (c >= 100 && c <= 0x7fffffff));
  const code = known ? c
    : r.status === 400 || r.status === 422 ? CniCode.invalidConfig
      : r.status === 404 ? CniCode.unknownContainer
        : CniCode.agentRejected;
  return new CniError(code, `meshwarp agent refused ${op}: ${r.error}`, r.details ?? '');
}

async function call(ctx: Ctx, op: string, body: AgentRequest): Promise<AgentResult> {
  const m = ctx.conf.meshwarp;
  return ctx.deps.post(m.socket, `/v1/cni/${op}`, body, m.timeoutMs);
}

async function cmdAdd(ctx: Ctx): Promise<string> {
  const prev = requirePrevResult(ctx, 'ADD');
  const skip = skipReason(ctx.conf, ctx.pod);
  if (skip !== undefined) return passThrough(ctx.conf, prev);
  const r = await call(ctx, 'add', podRequest(ctx));
  if (r.kind === 'rejected') throw rejected('ADD', r);
  if (r.kind === 'unavailable') {
    if (ctx.conf.meshwarp.failurePolicy === 'closed') throw unreachable(ctx, r.reason);
    log(ctx, 'warn', 'agent unreachable, pod started unmeshed (failurePolicy open)', { reason: r.reason });
  }
  return passThrough(ctx.conf, prev);
}

async function cmdDel(ctx: Ctx): Promise<string> {
  // Best effort: the agent reconciles pods it missed; DEL must never block pod removal.
  const r = await call(ctx, 'del', podRequest(ctx));
  if (r.kind === 'unavailable') log(ctx, 'warn', 'agent unreachable on DEL; the agent reconciles later', { reason: r.reason });
  if (r.kind === 'rejected') log(ctx, 'warn', 'agent refused DEL; ignored', { status: r.status, error: r.error });
  return '';
}

async function cmdCheck(ctx: Ctx): Promise<string> {
  requirePrevResult(ctx, 'CHECK');
  if (skipReason(ctx.conf, ctx.pod) !== undefined) return '';
  const r = await call(ctx, 'check', podRequest(ctx));
  if (r.kind === 'rejected') throw rejected('CHECK', r);
  if (r.kind === 'unavailable') {
    if (ctx.conf.meshwarp.failurePolicy === 'closed') throw unreachable(ctx, r.reason);
    log(ctx, 'warn', 'agent unreachable on CHECK; passing (failurePolicy open)', { reason: r.reason });
    return '';
  }
  if (r.body.ok !== true) {
    const reason = typeof r.body.reason === 'string' ? r.body.reason : 'the agent does not report the pod as meshed as expected';
    throw new CniError(CniCode.checkFailed, `meshwarp CHECK failed: ${reason}`);
  }
  return '';
}

async function cmdStatus(ctx: Ctx): Promise<string> {
  const r = await call(ctx, 'status', { cniVersion: ctx.conf.cniVersion, networkName: ctx.conf.name });
  const closed = ctx.conf.meshwarp.failurePolicy === 'closed';
  if (r.kind === 'unavailable') {
    if (closed) throw unreachable(ctx, r.reason, CniCode.notAvailable);
    log(ctx, 'warn', 'agent unreachable; ready anyway (failurePolicy open)', { reason: r.reason });
  } else if (r.kind === 'ok' && r.body.ready === false) {
    const reason = typeof r.body.reason === 'string' ? r.body.reason : 'agent not ready';
    if (closed) throw new CniError(CniCode.notAvailable, `meshwarp agent not ready: ${reason}`, CLOSED_ADVICE);
    log(ctx, 'warn', 'agent not ready; ready anyway (failurePolicy open)', { reason });
  }
  // A 4xx means an agent is there and answering (e.g. an agent without this endpoint): ready.
  return '';
}

async function cmdGc(ctx: Ctx): Promise<string> {
  const attachments = validAttachments(ctx.conf.raw);
  const r = await call(ctx, 'gc', { cniVersion: ctx.conf.cniVersion, networkName: ctx.conf.name, validAttachments: attachments });
  if (r.kind === 'unavailable') log(ctx, 'warn', 'agent unreachable on GC; skipped', { reason: r.reason });
  if (r.kind === 'rejected') log(ctx, 'warn', 'agent refused GC; ignored', { status: r.status, error: r.error });
  return '';
}

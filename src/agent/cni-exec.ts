// SPDX-License-Identifier: Apache-2.0
// The CNI routes of the agent's socket, and POST /v1/cni/exec: the plugin's own code
// (src/cni/plugin.ts) run inside the agent for the static forwarder (src/cni/forward.c),
// which is all the runtime starts. The forwarder sends the invocation unchanged; the answer
// is what the plugin process would have printed. Nothing of the plugin's logic differs:
// runPlugin gets the same environment and stdin, and its one request to the agent is
// answered in process (same parsing, same status classification, same timeout). That is
// the request the plugin would have sent to the socket its config names, and the forwarder
// reached the agent through that very socket (X-Meshwarp-Socket, checked here against the
// config): when the config names another one, the answer is 421 and the forwarder runs the
// full plugin, which goes where the config says.
import type { AgentRequest, AgentResult } from '../cni/agent-client.ts';
import { DEFAULT_SOCKET } from '../cni/config.ts';
import { runPlugin, stderrText, type PluginDeps } from '../cni/plugin.ts';
import { ApiError, parseAddRequest, parseContainerRef, parseGcRequest } from './api.ts';
import { log, type Agent } from './agent.ts';

/** Body of /v1/cni/exec: NAME=VALUE\0 per CNI_* variable, an empty entry (\0), then stdin. */
export function parseExecBody(raw: Buffer): { env: Record<string, string>; stdin: Buffer } {
  const env: Record<string, string> = {};
  let i = 0;
  for (;;) {
    const z = raw.indexOf(0, i);
    if (z < 0) throw new ApiError(400, 'exec body: environment block not terminated');
    if (z === i) return { env, stdin: raw.subarray(z + 1) };
    const entry = raw.toString('utf8', i, z);
    const eq = entry.indexOf('=');
    if (eq <= 0 || !entry.startsWith('CNI_')) throw new ApiError(400, `exec body: bad environment entry ${JSON.stringify(entry.slice(0, 64))}`);
    env[entry.slice(0, eq)] = entry.slice(eq + 1);
    i = z + 1;
  }
}

/** One CNI route of the agent's API: the answer body, or an ApiError. */
export async function cniRoute(agent: Agent, path: string, body: unknown): Promise<unknown> {
  switch (path) {
    case '/v1/cni/add': return agent.add(parseAddRequest(body));
    case '/v1/cni/del': return agent.del(parseContainerRef(body).containerId);
    case '/v1/cni/check': return agent.check(parseContainerRef(body).containerId);
    case '/v1/cni/status': return { ready: true };
    case '/v1/cni/gc': return agent.gc(parseGcRequest(body).valid);
    default: throw new ApiError(404, `no route POST ${path}`);
  }
}

const jsonRoundTrip = (v: unknown): unknown => JSON.parse(JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? Number(x) : x)) ?? 'null');

/** What postAgent would have made of the same request sent to this agent over its socket. */
async function inProcess(agent: Agent, path: string, body: AgentRequest, timeoutMs: number): Promise<AgentResult> {
  const work = (async (): Promise<AgentResult> => {
    try {
      const out = jsonRoundTrip(await cniRoute(agent, path, jsonRoundTrip(body)));
      if (typeof out !== 'object' || out === null || Array.isArray(out)) {
        return { kind: 'unavailable', reason: 'agent answered 200 with a body that is not a JSON object' };
      }
      return { kind: 'ok', status: 200, body: out as Record<string, unknown> };
    } catch (e) {
      const status = e instanceof ApiError ? e.status : 500;
      const msg = (e as Error).message;
      if (status >= 500) {
        agent.countError();
        log('error', 'request failed', { url: path, error: msg });
        return { kind: 'unavailable', reason: `agent answered HTTP ${status}: ${msg}` };
      }
      const r: AgentResult = { kind: 'rejected', status, error: msg };
      if (e instanceof ApiError && e.cniCode !== undefined) r.cniCode = e.cniCode;
      return r;
    }
  })();
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<AgentResult>((resolve) => {
    timer = setTimeout(() => resolve({ kind: 'unavailable', reason: `no answer within ${timeoutMs} ms` }), timeoutMs);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** The socket the config names (its default when absent); undefined when the config does not parse: the plugin then fails without the agent. */
function configSocket(stdin: Buffer): string | undefined {
  try {
    const conf = JSON.parse(stdin.toString('utf8')) as { meshwarp?: { socket?: unknown } };
    const s = conf?.meshwarp?.socket;
    return s === undefined ? DEFAULT_SOCKET : typeof s === 'string' ? s : undefined;
  } catch {
    return undefined;
  }
}

/** Runs one forwarded plugin invocation; the reply body is "<exit> <stderr bytes>\n" + stderr + stdout. */
export async function runCniExec(agent: Agent, forwardedTo: string, raw: Buffer): Promise<Buffer> {
  const { env, stdin } = parseExecBody(raw);
  const named = configSocket(stdin);
  if (named !== undefined && named !== forwardedTo) {
    throw new ApiError(421, `the CNI config names socket ${named}, the request came through ${forwardedTo}: run the full plugin`);
  }
  const deps: PluginDeps = { post: (_socket, path, body, timeoutMs) => inProcess(agent, path, body, timeoutMs) };
  const out = await runPlugin(env, stdin, deps);
  const err = Buffer.from(stderrText(out.logs));
  return Buffer.concat([Buffer.from(`${out.exitCode} ${err.length}\n`), err, Buffer.from(out.stdout)]);
}

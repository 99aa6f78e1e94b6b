// SPDX-License-Identifier: Apache-2.0
// The static forwarder (src/cni/forward.c) against the full plugin (src/cni/main.ts): the same
// invocations, one through the agent's POST /v1/cni/exec, one as a Node.js process talking to
// the agent's routes, must print the same bytes and exit the same way, whatever the agent
// answers (success, skip, refusal with a CNI code, 5xx under both policies, bad input).
// Then what only the forwarder does: fall back to the full plugin beside it (no agent, an
// agent without the endpoint, a config naming another socket) and a hung agent that costs
// timeoutMs, not more; and the installer's checksum check.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type http from 'node:http';
import { ApiError } from '../../src/agent/api.ts';
import type { Agent } from '../../src/agent/agent.ts';
import { listenApi } from '../../src/agent/server.ts';
import { defaultArtifactDir, installCni, resolveNode, uninstallCni, wrapperScript } from '../../src/cni/install.ts';
import { FakeAgent, addEnv, netConf, runCni, type RunResult } from './cni-fixtures.ts';

type Behaviour = 'ok' | 'refuse' | 'fail' | 'notOk';
let behaviour: Behaviour = 'ok';
const calls: string[] = [];
// The agent surface apiHandler's CNI routes use.
const stub = {
  add: async () => {
    calls.push('add');
    if (behaviour === 'refuse') throw new ApiError(409, 'address 10.244.1.5 is held by sandbox abc (default/web), which is still running', 100);
    if (behaviour === 'fail') throw new Error('netlink exploded');
    return { meshed: true, pod: 'default/web', changed: true };
  },
  del: async () => { calls.push('del'); return { removed: true }; },
  check: async () => { calls.push('check'); return behaviour === 'notOk' ? { ok: false, reason: 'pod_config entry missing' } : { ok: true }; },
  gc: async () => { calls.push('gc'); return { removed: [] }; },
  countError: () => {},
} as unknown as Agent;

let root: string;
let socket: string;
let server: http.Server;
let forwarder: string;
let alone: string;
before(async () => {
  root = mkdtempSync(join(tmpdir(), 'mw-cni-fwd-'));
  socket = join(root, 'run', 'agent.sock');
  server = await listenApi(stub, socket, () => {});
  const bin = join(root, 'bin');
  mkdirSync(bin);
  forwarder = join(bin, 'meshwarp-cni');
  copyFileSync(join(defaultArtifactDir(), 'meshwarp-cni'), forwarder);
  writeFileSync(join(bin, 'meshwarp-cni-node'), wrapperScript(resolveNode(), join(root, 'cache')), { mode: 0o755 });
  // Alone in its directory: a run that fell back to the full plugin fails (code 11, "cannot run").
  mkdirSync(join(root, 'alone'));
  alone = join(root, 'alone', 'meshwarp-cni');
  copyFileSync(forwarder, alone);
});
after(async () => {
  await new Promise((r) => server.close(r));
  rmSync(root, { recursive: true, force: true });
});

/** stderr lines without their timestamps. */
const logs = (r: RunResult) => r.stderr.split('\n').filter(Boolean).map((l) => { const o = JSON.parse(l) as Record<string, unknown>; delete o.ts; return o; });

// agent: the stub agent sees a call (STATUS is answered by the route itself). fallback: the
// config reaches no agent (VERSION names no socket: the default one, absent here), so the
// forwarder must run the full plugin beside it.
const cases: { name: string; env: Record<string, string | undefined>; stdin: string; b?: Behaviour; agent: boolean; fallback?: boolean }[] = [];
const conf = (meshwarp: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => JSON.stringify(netConf('SOCKET', extra, meshwarp));
cases.push({ name: 'ADD meshed', env: addEnv('ADD'), stdin: conf(), agent: true });
cases.push({ name: 'ADD in an excluded namespace', env: addEnv('ADD', { CNI_ARGS: 'K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns' }), stdin: conf(), agent: false });
cases.push({ name: 'ADD refused with a CNI code', env: addEnv('ADD'), stdin: conf(), b: 'refuse', agent: true });
cases.push({ name: 'ADD, agent 500, closed', env: addEnv('ADD'), stdin: conf(), b: 'fail', agent: true });
cases.push({ name: 'ADD, agent 500, open', env: addEnv('ADD'), stdin: conf({ failurePolicy: 'open' }), b: 'fail', agent: true });
cases.push({ name: 'ADD without prevResult', env: addEnv('ADD'), stdin: conf({}, { prevResult: undefined }), agent: false });
cases.push({ name: 'ADD with an unknown meshwarp key', env: addEnv('ADD'), stdin: conf({ failurepolicy: 'open' }), agent: false });
cases.push({ name: 'ADD without CNI_NETNS', env: addEnv('ADD', { CNI_NETNS: undefined }), stdin: conf(), agent: false });
cases.push({ name: 'ADD with stdin that is not JSON', env: addEnv('ADD'), stdin: '{"cniVersion": "1.0.0", "socket": "SOCKET"', agent: false });
cases.push({ name: 'CHECK ok', env: addEnv('CHECK'), stdin: conf(), agent: true });
cases.push({ name: 'CHECK not meshed', env: addEnv('CHECK'), stdin: conf(), b: 'notOk', agent: true });
cases.push({ name: 'DEL', env: addEnv('DEL'), stdin: conf(), agent: true });
cases.push({ name: 'STATUS', env: { CNI_COMMAND: 'STATUS' }, stdin: conf({}, { cniVersion: '1.1.0' }), agent: false });
cases.push({ name: 'GC without the attachment list', env: { CNI_COMMAND: 'GC' }, stdin: conf({}, { cniVersion: '1.1.0' }), agent: false });
cases.push({ name: 'GC', env: { CNI_COMMAND: 'GC' }, stdin: conf({}, { cniVersion: '1.1.0', 'cni.dev/valid-attachments': [{ containerID: 'abc', ifname: 'eth0' }] }), agent: true });
cases.push({ name: 'VERSION', env: { CNI_COMMAND: 'VERSION' }, stdin: '{"cniVersion":"1.0.0"}', agent: false, fallback: true });

for (const c of cases) {
  test(`forwarder and full plugin print the same: ${c.name}`, async () => {
    behaviour = c.b ?? 'ok';
    const stdin = c.stdin.replaceAll('SOCKET', socket);
    calls.length = 0;
    const full = await runCni(c.env, stdin);
    const fullCalls = [...calls];
    calls.length = 0;
    const fwd = await runCni(c.env, stdin, { argv0: [c.fallback ? forwarder : alone] });
    assert.equal(fwd.code, full.code, `exit: ${fwd.stdout}${fwd.stderr}`);
    assert.equal(fwd.stdout, full.stdout);
    assert.deepEqual(logs(fwd), logs(full));
    assert.deepEqual(calls, fullCalls, 'the agent did the same');
    assert.equal(calls.length > 0, c.agent);
  });
}

test('no agent: the forwarder runs the full plugin beside it (closed: 11 naming the socket; open: prevResult)', async () => {
  const missing = join(root, 'nowhere.sock');
  const stdin = JSON.stringify(netConf(missing));
  const full = await runCni(addEnv('ADD'), stdin);
  const fwd = await runCni(addEnv('ADD'), stdin, { argv0: [forwarder] });
  assert.equal(fwd.code, 1);
  assert.equal(fwd.stdout, full.stdout);
  assert.match(fwd.stdout, /"code":11/);
  assert.ok(fwd.stdout.includes(missing));
  const open = JSON.stringify(netConf(missing, {}, { failurePolicy: 'open' }));
  const o = await runCni(addEnv('ADD'), open, { argv0: [forwarder] });
  assert.equal(o.code, 0, o.stdout);
  assert.equal(o.stdout, (await runCni(addEnv('ADD'), open)).stdout);
  assert.match(o.stderr, /pod started unmeshed/);
});

test('an agent without /v1/cni/exec (404): the full plugin runs and talks to it', async (t) => {
  const fake = await new FakeAgent().start();
  t.after(() => fake.stop());
  fake.replies.set('/v1/cni/exec', { status: 404, body: { error: 'no route POST /v1/cni/exec' } });
  const r = await runCni(addEnv('ADD'), JSON.stringify(netConf(fake.socket)), { argv0: [forwarder] });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(fake.requests.map((q) => q.path), ['/v1/cni/exec', '/v1/cni/add']);
});

test('a config whose first "socket" is not meshwarp.socket: the agent answers 421, the full plugin goes where the config says', async () => {
  behaviour = 'ok';
  calls.length = 0;
  const stdin = JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'meshwarp-cni', args: { socket: join(root, 'decoy.sock') }, meshwarp: { socket }, prevResult: netConf(socket).prevResult });
  const r = await runCni(addEnv('ADD'), stdin, { argv0: [forwarder] });
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.deepEqual(calls, ['add']);
  const a = await runCni(addEnv('ADD'), stdin.replace(join(root, 'decoy.sock'), socket), { argv0: [alone] });
  assert.equal(a.code, 0, 'the same config with both sockets equal runs in the agent');
});

test('a hung agent costs timeoutMs, then the policy applies as the full plugin words it', async (t) => {
  const hung = join(root, 'hung.sock');
  const held: import('node:net').Socket[] = [];
  const srv: Server = createServer((s) => { held.push(s); });
  await new Promise<void>((r) => srv.listen(hung, r));
  t.after(() => { for (const s of held) s.destroy(); srv.close(); });
  const r = await runCni(addEnv('ADD'), JSON.stringify(netConf(hung, {}, { timeoutMs: 300 })), { argv0: [forwarder] });
  assert.equal(r.code, 1);
  assert.match(r.stdout, /"code":11/);
  assert.match(r.stdout, /no answer within 300 ms/);
  assert.ok(r.ms < 300 + 250 + 3000, `${r.ms} ms`);
});

test('the installer refuses a binary that does not match SHA256SUMS and writes nothing', (t) => {
  const d = mkdtempSync(join(tmpdir(), 'mw-cni-sum-'));
  t.after(() => rmSync(d, { recursive: true, force: true }));
  const art = join(d, 'art');
  mkdirSync(art);
  copyFileSync(join(defaultArtifactDir(), 'meshwarp-cni'), join(art, 'meshwarp-cni'));
  copyFileSync(join(defaultArtifactDir(), 'SHA256SUMS'), join(art, 'SHA256SUMS'));
  mkdirSync(join(d, 'net.d'));
  writeFileSync(join(d, 'net.d', '10-a.conflist'), '{"cniVersion":"1.0.0","name":"a","plugins":[{"type":"bridge"}]}');
  const opts = { binDir: join(d, 'bin'), confDir: join(d, 'net.d'), stateDir: join(d, 'state'), artifactDir: art };
  const good = installCni(opts);
  assert.equal(good.action, 'inserted');
  assert.ok(readFileSync(join(d, 'bin', 'meshwarp-cni')).equals(readFileSync(join(art, 'meshwarp-cni'))));
  uninstallCni({ stateDir: opts.stateDir });
  const b = readFileSync(join(art, 'meshwarp-cni'));
  b[b.length - 1] ^= 1;
  writeFileSync(join(art, 'meshwarp-cni'), b);
  assert.throws(() => installCni(opts), /does not match SHA256SUMS/);
  assert.throws(() => readFileSync(join(d, 'bin', 'meshwarp-cni')), /ENOENT/);
});

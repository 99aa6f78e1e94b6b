// SPDX-License-Identifier: Apache-2.0
// meshwarp-cni run as a real subprocess against a fake agent on a unix socket: every CNI
// command, prevResult pass-through, skip rules, failure policies, env/config validation.
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FakeAgent, PREV_RESULT, addEnv, netConf, parseCniError, runCni } from './cni-fixtures.ts';

let agent: FakeAgent;
before(async () => { agent = await new FakeAgent().start(); });
after(async () => { await agent.stop(); });
beforeEach(() => {
  agent.requests.length = 0;
  agent.replies.clear();
});

const j = (o: unknown): string => JSON.stringify(o);

function assertNoStack(stderr: string): void {
  assert.doesNotMatch(stderr, /\n\s+at .+:\d+:\d+/, `stack trace on stderr:\n${stderr}`);
  for (const line of stderr.split('\n').filter(Boolean)) JSON.parse(line); // only structured log lines
}

async function expectError(env: Record<string, string | undefined>, stdin: string | Buffer, code: number, msg?: RegExp): Promise<ReturnType<typeof parseCniError>> {
  const r = await runCni(env, stdin);
  assert.equal(r.code, 1, `exit code; stdout=${r.stdout} stderr=${r.stderr}`);
  const e = parseCniError(r.stdout);
  assert.equal(e.code, code, `CNI code; got ${r.stdout}`);
  if (msg) assert.match(e.msg, msg);
  assertNoStack(r.stderr);
  return e;
}

test('VERSION reports 1.0.0 and 1.1.0 and echoes the asked version', async () => {
  for (const [asked, want] of [['1.0.0', '1.0.0'], ['1.1.0', '1.1.0'], ['0.4.0', '1.1.0']]) {
    const r = await runCni({ CNI_COMMAND: 'VERSION' }, j({ cniVersion: asked }));
    assert.equal(r.code, 0);
    assert.deepEqual(JSON.parse(r.stdout), { cniVersion: want, supportedVersions: ['1.0.0', '1.1.0'] });
  }
  const empty = await runCni({ CNI_COMMAND: 'VERSION' }, '');
  assert.equal(empty.code, 0);
  assert.equal(JSON.parse(empty.stdout).cniVersion, '1.1.0');
  assert.equal(agent.requests.length, 0);
});

test('ADD passes prevResult through exactly (unknown fields kept) and tells the agent', async () => {
  for (const v of ['1.0.0', '1.1.0']) {
    agent.requests.length = 0;
    const conf = netConf(agent.socket, { cniVersion: v, prevResult: { ...structuredClone(PREV_RESULT), cniVersion: v } });
    const r = await runCni(addEnv(), j(conf));
    assert.equal(r.code, 0, r.stdout + r.stderr);
    assert.equal(r.stderr, '');
    assert.deepEqual(JSON.parse(r.stdout), conf.prevResult);
    assert.equal(r.stdout.trimEnd(), j(conf.prevResult), 'same keys in the same order');
    assert.equal(agent.requests.length, 1);
    const { path, body } = agent.requests[0];
    assert.equal(path, '/v1/cni/add');
    assert.deepEqual(body, {
      cniVersion: v, networkName: 'k8s-pod-network', containerId: 'f00dcafe0123456789abcdef', netns: '/var/run/netns/cni-1234',
      ifName: 'eth0', podNamespace: 'default', podName: 'web-0', podUid: '1111-2222', podInfraContainerId: 'f00dcafe0123456789abcdef',
      prevResult: conf.prevResult,
    });
  }
});

test('ADD reports the result in the config cniVersion; the dataplane (old name mode) is passed to the agent', async () => {
  const prev: Record<string, unknown> = structuredClone(PREV_RESULT);
  delete prev.cniVersion;
  const r = await runCni(addEnv(), j(netConf(agent.socket, { cniVersion: '1.1.0', prevResult: prev }, { mode: 'ambient' })));
  assert.equal(r.code, 0, r.stdout);
  assert.deepEqual(JSON.parse(r.stdout), { cniVersion: '1.1.0', ...prev });
  assert.equal(agent.requests[0].body.dataplane, 'ambient');
  const r2 = await runCni(addEnv(), j(netConf(agent.socket, { cniVersion: '1.1.0' })));
  assert.equal(JSON.parse(r2.stdout).cniVersion, '1.1.0');
});

test('ADD passes the runtime\'s DNS (runtimeConfig.dns.servers, the CNI dns capability) to the agent', async () => {
  const n = agent.requests.length;
  const r = await runCni(addEnv(), j(netConf(agent.socket, { runtimeConfig: { dns: { servers: ['10.96.0.10', 'fd00:96::a'], searches: ['svc.cluster.local'] } } })));
  assert.equal(r.code, 0, r.stdout);
  assert.deepEqual(agent.requests[n].body.dnsServers, ['10.96.0.10', 'fd00:96::a']);
  await runCni(addEnv(), j(netConf(agent.socket)));
  assert.equal(agent.requests[n + 1].body.dnsServers, undefined, 'nothing sent when the runtime passes no DNS');
});

test('ADD without prevResult is refused (code 7) and the agent hears nothing', async () => {
  const conf = netConf(agent.socket);
  delete conf.prevResult;
  await expectError(addEnv(), j(conf), 7, /prevResult/);
  await expectError(addEnv(), j(netConf(agent.socket, { prevResult: [1] })), 7, /prevResult/);
  assert.equal(agent.requests.length, 0);
});

test('skip rules: excluded namespace, runtimeConfig and args opt-outs leave the pod alone', async () => {
  const cases: [Record<string, string | undefined>, Record<string, unknown>, Record<string, unknown>][] = [
    [{ CNI_ARGS: 'K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns' }, {}, {}], // default exclusion
    [{ CNI_ARGS: 'K8S_POD_NAMESPACE=istio-system;K8S_POD_NAME=x' }, {}, { excludeNamespaces: ['istio-system'] }],
    [{}, { runtimeConfig: { meshwarp: { skip: true } } }, {}],
    [{}, { args: { meshwarp: { skip: 'true' } } }, {}],
  ];
  for (const [envOver, extra, mw] of cases) {
    const conf = netConf(agent.socket, extra, mw);
    const r = await runCni(addEnv('ADD', envOver), j(conf));
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(JSON.parse(r.stdout), conf.prevResult);
    const c = await runCni(addEnv('CHECK', envOver), j(conf));
    assert.equal(c.code, 0, c.stdout);
  }
  assert.equal(agent.requests.length, 0, 'skipped pods never reach the agent');
  // An explicit empty list meshes kube-system too; skip:false does not skip.
  const r = await runCni(addEnv('ADD', { CNI_ARGS: 'K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=x' }),
    j(netConf(agent.socket, { runtimeConfig: { meshwarp: { skip: false } } }, { excludeNamespaces: [] })));
  assert.equal(r.code, 0);
  assert.equal(agent.count('/v1/cni/add'), 1);
  await expectError(addEnv(), j(netConf(agent.socket, { runtimeConfig: { meshwarp: { skip: 'yes' } } })), 7, /skip/);
});

test('agent refusals (4xx) become CNI errors with the agent message', async () => {
  const conf = j(netConf(agent.socket));
  agent.replies.set('/v1/cni/add', { status: 400, body: { error: 'bad pod spec', details: 'no IP in prevResult' } });
  const e = await expectError(addEnv(), conf, 7, /refused ADD: bad pod spec/);
  assert.equal(e.details, 'no IP in prevResult');
  agent.replies.set('/v1/cni/add', { status: 403, body: { error: 'policy says no', cniCode: 105 } });
  await expectError(addEnv(), conf, 105, /policy says no/);
  agent.replies.set('/v1/cni/add', { status: 409, raw: 'not json' });
  await expectError(addEnv(), conf, 100, /HTTP 409/);
  agent.replies.set('/v1/cni/add', { status: 409, body: { error: 'x', cniCode: 50 } }); // not an ADD code
  await expectError(addEnv(), conf, 100);
});

test('failurePolicy closed: unreachable agent → code 11 naming the socket and the way out', async () => {
  const missing = join(agent.dir, 'nobody.sock');
  const e = await expectError(addEnv(), j(netConf(missing)), 11, /unreachable at .*nobody\.sock.*ENOENT/);
  assert.match(e.details ?? '', /meshwarp status/);
  assert.match(e.details ?? '', /failurePolicy/);
  const notASocket = join(agent.dir, 'plain-file');
  writeFileSync(notASocket, '');
  await expectError(addEnv(), j(netConf(notASocket)), 11, /ECONNREFUSED/);
  agent.replies.set('/v1/cni/add', { status: 503, body: { error: 'starting' } });
  await expectError(addEnv(), j(netConf(agent.socket)), 11, /HTTP 503: starting/);
  agent.replies.set('/v1/cni/add', { status: 200, raw: '<html>' });
  await expectError(addEnv(), j(netConf(agent.socket)), 11, /not a JSON object/);
});

test('failurePolicy open: unreachable agent → prevResult and a warn log line', async () => {
  const conf = netConf(join(agent.dir, 'nobody.sock'), {}, { failurePolicy: 'open' });
  const r = await runCni(addEnv(), j(conf));
  assert.equal(r.code, 0);
  assert.deepEqual(JSON.parse(r.stdout), conf.prevResult);
  const line = JSON.parse(r.stderr.trim().split('\n')[0]) as Record<string, unknown>;
  assert.equal(line.level, 'warn');
  assert.match(String(line.msg), /agent unreachable, pod started unmeshed \(failurePolicy open\)/);
  assert.equal(line.pod, 'default/web-0');
});

test('an agent that never answers is given up on after timeoutMs', async () => {
  agent.replies.set('/v1/cni/add', 'hang');
  const r = await runCni(addEnv(), j(netConf(agent.socket, {}, { timeoutMs: 300 })));
  assert.equal(r.code, 1);
  const e = parseCniError(r.stdout);
  assert.equal(e.code, 11);
  assert.match(e.msg, /no answer within 300 ms/);
  assert.ok(r.ms < 3000, `took ${r.ms} ms`);
});

test('DEL is idempotent and needs neither CNI_NETNS nor prevResult; unreachable agent is fine', async () => {
  const conf = netConf(agent.socket);
  delete conf.prevResult;
  for (let i = 0; i < 2; i++) {
    const r = await runCni(addEnv('DEL', { CNI_NETNS: undefined }), j(conf));
    assert.equal(r.code, 0, r.stdout);
    assert.equal(r.stdout, '');
  }
  assert.equal(agent.count('/v1/cni/del'), 2);
  assert.equal(agent.requests[0].body.netns, '');
  assert.equal(agent.requests[0].body.prevResult, undefined);
  const gone = await runCni(addEnv('DEL'), j(netConf(join(agent.dir, 'nobody.sock'))));
  assert.equal(gone.code, 0);
  assert.equal(gone.stdout, '');
  assert.match(gone.stderr, /"level":"warn"/);
  agent.replies.set('/v1/cni/del', { status: 404, body: { error: 'unknown container' } });
  assert.equal((await runCni(addEnv('DEL'), j(conf))).code, 0);
  await expectError(addEnv('DEL', { CNI_IFNAME: undefined }), j(conf), 4, /CNI_IFNAME/);
});

test('CHECK asks the agent; not meshed as expected → error; policy on unreachable', async () => {
  const conf = netConf(agent.socket);
  const r = await runCni(addEnv('CHECK'), j(conf));
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '');
  assert.equal(agent.requests[0].path, '/v1/cni/check');
  assert.deepEqual(agent.requests[0].body.prevResult, conf.prevResult);
  agent.replies.set('/v1/cni/check', { status: 404, body: { error: 'unknown container' } });
  await expectError(addEnv('CHECK'), j(conf), 3, /refused CHECK: unknown container/);
  agent.replies.set('/v1/cni/check', { status: 200, body: { ok: false, reason: 'no redirection attached' } });
  await expectError(addEnv('CHECK'), j(conf), 101, /no redirection attached/);
  const missing = join(agent.dir, 'nobody.sock');
  await expectError(addEnv('CHECK'), j(netConf(missing)), 11, /unreachable/);
  assert.equal((await runCni(addEnv('CHECK'), j(netConf(missing, {}, { failurePolicy: 'open' })))).code, 0);
  const noPrev = netConf(agent.socket);
  delete noPrev.prevResult;
  await expectError(addEnv('CHECK'), j(noPrev), 7, /prevResult/);
});

test('STATUS: reachable → 0 silently; unreachable or not ready → 50 when closed, 0 when open', async () => {
  const st = { CNI_COMMAND: 'STATUS', CNI_PATH: '/opt/cni/bin' };
  const conf = netConf(agent.socket, { cniVersion: '1.1.0' });
  delete conf.prevResult;
  const r = await runCni(st, j(conf));
  assert.equal(r.code, 0);
  assert.equal(r.stdout, '');
  assert.equal(agent.requests[0].path, '/v1/cni/status');
  agent.replies.set('/v1/cni/status', { status: 200, body: { ready: false, reason: 'datapath not loaded' } });
  const e = await expectError(st, j(conf), 50, /datapath not loaded/);
  assert.equal(e.cniVersion, '1.1.0');
  const missing = { ...conf, meshwarp: { socket: join(agent.dir, 'nobody.sock') } };
  await expectError(st, j(missing), 50, /unreachable/);
  const open = { ...conf, meshwarp: { socket: join(agent.dir, 'nobody.sock'), failurePolicy: 'open' } };
  const o = await runCni(st, j(open));
  assert.equal(o.code, 0);
  assert.equal(o.stdout, '');
});

test('GC forwards the valid attachments; best effort when the agent is away', async () => {
  const gc = { CNI_COMMAND: 'GC', CNI_PATH: '/opt/cni/bin' };
  const conf: Record<string, unknown> = { cniVersion: '1.1.0', name: 'k8s-pod-network', type: 'meshwarp-cni', meshwarp: { socket: agent.socket },
    'cni.dev/valid-attachments': [{ containerID: 'aaa', ifname: 'eth0' }, { containerID: 'bbb', ifname: 'net1' }] };
  const r = await runCni(gc, j(conf));
  assert.equal(r.code, 0, r.stdout);
  assert.equal(r.stdout, '');
  assert.deepEqual(agent.requests[0], { path: '/v1/cni/gc', body: {
    cniVersion: '1.1.0', networkName: 'k8s-pod-network', validAttachments: [{ containerId: 'aaa', ifName: 'eth0' }, { containerId: 'bbb', ifName: 'net1' }],
  } });
  const legacy = { ...conf, 'cni.dev/attachments': [], 'cni.dev/valid-attachments': undefined };
  assert.equal((await runCni(gc, j(legacy))).code, 0);
  assert.deepEqual(agent.requests[1].body.validAttachments, []);
  assert.equal((await runCni(gc, j({ ...conf, meshwarp: { socket: join(agent.dir, 'nobody.sock') } }))).code, 0);
  agent.requests.length = 0;
  await expectError(gc, j({ ...conf, 'cni.dev/valid-attachments': [{ containerID: 1 }] }), 7, /valid-attachments/);
  await expectError(gc, j({ ...conf, 'cni.dev/valid-attachments': undefined }), 7, /valid-attachments/);
  assert.equal(agent.requests.length, 0, 'a malformed GC never reaches the agent (it could delete everything)');
});

test('environment validation: code 4 naming the variables', async () => {
  const conf = j(netConf(agent.socket));
  await expectError({}, conf, 4, /CNI_COMMAND/);
  await expectError({ CNI_COMMAND: 'add' }, conf, 4, /unknown command/);
  await expectError({ CNI_COMMAND: 'INIT' }, conf, 4, /unknown command/);
  for (const k of ['CNI_CONTAINERID', 'CNI_NETNS', 'CNI_IFNAME']) {
    await expectError(addEnv('ADD', { [k]: undefined }), conf, 4, new RegExp(k));
    await expectError(addEnv('CHECK', { [k]: '' }), conf, 4, new RegExp(k));
  }
  const e = await expectError(addEnv('ADD', { CNI_NETNS: undefined, CNI_IFNAME: undefined }), conf, 4);
  assert.match(e.msg, /CNI_NETNS, CNI_IFNAME/);
  await expectError(addEnv('ADD', { CNI_IFNAME: 'averyveryverylongifname' }), conf, 4, /CNI_IFNAME/);
  await expectError(addEnv('ADD', { CNI_IFNAME: 'eth/0' }), conf, 4, /CNI_IFNAME/);
  await expectError(addEnv('ADD', { CNI_IFNAME: '..' }), conf, 4, /CNI_IFNAME/);
  await expectError(addEnv('ADD', { CNI_CONTAINERID: '-abc' }), conf, 4, /CNI_CONTAINERID/);
  await expectError(addEnv('ADD', { CNI_ARGS: 'K8S_POD_NAME' }), conf, 4, /CNI_ARGS/);
  assert.equal(agent.requests.length, 0);
});

test('config validation: decode 6, version 1, invalid 7, unsupported field 2', async () => {
  const env = addEnv();
  await expectError(env, '{"cniVersion": "1.0.0",', 6, /invalid JSON/);
  await expectError(env, '', 6, /empty/);
  await expectError(env, '[1,2]', 6, /JSON object/);
  await expectError(env, Buffer.from([0xff, 0xfe, 0x7b]), 6, /UTF-8/);
  const v = await expectError(env, j(netConf(agent.socket, { cniVersion: '0.4.0' })), 1, /incompatible CNI version 0\.4\.0/);
  assert.equal(v.cniVersion, '1.0.0');
  await expectError(env, j(netConf(agent.socket, { cniVersion: '2.0.0' })), 1);
  await expectError(env, j(netConf(agent.socket, { cniVersion: 'one' })), 6, /version/);
  await expectError(env, j(netConf(agent.socket, { cniVersion: undefined })), 7, /cniVersion/);
  await expectError(env, j(netConf(agent.socket, { name: undefined })), 7, /name/);
  await expectError(env, j(netConf(agent.socket, { type: 'bridge' })), 7, /type/);
  const u = await expectError(env, j(netConf(agent.socket, {}, { failurepolicy: 'open' })), 2, /meshwarp\.failurepolicy = "open"/);
  assert.match(u.details ?? '', /failurePolicy/);
  await expectError(env, j(netConf(agent.socket, {}, { failurePolicy: 'maybe' })), 7, /failurePolicy/);
  await expectError(env, j(netConf('relative.sock')), 7, /socket/);
  await expectError(env, j(netConf(agent.socket, {}, { timeoutMs: -1 })), 7, /timeoutMs/);
  await expectError(env, j(netConf(agent.socket, {}, { excludeNamespaces: 'kube-system' })), 7, /excludeNamespaces/);
  const e11 = await expectError(env, j(netConf(agent.socket, { cniVersion: '1.1.0', name: '' })), 7);
  assert.equal(e11.cniVersion, '1.1.0', 'errors are reported in the config version');
  assert.equal(agent.requests.length, 0);
});

test('oversized stdin (2 MiB) is refused with code 6 without reading it all', async () => {
  const big = Buffer.alloc(2 * 1024 * 1024, 0x20);
  big.write(j(netConf(agent.socket)), 0);
  const e = await expectError(addEnv(), big, 6, /larger than 1048576 bytes/);
  assert.equal(e.cniVersion, '1.0.0');
  assert.equal(agent.requests.length, 0);
});

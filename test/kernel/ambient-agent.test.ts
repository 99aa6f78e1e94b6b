// SPDX-License-Identifier: Apache-2.0
// The ambient dataplane run by the real agent (`meshwarp agent --dataplanes sidecar,ambient`)
// through the real CNI chain (loopback, bridge + host-local, meshwarp-cni whose conf says
// `dataplane: ambient`): the lab's node proxy announces itself over the agent's socket,
// CNI ADD enrols the pods, their traffic goes through the node proxy, `meshwarp pods` and
// `meshwarp status` show it, and an agent SIGKILL under traffic fails no request while
// new connections are still captured.
// Run: make bpf && .tools/node/bin/node --disable-warning=ExperimentalWarning --test test/kernel/ambient-agent.test.ts
import assert from 'node:assert/strict';
import { LabNodeProxy } from '../../src/lab/index.ts';
import { APP_PORT, assertDirect, connectFrom, loadFrom, norm, serveIn, type ConnectResult } from '../conformance/harness.ts';
import { TC_MODES, agentStatus, cli, cniLab } from '../helpers/cni-runtime.ts';
import { kernelTest, sidecarTest } from '../helpers/kernel.ts';
import { waitUntil } from '../helpers/poll.ts';

interface AmbientStatus { datapath: Record<string, number>; dataplanes: string[]; ambient?: { ztunnelReady: boolean; redirectMode: string; failPolicy: string } }

function assertVia(r: ConnectResult, server: string, proxyIp: string, what: string): void {
  assert.ok(r.ok && r.reply, `${what}: request failed: ${JSON.stringify(r)}`);
  assert.equal(r.reply.name, server, `${what}: answered by ${r.reply.name}`);
  assert.equal(norm(r.reply.remote), proxyIp, `${what}: the server saw ${r.reply.remote}, not the node proxy ${proxyIp}`);
}

for (const tc of TC_MODES) {
  sidecarTest(`agent --dataplanes sidecar,ambient (--tc ${tc}): CNI ADD enrols ambient pods, traffic goes through the announced node proxy, SIGKILL under traffic fails nothing`, async (t) => {
    const c = await cniLab(t, { tag: 'aa', tc, dataplane: 'ambient', agentArgs: ['--dataplanes', 'sidecar,ambient'] });
    if (!c) return;
    const { lab, n1, agent, agentLog } = c;
    const proxy = await LabNodeProxy.start(n1);
    t.after(() => proxy.stop());
    await proxy.announceTo(agent);
    const server = await lab.addPodCni(n1, 'server');
    const client = await lab.addPodCni(n1, 'client');
    const other = lab.addPod(n1, 'other'); // wired directly: not enrolled
    for (const p of [server, client, other]) await serveIn(p, p.name, [APP_PORT]);
    const status = () => agent.request<AmbientStatus>('GET', '/v1/status');

    await t.test('enrolled pods go through the node proxy (IPv4 and IPv6); the others do not', async () => {
      assertVia(await connectFrom(client, server.ip4, APP_PORT), 'server', proxy.ip4, 'client -> server (IPv4)');
      assertVia(await connectFrom(client, server.ip6, APP_PORT), 'server', proxy.ip6, 'client -> server (IPv6)');
      assertVia(await connectFrom(other, server.ip4, APP_PORT), 'server', proxy.ip4, 'other -> server: inbound capture');
      assertDirect(await connectFrom(n1, other.ip4, APP_PORT), 'other', 'node -> other');
      assertDirect(await connectFrom(n1, server.ip4, APP_PORT), 'server', 'node -> server (a probe)');
    });

    await t.test('`meshwarp pods` shows both pods in the ambient dataplane; status says the node proxy is ready', async () => {
      const r = await cli(n1, ['pods', '--json', '--socket', agent.socket]);
      assert.equal(r.code, 0, r.stderr);
      const pods = (JSON.parse(r.stdout) as { podName: string; dataplane: string }[]).map((p) => `${p.podName}:${p.dataplane}`).sort();
      assert.deepEqual(pods, ['client:ambient', 'server:ambient']);
      const table = await cli(n1, ['pods', '--socket', agent.socket]);
      assert.match(table.stdout, /DATAPLANE/);
      assert.match(table.stdout, /default\/server\s+ambient/);
      const s = await status();
      assert.deepEqual(s.dataplanes.sort(), ['ambient', 'sidecar']);
      assert.deepEqual({ ...s.ambient, nodeProxies: undefined }, { ztunnelReady: true, redirectMode: 'ebpf', failPolicy: 'closed', nodeProxies: undefined });
      assert.ok((s.datapath.am_captured_out ?? 0) > 0, `am_captured_out counted: ${JSON.stringify(s.datapath)}`);
      const text = await cli(n1, ['status', '--socket', agent.socket]);
      assert.match(text.stdout, /ambient\s+\{"ztunnelReady":true,"redirectMode":"ebpf"\}/);
      assert.ok(agentLog.some((l) => l.includes('ambient config: {\\"ztunnelReady\\":true,\\"redirectMode\\":\\"ebpf\\"}')), 'the agent logged the ambient config line');
    });

    await t.test('agent SIGKILL under traffic: 0 failed requests; new connections captured while it is down and after it is back', async () => {
      const before = (await status()).datapath.am_captured_out ?? 0;
      let done = false;
      const load = loadFrom(client, server.ip4, APP_PORT, 3000, 4).finally(() => { done = true; });
      await waitUntil('the load is being captured', async () => ((await status()).datapath.am_captured_out ?? 0) > before + 20, 20_000);
      await agent.kill();
      assert.equal(done, false, 'the load was still running when the agent was killed (make it longer)');
      assertVia(await connectFrom(client, server.ip6, APP_PORT), 'server', proxy.ip6, 'a new connection while the agent is down');
      await agent.start();
      await proxy.announceTo(agent); // the contract: announce again after the agent restarts
      const r = await load;
      assert.deepEqual({ ok: r.ok, errors: r.errors }, { ok: r.total, errors: {} }, `load across the SIGKILL: ${JSON.stringify(r)}`);
      assert.equal(done, true);
      assertVia(await connectFrom(client, server.ip4, APP_PORT), 'server', proxy.ip4, 'after the restart');
      assert.equal((await agentStatus(agent)).pods, 2, 'both pods still enrolled after the restart');
    });
  }, { timeout: 180_000, needs: tc === 'tcx' ? ['tcx', 'datapath.ambient'] : ['datapath.ambient'] });
}

// The in-pod engine (iptables): the rules live in each pod's netns and the node proxy's
// listeners there, so the agent holds nothing the traffic needs while it is down.
kernelTest('agent --dataplanes ambient --engine iptables (in-pod): SIGKILL under traffic fails nothing; new connections are still captured while it is down', async (t) => {
  const c = await cniLab(t, { tag: 'ai', dataplane: 'ambient', agentArgs: ['--dataplanes', 'ambient', '--engine', 'iptables'] });
  if (!c) return;
  const { lab, n1, agent } = c;
  const proxy = await LabNodeProxy.start(n1);
  t.after(() => proxy.stop());
  await proxy.announceTo(agent);
  const server = await lab.addPodCni(n1, 'server');
  const client = await lab.addPodCni(n1, 'client');
  for (const p of [server, client]) await serveIn(p, p.name, [APP_PORT]);
  const status = () => agent.request<AmbientStatus>('GET', '/v1/status');
  // In-pod, the server's inbound listener connects to it from its own address.
  assertVia(await connectFrom(client, server.ip4, APP_PORT), 'server', server.ip4, 'client -> server (IPv4)');
  assert.equal((await status()).ambient?.redirectMode, 'iptables');

  const before = (await status()).datapath.am_captured_out ?? 0;
  let done = false;
  const load = loadFrom(client, server.ip4, APP_PORT, 3000, 4).finally(() => { done = true; });
  await waitUntil('the load is being captured', async () => ((await status()).datapath.am_captured_out ?? 0) > before + 20, 20_000);
  await agent.kill();
  assert.equal(done, false, 'the load was still running when the agent was killed (make it longer)');
  const s0 = await proxy.sessions();
  assertVia(await connectFrom(client, server.ip6, APP_PORT), 'server', server.ip6, 'a new connection while the agent is down');
  assert.ok(await proxy.sessions() > s0, 'the node proxy served it');
  await agent.start();
  await proxy.announceTo(agent);
  const r = await load;
  assert.deepEqual({ ok: r.ok, errors: r.errors }, { ok: r.total, errors: {} }, `load across the SIGKILL: ${JSON.stringify(r)}`);
  assertVia(await connectFrom(client, server.ip4, APP_PORT), 'server', server.ip4, 'after the restart');
  assert.equal((await agentStatus(agent)).pods, 2, 'both pods still enrolled after the restart');
}, { timeout: 180_000 });

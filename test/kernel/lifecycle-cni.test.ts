// SPDX-License-Identifier: Apache-2.0
// Pod and agent lifecycle through the real CNI chain (loopback, then Debian's bridge +
// host-local, then meshwarp-cni, run from the node netns as a runtime does), against the
// agent as the lab starts it (a real `meshwarp agent` process with its documented flags):
//   1. agent restarts (SIGTERM, SIGKILL) with --tc tcx and --tc legacy
//   2. two sandboxes of one Kubernetes pod; CHECK that looks at the datapath
//   3. a DEL lost while the agent was down; GC; the pod's IP handed to an unmeshed pod
//   4. duplicate ADDs (serial and concurrent) and ADDs claiming a live pod's IP
// Traffic stays inside the lab's network namespaces. No timing thresholds: waits are
// bounded polls for a condition.
// Run: make bpf && .tools/node/bin/node --disable-warning=ExperimentalWarning --test test/kernel/lifecycle-cni.test.ts
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { BpfObject, TcFilter } from '../../src/bpf/index.ts';
import { selftestObject } from '../../src/bpf/selftest.ts';
import { type LabNode, type LabPod, type Sandbox } from '../../src/lab/index.ts';
import { resolvePodPolicy } from '../../src/profiles/index.ts';
import { withNetns } from '../../src/sys/netns.ts';
import { APP_PORT, Sidecar, assertDirect, assertProxied, connectFrom, hostPort, serveIn, splitHostPort } from '../conformance/harness.ts';
import {
  CniChainError, TC_MODES, agentHttp, agentPods, agentStatus, cli, cniEnv, cniLab, inNode, logsAt, ourTc, outcomeText,
  podMaps, tcPins, type CniLab,
} from '../helpers/cni-runtime.ts';
import { sidecarTest } from '../helpers/kernel.ts';

/** The agent's default profile (osm): sidecar on 15001/15003 as uid 1500. */
const POLICY = resolvePodPolicy('osm', {});
const DIRS = ['ingress', 'egress'] as const;
const FAMS = [4, 6] as const;
const ip = (p: LabPod, fam: 4 | 6) => (fam === 4 ? p.ip4 : p.ip6);

/** App server + sidecar in a CNI pod. */
async function workload(p: LabPod): Promise<Sidecar> {
  await serveIn(p, p.name, [APP_PORT]);
  return Sidecar.start(p, POLICY);
}

/** A connection from `from` to `to`'s app port went into `to`'s sidecar (inbound capture, tc or connect time). */
async function assertInbound(from: Sandbox, to: LabPod, sc: Sidecar, fam: 4 | 6, what: string): Promise<void> {
  const r = await connectFrom(from, ip(to, fam), APP_PORT);
  assertProxied(r, to.name, `${what}: ${from.name} -> ${to.name}:${APP_PORT} (IPv${fam})`);
  const line = await sc.waitFor((l) => l.dir === 'inbound' && splitHostPort(l.client).port === r.localPort,
    `${what}: inbound from client port ${r.localPort}`);
  assert.equal(line.origDst, hostPort(ip(to, fam), APP_PORT), `${what}: original destination`);
}

/** A connect from `from`'s app went into `from`'s own sidecar (outbound capture). */
async function assertOutbound(from: LabPod, sc: Sidecar, to: string, what: string): Promise<void> {
  const r = await connectFrom(from, to, APP_PORT);
  assertProxied(r, r.reply?.name ?? '?', `${what}: ${from.name} -> ${to}:${APP_PORT}`);
  const line = await sc.waitFor((l) => l.dir === 'outbound' && splitHostPort(l.client).port === r.localPort,
    `${what}: outbound from client port ${r.localPort}`);
  assert.equal(line.origDst, hostPort(to, APP_PORT), `${what}: original destination`);
}

/** Exactly one of our programs on each tc hook of the pod's veth. */
function assertOneTcEach(n: LabNode, p: LabPod, what: string): void {
  for (const d of DIRS) {
    const ours = ourTc(n, p.hostVeth, d);
    assert.equal(ours.length, 1, `${what}: ${p.name} ${p.hostVeth} ${d}: expected exactly one meshwarp program, found ${JSON.stringify(ours)}`);
  }
}

/** A foreign cls_bpf filter (the binding's selftest program, returns "continue") ahead of ours on both hooks of a veth. */
function foreignFilters(t: TestContext, n: LabNode, p: LabPod, priority = 100): { present(): boolean[] } {
  const obj = BpfObject.load(selftestObject, { config: { st_from_port: 1, st_to_port: 2 } });
  t.after(() => obj.close());
  const filters = withNetns(n.netnsPath, () => DIRS.map((d) => TcFilter.attach(obj.program('st_tc_count'), p.hostIfindex, d, { priority, handle: 7 })));
  return { present: () => withNetns(n.netnsPath, () => filters.map((f) => f.progId() !== undefined)) };
}

// ---------------------------------------------------------------------------------------
// 1. Agent restart keeps every pod meshed, with tcx and with legacy tc.

for (const tc of TC_MODES) {
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    sidecarTest(`restart (${sig}) with --tc ${tc}: pods stay meshed, one filter per hook, uninstall removes ours and only ours`, async (t) => {
      const c = await cniLab(t, { tag: 'lr', nodes: 2, tc });
      if (!c) return;
      const { lab, n1, n2, agent, agentLog } = c;
      const web = await lab.addPodCni(n1, 'web');
      const api = await lab.addPodCni(n1, 'api');
      const sc = { web: await workload(web), api: await workload(api) };
      const client = lab.addPod(n2!, 'client'); // unmeshed, on the other node: inbound goes through node1's tc
      const foreign = foreignFilters(t, n1, web);
      for (const p of [web, api]) await assertInbound(client, p, sc[p.name as 'web' | 'api'], 4, 'before the restart');
      for (const p of [web, api]) assertOneTcEach(n1, p, 'before the restart');

      if (sig === 'SIGTERM') await agent.stop();
      else await agent.kill();
      await agent.start();

      await t.test('the restarted agent still lists every pod (GET /v1/pods and `meshwarp pods`)', async () => {
        const warns = logsAt(agentLog, 'warn').filter((l) => /re-mesh/.test(String(l.msg)));
        assert.deepEqual((await agentPods(agent)).map((p) => `${p.podNamespace}/${p.podName}`).sort(), ['default/api', 'default/web'],
          `pods after restart; agent warnings: ${JSON.stringify(warns)}`);
        const r = await cli(n1, ['pods', '--json', '--socket', agent.socket]);
        assert.equal(r.code, 0, r.stderr);
        assert.deepEqual((JSON.parse(r.stdout) as { podName: string }[]).map((p) => p.podName).sort(), ['api', 'web']);
        assert.equal((await agentStatus(agent)).pods, 2);
      });

      await t.test('cross-node inbound is still DNAT-ed into each sidecar', async () => {
        for (const fam of FAMS) for (const p of [web, api]) await assertInbound(client, p, sc[p.name as 'web' | 'api'], fam, 'after the restart');
      });

      await t.test('exactly one meshwarp program per hook (no duplicate, none missing); the foreign filter untouched', () => {
        for (const p of [web, api]) assertOneTcEach(n1, p, 'after the restart');
        assert.deepEqual(foreign.present(), [true, true], 'the foreign filters (pref 100) are still attached');
      });

      await t.test('a pod added after the restart is meshed too', async () => {
        const late = await lab.addPodCni(n1, 'late');
        const scLate = await workload(late);
        await assertInbound(client, late, scLate, 4, 'pod added after the restart');
        assertOneTcEach(n1, late, 'pod added after the restart');
      });

      await t.test('`meshwarp uninstall` removes every meshwarp program and pin, and nothing else', async () => {
        const r = await cli(n1, ['uninstall', ...agent.flags()]);
        assert.equal(r.code, 0, `uninstall: ${r.stderr}`);
        const p = agent.process;
        if (p && p.exitCode === null && p.signalCode === null) await new Promise((res) => p.once('exit', res));
        for (const pod of lab.pods.filter((x) => x.node === n1 && x.cni)) {
          for (const d of DIRS) assert.deepEqual(ourTc(n1, pod.hostVeth, d), [], `${pod.name} ${pod.hostVeth} ${d}: meshwarp programs left after uninstall`);
        }
        assert.deepEqual(foreign.present(), [true, true], 'the foreign filters survive uninstall');
        assert.equal(existsSync(agent.pinRoot), false, `pins left under ${agent.pinRoot}`);
        assertDirect(await connectFrom(client, web.ip4, APP_PORT), 'web', 'after uninstall: client -> web goes direct');
      });
    }, { timeout: 180_000, needs: tc === 'tcx' ? ['tcx'] : [] });
  }
}

// ---------------------------------------------------------------------------------------
// 2. Two sandboxes of the same pod (default/web): a runtime re-creating a pod's sandbox.

for (const tc of TC_MODES) {
  sidecarTest(`two sandboxes of default/web (--tc ${tc}): both meshed, DEL of the old keeps the new, CHECK looks at the datapath`, async (t) => {
    const c = await cniLab(t, { tag: 'ls', tc });
    if (!c) return;
    const { lab, n1, agent, rt } = c;
    const srv = lab.addPod(n1, 'srv'); // directly wired, unmeshed destination
    await serveIn(srv, 'srv', [APP_PORT]);
    const old = await lab.addPodCni(n1, 'web');
    const scOld = await workload(old);
    const neu = await rt.addSandbox('web-2', { podNamespace: 'default', podName: 'web' });
    const scNew = await workload(neu);
    assert.notEqual(old.cni!.containerId, neu.cni!.containerId);
    assert.notEqual(old.ip4, neu.ip4);

    await t.test('both sandboxes are meshed: connects from each are captured, inbound to each too', async () => {
      await assertOutbound(neu, scNew, srv.ip4, 'new sandbox');
      await assertOutbound(old, scOld, srv.ip4, 'old sandbox');
      await assertInbound(srv, neu, scNew, 4, 'new sandbox');
      await assertInbound(srv, old, scOld, 4, 'old sandbox');
      assertOneTcEach(n1, old, 'old sandbox');
      assertOneTcEach(n1, neu, 'new sandbox');
    });

    await t.test('the agent lists both attachments', async () => {
      const pods = await agentPods(agent);
      assert.deepEqual(pods.map((p) => p.containerId).sort(), [old.cni!.containerId, neu.cni!.containerId].sort());
    });

    const oldCni = old.cni!;
    await lab.removePodCni(old); // runtime DEL of the old sandbox, then its netns goes

    await t.test('after DEL of the old sandbox the live one is still meshed, and CHECK on it succeeds', async () => {
      await assertOutbound(neu, scNew, srv.ip4, 'new sandbox after DEL of the old');
      await assertInbound(srv, neu, scNew, 4, 'new sandbox after DEL of the old');
      assertOneTcEach(n1, neu, 'new sandbox after DEL of the old');
      await rt.check(neu);
      assert.deepEqual((await agentPods(agent)).map((p) => p.containerId), [neu.cni!.containerId]);
    });

    await t.test('CHECK of the deleted sandbox fails (unknown container)', async () => {
      const r = await rt.meshwarp('CHECK', oldCni.env, { prevResult: oldCni.result });
      assert.equal(r.code, 1, outcomeText(r));
      assert.ok([3, 101].includes(r.json?.code as number), `CNI code 3 or 101: ${outcomeText(r)}`);
    });

    await t.test('CHECK fails once the sandbox\'s tc programs were detached out of band', async () => {
      // An operator (or another tool) removing our programs from the pod's veth.
      for (const d of DIRS) {
        if (tc === 'tcx') {
          const pin = `${agent.pinRoot}/links/tc/${neu.cni!.containerId}/tcx-${d}`;
          if (existsSync(pin)) inNode(n1, ['bpftool', 'link', 'detach', 'pinned', pin]);
        } else {
          for (const f of ourTc(n1, neu.hostVeth, d)) {
            inNode(n1, ['tc', 'filter', 'del', 'dev', neu.hostVeth, d, 'pref', String(f.pref), 'handle', String(f.handle), 'bpf']);
          }
        }
        assert.deepEqual(ourTc(n1, neu.hostVeth, d), [], `${d}: detached`);
      }
      const err = await rt.check(neu).then(() => undefined, (e: unknown) => e);
      assert.ok(err instanceof CniChainError, `CHECK must fail when the datapath is not in place, got ${String(err)}`);
      assert.equal(err.plugin, 'meshwarp-cni');
      assert.equal(err.cniCode, 101, err.message);
      assert.match(err.msg, /tc|program|datapath|attached/i, 'the reason names what is missing');
    });
  }, { timeout: 120_000, needs: tc === 'tcx' ? ['tcx'] : [] });
}

// ---------------------------------------------------------------------------------------
// 3. A DEL lost while the agent was down.

for (const tc of TC_MODES) {
  sidecarTest(`a DEL lost while the agent was down (--tc ${tc}): restart + GC remove the pod's entries; its IP reused by an unmeshed pod is reachable`, async (t) => {
    const c = await cniLab(t, { tag: 'ld', tc });
    if (!c) return;
    const { lab, n1, agent, rt } = c;
    // host-local hands out only .100-.101 (and ::100-::101): an address freed is the next one given.
    rt.narrowIpam(101);
    const client = await lab.addPodCni(n1, 'client');
    const scClient = await workload(client);
    const expected = podMaps(await agentStatus(agent));
    const gone = await lab.addPodCni(n1, 'gone');
    const goneIp = { ip4: gone.ip4, ip6: gone.ip6, ifindex: gone.hostIfindex, veth: gone.hostVeth, sandbox: gone.cni!.containerId };
    assert.notDeepEqual(podMaps(await agentStatus(agent)), expected, 'the gone pod had entries');
    assert.deepEqual(tcPins(agent.pinRoot, goneIp.sandbox).length, 2, 'the gone pod had its two tc pins');

    await agent.stop();
    await lab.removePodCni(gone); // DEL reaches no agent: meshwarp-cni exits 0 (best effort); bridge + host-local clean up; netns deleted
    assert.ok(c.pluginLog.some((l) => l.plugin === 'meshwarp-cni' && l.command === 'DEL' && /unreachable/.test(l.line)), 'the DEL warned that the agent was unreachable');
    await agent.start();

    await t.test('after the restart the agent lists the live pod and not the gone one', async () => {
      assert.deepEqual((await agentPods(agent)).map((p) => p.podName), ['client'], 'pods known to the restarted agent');
    });

    await t.test('after a CNI GC with the remaining attachments, the map entries are back to one pod and no tc pin of the gone veth is left', async () => {
      const gc = await rt.gc([{ containerId: client.cni!.containerId }]);
      assert.ok(gc['meshwarp-cni'], 'GC reached meshwarp-cni');
      assert.equal(gc['meshwarp-cni'].code, 0, outcomeText(gc['meshwarp-cni']));
      assert.deepEqual((await agentPods(agent)).map((p) => p.podName), ['client'], 'the live pod survives GC');
      const s = await agentStatus(agent);
      assert.deepEqual(podMaps(s), expected, 'pod-state map entries (meshwarp status) back to what one pod needs');
      assert.deepEqual(tcPins(agent.pinRoot, goneIp.sandbox), [], `tc pins of the gone sandbox under ${agent.pinRoot}/links/tc`);
      const left = existsSync(`${agent.pinRoot}/links/tc`) ? readdirSync(`${agent.pinRoot}/links/tc`).sort() : [];
      const want = [client.cni!.containerId];
      assert.deepEqual(left, want, 'tc pins: only the live pod\'s');
    });

    await t.test('the gone pod\'s IP, handed to a new unmeshed pod, is reachable from a meshed pod', async () => {
      const reuse = await lab.addPodCni(n1, 'reuse', { namespace: 'kube-system' }); // excluded namespace: never meshed
      assert.equal(reuse.ip4, goneIp.ip4, 'host-local gave the freed IPv4 to the new pod');
      assert.equal(reuse.ip6, goneIp.ip6, 'host-local gave the freed IPv6 to the new pod');
      await serveIn(reuse, 'reuse', [APP_PORT]);
      for (const fam of FAMS) {
        const r = await connectFrom(client, ip(reuse, fam), APP_PORT);
        assert.ok(r.ok && r.reply, `meshed client -> unmeshed pod on the reused IP (IPv${fam}) failed: ${JSON.stringify(r)}`);
        assert.equal(r.reply.name, 'reuse');
        await scClient.waitFor((l) => l.dir === 'outbound' && splitHostPort(l.client).port === r.localPort, `client outbound (IPv${fam})`);
      }
    });
  }, { timeout: 120_000, needs: tc === 'tcx' ? ['tcx'] : [] });
}

// ---------------------------------------------------------------------------------------
// 4. Duplicate ADDs and ADDs that claim a live pod's IP.

/** meshwarp-cni ADD again for a live pod: same container id, netns, ifname, prevResult (a runtime retrying the last plugin). */
function repeatAdd(c: CniLab, p: LabPod) {
  return c.rt.meshwarp('ADD', p.cni!.env, { prevResult: p.cni!.result });
}

for (const tc of TC_MODES) {
  sidecarTest(`duplicate ADD of a live pod (--tc ${tc}): success, still meshed, tc programs still attached`, async (t) => {
    const c = await cniLab(t, { tag: 'la', tc });
    if (!c) return;
    const { lab, n1, agent } = c;
    const srv = lab.addPod(n1, 'srv');
    await serveIn(srv, 'srv', [APP_PORT]);
    const web = await lab.addPodCni(n1, 'web');
    const sc = await workload(web);
    const before = podMaps(await agentStatus(agent));

    await t.test('a second ADD answers success with the prevResult, and changes nothing', async () => {
      const r = await repeatAdd(c, web);
      assert.equal(r.code, 0, outcomeText(r));
      assert.deepEqual(r.json?.ips, web.cni!.result.ips, 'prevResult passed on');
      assert.deepEqual(podMaps(await agentStatus(agent)), before, 'same entries');
      assertOneTcEach(n1, web, 'after a duplicate ADD');
      await assertOutbound(web, sc, srv.ip4, 'after a duplicate ADD');
      await assertInbound(srv, web, sc, 4, 'after a duplicate ADD');
    });

    await t.test('8 concurrent duplicate ADDs all succeed; the pod stays meshed', async () => {
      const rs = await Promise.all(Array.from({ length: 8 }, () => repeatAdd(c, web)));
      for (const r of rs) assert.equal(r.code, 0, outcomeText(r));
      assert.deepEqual(podMaps(await agentStatus(agent)), before, 'same entries');
      assertOneTcEach(n1, web, 'after concurrent duplicate ADDs');
      await assertOutbound(web, sc, srv.ip4, 'after concurrent duplicate ADDs');
      await assertInbound(srv, web, sc, 4, 'after concurrent duplicate ADDs');
      await c.rt.check(web);
    });
  }, { timeout: 120_000, needs: tc === 'tcx' ? ['tcx'] : [] });

  sidecarTest(`an ADD of a new pod claiming a live pod's IP (--tc ${tc}) is refused with a named conflict; DEL of it does not unmesh the live pod`, async (t) => {
    const c = await cniLab(t, { tag: 'lc', tc });
    if (!c) return;
    const { lab, n1, agent, rt } = c;
    const srv = lab.addPod(n1, 'srv');
    await serveIn(srv, 'srv', [APP_PORT]);
    const web = await lab.addPodCni(n1, 'web');
    const sc = await workload(web);
    const before = podMaps(await agentStatus(agent));
    // A real sandbox with its own veth (created by the chain in an excluded namespace, so unmeshed),
    // then meshwarp-cni ADD for it as default/intruder with web's result as a forged prevResult.
    const intruderSb = await lab.addPodCni(n1, 'intruder', { namespace: 'kube-system' });
    const env = cniEnv({ containerId: `${lab.prefix}intruder0001`, netns: intruderSb.netnsPath, podNamespace: 'default', podName: 'intruder' });

    await t.test('the ADD is refused with a CNI error naming the conflict (not 11), the agent answers 4xx', async () => {
      const r = await rt.meshwarp('ADD', env, { prevResult: web.cni!.result });
      assert.equal(r.code, 1, `ADD must fail: ${outcomeText(r)}`);
      assert.notEqual(r.json?.code, 11, `a conflict is not "try again later": ${outcomeText(r)}`);
      assert.ok(typeof r.json?.code === 'number', outcomeText(r));
      assert.match(String(r.json?.msg), new RegExp(`${web.ip4.replace(/\./g, '\\.')}|default/web|conflict|in use|already`, 'i'), 'the message names the conflict');
      const body = { containerId: `${lab.prefix}intruder0002`, netns: intruderSb.netnsPath, ifName: 'eth0', podNamespace: 'default', podName: 'intruder2', prevResult: web.cni!.result };
      const h = await agentHttp(agent.socket, 'POST', '/v1/cni/add', JSON.stringify(body));
      assert.ok(h.status >= 400 && h.status < 500, `agent status ${h.status}: ${h.body}`);
    });

    await t.test('the live pod stays meshed', async () => {
      assert.deepEqual(podMaps(await agentStatus(agent)), before, 'no entry changed');
      await assertInbound(srv, web, sc, 4, 'live pod after the refused ADD');
      await assertOutbound(web, sc, srv.ip4, 'live pod after the refused ADD');
      assert.deepEqual((await agentPods(agent)).map((p) => p.podName), ['web']);
    });

    await t.test('DEL of the refused pod does not unmesh the live one', async () => {
      const r = await rt.meshwarp('DEL', env, { prevResult: web.cni!.result });
      assert.equal(r.code, 0, outcomeText(r));
      assert.deepEqual(podMaps(await agentStatus(agent)), before, 'no entry changed');
      await assertInbound(srv, web, sc, 4, 'live pod after DEL of the refused pod');
      await assertOutbound(web, sc, srv.ip4, 'live pod after DEL of the refused pod');
      assertOneTcEach(n1, web, 'live pod after DEL of the refused pod');
      await rt.check(web);
    });
  }, { timeout: 120_000, needs: tc === 'tcx' ? ['tcx'] : [] });
}

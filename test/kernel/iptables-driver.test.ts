// SPDX-License-Identifier: Apache-2.0
// The iptables driver on the real kernel, in a lab pod's netns: it adds only its own
// chains and jumps (foreign rules and a look-alike chain stay byte-for-byte), replaces
// them on a second mesh, removes exactly them on unmesh, and the rules capture what the
// eBPF mode captures: app connects land on the proxy's outbound port with the original
// destination in SO_ORIGINAL_DST, the proxy uid and loopback are not captured, inbound
// connections land on the inbound port except from node IPs. IPv4 and IPv6.
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import type { ChildProcess } from 'node:child_process';
import type { TestContext } from 'node:test';
import { get, hostPort } from '../helpers/http.ts';
import { inCI, kernelTest } from '../helpers/kernel.ts';
import { Lab, uniquePrefix, waitForLine, type LabNode, type LabPod, type Sandbox } from '../../src/lab/index.ts';
import { run } from '../../src/sys/exec.ts';
import { IptablesDriver, checkIptables } from '../../src/datapath/iptables/driver.ts';
import { labTarget } from '../../src/datapath/pod.ts';
import { OUR_CHAINS } from '../../src/datapath/iptables/rules.ts';
import { resolvePodPolicy } from '../../src/profiles/index.ts';

const PROXY = fileURLToPath(new URL('../../src/proxy/main.ts', import.meta.url));
const APP_PORT = 8080;
const APP_UID = 1000;
const PROXY_UID = 1337; // istio profile

const SERVER = `
require('node:http').createServer((q, s) => s.end(JSON.stringify({ remote: q.socket.remoteAddress, name: process.env.POD })))
  .listen(${APP_PORT}, '::', () => console.log('listening'));
`;

/** iptables-save + ip6tables-save of every table, without the timestamped comment lines. */
function saveAll(pod: LabPod): string[] {
  const save = (tool: string) => run(['nsenter', `--net=${pod.netnsPath}`, '--', tool]).split('\n').filter((l) => l !== '' && !l.startsWith('#'));
  return [...save('iptables-save').map((l) => `4 ${l}`), ...save('ip6tables-save').map((l) => `6 ${l}`)];
}

const ours = (line: string) => OUR_CHAINS.some((c) => new RegExp(`\\b${c}\\b`).test(line));

/** Proxy log lines (one JSON object per finished connection). */
class ProxyLog {
  readonly entries: { dir: string; origDst: string | null; client: string; error?: string }[] = [];
  constructor(child: ChildProcess) {
    let buf = '';
    child.stderr!.on('data', (b: Buffer) => {
      buf += b.toString('utf8');
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      for (const l of lines) if (l.startsWith('{')) this.entries.push(JSON.parse(l));
    });
  }
  /** Waits until entry number `n` (0-based) is there, or `ms` pass. */
  async waitFor(n: number, ms: number): Promise<void> {
    for (const until = Date.now() + ms; this.entries.length <= n && Date.now() < until;) await new Promise((r) => setTimeout(r, 20));
  }
}

kernelTest('iptables driver: own chains only, exact removal, capture semantics (IPv4 + IPv6)', async (t: TestContext) => {
  try {
    checkIptables();
  } catch (e) {
    if (inCI) throw e;
    t.skip(`iptables unavailable: ${(e as Error).message}`);
    return;
  }
  const lab = await Lab.create({ prefix: uniquePrefix('mwi') });
  t.after(() => lab.destroy());
  const node: LabNode = lab.addNode('node1');
  const a = lab.addPod(node, 'a'); // meshed
  const b = lab.addPod(node, 'b'); // not meshed: destination and inbound client

  const servers = [a, b].map((p) => p.spawn([process.execPath, '-e', SERVER], { uid: APP_UID, env: { ...process.env, POD: p.name } }));
  const proxy = a.spawn([process.execPath, PROXY, '--outbound', '15001', '--inbound', '15006', '--log', '--tag', 'a'], { uid: PROXY_UID });
  const log = new ProxyLog(proxy);
  await Promise.all([...servers.map((s) => waitForLine(s, /^listening$/)), waitForLine(proxy, /^ready$/)]);

  // Foreign state, including a chain that only shares our prefix.
  const foreign = (tool: string) => [
    `${tool} -t nat -N FOREIGN`,
    `${tool} -t nat -A FOREIGN -p udp --dport 9999 -j RETURN`,
    `${tool} -t nat -A OUTPUT -p udp -j FOREIGN`,
    `${tool} -t nat -A PREROUTING -p udp --dport 9999 -j RETURN`,
    `${tool} -t nat -N MESHWARP_OTHER`,
    `${tool} -t nat -A MESHWARP_OTHER -p tcp --dport 9 -j RETURN`,
    `${tool} -t filter -N FOREIGN_F`,
    `${tool} -t filter -A FOREIGN_F -p udp --dport 9999 -j ACCEPT`,
    `${tool} -t filter -A INPUT -j FOREIGN_F`,
  ];
  run(['nsenter', `--net=${a.netnsPath}`, '--', 'sh', '-ec', [...foreign('iptables'), ...foreign('ip6tables')].join('\n')]);
  const before = saveAll(a);

  const driver = new IptablesDriver({ nodeIps: [node.ip4, node.ip6, node.addrs.gw4, node.addrs.gw6] });
  t.after(() => driver.stop());
  await driver.start();
  const podRef = { ...labTarget('a', a.netnsPath, [a.ip4, a.ip6], { name: a.hostVeth, ifindex: a.hostIfindex }), key: { sandboxId: 'a', uid: '', namespace: 'default', name: 'a' } };
  const policy = resolvePodPolicy('istio');

  const curl = async (from: Sandbox, ip: string, uid?: number): Promise<{ remote: string; name: string }> =>
    JSON.parse(await get(from, ip, { port: APP_PORT, uid }));
  /** Runs a curl and returns the proxy log entry it produced, or null if none came. */
  const through = async (from: Sandbox, ip: string, uid?: number) => {
    const n = log.entries.length;
    const reply = await curl(from, ip, uid);
    await log.waitFor(n, 400);
    return { reply, entry: log.entries[n] ?? null };
  };

  await t.test('mesh adds our chains and jumps only; foreign rules are untouched', async (st) => {
    const t0 = performance.now();
    await driver.mesh(podRef, policy);
    st.diagnostic(`mesh: ${(performance.now() - t0).toFixed(1)} ms`);
    const after = saveAll(a);
    for (const fam of ['4', '6']) {
      for (const c of OUR_CHAINS) assert.ok(after.includes(`${fam} :${c} - [0:0]`), `IPv${fam} chain ${c}`);
      assert.equal(after.filter((l) => l === `${fam} -A OUTPUT -p tcp -j MESHWARP_OUTPUT`).length, 1);
      assert.equal(after.filter((l) => l === `${fam} -A PREROUTING -p tcp -j MESHWARP_INBOUND`).length, 1);
    }
    assert.deepEqual(after.filter((l) => !ours(l)), before);
    assert.ok(after.includes('4 :MESHWARP_OTHER - [0:0]') && after.includes('6 -A MESHWARP_OTHER -p tcp -m tcp --dport 9 -j RETURN'));
    // Meshing again with the same policy changes nothing.
    await driver.mesh(podRef, policy);
    assert.deepEqual(saveAll(a), after);
    assert.deepEqual(driver.pods(), [{ key: 'a', netns: a.netnsPath }]);
  });

  await t.test('app connects go to the outbound port with the original destination (v4, v6)', async () => {
    for (const ip of [b.ip4, b.ip6]) {
      const { reply, entry } = await through(a, ip, APP_UID);
      assert.equal(reply.name, 'b');
      assert.ok(entry, `no proxy log entry for app -> ${ip}`);
      assert.equal(entry.dir, 'outbound');
      assert.equal(entry.origDst, hostPort(ip, APP_PORT));
      assert.equal(entry.error, undefined);
    }
  });

  await t.test('the proxy uid, loopback, unspecified and the own pod IP are not captured outbound', async () => {
    for (const ip of [b.ip4, b.ip6]) assert.equal((await through(a, ip, PROXY_UID)).entry, null, `proxy uid -> ${ip}`);
    // 0.0.0.0 and :: reach the host itself (the kernel connects to loopback), as in eBPF.
    for (const ip of ['127.0.0.1', '::1', '0.0.0.0', '::', a.ip4, a.ip6]) {
      const { reply, entry } = await through(a, ip, APP_UID);
      assert.equal(reply.name, 'a');
      assert.equal(entry, null, `app -> ${ip}`);
    }
  });

  await t.test('inbound connections go to the inbound port; node IPs bypass (v4, v6)', async () => {
    for (const ip of [a.ip4, a.ip6]) {
      const { reply, entry } = await through(b, ip);
      assert.ok(entry, `no proxy log entry for b -> ${ip}`);
      assert.equal(entry.dir, 'inbound');
      assert.equal(entry.origDst, hostPort(ip, APP_PORT));
      assert.equal(entry.error, undefined);
      assert.match(reply.remote, new RegExp(`${ip.replace(/\./g, '\\.')}$`), 'the app sees the proxy (from the pod IP)');
    }
    // The node netns reaches its local pods from the bridge address (gw): a node IP.
    for (const [ip, src] of [[a.ip4, node.addrs.gw4], [a.ip6, node.addrs.gw6]]) {
      const { reply, entry } = await through(node, ip);
      assert.equal(entry, null, `node -> ${ip}`);
      assert.match(reply.remote, new RegExp(`${src.replace(/\./g, '\\.')}$`));
    }
  });

  await t.test('a second mesh replaces the policy', async () => {
    await driver.mesh(podRef, resolvePodPolicy('istio', { 'traffic.sidecar.istio.io/excludeOutboundPorts': String(APP_PORT) }));
    const s = saveAll(a);
    assert.equal(s.filter((l) => l.endsWith('-j MESHWARP_OUTPUT')).length, 2, 'one jump per family');
    assert.ok(s.includes(`4 -A MESHWARP_OUTPUT -p tcp -m tcp --dport ${APP_PORT} -j RETURN`));
    for (const ip of [b.ip4, b.ip6]) assert.equal((await through(a, ip, APP_UID)).entry, null, `excluded port, app -> ${ip}`);
    await driver.mesh(podRef, policy);
    assert.ok((await through(a, b.ip4, APP_UID)).entry);
  });

  await t.test('unmesh removes exactly our lines; traffic is no longer captured', async () => {
    await driver.unmesh(podRef);
    assert.deepEqual(saveAll(a), before);
    assert.deepEqual(driver.pods(), []);
    for (const ip of [b.ip4, b.ip6]) assert.equal((await through(a, ip, APP_UID)).entry, null, `after unmesh, app -> ${ip}`);
    for (const ip of [a.ip4, a.ip6]) assert.equal((await through(b, ip)).entry, null, `after unmesh, b -> ${ip}`);
    await driver.unmesh(podRef); // not meshed: no-op
    assert.deepEqual(saveAll(a), before);
  });

  await t.test('a pod whose netns is gone unmeshes without error', async () => {
    const c = lab.addPod(node, 'c');
    const ref = labTarget('c', c.netnsPath, [c.ip4, c.ip6]);
    await driver.mesh(ref, policy);
    lab.removePod(c);
    await driver.unmesh(ref);
    assert.deepEqual(driver.pods(), []);
  });

  await t.test('bad input changes nothing', async () => {
    // (An IPv6 address in the IPv4 slot can no longer be expressed: a PodTarget lists its ips, sorted by family.)
    await assert.rejects(driver.mesh({ ...podRef, netns: `${a.netnsPath}-missing` }, policy), /mesh default\/a/);
    await assert.rejects(driver.mesh(podRef, { ...policy, inboundPort: -1 }), /inboundPort/);
    assert.deepEqual(saveAll(a), before);
  });
}, { timeout: 120_000 });

// SPDX-License-Identifier: Apache-2.0
// The real chain: Debian's bridge + host-local (CNI 1.0.0), then meshwarp-cni as installed
// by `installCni` into a temp CNI dir, driven like a runtime drives a conflist (ADD, CHECK,
// DEL in reverse) with the pod in a throwaway netns. Our plugin must hand the bridge's
// result on unchanged and tell the (fake) agent.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installCni, uninstallCni } from '../../src/cni/install.ts';
import { run } from '../../src/sys/exec.ts';
import { addNetns, deleteNetns, netnsPath } from '../../src/sys/netns.ts';
import { inCI, kernelTest, testPrefix } from '../helpers/kernel.ts';
import { FakeAgent } from '../unit/cni-fixtures.ts';

const DEBIAN_CNI = '/usr/lib/cni';

interface Exec { code: number | null; stdout: string; stderr: string }

function execPlugin(nodeNs: string, path: string, env: Record<string, string>, stdin: string): Promise<Exec> {
  return new Promise((resolve, reject) => {
    // The runtime side runs in the lab node's netns (bridge flips ip_forward where it runs).
    const child = spawn('nsenter', [`--net=${netnsPath(nodeNs)}`, '--', path], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => { stdout += c.toString('utf8'); });
    child.stderr.on('data', (c: Buffer) => { stderr += c.toString('utf8'); });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(stdin);
  });
}

type Conflist = { cniVersion: string; name: string; plugins: Record<string, unknown>[] };

/** What libcni does for a conflist: each plugin in turn, prevResult threaded through. */
async function runChain(nodeNs: string, list: Conflist, cmd: 'ADD' | 'CHECK' | 'DEL', env: Record<string, string>, cniPath: string[], prev?: unknown): Promise<unknown> {
  const order = cmd === 'DEL' ? [...list.plugins].reverse() : list.plugins;
  let result = prev;
  for (const p of order) {
    const conf: Record<string, unknown> = { cniVersion: list.cniVersion, name: list.name, ...p };
    if (result !== undefined) conf.prevResult = result;
    const bin = cniPath.map((d) => join(d, String(p.type))).find((f) => existsSync(f));
    assert.ok(bin, `plugin ${String(p.type)} not found in ${cniPath.join(':')}`);
    const r = await execPlugin(nodeNs, bin, { ...env, CNI_COMMAND: cmd, CNI_PATH: cniPath.join(':') }, JSON.stringify(conf));
    assert.equal(r.code, 0, `${String(p.type)} ${cmd} failed: ${r.stdout} ${r.stderr}`);
    if (cmd === 'ADD') result = JSON.parse(r.stdout);
  }
  return result;
}

kernelTest('bridge + host-local + meshwarp-cni: prevResult passes through, agent told, DEL in reverse', async (t) => {
  if (!existsSync(join(DEBIAN_CNI, 'bridge'))) {
    if (inCI) throw new Error(`${DEBIAN_CNI}/bridge missing (containernetworking-plugins)`);
    t.skip('containernetworking-plugins not installed');
    return;
  }
  const p = testPrefix();
  const nodeNs = `${p}node`;
  const podNs = `${p}pod`;
  const root = mkdtempSync(join(tmpdir(), 'mw-cni-chain-'));
  const agent = await new FakeAgent().start();
  t.after(async () => {
    await agent.stop();
    deleteNetns(nodeNs, podNs);
    rmSync(root, { recursive: true, force: true });
  });
  addNetns(nodeNs, podNs);
  const confDir = join(root, 'net.d');
  const binDir = join(root, 'bin');
  mkdirSync(confDir);
  const list: Conflist = {
    cniVersion: '1.0.0',
    name: `${p}net`,
    plugins: [{
      type: 'bridge', bridge: `${p}br`, isGateway: true, ipMasq: false,
      ipam: { type: 'host-local', ranges: [[{ subnet: '10.250.7.0/24' }]], routes: [{ dst: '0.0.0.0/0' }], dataDir: join(root, 'ipam') },
    }],
  };
  writeFileSync(join(confDir, '10-lab.conflist'), JSON.stringify(list, null, 4));
  const inst = installCni({ binDir, confDir, stateDir: join(root, 'state'), settings: { socket: agent.socket } });
  assert.equal(inst.action, 'inserted');
  const installed = JSON.parse(readFileSync(join(confDir, '10-lab.conflist'), 'utf8')) as Conflist;
  assert.deepEqual(installed.plugins.map((x) => x.type), ['bridge', 'meshwarp-cni']);

  const env = {
    CNI_CONTAINERID: `${p}c0ffee`, CNI_NETNS: netnsPath(podNs), CNI_IFNAME: 'eth0',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-${p}`,
  };
  const cniPath = [binDir, DEBIAN_CNI];
  const bridgeOnly = await runChain(nodeNs, list, 'ADD', env, [DEBIAN_CNI]) as { ips: { address: string }[] };
  await runChain(nodeNs, list, 'DEL', env, [DEBIAN_CNI], bridgeOnly);

  const result = await runChain(nodeNs, installed, 'ADD', env, cniPath) as { cniVersion: string; ips: { address: string }[]; interfaces: unknown[] };
  assert.equal(result.cniVersion, '1.0.0');
  const ip = result.ips[0].address;
  assert.match(ip, /^10\.250\.7\.\d+\/24$/);
  const add = agent.requests.filter((r) => r.path === '/v1/cni/add');
  assert.equal(add.length, 1);
  assert.deepEqual(add[0].body.prevResult, result, 'the agent saw the bridge result, and our output is that result');
  assert.equal(add[0].body.podName, `web-${p}`);
  assert.ok(run(['ip', '-n', podNs, '-4', 'addr', 'show', 'dev', 'eth0']).includes(ip), 'the pod has the address of the result');

  await runChain(nodeNs, installed, 'CHECK', env, cniPath, result);
  assert.equal(agent.requests.filter((r) => r.path === '/v1/cni/check').length, 1);
  await runChain(nodeNs, installed, 'DEL', env, cniPath, result);
  await runChain(nodeNs, installed, 'DEL', env, cniPath, result); // DEL is idempotent across the chain
  assert.equal(agent.requests.filter((r) => r.path === '/v1/cni/del').length, 2);
  assert.doesNotMatch(run(['ip', '-n', podNs, 'link']), /eth0/);

  uninstallCni({ stateDir: join(root, 'state') });
  assert.equal(readFileSync(join(confDir, '10-lab.conflist'), 'utf8'), JSON.stringify(list, null, 4));
}, { timeout: 60_000 });

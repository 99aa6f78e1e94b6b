// SPDX-License-Identifier: Apache-2.0
// The real chain: Debian's bridge + host-local (CNI 1.0.0), then meshwarp-cni as installed
// by `installCni` into a temp CNI dir, driven like a runtime drives a conflist (ADD, CHECK,
// DEL in reverse) with the pod in a throwaway netns. Our plugin must hand the bridge's
// result on unchanged and tell the (fake) agent.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { installCni, uninstallCni } from '../../src/cni/install.ts';
import { DEBIAN_CNI_DIR as DEBIAN_CNI, runChain, type ChainContext, type Conflist } from '../../src/lab/cni.ts';
import { run } from '../../src/sys/exec.ts';
import { addNetns, deleteNetns, netnsPath } from '../../src/sys/netns.ts';
import { inCI, kernelTest, testPrefix } from '../helpers/kernel.ts';
import { FakeAgent } from '../unit/cni-fixtures.ts';

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
  // The runtime side runs in the node netns (bridge flips ip_forward where it runs).
  const debianOnly: ChainContext = { netnsPath: netnsPath(nodeNs), cniPath: [DEBIAN_CNI] };
  const chain: ChainContext = { netnsPath: netnsPath(nodeNs), cniPath: [binDir, DEBIAN_CNI] };
  const bridgeOnly = await runChain(debianOnly, list, 'ADD', env);
  await runChain(debianOnly, list, 'DEL', env, { prevResult: bridgeOnly });

  const result = (await runChain(chain, installed, 'ADD', env))!;
  assert.equal(result.cniVersion, '1.0.0');
  const ip = result.ips![0].address;
  assert.match(ip, /^10\.250\.7\.\d+\/24$/);
  const add = agent.requests.filter((r) => r.path === '/v1/cni/add');
  assert.equal(add.length, 1);
  assert.deepEqual(add[0].body.prevResult, result, 'the agent saw the bridge result, and our output is that result');
  assert.equal(add[0].body.podName, `web-${p}`);
  assert.ok(run(['ip', '-n', podNs, '-4', 'addr', 'show', 'dev', 'eth0']).includes(ip), 'the pod has the address of the result');

  await runChain(chain, installed, 'CHECK', env, { prevResult: result });
  assert.equal(agent.requests.filter((r) => r.path === '/v1/cni/check').length, 1);
  await runChain(chain, installed, 'DEL', env, { prevResult: result });
  await runChain(chain, installed, 'DEL', env, { prevResult: result }); // DEL is idempotent across the chain
  assert.equal(agent.requests.filter((r) => r.path === '/v1/cni/del').length, 2);
  assert.doesNotMatch(run(['ip', '-n', podNs, 'link']), /eth0/);

  uninstallCni({ stateDir: join(root, 'state') });
  assert.equal(readFileSync(join(confDir, '10-lab.conflist'), 'utf8'), JSON.stringify(list, null, 4));
}, { timeout: 60_000 });

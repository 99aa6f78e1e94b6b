// SPDX-License-Identifier: Apache-2.0
// The CNI matrix's interface rule (docs/kernels.md): a pod whose interface is
// a veth has a host-side peer the tc programs attach to; an ipvlan or macvlan
// pod has none (its link_index names its parent, the node's uplink, which must
// never be taken for the pod's). The sidecar dataplane meshes such a pod by
// cgroup; the ambient dataplane refuses it at CNI ADD with the reason.
import assert from 'node:assert/strict';
import { intentFromAdd } from '../../src/agent/sources/cni.ts';
import { ApiError, AGENT_CNI_CODE, type AddRequest } from '../../src/agent/api.ts';
import { Lab } from '../../src/lab/index.ts';
import { run } from '../../src/sys/exec.ts';
import { linkKind } from '../../src/sys/links.ts';
import { kernelTest, testPrefix } from '../helpers/kernel.ts';

function add(netns: string, dataplane: string | undefined, ip: string): AddRequest {
  return {
    containerId: `c-${Math.random().toString(16).slice(2)}`, netns, ifName: 'eth0', podNamespace: 'demo', podName: 'p',
    prevResult: { ips: [{ address: `${ip}/24` }] }, ...(dataplane ? { dataplane } : {}),
  };
}

kernelTest('pods on ipvlan/macvlan: no host veth (never the parent), meshed by the sidecar dataplane, refused by ambient with the reason', async (t) => {
  const lab = await Lab.create({ prefix: testPrefix('mwx') });
  t.after(() => lab.destroy());
  const n1 = lab.addNode('node1');
  const veth = lab.addPod(n1, 'v');
  const defaults = { profile: 'istio', dataplane: 'sidecar' as const };

  // Control: a lab pod's interface is a veth (its host-side peer is resolved in the node
  // netns, where the agent runs: test/kernel/cni-lab.test.ts and agent tests cover that).
  assert.equal(linkKind('eth0', veth.netnsPath), 'veth');

  let i = 0;
  for (const kind of ['macvlan', 'ipvlan'] as const) await t.test(kind, (st) => {
    const pod = lab.addPod(n1, kind === 'macvlan' ? 'mv' : 'iv', { wire: false });
    const tmp = `mwx${i}`;
    // Each on its own parent (a veth end in the node netns, as the node's uplink would be):
    // a device that has macvlans refuses an ipvlan (EBUSY).
    const parent = `mwxp${i++}`;
    run(['ip', '-n', n1.netns, 'link', 'add', parent, 'type', 'veth', 'peer', 'name', `${parent}b`]);
    try {
      run(['ip', '-n', n1.netns, 'link', 'add', tmp, 'link', parent, 'type', kind, 'mode', kind === 'macvlan' ? 'bridge' : 'l2']);
    } catch (e) {
      // A kernel built without the driver (CONFIG_IPVLAN / CONFIG_MACVLAN): nothing to refuse there.
      if (/Unknown device type/.test((e as Error).message)) { st.skip(`this kernel has no ${kind} driver`); return; }
      throw e;
    }
    run(['ip', '-n', n1.netns, 'link', 'set', tmp, 'netns', pod.netns]);
    run(['ip', '-n', pod.netns, 'link', 'set', tmp, 'name', 'eth0']);
    run(['ip', '-n', pod.netns, 'link', 'set', 'eth0', 'up']);

    assert.equal(linkKind('eth0', pod.netnsPath), kind);
    const sidecar = intentFromAdd(add(pod.netnsPath, undefined, '10.244.1.60'), defaults);
    assert.equal(sidecar.hostVeth, undefined, `${kind}: no host veth (its parent ${parent} is not the pod's)`);
    assert.equal(sidecar.dataplane, 'sidecar');

    assert.throws(() => intentFromAdd(add(pod.netnsPath, 'ambient', '10.244.1.61'), defaults), (e: unknown) => {
      assert.ok(e instanceof ApiError, String(e));
      assert.equal(e.status, 400);
      assert.equal(e.cniCode, AGENT_CNI_CODE.invalidConfig);
      assert.match(e.message, new RegExp(`ambient dataplane: the pod's interface eth0 is a ${kind}, not a veth`));
      assert.match(e.message, /use the sidecar dataplane/);
      return true;
    });
  });
});

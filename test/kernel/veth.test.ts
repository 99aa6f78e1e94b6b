// SPDX-License-Identifier: Apache-2.0
// hostVethOf (src/sys/veth.ts): the pod's host-side veth found with the ethtool ioctl in the
// pod's netns, checked against what iproute2 reports for the same links.
import assert from 'node:assert/strict';
import { Lab } from '../../src/lab/index.ts';
import { run } from '../../src/sys/exec.ts';
import { linkKind } from '../../src/sys/links.ts';
import { withNetns } from '../../src/sys/netns.ts';
import { hostVethOf, linkDriver, NoSuchLink } from '../../src/sys/veth.ts';
import { kernelTest } from '../helpers/kernel.ts';

kernelTest('hostVethOf finds a pod\'s host veth as iproute2 does, and nothing for a non-veth or a missing interface', async (t) => {
  const lab = await Lab.create({ prefix: `mwch${Math.floor(Math.random() * 256).toString(16).padStart(2, '0')}` });
  t.after(() => lab.destroy());
  const node = lab.addNode('node1');
  const pod = lab.addPod(node, 'p1');
  // The agent runs in the node's netns: the host side is looked up there.
  const found = withNetns(node.netnsPath, () => hostVethOf(pod.netnsPath, 'eth0'));
  assert.deepEqual(found, { name: pod.hostVeth, ifindex: pod.hostIfindex });
  assert.equal(withNetns(pod.netnsPath, () => linkDriver('eth0')), linkKind('eth0', pod.netnsPath), 'driver = iproute2\'s link kind');

  // A bridge (a driver, but no peer) and lo (no driver info): not a veth.
  run(['ip', '-n', pod.netns, 'link', 'add', 'mwd0', 'type', 'bridge']);
  assert.equal(withNetns(pod.netnsPath, () => linkDriver('mwd0')), 'bridge');
  assert.equal(withNetns(node.netnsPath, () => hostVethOf(pod.netnsPath, 'mwd0')), undefined);
  assert.equal(withNetns(node.netnsPath, () => hostVethOf(pod.netnsPath, 'lo')), undefined);
  assert.throws(() => withNetns(node.netnsPath, () => hostVethOf(pod.netnsPath, 'nope0')), NoSuchLink);
  // Seen from a netns the peer is not in (the pod's own), there is no host veth.
  assert.equal(withNetns(pod.netnsPath, () => hostVethOf(pod.netnsPath, 'eth0')), undefined);
  // The peer deleted: the pod's veth is gone with it.
  run(['ip', '-n', node.netns, 'link', 'del', pod.hostVeth]);
  assert.throws(() => withNetns(node.netnsPath, () => hostVethOf(pod.netnsPath, 'eth0')), NoSuchLink);
});

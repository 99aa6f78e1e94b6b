// SPDX-License-Identifier: Apache-2.0
// S2: the getsockopt hook answers SO_ORIGINAL_DST only on a sidecar's accepted, captured
// socket; every other getsockopt (other sockets, other options, large buffers) returns
// exactly what the kernel returns without it. The reference is the same probe, in the same
// pod netns, run from a cgroup outside the node (where no driver program is attached).
// (iptables mode works per netns, so there the reference sees the same nat rules and
// conntrack; ports that differ per connection are masked by the probe.)
//   node1: a (istio, meshed)  u (unmeshed)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { APP_PORT, FAMILIES, MeshLab, assertProxied, famName, hostPort, presetPods, probeFrom, suiteSkip, SUITE } from './harness.ts';

type Call = { ret: number; errno: number; optlen: number; bytes: string };
type Battery = Record<string, Call>;

describe(`getsockopt pass-through (${SUITE})`, { skip: suiteSkip() }, () => {
  let env: MeshLab;

  before(async () => {
    env = await MeshLab.create(presetPods(['a', 'u']), { tag: 'mgs' });
  });

  after(async () => {
    await env?.destroy();
  });

  for (const fam of FAMILIES) {
    const loop = fam === 4 ? '127.0.0.1' : '::1';

    it(`S2: in a meshed pod, uncaptured sockets get the kernel's own getsockopt answers, large buffers included (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const u = env.pod('u');
      // Sockets over loopback and over the pod's own IP (both bypass capture), plus a client
      // socket whose connect() the mesh did capture (to u:8080, an ordinary server).
      const remote = hostPort(u.ip(fam), APP_PORT);
      assertProxied(await a.connectTo(u, fam), 'u', 'control: a is meshed (a -> u:8080 is captured)');
      for (const host of [loop, a.ip(fam)]) {
        const meshed = await probeFrom(a.sb, host, remote);
        const reference = await probeFrom(env.bare(a), host, remote);
        assert.deepEqual(meshed, reference, `getsockopt results in meshed pod a (sockets on ${host}) differ from the kernel's`);
        const acc = reference.accepted as Battery;
        assert.ok(acc.congestionLarge.ret === 0 && acc.congestionLarge.optlen > 0 && acc.congestionLarge.optlen < 8192,
          `TCP_CONGESTION with an 8 KiB buffer: ${JSON.stringify(acc.congestionLarge)}`);
      }
    });

    it(`S2: in an unmeshed pod, getsockopt answers are the kernel's own (${famName(fam)})`, async () => {
      const u = env.pod('u');
      const a = env.pod('a');
      const remote = hostPort(a.ip(fam), APP_PORT); // a meshed server: captured inbound, not the client
      const inPod = await probeFrom(u.sb, u.ip(fam), remote);
      const reference = await probeFrom(env.bare(u), u.ip(fam), remote);
      assert.deepEqual(inPod, reference);
    });
  }
});

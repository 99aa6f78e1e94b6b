// SPDX-License-Identifier: Apache-2.0
// S5: what must never be captured: traffic from the node (kubelet probes), excluded
// outbound ports and CIDRs (annotations), the sidecar's status port and excluded inbound
// ports (both capture paths: tc for other pods/nodes, connect() for a local proxy), and
// everything of an unmeshed pod. Each exclusion has a captured control next to it. D1.
//   node1: a (istio, meshed with annotations; serves 8080, 9091, 15021)
//          m (osm, meshed)  u (unmeshed; serves 8080, 9090)  v (unmeshed)
//   node2: w (unmeshed)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  APP_PORT, FAMILIES, MeshLab, assertDirect, assertProxied, connectFrom, famName, norm, splitHostPort, suiteSkip, SUITE } from './harness.ts';

const EXCLUDED_OUT_PORT = 9090;
const EXCLUDED_IN_PORT = 9091;
const STATUS_PORT = 15021; // istio's status port (the profile's, not annotated)

describe(`bypass and exclusions (${SUITE})`, { skip: suiteSkip() }, () => {
  let env: MeshLab;

  before(async () => {
    env = await MeshLab.create([
      { node: 'node1', name: 'a', serve: [APP_PORT, EXCLUDED_IN_PORT, STATUS_PORT] },
      { node: 'node1', name: 'm', profile: 'osm', serve: [] },
      { node: 'node1', name: 'u', serve: [APP_PORT, EXCLUDED_OUT_PORT] },
      { node: 'node1', name: 'v' },
      { node: 'node2', name: 'w' },
    ], { tag: 'mbp' });
    const v = env.pod('v');
    const policy = await env.pod('a').mesh('istio', {
      'traffic.sidecar.istio.io/excludeOutboundPorts': String(EXCLUDED_OUT_PORT),
      'traffic.sidecar.istio.io/excludeOutboundIPRanges': `${v.ip(4)}/32,${v.ip(6)}/128`,
      'traffic.sidecar.istio.io/excludeInboundPorts': String(EXCLUDED_IN_PORT),
    });
    assert.equal(policy.statusPort, STATUS_PORT);
  });

  after(async () => {
    await env?.destroy();
  });

  for (const fam of FAMILIES) {
    it(`S5: the node's own traffic to a meshed pod's app port (kubelet probe) is not captured (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const n1 = env.node('node1');
      const r = await connectFrom(n1, a.ip(fam), APP_PORT, { uid: 0 });
      assertDirect(r, 'a', 'node1 -> a:8080');
      assert.equal(norm(r.local), fam === 4 ? n1.addrs.gw4 : n1.addrs.gw6, 'probe sourced from the node bridge address');
      assert.equal(a.sidecar!.fromClient('inbound', r), undefined);
      // Control: the same connection from the other node's netns (not a node IP of node1) is captured.
      assertProxied(await connectFrom(env.node('node2'), a.ip(fam), APP_PORT, { uid: 0 }), 'a', 'control: node2 -> a:8080');
    });

    it(`S5: an excluded outbound port is not captured (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const u = env.pod('u');
      assertDirect(await a.connectTo(u, fam, EXCLUDED_OUT_PORT), 'u', `a -> u:${EXCLUDED_OUT_PORT} (excludeOutboundPorts)`);
      assertProxied(await a.connectTo(u, fam, APP_PORT), 'u', 'control: a -> u:8080');
    });

    it(`S5: an excluded outbound CIDR is not captured (${famName(fam)})`, async () => {
      const a = env.pod('a');
      assertDirect(await a.connectTo(env.pod('v'), fam), 'v', 'a -> v:8080 (excludeOutboundIPRanges)');
      assertProxied(await a.connectTo(env.pod('u'), fam), 'u', 'control: a -> u:8080');
    });

    it(`S5: the sidecar's status port is not captured inbound, from another node (tc) or a local proxy (connect) (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const m = env.pod('m');
      const w = env.pod('w');
      assertDirect(await w.connectTo(a, fam, STATUS_PORT), 'a', `w (node2) -> a:${STATUS_PORT}`);
      assertDirect(await env.pod('u').connectTo(a, fam, STATUS_PORT), 'a', `u (node1, unmeshed) -> a:${STATUS_PORT}`);
      assertDirect(await m.connectTo(a, fam, STATUS_PORT, { uid: m.policy!.proxyUid }), 'a', `m's proxy uid -> a:${STATUS_PORT}`);
      // Control: the app port of the same pod from the same clients is captured.
      const r = await w.connectTo(a, fam, APP_PORT);
      assertProxied(r, 'a', 'control: w -> a:8080');
      await a.sidecar!.waitFor((l) => l.dir === 'inbound' && splitHostPort(l.client).port === r.localPort, 'control inbound');
      assertProxied(await m.connectTo(a, fam, APP_PORT, { uid: m.policy!.proxyUid }), 'a', "control: m's proxy uid -> a:8080");
    });

    it(`S5: an excluded inbound port (annotation) is not captured (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const m = env.pod('m');
      assertDirect(await env.pod('w').connectTo(a, fam, EXCLUDED_IN_PORT), 'a', `w (node2) -> a:${EXCLUDED_IN_PORT}`);
      assertDirect(await m.connectTo(a, fam, EXCLUDED_IN_PORT, { uid: m.policy!.proxyUid }), 'a', `m's proxy uid -> a:${EXCLUDED_IN_PORT}`);
      assertProxied(await env.pod('w').connectTo(a, fam, APP_PORT), 'a', 'control: w -> a:8080');
    });

    it(`S5: an unmeshed pod's traffic to unmeshed pods is untouched, same node and across nodes (${famName(fam)})`, async () => {
      const u = env.pod('u');
      assertDirect(await u.connectTo(env.pod('v'), fam), 'v', 'u -> v:8080');
      assertDirect(await u.connectTo(env.pod('w'), fam), 'w', 'u -> w:8080 (node2)');
      assertDirect(await env.pod('w').connectTo(u, fam), 'u', 'w -> u:8080 (node2 -> node1)');
    });
  }
});

// SPDX-License-Identifier: Apache-2.0
// S1 outbound capture, S2 original destination (as the sidecar reads it), S3 inbound
// capture (same node at connect time, other node by tc), the proxy uid never looped. D1.
//   node1: a (istio, meshed)  b (unmeshed)  c (osm, meshed)
//   node2: d (istio, meshed)  + a plain server in node2's own netns ("outside any pod")
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  APP_PORT, FAMILIES, MeshLab, assertDirect, assertProxied, connectFrom, famName, hostPort, norm, presetPods, serveIn, splitHostPort,
  stat, suiteSkip, SUITE } from './harness.ts';

const EXTERNAL_PORT = 9000;

describe(`capture (${SUITE})`, { skip: suiteSkip() }, () => {
  let env: MeshLab;

  before(async () => {
    env = await MeshLab.create(presetPods(['a', 'b', 'c', 'd']), { tag: 'mcp' });
    // A server in node2's netns: a non-pod, non-local destination for node1's pods.
    await serveIn(env.node('node2'), 'external', [EXTERNAL_PORT]);
  });

  after(async () => {
    await env?.destroy();
  });

  for (const fam of FAMILIES) {
    it(`S1: a meshed app's connect lands on its sidecar's outbound port, which reads the original destination (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const b = env.pod('b');
      const r = await a.connectTo(b, fam);
      const reply = assertProxied(r, 'b', 'a -> b:8080');
      // The sidecar accepted exactly this client socket and read B:8080 with SO_ORIGINAL_DST.
      const line = await a.sidecar!.waitFor((l) => l.dir === 'outbound' && splitHostPort(l.client).port === r.localPort,
        `outbound from client port ${r.localPort}`);
      assert.equal(line.origDst, hostPort(b.ip(fam), APP_PORT), 'original destination read by the sidecar');
      assert.equal(line.error, undefined, `sidecar error: ${line.error}`);
      assert.equal(line.upstream, hostPort(b.ip(fam), APP_PORT), 'sidecar connected to the original destination');
      // The server saw the sidecar's upstream socket, which starts in pod a.
      assert.equal(norm(reply.remote), a.ip(fam), 'server sees the request coming from pod a (via its sidecar)');
    });

    it(`S1+S3: meshed app to a meshed pod on the same node goes outbound sidecar -> peer's inbound port (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const c = env.pod('c'); // osm: inbound port 15003, proxy uid 1500
      const since = c.sidecar!.mark();
      const r = await a.connectTo(c, fam);
      const reply = assertProxied(r, 'c', 'a -> c:8080');
      const out = await a.sidecar!.waitFor((l) => l.dir === 'outbound' && splitHostPort(l.client).port === r.localPort, 'a outbound');
      assert.equal(out.origDst, hostPort(c.ip(fam), APP_PORT));
      const inb = await c.sidecar!.waitFor((l) => l.dir === 'inbound' && splitHostPort(l.client).addr === a.ip(fam) &&
        l.origDst === hostPort(c.ip(fam), APP_PORT), 'c inbound from a', since);
      assert.equal(inb.error, undefined, `sidecar c error: ${inb.error}`);
      // c's sidecar reached the app from inside pod c.
      assert.equal(norm(reply.remote), c.ip(fam), 'the app in c is reached by its own sidecar');
    });

    it(`S1: the proxy uid is never sent to its own outbound port (non-local destination) (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const n2 = env.node('node2');
      const ext = fam === 4 ? n2.ip4 : n2.ip6;
      const r = await a.connect(ext, EXTERNAL_PORT, { uid: a.policy!.proxyUid });
      assertDirect(r, 'external', `a as proxy uid ${a.policy!.proxyUid} -> ${hostPort(ext, EXTERNAL_PORT)}`);
      assert.equal(a.sidecar!.fromClient('outbound', r), undefined, 'a sidecar must not see its own connection');
      // Control: the app uid to the same destination is captured.
      const app = await a.connect(ext, EXTERNAL_PORT);
      assertProxied(app, 'external', `a app -> ${hostPort(ext, EXTERNAL_PORT)}`);
    });

    it(`S3: the proxy uid connecting to a meshed pod on the same node lands on that pod's inbound port (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const c = env.pod('c');
      const r = await a.connectTo(c, fam, APP_PORT, { uid: a.policy!.proxyUid });
      const reply = assertProxied(r, 'c', 'a (proxy uid) -> c:8080');
      // c's sidecar accepted this very socket and saw the app port as the original port.
      const inb = await c.sidecar!.waitFor((l) => l.dir === 'inbound' && splitHostPort(l.client).port === r.localPort,
        `c inbound from client port ${r.localPort}`);
      assert.equal(splitHostPort(inb.client).addr, a.ip(fam));
      assert.equal(inb.origDst, hostPort(c.ip(fam), APP_PORT), 'original destination of the inbound connection');
      assert.equal(norm(reply.remote), c.ip(fam));
      assert.equal(a.sidecar!.fromClient('outbound', r), undefined);
    });

    it(`S3: the proxy uid connecting to its own pod's app is untouched (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const r = await a.connectTo(a, fam, APP_PORT, { uid: a.policy!.proxyUid });
      assertDirect(r, 'a', 'a (proxy uid) -> a:8080');
      assertProxied(await env.pod('b').connectTo(a, fam), 'a', 'control: b -> a:8080 is captured');
      assert.equal(a.sidecar!.fromClient('inbound', r), undefined);
      assert.equal(a.sidecar!.fromClient('outbound', r), undefined);
    });

    it(`S3: cross-node meshed -> meshed: node2's tc sends the SYN to the inbound port and translates replies back (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const d = env.pod('d');
      const d2 = env.driver('node2');
      const before = { dnat: stat(d2, 'tc_dnat'), undnat: stat(d2, 'tc_undnat') };
      const since = d.sidecar!.mark();
      const r = await a.connectTo(d, fam);
      const reply = assertProxied(r, 'd', 'a -> d:8080 (node2)');
      const out = await a.sidecar!.waitFor((l) => l.dir === 'outbound' && splitHostPort(l.client).port === r.localPort, 'a outbound');
      assert.equal(out.origDst, hostPort(d.ip(fam), APP_PORT));
      const inb = await d.sidecar!.waitFor((l) => l.dir === 'inbound' && splitHostPort(l.client).addr === a.ip(fam) &&
        l.origDst === hostPort(d.ip(fam), APP_PORT), 'd inbound from a', since);
      assert.equal(inb.error, undefined);
      assert.equal(norm(reply.remote), d.ip(fam), "d's app is reached by d's sidecar");
      if (before.dnat !== undefined) {
        assert.ok(stat(d2, 'tc_dnat')! > before.dnat, 'tc_dnat counted');
        assert.ok(stat(d2, 'tc_undnat')! > before.undnat!, 'tc_undnat counted');
      }
    });

    it(`S3: an unmeshed client on another node is captured inbound by tc, keeping its source (${famName(fam)})`, async () => {
      const b = env.pod('b');
      const d = env.pod('d');
      const r = await b.connectTo(d, fam);
      const reply = assertProxied(r, 'd', 'b (unmeshed) -> d:8080 (node2)');
      const inb = await d.sidecar!.waitFor((l) => l.dir === 'inbound' && splitHostPort(l.client).port === r.localPort,
        `d inbound from client port ${r.localPort}`);
      assert.equal(splitHostPort(inb.client).addr, b.ip(fam), 'source address preserved through the DNAT');
      assert.equal(inb.origDst, hostPort(d.ip(fam), APP_PORT));
      assert.equal(norm(reply.remote), d.ip(fam));
    });

    it(`S3: cross-node connections the server side closes first end cleanly, without resets (${famName(fam)})`, async () => {
      // The inbound sidecar closes first here (the app answers and closes), so its socket ends in
      // TIME_WAIT and its last ACK must still be translated back to port 8080: untranslated, the
      // client's kernel would answer it with a RST.
      const b = env.pod('b');
      const d = env.pod('d');
      const snmp = async () => {
        const [head, vals] = (await b.sb.check(['cat', '/proc/net/snmp'])).split('\n').filter((l) => l.startsWith('Tcp:'));
        const h = head.split(' ');
        const v = vals.split(' ');
        return Number(v[h.indexOf('OutRsts')]);
      };
      const before = await snmp();
      for (let i = 0; i < 20; i++) assertProxied(await b.connectTo(d, fam), 'd', `b -> d:8080 #${i}`);
      await new Promise((r) => setTimeout(r, 300)); // the last ACKs and any answer to them
      assert.equal(await snmp() - before, 0, 'the client sent no RST');
    });

    it(`S3: an unmeshed client on the same node is captured inbound by tc too (${famName(fam)})`, async () => {
      const b = env.pod('b');
      const a = env.pod('a');
      const r = await connectFrom(b.sb, a.ip(fam), APP_PORT);
      assertProxied(r, 'a', 'b (unmeshed) -> a:8080');
      const inb = await a.sidecar!.waitFor((l) => l.dir === 'inbound' && splitHostPort(l.client).port === r.localPort,
        `a inbound from client port ${r.localPort}`);
      assert.equal(inb.origDst, hostPort(a.ip(fam), APP_PORT));
    });
  }
});

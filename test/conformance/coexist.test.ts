// SPDX-License-Identifier: Apache-2.0
// Coexistence on the cgroup hooks: another project's cgroup/connect4 program, attached to
// the node's cgroup before the driver starts, keeps running while the driver is active,
// and stays attached and running after the driver stops (the driver never detaches or
// replaces what it did not create). The foreign program is build/bpf/selftest.bpf.o's
// st_connect4: it rewrites connects to port FOREIGN_FROM to 127.0.0.1:FOREIGN_TO and counts
// them in st_counters[0].
//   node1: a (istio, meshed)  u (unmeshed)   both serve 8080 and FOREIGN_TO
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { BpfObject, Link, codec } from '../../src/bpf/index.ts';
import { selftestObject } from '../../src/bpf/selftest.ts';
import { run } from '../../src/sys/exec.ts';
import {
  APP_PORT, FAMILIES, MeshLab, assertDirect, assertProxied, famName, hostPort, splitHostPort, suiteSkip, SUITE } from './harness.ts';

const FOREIGN_FROM = 7070;
const FOREIGN_TO = 7071;

/** Names of the programs attached to a cgroup (bpftool), to show what is still there. */
function attachedPrograms(cgroupPath: string): string[] {
  const out = JSON.parse(run(['bpftool', '-j', 'cgroup', 'show', cgroupPath]) || '[]') as Array<{ name?: string }>;
  return out.map((p) => p.name ?? '?').sort();
}

describe(`coexistence with a foreign cgroup program (${SUITE})`, { skip: suiteSkip() }, () => {
  let env: MeshLab;
  let theirs: BpfObject | undefined;
  let theirLink: Link | undefined;
  let cgroup = '';

  const runs = (): bigint => theirs!.map('st_counters', codec.u32, codec.u64).get(0);

  before(async () => {
    env = await MeshLab.create([
      { node: 'node1', name: 'a', profile: 'istio', serve: [APP_PORT, FOREIGN_TO] },
      { node: 'node1', name: 'u', serve: [APP_PORT, FOREIGN_TO] },
    ], {
      tag: 'mco',
      beforeDrivers: (lab) => {
        cgroup = lab.node('node1').cgroupPath;
        theirs = BpfObject.load(selftestObject, { config: { st_from_port: FOREIGN_FROM, st_to_port: FOREIGN_TO } });
        theirLink = Link.attachCgroup(theirs.program('st_connect4'), cgroup);
      },
    });
  });

  after(async () => {
    try {
      theirLink?.destroy();
      theirs?.close();
    } finally {
      await env?.destroy();
    }
  });

  it('the foreign connect4 program keeps running while the driver is attached to the same hook (IPv4)', async () => {
    const u = env.pod('u');
    const n0 = runs();
    // An unmeshed pod: our program leaves it alone, the foreign one redirects it to loopback.
    const r = await u.connect(env.pod('a').ip(4), FOREIGN_FROM);
    assertDirect(r, 'u', `u -> a:${FOREIGN_FROM}, rewritten by the foreign program to 127.0.0.1:${FOREIGN_TO}`);
    assert.equal(r.peerPort, FOREIGN_TO);
    assert.equal(runs(), n0 + 1n, 'st_counters[0]: the foreign program ran once');
    const names = attachedPrograms(cgroup);
    assert.ok(names.includes('st_connect4'), `attached: ${names.join(', ')}`);
  });

  for (const fam of FAMILIES) {
    it(`the driver captures as usual next to the foreign program (${famName(fam)})`, async () => {
      const a = env.pod('a');
      const u = env.pod('u');
      const r = await a.connectTo(u, fam);
      assertProxied(r, 'u', 'a -> u:8080');
      const line = await a.sidecar!.waitFor((l) => l.dir === 'outbound' && splitHostPort(l.client).port === r.localPort, 'a outbound');
      assert.equal(line.origDst, hostPort(u.ip(fam), APP_PORT));
    });
  }

  it("stopping the driver removes only its own programs: the foreign one stays attached and running", async () => {
    const a = env.pod('a');
    const u = env.pod('u');
    const pinRoot = env.driverOptions(env.node('node1')).pinRoot;
    await env.stopDriver('node1');
    assert.deepEqual(attachedPrograms(cgroup), ['st_connect4'], 'only the foreign program is left on the node cgroup');
    assert.equal(existsSync(pinRoot), false, `driver pins left in ${pinRoot}`);
    for (const fam of FAMILIES) assertDirect(await a.connectTo(u, fam), 'u', `a -> u:8080 after the driver stopped (${famName(fam)})`);
    const n0 = runs();
    assertDirect(await u.connect(a.ip(4), FOREIGN_FROM), 'u', 'the foreign rewrite still works');
    assert.equal(runs(), n0 + 1n);
  });
});

// SPDX-License-Identifier: Apache-2.0
// The shared tc core (src/datapath/ebpf/tc.ts) on a real veth: pins per
// sandbox, programs swapped in place, a defunct tcx link (veth gone) replaced
// instead of retried, our legacy filter recognised by its pinned program, and
// a foreign filter never touched.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { BpfObject, Link, TcFilter, tcxPrograms, type Program } from '../../src/bpf/index.ts';
import { check, fn } from '../../src/bpf/libbpf.ts';
import { selftestObject } from '../../src/bpf/selftest.ts';
import { TcAttacher, type TcMode } from '../../src/datapath/ebpf/tc.ts';
import { run } from '../../src/sys/exec.ts';
import { ifNameToIndex } from '../../src/sys/libc.ts';
import { withNetns } from '../../src/sys/netns.ts';
import { kernelTest, testPrefix } from '../helpers/kernel.ts';

const PRIO = 0xc000;

function progId(p: Program): number {
  const buf = Buffer.alloc(256);
  check('prog info', fn.objGetInfoByFd(p.fd, buf, [buf.length]));
  return buf.readUInt32LE(4);
}

/** A netns with a veth pair inside, the programs of two loads of one object, and a TcAttacher over a private pin dir. */
function setup(t: { after(fn: () => void): void }, mode: TcMode) {
  const prefix = testPrefix();
  const ns = `${prefix}-tc`;
  const netns = `/run/netns/${ns}`;
  const pinDir = `/sys/fs/bpf/${prefix}-tc`;
  const objs = [BpfObject.load(selftestObject), BpfObject.load(selftestObject)];
  t.after(() => {
    spawnSync('ip', ['netns', 'del', ns]);
    rmSync(pinDir, { recursive: true, force: true });
    for (const o of objs) o.close();
  });
  run(['ip', 'netns', 'add', ns]);
  const veth = (name: string) => {
    run(['ip', '-n', ns, 'link', 'add', name, 'type', 'veth', 'peer', 'name', `${name}p`]);
    run(['ip', '-n', ns, 'link', 'set', name, 'up']);
    return { name, ifindex: withNetns(netns, () => ifNameToIndex(name)) };
  };
  const [p1, p2] = objs.map((o) => o.program('st_tc_count'));
  const tc = new TcAttacher({ pinDir, mode, priority: PRIO, nodeNetns: netns });
  const inNs = <T>(f: () => T): T => withNetns(netns, f);
  return { ns, netns, pinDir, veth, p1, p2, tc, inNs };
}

kernelTest('tcx: attach pins per sandbox, a second attach swaps the program in place, detach removes it', (t) => {
  const { veth, p1, p2, tc, inNs, pinDir } = setup(t, 'tcx');
  const v = veth('v0');
  tc.attach('sb.1', v, { ingress: p1, egress: p1 });
  assert.deepEqual(inNs(() => tcxPrograms(v.ifindex, 'ingress')), [progId(p1)]);
  assert.deepEqual(readdirSync(pinDir), ['sb%2E1'], 'one pin directory per sandbox (bpffs names cannot hold ".")');
  assert.deepEqual(tc.keys(), ['sb.1']);
  tc.attach('sb.1', v, { ingress: p2, egress: p2 });
  assert.deepEqual(inNs(() => tcxPrograms(v.ifindex, 'ingress')), [progId(p2)], 'replaced, not added');
  assert.deepEqual(inNs(() => tcxPrograms(v.ifindex, 'egress')), [progId(p2)]);
  assert.equal(tc.verify('sb.1', v), undefined);
  tc.detach('sb.1');
  assert.deepEqual(inNs(() => tcxPrograms(v.ifindex, 'ingress')), []);
  assert.deepEqual(tc.keys(), []);
}, { needs: ['tcx'] });

kernelTest('tcx: a link whose veth is gone (defunct) is unpinned and recreated on the new veth, never an error', (t) => {
  const { ns, veth, p1, tc, inNs } = setup(t, 'tcx');
  const old = veth('v0');
  tc.attach('sb', old, { ingress: p1, egress: p1 });
  run(['ip', '-n', ns, 'link', 'del', 'v0']); // the veth goes while "the agent is down"
  const neu = veth('v1');
  assert.match(tc.verify('sb', neu) ?? '', /no longer attached/, 'CHECK sees the defunct link');
  tc.attach('sb', neu, { ingress: p1, egress: p1 });
  assert.deepEqual(inNs(() => tcxPrograms(neu.ifindex, 'ingress')), [progId(p1)]);
  assert.equal(tc.verify('sb', neu), undefined);
  tc.detach('sb');
  assert.deepEqual(inNs(() => tcxPrograms(neu.ifindex, 'egress')), []);
}, { needs: ['tcx'] });

kernelTest('legacy: our filter is recognised by its pinned program and replaced in place; a foreign one is refused and kept', (t) => {
  const { veth, p1, p2, tc, inNs, netns, pinDir } = setup(t, 'legacy');
  const v = veth('v0');
  const at = (dir: 'ingress' | 'egress') => inNs(() => TcFilter.at(v.ifindex, dir, PRIO, 1).progId());
  tc.attach('sb', v, { ingress: p1, egress: p1 });
  assert.equal(at('ingress'), progId(p1));
  assert.ok(existsSync(`${pinDir}/sb/cls-${v.ifindex}-ingress`), 'the filter\'s program is pinned');
  // A restarted agent (a new attacher, a new load of the object) finds the filter: its own.
  const again = new TcAttacher({ pinDir, mode: 'legacy', priority: PRIO, nodeNetns: netns });
  again.attach('sb', v, { ingress: p2, egress: p2 });
  assert.equal(at('ingress'), progId(p2), 'replaced in place');
  assert.equal(at('egress'), progId(p2));
  const filters = JSON.parse(inNs(() => run(['tc', '-j', 'filter', 'show', 'dev', 'v0', 'ingress']))) as { pref: number; options?: unknown }[];
  assert.equal(filters.filter((f) => f.pref === PRIO && f.options).length, 1, 'still one filter of ours');
  assert.equal(again.verify('sb', v), undefined);

  // A foreign filter at our priority/handle on another veth: never replaced, the attach is an error.
  const w = veth('w0');
  inNs(() => TcFilter.attach(p1, w.ifindex, 'ingress', { priority: PRIO, handle: 1 }));
  assert.throws(() => again.attach('other', w, { ingress: p2, egress: p2 }), /taken by another filter/);
  assert.equal(inNs(() => TcFilter.at(w.ifindex, 'ingress', PRIO, 1).progId()), progId(p1), 'the foreign filter is untouched');
  assert.deepEqual(again.keys(), ['sb'], 'the failed attach left no pins');
  // Removing a sandbox removes exactly its filters.
  again.detach('sb');
  assert.equal(at('ingress'), undefined);
  assert.equal(at('egress'), undefined);
  assert.equal(inNs(() => TcFilter.at(w.ifindex, 'ingress', PRIO, 1).progId()), progId(p1), 'the foreign filter survives detach');
});

kernelTest('auto for pod veths (shared): a legacy filter on a hook nobody else uses, a tcx link beside another tcx user', (t) => {
  const { veth, p1, p2, inNs, pinDir, netns } = setup(t, 'auto');
  const tc = new TcAttacher({ pinDir, mode: 'auto', auto: 'shared', priority: PRIO, nodeNetns: netns });
  const free = veth('v0');
  tc.attach('sb', free, { ingress: p1, egress: p1 });
  assert.deepEqual(readdirSync(`${pinDir}/sb`).sort(), [`cls-${free.ifindex}-egress`, `cls-${free.ifindex}-ingress`], 'legacy filters (no grace period per change)');
  assert.deepEqual(inNs(() => tcxPrograms(free.ifindex, 'ingress')), []);
  assert.equal(inNs(() => TcFilter.at(free.ifindex, 'ingress', PRIO, 1).progId()), progId(p1));
  assert.equal(tc.verify('sb', free), undefined);
  tc.detach('sb');
  const left = (() => { try { return inNs(() => TcFilter.at(free.ifindex, 'ingress', PRIO, 1).progId()); } catch { return undefined; } })();
  assert.notEqual(left, progId(p1), 'our filter is gone');
  assert.match(tc.verify('sb', free) ?? '', /no tc ingress program/);

  // Another tool's tcx program on the hook runs before every legacy filter: ours must be a link too.
  const used = veth('v1');
  const foreign = inNs(() => Link.attachTcx(p2, used.ifindex, 'ingress'));
  t.after(() => foreign.destroy());
  tc.attach('sb2', used, { ingress: p1, egress: p1 });
  assert.ok(readdirSync(`${pinDir}/sb2`).includes('tcx-ingress'), 'a tcx link where another tcx user is');
  assert.ok(readdirSync(`${pinDir}/sb2`).includes(`cls-${used.ifindex}-egress`), 'the empty egress hook still gets a filter');
  assert.deepEqual(inNs(() => tcxPrograms(used.ifindex, 'ingress')), [progId(p2), progId(p1)], 'theirs first, unchanged; ours after');
  tc.detach('sb2');
  assert.deepEqual(inNs(() => tcxPrograms(used.ifindex, 'ingress')), [progId(p2)], 'only ours removed');

  // The default auto (node-wide attachers) still links on an empty hook.
  const node = new TcAttacher({ pinDir, mode: 'auto', priority: PRIO, nodeNetns: netns });
  node.attach('sb3', free, { ingress: p1 });
  assert.deepEqual(inNs(() => tcxPrograms(free.ifindex, 'ingress')), [progId(p1)]);
  node.detach('sb3');
}, { needs: ['tcx'] });

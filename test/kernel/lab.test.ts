// SPDX-License-Identifier: Apache-2.0
// The lab topology on the real kernel: connectivity (v4/v6, same node, across nodes, from
// the node), uid and cgroup of pod processes, complete teardown and crash cleanup.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { cgroup2Mount, cgroupId, cgroupOfPid } from '../../src/sys/cgroup.ts';
import { linkIndex, listNetns } from '../../src/sys/netns.ts';
import { Lab, type LabNode, type LabPod, prefixIsClean, uniquePrefix, waitForLine } from '../../src/lab/index.ts';
import { get as httpGet, startServer, type WhoAmI } from '../helpers/http.ts';

const isRoot = process.getuid?.() === 0;
if (!isRoot && process.env.CI === 'true') throw new Error('kernel tests need root under CI');
const skip = isRoot ? false : 'needs root (network namespaces, cgroups)';

const LAB_URL = new URL('../../src/lab/index.ts', import.meta.url).href;
const PORT = 8080;

/** Who the server at ip:PORT saw connecting, and who it runs as. */
async function get(from: LabNode | LabPod, ip: string): Promise<WhoAmI> {
  return JSON.parse(await httpGet(from, ip, { port: PORT }));
}

function netnsInode(pid: number): string {
  return fs.readlinkSync(`/proc/${pid}/ns/net`);
}

describe('lab topology', { skip }, () => {
  let lab: Lab;
  let n1: LabNode, n2: LabNode;
  let a: LabPod, b: LabPod, c: LabPod;
  let serverB: ChildProcess, serverC: ChildProcess;
  let createMs = 0;

  before(async () => {
    const t0 = performance.now();
    lab = await Lab.create({ prefix: uniquePrefix('mwl') });
    n1 = lab.addNode('node1');
    n2 = lab.addNode('node2');
    a = lab.addPod(n1, 'a');
    b = lab.addPod(n1, 'b');
    c = lab.addPod(n2, 'c');
    createMs = performance.now() - t0;
    [serverB, serverC] = await Promise.all([
      startServer(b, { port: PORT, reply: 'whoami', uid: 1500 }), startServer(c, { port: PORT, reply: 'whoami' }),
    ]);
  });

  after(async () => {
    await lab?.destroy();
  });

  it('lays out names, addresses, interfaces and cgroups as documented', () => {
    const p = lab.prefix;
    assert.ok(p.length <= 6);
    assert.equal(a.netns, `${p}-node1-a`);
    assert.equal(a.netnsPath, `/run/netns/${p}-node1-a`);
    assert.equal(lab.cgroupPath, `${cgroup2Mount()}/${p}`);
    assert.equal(a.cgroupPath, `${cgroup2Mount()}/${p}/node1/a`);
    assert.equal(n2.cgroupPath, `${cgroup2Mount()}/${p}/node2`);
    assert.deepEqual([a.ip4, b.ip4, c.ip4], ['10.244.1.2', '10.244.1.3', '10.244.2.2']);
    assert.deepEqual([a.ip6, b.ip6, c.ip6], ['fd00:244:1::2', 'fd00:244:1::3', 'fd00:244:2::2']);
    assert.deepEqual([n1.ip4, n2.ip4, n2.ip6], ['10.255.0.1', '10.255.0.2', 'fd00:255::2']);
    for (const pod of [a, b, c]) {
      assert.ok(pod.hostVeth.length <= 15);
      assert.equal(linkIndex(pod.node.netns, pod.hostVeth), pod.hostIfindex);
      assert.ok(fs.statSync(pod.cgroupPath).isDirectory());
    }
    assert.equal(new Set([a, b, c].map((x) => x.hostVeth)).size, 3);
    const names = listNetns().filter((n) => n.startsWith(`${p}-`)).sort();
    assert.deepEqual(names, [`${p}-fabric`, `${p}-node1`, `${p}-node1-a`, `${p}-node1-b`, `${p}-node2`, `${p}-node2-c`]);
    assert.equal(typeof cgroupId(lab.cgroupPath), 'bigint');
  });

  // Speed is measured (bench, docs/lab.md), not asserted: an emulated kernel (the kernel matrix) is 10× slower.
  it('reports how long creating a 2-node, 3-pod lab took', (t) => {
    t.diagnostic(`create: ${createMs.toFixed(1)} ms`);
    assert.ok(createMs > 0);
  });

  it('pod to pod on the same node, IPv4 and IPv6, without address translation', async () => {
    assert.deepEqual(await get(a, b.ip4), { remote: `::ffff:${a.ip4}`, uid: 1500, name: 'b' });
    assert.deepEqual(await get(a, b.ip6), { remote: a.ip6, uid: 1500, name: 'b' });
  });

  it('pod to pod across nodes, IPv4 and IPv6', async () => {
    assert.deepEqual(await get(a, c.ip4), { remote: `::ffff:${a.ip4}`, uid: 0, name: 'c' });
    assert.deepEqual(await get(a, c.ip6), { remote: a.ip6, uid: 0, name: 'c' });
    assert.deepEqual(await get(c, b.ip4), { remote: `::ffff:${c.ip4}`, uid: 1500, name: 'b' });
    assert.deepEqual(await get(c, b.ip6), { remote: c.ip6, uid: 1500, name: 'b' });
  });

  it('node netns to pods (kubelet-probe-like), local and remote', async () => {
    assert.equal((await get(n1, b.ip4)).remote, `::ffff:${n1.addrs.gw4}`);
    assert.equal((await get(n1, b.ip6)).remote, n1.addrs.gw6);
    assert.equal((await get(n2, b.ip4)).remote, `::ffff:${n2.ip4}`);
    assert.equal((await get(n2, b.ip6)).remote, n2.ip6);
  });

  it('pod processes run with the requested uid, in the pod cgroup and netns', async () => {
    const pid = serverB.pid!;
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(status, /^Uid:\s+1500\s+1500\s+1500\s+1500$/m);
    assert.match(status, /^Gid:\s+1500\s+1500\s+1500\s+1500$/m);
    assert.match(status, /^Groups:\s*$/m);
    assert.match(status, /^CapEff:\s+0+$/m);
    assert.equal(cgroupOfPid(pid), `/${lab.prefix}/node1/b`);
    assert.equal(netnsInode(pid), `net:[${fs.statSync(b.netnsPath).ino}]`);
    // Default uid is root, node processes sit in the node cgroup.
    assert.equal(cgroupOfPid(serverC.pid!), `/${lab.prefix}/node2/c`);
    assert.match(fs.readFileSync(`/proc/${serverC.pid}/status`, 'utf8'), /^Uid:\s+0\s+0\s+0\s+0$/m);
    const out = await n1.check(['sh', '-c', 'grep ^0:: /proc/self/cgroup; id -u']);
    assert.equal(out, `0::/${lab.prefix}/node1\n0\n`);
    const asUser = await a.check(['sh', '-c', 'id -u; id -G; grep ^0:: /proc/self/cgroup'], { uid: 1500 });
    assert.equal(asUser, `1500\n1500\n0::/${lab.prefix}/node1/a\n`);
  });

  it('reports exit codes and output of failing commands', async () => {
    const r = await a.run(['sh', '-c', 'echo out; echo err >&2; exit 3']);
    assert.deepEqual([r.code, r.stdout, r.stderr], [3, 'out\n', 'err\n']);
    await assert.rejects(a.check(['false']));
    const slow = await a.run(['sleep', '10'], { timeoutMs: 100 });
    assert.equal(slow.timedOut, true);
  });

  it('an unwired pod has a sandbox only, and can be wired later', async () => {
    const d = lab.addPod(n2, 'd', { wire: false });
    assert.equal(d.wired, false);
    assert.throws(() => d.ip4, /not wired/);
    const links = await d.check(['ip', '-o', 'link']);
    assert.doesNotMatch(links, /eth0/);
    assert.match(links, /lo:.*UP/);
    assert.equal(await d.check(['cat', '/proc/sys/net/ipv6/conf/default/accept_dad']), '0\n');
    lab.wirePod(d);
    assert.equal(d.ip4, '10.244.2.3');
    assert.equal((await get(d, b.ip6)).remote, d.ip6);
  });

  it('removes a single pod completely and reuses its address', async () => {
    const e = lab.addPod(n1, 'e');
    const sleeper = e.spawn(['sleep', '60']);
    const exited = new Promise((r) => sleeper.once('exit', r));
    const ip = e.ip4;
    lab.removePod(e);
    await exited;
    assert.ok(!listNetns().includes(e.netns));
    assert.ok(!fs.existsSync(e.cgroupPath));
    assert.ok(!n1.pods.has('e'));
    const f = lab.addPod(n1, 'f');
    assert.equal(f.ip4, ip);
    assert.notEqual(f.hostVeth, e.hostVeth);
    assert.equal((await get(f, c.ip4)).name, 'c');
    lab.removePod(f);
  });

  it('destroy leaves nothing behind and is idempotent', async (t) => {
    const exits = [serverB, serverC].map((s) => new Promise((r) => s.once('exit', r)));
    const t0 = performance.now();
    await lab.destroy();
    const ms = performance.now() - t0;
    await Promise.all(exits);
    assert.ok(prefixIsClean(lab.prefix));
    assert.ok(!fs.existsSync(lab.cgroupPath));
    assert.equal(listNetns().filter((n) => n.startsWith(`${lab.prefix}-`)).length, 0);
    await lab.destroy();
    assert.throws(() => lab.addNode('node3'), /destroyed/);
    t.diagnostic(`destroy: ${ms.toFixed(1)} ms`);
  });
});

/** Runs a script that builds a lab in a child process; resolves once it printed "ready". */
function labChild(prefix: string, tail: string): { child: ChildProcess; ready: Promise<string> } {
  const script = `
    const { Lab } = await import(${JSON.stringify(LAB_URL)});
    const lab = await Lab.create({ prefix: ${JSON.stringify(prefix)} });
    const n = lab.addNode('node1');
    const p = lab.addPod(n, 'p');
    const s = p.spawn(['sleep', '600'], { stdio: 'ignore' });
    console.log('ready ' + s.pid);
    ${tail}
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  return { child, ready: waitForLine(child, /^ready \d+$/, 10000) };
}

function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

describe('lab cleanup', { skip }, () => {
  const prefixes: string[] = [];
  after(() => {
    for (const p of prefixes) Lab.cleanupPrefix(p);
  });

  it('cleanupPrefix removes a lab leaked by a crashed process', async () => {
    const prefix = uniquePrefix('mwk');
    prefixes.push(prefix);
    const { child, ready } = labChild(prefix, `process.kill(process.pid, 'SIGKILL');`);
    const line = await ready;
    await new Promise((r) => child.once('exit', r));
    const sleeper = Number(line.split(' ')[1]);
    assert.equal(prefixIsClean(prefix), false, 'the crash should have leaked the lab');
    assert.ok(alive(sleeper));
    Lab.cleanupPrefix(prefix);
    assert.ok(prefixIsClean(prefix));
    assert.ok(!alive(sleeper));
    Lab.cleanupPrefix(prefix); // idempotent
  });

  it('Lab.create removes leftovers of the same prefix first', async () => {
    const prefix = uniquePrefix('mwk');
    prefixes.push(prefix);
    const { child, ready } = labChild(prefix, `process.kill(process.pid, 'SIGKILL');`);
    await ready;
    await new Promise((r) => child.once('exit', r));
    const lab = await Lab.create({ prefix });
    try {
      assert.equal(listNetns().filter((n) => n.startsWith(`${prefix}-`)).length, 0);
      assert.deepEqual(fs.readdirSync(lab.cgroupPath).filter((f) => !f.startsWith('cgroup.') && !f.includes('.')), []);
    } finally {
      await lab.destroy();
    }
    assert.ok(prefixIsClean(prefix));
  });

  for (const how of ['exit', 'SIGTERM', 'SIGINT'] as const) {
    it(`a lab is torn down when its process ends by ${how}`, async () => {
      const prefix = uniquePrefix('mwk');
      prefixes.push(prefix);
      const tail = how === 'exit' ? 'process.exit(0);' : 'setInterval(() => {}, 1000);';
      const { child, ready } = labChild(prefix, tail);
      const sleeper = Number((await ready).split(' ')[1]);
      const exited = new Promise<[number | null, string | null]>((r) => child.once('exit', (code, sig) => r([code, sig])));
      if (how !== 'exit') child.kill(how);
      const [code, sig] = await exited;
      assert.deepEqual([code, sig], how === 'exit' ? [0, null] : [null, how]);
      assert.ok(prefixIsClean(prefix), `lab ${prefix} left behind after ${how}`);
      assert.ok(!alive(sleeper));
    });
  }
});

// SPDX-License-Identifier: Apache-2.0
// The libbpf binding on the real kernel: one small program of each kind.
import assert from 'node:assert/strict';
import { spawnSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BpfObject, Link, RingBufferReader, BpfError, codec, ERRNO, LINK_TYPE } from '../../src/bpf/index.ts';
import { selftestObject, stEvent, type StEvent } from '../../src/bpf/selftest.ts';
import { cgroup2Mount, removeCgroupTree } from '../../src/sys/cgroup.ts';
import { run } from '../../src/sys/exec.ts';
import { kernelTest, testPrefix } from '../helpers/kernel.ts';

const node = process.execPath;
const root = fileURLToPath(new URL('../..', import.meta.url));

/** A TCP server on 127.0.0.1 answering every connection with `reply`. */
async function replyServer(reply: string): Promise<{ port: number; close(): void }> {
  const srv = net.createServer((s) => s.end(reply));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return { port: (srv.address() as net.AddressInfo).port, close: () => srv.close() };
}

/** Runs a node snippet inside cgroup `cg` (joined before exec), returns stdout. */
function connectFrom(cg: string | null, port: number): Promise<string> {
  const js = `const s=require('net').connect(${port},'127.0.0.1');let d='';s.on('data',x=>d+=x);s.on('end',()=>{console.log(d)});s.on('error',e=>console.log('ERR '+e.code))`;
  const argv = cg
    ? ['sh', '-c', `echo $$ > ${cg}/cgroup.procs && exec "$0" -e "$1"`, node, js]
    : [node, '-e', js];
  return new Promise((resolve) => {
    const c = spawn(argv[0], argv.slice(1));
    let out = '';
    c.stdout.on('data', (d) => (out += d));
    c.on('exit', () => resolve(out.trim()));
  });
}

/** A free loopback port with no listener (a dead end if a redirect fails). */
async function closedPort(): Promise<number> {
  const s = await replyServer('');
  s.close();
  return s.port;
}

kernelTest('connect4 in a cgroup redirects only that cgroup, with .rodata config and ring buffer events', async (t) => {
  const prefix = testPrefix();
  const cg = join(cgroup2Mount(), prefix);
  mkdirSync(cg);
  t.after(() => removeCgroupTree(cg));
  const target = await replyServer('redirected');
  t.after(() => target.close());
  const from = await closedPort();

  const obj = BpfObject.load(selftestObject, { config: { st_from_port: from, st_to_port: target.port } });
  t.after(() => obj.close());
  const events: StEvent[] = [];
  const rb = new RingBufferReader(obj.mapInfo('st_events').fd, (b) => events.push(stEvent.decode(b)));
  t.after(() => rb.close());
  const link = Link.attachCgroup(obj.program('st_connect4'), cg);
  t.after(() => link.destroy());

  assert.equal(await connectFrom(cg, from), 'redirected');
  assert.equal(await connectFrom(null, from), 'ERR ECONNREFUSED', 'a process outside the cgroup is untouched');
  await new Promise((r) => setTimeout(r, 50)); // let the epoll wakeup reach the event loop
  assert.equal(events.length, 1, 'one ring buffer event, delivered by the event loop');
  assert.equal(events[0].orig_port, from);
  assert.equal(events[0].new_port, target.port);
  assert.equal(events[0].uid, 0);
  assert.equal(obj.map('st_counters', codec.u32, codec.u64).get(0), 1n);

  link.destroy();
  assert.equal(await connectFrom(cg, from), 'ERR ECONNREFUSED', 'detached: no redirect');
}, { needs: ['attach.connect4', 'map.ringbuf'] });

kernelTest('a foreign program on the same cgroup hook keeps running (multi-attach links)', async (t) => {
  const prefix = testPrefix();
  const cg = join(cgroup2Mount(), prefix);
  mkdirSync(cg);
  t.after(() => removeCgroupTree(cg));
  const target = await replyServer('ok');
  t.after(() => target.close());
  const from = await closedPort();
  // Two independent objects (two "projects") on the same hook; both must run.
  const mine = BpfObject.load(selftestObject, { config: { st_from_port: from, st_to_port: target.port } });
  const theirs = BpfObject.load(selftestObject, { config: { st_from_port: 1, st_to_port: 2 } });
  t.after(() => { mine.close(); theirs.close(); });
  const l1 = Link.attachCgroup(theirs.program('st_connect4'), cg);
  const l2 = Link.attachCgroup(mine.program('st_connect4'), cg);
  t.after(() => { l1.destroy(); l2.destroy(); });
  assert.equal(await connectFrom(cg, from), 'ok');
  // "theirs" saw the connect too (it ran, found a port it does not handle, passed).
  const runs = (o: BpfObject) => o.map('st_counters', codec.u32, codec.u64).get(0);
  assert.equal(runs(mine), 1n);
  assert.equal(runs(theirs), 0n);
}, { needs: ['attach.connect4'] });

kernelTest('load failure carries errno and the verifier log tail; bad config is a clear error', (t) => {
  // A program the verifier must reject: it reads a map value without a NULL check.
  const dir = mkdtempSync(join(tmpdir(), 'mw-bad-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'bad.bpf.c'), `#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1); __type(key, __u32); __type(value, __u64); } m SEC(".maps");
SEC("tc") int bad(struct __sk_buff *skb) { __u32 k = 0; return *(__u64 *)bpf_map_lookup_elem(&m, &k); }
char LICENSE[] SEC("license") = "Dual BSD/GPL";`);
  run(['clang', '-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', join(dir, 'bad.bpf.c'), '-o', join(dir, 'bad.o')]);
  // The verifier's reason is matched in the whole log, not in the message's tail: 7.x appends
  // "Causal path" / "Suggestion" sections after it (seen on Debian's 7.3 in the kernel matrix).
  assert.throws(() => BpfObject.load(join(dir, 'bad.o')), (e: unknown) =>
    e instanceof BpfError && e.errno === ERRNO.EACCES && e.code === 'ERR_BPF' && /\(errno 13\)/.test(e.message)
    && /invalid mem access 'map_value_or_null'/.test(e.libbpfLog));
  assert.throws(() => BpfObject.open(selftestObject, { config: { no_such_var: 1 } }), /unknown config variable "no_such_var"/);
  assert.throws(() => BpfObject.open(selftestObject, { config: { st_from_port: 70000 } }), /does not fit in 2 bytes/);
  assert.throws(() => BpfObject.open('/nonexistent.o'), (e: unknown) => e instanceof BpfError && e.errno === ERRNO.ENOENT);
});

kernelTest('tc legacy filter and two tcx links in a chosen order on a veth in a netns', async (t) => {
  const p = testPrefix();
  const [a, b] = [`${p}-a`, `${p}-b`];
  t.after(() => { spawnSync('ip', ['netns', 'del', a]); spawnSync('ip', ['netns', 'del', b]); });
  run(['ip', 'netns', 'add', a]);
  run(['ip', 'netns', 'add', b]);
  run(['ip', '-n', a, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1', 'netns', b]);
  // No IPv6 on the link: its neighbour discovery would leave veth0 between the two tcx
  // attaches and mark program a as first whatever the order (a flake seen under load).
  for (const ns of [a, b]) run(['nsenter', `--net=/run/netns/${ns}`, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  run(['ip', '-n', a, 'addr', 'add', '192.168.77.1/24', 'dev', 'veth0']);
  run(['ip', '-n', b, 'addr', 'add', '192.168.77.2/24', 'dev', 'veth1']);
  run(['ip', '-n', a, 'link', 'set', 'veth0', 'up']);
  run(['ip', '-n', b, 'link', 'set', 'veth1', 'up']);
  for (const order of ['b-before-a', 'b-after-a']) {
    const r = spawnSync('nsenter', [`--net=/run/netns/${a}`, node, '--disable-warning=ExperimentalWarning',
      join(root, 'test/kernel/fixtures/tc-scenario.ts'), '192.168.77.2', order], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepEqual(out.tcxOrder, order === 'b-before-a' ? ['b', 'a'] : ['a', 'b'], 'kernel order as requested');
    assert.deepEqual([out.posA, out.posB], order === 'b-before-a' ? [2, 1] : [1, 2], 'programs ran in that order');
    assert.ok(out.legacyPackets >= 1, 'legacy filter after tcx still ran (tcx returned next)');
    assert.ok(out.legacyProgId > 0);
    assert.match(out.clash, /taken by another filter/, 'never replaces an existing filter');
    assert.equal(out.legacyAfterDetach, undefined);
    assert.equal(out.tcxAfterDestroy, 0);
  }
}, { needs: ['tcx'] });

kernelTest('pinned map and link survive the loader and are re-opened from a second process', async (t) => {
  const prefix = testPrefix();
  const pinRoot = `/sys/fs/bpf/${prefix}`;
  const cg = join(cgroup2Mount(), prefix);
  mkdirSync(cg);
  t.after(() => { removeCgroupTree(cg); rmSync(pinRoot, { recursive: true, force: true }); });
  const target = await replyServer('still here');
  t.after(() => target.close());
  const from = await closedPort();

  const obj = BpfObject.load(selftestObject, { pinRoot, config: { st_from_port: from, st_to_port: target.port } });
  assert.equal(obj.mapPinPath('st_counters'), `${pinRoot}/maps/st_counters`);
  const link = Link.attachCgroup(obj.program('st_connect4'), cg);
  assert.equal(link.info().type, LINK_TYPE.CGROUP);
  link.pin(`${pinRoot}/links/st_connect4`);
  link.close();
  obj.close(); // the loader is gone; the pinned link keeps the program attached

  assert.equal(await connectFrom(cg, from), 'still here');
  const js = `
    import { BpfMap, Link, codec } from '${root}src/bpf/index.ts';
    const m = BpfMap.openPinned('${pinRoot}/maps/st_counters', codec.u32, codec.u64);
    const l = Link.open('${pinRoot}/links/st_connect4');
    console.log(JSON.stringify({ name: m.name, count: String(m.get(0)), progId: l.info().progId }));`;
  const r = spawnSync(node, ['--disable-warning=ExperimentalWarning', '--input-type=module', '-e', js], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const seen = JSON.parse(r.stdout);
  assert.equal(seen.name, 'st_counters');
  assert.equal(seen.count, '1');
  assert.ok(seen.progId > 0);

  const adopted = Link.open(`${pinRoot}/links/st_connect4`);
  adopted.destroy(); // detaches and unpins
  assert.equal(existsSync(`${pinRoot}/links/st_connect4`), false);
  assert.equal(await connectFrom(cg, from), 'ERR ECONNREFUSED');
}, { needs: ['attach.connect4'] });

kernelTest('typed maps: not found, map full and exists are distinct errors with stable codes', () => {
  const obj = BpfObject.load(selftestObject);
  try {
    const m = obj.map('st_counters', codec.u32, codec.u64);
    assert.equal(m.lookup(7), undefined);
    assert.throws(() => m.get(7), { name: 'NotFoundError', code: 'ERR_BPF_NOT_FOUND' });
    assert.throws(() => m.update(7, 1n), (e: unknown) => e instanceof BpfError && e.errno === ERRNO.E2BIG); // array: E2BIG out of range
    m.update(1, 5n);
    assert.deepEqual(m.dump(), [[0, 0n], [1, 5n]]);
    const h = obj.map('st_hash', codec.u32, codec.u32);
    h.update(1, 10);
    h.update(2, 20);
    assert.throws(() => h.update(3, 30), { name: 'MapFullError', code: 'ERR_BPF_MAP_FULL' });
    assert.throws(() => h.update(1, 11, 'noexist'), { name: 'ExistsError', code: 'ERR_BPF_EXISTS' });
    h.update(1, 11, 'exist');
    assert.deepEqual(h.dump().sort(), [[1, 11], [2, 20]]);
    assert.equal(h.delete(2), true);
    assert.equal(h.delete(2), false);
    assert.throws(() => obj.map('st_counters', codec.u16, codec.u64), /key codec __u16 is 2 bytes, map key is 4/);
  } finally {
    obj.close();
  }
});

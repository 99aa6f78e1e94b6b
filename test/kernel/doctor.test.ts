// SPDX-License-Identifier: Apache-2.0
// `meshwarp doctor` on the real machine, as a subprocess, checked against
// facts gathered here by other means (findmnt, stat, uname, gcc + uapi header).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { PROG_TYPES, MAP_TYPES, ATTACH_TYPES, HELPERS, PROBE_ATTACH } from '../../src/doctor/catalog.ts';
import { onBpffs } from '../../src/sys/bpffs.ts';
import { kernelTest, inCI } from '../helpers/kernel.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const meshwarp = join(root, 'bin/meshwarp');

function doctor(args: string[], wrap: string[] = []): { code: number | null; out: string; err: string; ms: number } {
  const argv = [...wrap, meshwarp, 'doctor', ...args];
  const t0 = performance.now();
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status, out: r.stdout, err: r.stderr, ms: performance.now() - t0 };
}

function sh(cmd: string): string {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
  return r.stdout.trim();
}

const kernelAtLeast = (maj: number, min: number) => {
  const [a, b] = release().split('.').map((x) => parseInt(x, 10));
  return a > maj || (a === maj && b >= min);
};

kernelTest('doctor --json on this machine: every check ok, cgroup2 from mountinfo, tcx per kernel version', () => {
  const r = doctor(['--json']);
  assert.equal(r.code, 0, r.err + r.out.slice(-2000));
  const j = JSON.parse(r.out);
  for (const k of ['schema', 'kernel', 'host', 'checks', 'features', 'ready']) assert.ok(k in j, `key ${k}`);
  assert.equal(j.schema, 1);
  assert.equal(j.ready, true);
  for (const k of ['release', 'version', 'major', 'minor', 'arch', 'btf', 'tcx']) assert.ok(k in j.kernel, `kernel.${k}`);
  assert.equal(j.kernel.release, release());

  // cgroup2 mount found independently (findmnt), hybrid unless /sys/fs/cgroup itself is cgroup2.
  const cg2 = sh('findmnt -t cgroup2 -n -o TARGET | head -n1');
  assert.equal(j.host.cgroup2.path, cg2);
  const topIsV2 = sh('stat -f -c %T /sys/fs/cgroup') === 'cgroup2fs';
  assert.equal(j.host.cgroup2.layout, topIsV2 ? 'unified' : 'hybrid');
  assert.match(j.checks.find((c: { id: string }) => c.id === 'cgroup2').detail, new RegExp(`^${cg2} `));
  assert.equal(j.host.bpffs.mounted, true);
  assert.equal(j.host.bpffs.mountedByFix, false);

  // tcx: supported exactly from 6.6 on; T1 degrades (never unavailable) without it.
  const tcx = kernelAtLeast(6, 6);
  assert.equal(j.kernel.tcx, tcx);
  const t1 = j.features.find((f: { id: string }) => f.id === 'T1');
  assert.equal(t1.status, tcx ? 'ready' : 'degraded');

  for (const c of j.checks) {
    if (c.id === 'tcx' && !tcx) continue;
    assert.equal(c.ok, true, `${c.id}: ${c.detail}`);
    assert.deepEqual(Object.keys(c), ['id', 'ok', 'detail']);
  }
  assert.equal(j.features.length, 24);
  for (const f of j.features) {
    assert.deepEqual(Object.keys(f), ['id', 'name', 'status', 'required', 'requires', 'advice']);
    if (f.required) assert.notEqual(f.status, 'unavailable', `${f.id}: ${f.advice}`);
  }
  process.stderr.write(`# doctor --json took ${r.ms.toFixed(0)} ms\n`);
  assert.ok(r.ms < 3000, `doctor took ${r.ms} ms`);
});

kernelTest('doctor (human output): grouped checks, feature table, ready verdict, exit 0', () => {
  const r = doctor([]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^system\n  ✓ kernel +Linux /m);
  assert.match(r.out, /^eBPF helpers\n/m);
  assert.match(r.out, /^  ✓ S1 \* sidecar outbound capture +ready$/m);
  assert.match(r.out, /^verdict: ready — all 7 required features can run here/m);
  assert.doesNotMatch(r.out, /✗/);
});

kernelTest('helper probes see "cannot use helper" that libbpf 1.1 misses', async () => {
  const { probeHelper, probeAttachType } = await import('../../src/bpf/probe.ts');
  const sockAddr = PROG_TYPES.find((p) => p.name === 'cgroup_sock_addr')!.id;
  const schedCls = PROG_TYPES.find((p) => p.name === 'sched_cls')!.id;
  // bpf_redirect (23) from a cgroup connect hook: the kernel refuses it.
  assert.equal(probeHelper(sockAddr, PROBE_ATTACH.cgroup_sock_addr, 23).supported, false);
  // bpf_get_netns_cookie (122) there is fine; a helper id the kernel does not know is not.
  assert.equal(probeHelper(sockAddr, PROBE_ATTACH.cgroup_sock_addr, 122).supported, true);
  assert.equal(probeHelper(schedCls, 0, 100_000).supported, false);
  // A hook the program type does not have is rejected (connect4 on sched_cls).
  assert.equal(probeAttachType(sockAddr, 10).supported, true);
  assert.equal(probeAttachType(sockAddr, 21).supported, false);
});

kernelTest('without privileges: not probed, S1 unavailable with "run as root", exit 1', () => {
  const r = doctor(['--json'], ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']);
  assert.equal(r.code, 1, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.ready, false);
  assert.equal(j.host.privileged, false);
  assert.equal(j.checks.find((c: { id: string }) => c.id === 'privileges').ok, false);
  assert.match(j.checks.find((c: { id: string }) => c.id === 'prog.sock_ops').detail, /^not probed/);
  const s1 = j.features.find((f: { id: string }) => f.id === 'S1');
  assert.equal(s1.status, 'unavailable');
  assert.match(s1.advice, /run as root/);
});

kernelTest('bpffs missing (private mount namespace): exit 1 and advice; --fix mounts it', () => {
  // umount happens in a private mount namespace: the host's /sys/fs/bpf is never touched.
  const inNs = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'umount /sys/fs/bpf && exec "$@"', 'sh'];
  const r = doctor(['--json'], inNs);
  assert.equal(r.code, 1, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.host.bpffs.mounted, false);
  const r1 = j.features.find((f: { id: string }) => f.id === 'R1');
  assert.equal(r1.status, 'unavailable');
  assert.equal(r1.advice, 'mount bpffs: meshwarp doctor --fix');

  const fixed = doctor(['--json', '--fix'], inNs);
  assert.equal(fixed.code, 0, fixed.err);
  const k = JSON.parse(fixed.out);
  assert.deepEqual(k.host.bpffs, { path: '/sys/fs/bpf', mounted: true, mountedByFix: true });
  assert.ok(onBpffs('/sys/fs/bpf'), 'host bpffs still mounted');
});

test('doctor --help exits 0, a bad flag exits 2', () => {
  const h = doctor(['--help']);
  assert.equal(h.code, 0);
  assert.match(h.out, /--json/);
  const b = doctor(['--bogus']);
  assert.equal(b.code, 2);
  assert.match(b.err, /bogus/);
});

test('catalog numbers match <linux/bpf.h> (compiled with gcc)', (t) => {
  const gcc = spawnSync('gcc', ['--version']);
  if (gcc.status !== 0) {
    if (inCI) assert.fail('gcc is missing (CI=true)');
    t.skip('no gcc');
    return;
  }
  const checks = [
    ...PROG_TYPES.map((p) => [p.uapi, p.id] as const),
    ...MAP_TYPES.map((m) => [m.uapi, m.id] as const),
    ...ATTACH_TYPES.map((a) => [a.uapi, a.id] as const),
    ...HELPERS.map((h) => [`BPF_FUNC_${h.name}`, h.id] as const),
    ['BPF_SK_LOOKUP', PROBE_ATTACH.sk_lookup] as const,
  ];
  const dir = mkdtempSync(join(tmpdir(), 'mwdoc'));
  try {
    const src = `#include <stdio.h>\n#include <linux/bpf.h>\nint main(void){int bad=0;\n${checks
      .map(([n, v]) => `if ((int)${n} != ${v}) { printf("%s = %d, catalog says ${v}\\n", "${n}", (int)${n}); bad=1; }`)
      .join('\n')}\nreturn bad;}\n`;
    writeFileSync(join(dir, 'ids.c'), src);
    const cc = spawnSync('gcc', ['-I/usr/include/x86_64-linux-gnu', '-o', join(dir, 'ids'), join(dir, 'ids.c')], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);
    const r = spawnSync(join(dir, 'ids'), { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

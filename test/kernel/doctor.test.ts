// SPDX-License-Identifier: Apache-2.0
// `meshwarp doctor` on the real machine, as a subprocess, checked against
// facts gathered here by other means (findmnt, stat, uname), and uapi.ts
// checked against the installed headers (gcc).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as uapi from '../../src/bpf/uapi.ts';
import { ATTACH_TYPE, FUNC, PROG_TYPE } from '../../src/bpf/uapi.ts';
import { onBpffs } from '../../src/sys/bpffs.ts';
import { kernelTest, inCI } from '../helpers/kernel.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const meshwarp = join(root, 'bin/meshwarp');

// Hang guards only: doctor takes 0.4 s here and 5-17 s in an emulated guest.
const DOCTOR_TIMEOUT_MS = 120_000;
const TEST_TIMEOUT_MS = 3 * DOCTOR_TIMEOUT_MS;

function doctor(args: string[], wrap: string[] = []): { code: number | null; out: string; err: string } {
  const argv = [...wrap, meshwarp, 'doctor', ...args];
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', timeout: DOCTOR_TIMEOUT_MS });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

function sh(cmd: string): string {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${cmd}: ${r.stderr}`);
  return r.stdout.trim();
}

kernelTest('doctor --json on this machine: every check ok, cgroup2 from mountinfo, tcx per kernel version', async () => {
  const { feature, kernelAtLeast } = await import('../../src/bpf/features.ts');
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

  // tcx: supported exactly from its release on; T1 degrades (never unavailable) without it.
  const tcx = kernelAtLeast(release(), feature('tcx').since) === true;
  assert.equal(j.kernel.tcx, tcx);
  const t1 = j.features.find((f: { id: string }) => f.id === 'T1');
  assert.equal(t1.status, tcx ? 'ready' : 'degraded');
  // Ambient: sk_assign from tc, bpf_redirect_peer, sk_lookup, the ambient object, on this kernel.
  for (const id of ['helper.sched_cls.sk_assign', 'helper.sched_cls.redirect_peer', 'helper.sched_cls.skc_lookup_tcp', 'prog.sk_lookup', 'object.ambient']) {
    const c = j.checks.find((x: { id: string }) => x.id === id);
    assert.equal(c?.ok, true, `${id}: ${JSON.stringify(c)}`);
  }
  for (const id of ['A1', 'A2', 'A3']) {
    const f = j.features.find((x: { id: string }) => x.id === id);
    assert.equal(f.status, id === 'A1' && !tcx ? 'degraded' : 'ready', `${id}: ${f.advice}`);
  }

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
}, { timeout: TEST_TIMEOUT_MS, needs: ['datapath.sidecar'] });

kernelTest('doctor (human output): grouped checks, feature table, ready verdict, exit 0', () => {
  const r = doctor([]);
  assert.equal(r.code, 0, r.err);
  assert.match(r.out, /^system\n  ✓ kernel +Linux /m);
  assert.match(r.out, /^eBPF helpers\n/m);
  assert.match(r.out, /^  ✓ S1 \* sidecar outbound capture +ready$/m);
  assert.match(r.out, /^verdict: ready — all 7 required features can run here/m);
  assert.doesNotMatch(r.out, /✗/);
}, { timeout: TEST_TIMEOUT_MS, needs: ['datapath.sidecar'] });

// The other side of the gate above: on a kernel below the sidecar datapath's minimum (5.10:
// bpf_get_netns_cookie in sock_ops, cgroup_sockopt and sk_msg needs 5.15) doctor and the
// agent both say which probes are missing, instead of a verifier log (docs/kernels.md).
kernelTest('below the sidecar datapath minimum: doctor names every missing probe, the agent refuses to start with them', async (t) => {
  const { DATAPATH_FEATURES, have } = await import('../../src/bpf/features.ts');
  if (have('datapath.sidecar').available) { t.skip('this kernel loads the sidecar datapath: nothing to refuse'); return; }
  const missing = ['helper.sock_ops.get_netns_cookie', 'helper.cgroup_sockopt.get_netns_cookie', 'helper.sk_msg.get_netns_cookie']
    .filter((id) => !have(id as never).available);
  assert.ok(missing.length > 0, 'datapath.sidecar is missing: some probe says why');
  const r = doctor(['--json']);
  assert.equal(r.code, 1, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.ready, false);
  const dp = j.checks.find((c: { id: string }) => c.id === 'datapath.sidecar');
  assert.equal(dp.ok, false);
  for (const id of missing) {
    assert.match(dp.detail, new RegExp(id.replaceAll('.', '\\.')), `datapath.sidecar names ${id}: ${dp.detail}`);
    assert.equal(j.checks.find((c: { id: string }) => c.id === id).ok, false, id);
  }
  assert.match(dp.detail, /needs ≥ 5\.15/);
  for (const id of ['S1', 'S2', 'S3', 'C3']) {
    const f = j.features.find((x: { id: string }) => x.id === id);
    assert.equal(f.status, 'unavailable', id);
    assert.ok(f.requires.includes('datapath.sidecar'), `${id} requires datapath.sidecar`);
    for (const m of missing) assert.ok(f.advice.includes(m), `${id}'s advice names ${m}: ${f.advice}`);
  }
  assert.ok(DATAPATH_FEATURES.some((f) => f.id === 'datapath.sidecar'));
  // The agent (sidecar dataplane, eBPF engine) exits at once with the same reason, pinning nothing.
  const dir = mkdtempSync(join(tmpdir(), 'mw-dr-'));
  const pins = `/sys/fs/bpf/${dir.split('/').pop()}`;
  try {
    const a = spawnSync(meshwarp, ['agent', '--pin-root', pins, '--socket', join(dir, 'agent.sock'), '--state-dir', join(dir, 'state'), '--metrics', ''],
      { encoding: 'utf8', timeout: DOCTOR_TIMEOUT_MS });
    assert.equal(a.status, 1, a.stderr);
    assert.match(a.stderr, /sidecar eBPF datapath .*cannot load on this kernel \(needs ≥ 5\.15\): missing /);
    for (const id of missing) assert.ok(a.stderr.includes(id), `agent names ${id}: ${a.stderr}`);
    assert.match(a.stderr, /--engine iptables/);
    assert.ok(!existsSync(pins), 'nothing pinned');
  } finally {
    rmSync(dir, { recursive: true, force: true });
    rmSync(pins, { recursive: true, force: true });
  }
}, { timeout: TEST_TIMEOUT_MS });

kernelTest('helper probes see "cannot use helper" that libbpf 1.1 misses', async () => {
  const { probeHelper, probeAttachType } = await import('../../src/bpf/probe.ts');
  const connect4 = ATTACH_TYPE.CGROUP_INET4_CONNECT;
  // bpf_redirect from a cgroup connect hook: the kernel refuses it.
  assert.equal(probeHelper(PROG_TYPE.CGROUP_SOCK_ADDR, connect4, FUNC.redirect).supported, false);
  // bpf_get_netns_cookie there is fine; a helper id the kernel does not know is not.
  assert.equal(probeHelper(PROG_TYPE.CGROUP_SOCK_ADDR, connect4, FUNC.get_netns_cookie).supported, true);
  assert.equal(probeHelper(PROG_TYPE.SCHED_CLS, 0, 100_000).supported, false);
  // A hook the program type does not have is rejected (getsockopt on cgroup_sock_addr).
  assert.equal(probeAttachType(PROG_TYPE.CGROUP_SOCK_ADDR, connect4).supported, true);
  assert.equal(probeAttachType(PROG_TYPE.CGROUP_SOCK_ADDR, ATTACH_TYPE.CGROUP_GETSOCKOPT).supported, false);
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
}, { timeout: TEST_TIMEOUT_MS });

kernelTest('bpffs missing (private mount namespace): exit 1 and advice; --fix mounts it', async () => {
  // On a kernel below the sidecar minimum doctor stays not ready after the fix, for that reason alone.
  const { have } = await import('../../src/bpf/features.ts');
  const sidecar = have('datapath.sidecar').available;
  // umount happens in a private mount namespace: the host's /sys/fs/bpf is never touched.
  const inNs = ['unshare', '--mount', '--propagation', 'private', 'sh', '-c', 'umount /sys/fs/bpf && exec "$@"', 'sh'];
  const r = doctor(['--json'], inNs);
  assert.equal(r.code, 1, r.err);
  const j = JSON.parse(r.out);
  assert.equal(j.host.bpffs.mounted, false);
  const r1 = j.features.find((f: { id: string }) => f.id === 'R1');
  assert.equal(r1.status, 'unavailable');
  if (sidecar) assert.equal(r1.advice, 'mount bpffs: meshwarp doctor --fix');
  else assert.match(r1.advice, /^mount bpffs: meshwarp doctor --fix; .*datapath\.sidecar/);

  const fixed = doctor(['--json', '--fix'], inNs);
  assert.equal(fixed.code, sidecar ? 0 : 1, fixed.err);
  const k = JSON.parse(fixed.out);
  assert.deepEqual(k.host.bpffs, { path: '/sys/fs/bpf', mounted: true, mountedByFix: true });
  assert.ok(onBpffs('/sys/fs/bpf'), 'host bpffs still mounted');
}, { timeout: TEST_TIMEOUT_MS });

test('doctor --help exits 0, a bad flag exits 2', () => {
  const h = doctor(['--help']);
  assert.equal(h.code, 0);
  assert.match(h.out, /--json/);
  const b = doctor(['--bogus']);
  assert.equal(b.code, 2);
  assert.match(b.err, /bogus/);
});

/** How each table of uapi.ts names its members in C; a table missing here fails the check below. */
const C_PREFIX: Record<string, string> = {
  BPF_CMD: 'BPF_', PROG_TYPE: 'BPF_PROG_TYPE_', MAP_TYPE: 'BPF_MAP_TYPE_', ATTACH_TYPE: 'BPF_',
  LINK_TYPE: 'BPF_LINK_TYPE_', MPROG_FLAG: 'BPF_F_', UPDATE_FLAG: 'BPF_', OPCODE: 'BPF_',
  FUNC: 'BPF_FUNC_', TC_ATTACH: 'BPF_TC_', ERRNO: '', CAP: 'CAP_',
};

/**
 * Values newer than Debian 12's headers (linux-libc-dev 6.1), as upstream's
 * include/uapi/linux/bpf.h defines them since `since`: compared with the
 * headers when those are that new, else with this record. ENOTSUPP is
 * kernel-internal (include/linux/errno.h) and in no userspace header.
 */
const UPSTREAM: Record<string, { value: number; since?: [number, number] }> = {
  BPF_TCX_INGRESS: { value: 46, since: [6, 6] },
  BPF_TCX_EGRESS: { value: 47, since: [6, 6] },
  BPF_LINK_TYPE_TCX: { value: 11, since: [6, 6] },
  BPF_F_BEFORE: { value: 1 << 3, since: [6, 6] },
  BPF_F_AFTER: { value: 1 << 4, since: [6, 6] },
  BPF_F_ID: { value: 1 << 5, since: [6, 6] },
  BPF_F_LINK: { value: 1 << 13, since: [6, 6] },
  ENOTSUPP: { value: 524 },
};

test('every number in uapi.ts matches the installed headers (compiled with gcc) or upstream', (t) => {
  const gcc = spawnSync('gcc', ['--version']);
  if (gcc.status !== 0) {
    if (inCI) assert.fail('gcc is missing (CI=true)');
    t.skip('no gcc');
    return;
  }
  const checks: [string, number][] = [];
  for (const [name, v] of Object.entries(uapi)) {
    if (typeof v === 'number') { checks.push([name, v]); continue; }
    const prefix = C_PREFIX[name];
    assert.ok(prefix !== undefined, `uapi.ts exports ${name}: add how its members are named in C to C_PREFIX`);
    for (const [k, n] of Object.entries(v as Record<string, number>)) checks.push([prefix + k, n]);
  }
  // Same number, second name: the IPv6 getsockopt.
  checks.push(['IP6T_SO_ORIGINAL_DST', uapi.SO_ORIGINAL_DST]);

  const cmp = (n: string, v: number) =>
    `if ((long long)(${n}) != ${v}LL) { printf("%s = %lld, uapi.ts says ${v}\\n", "${n}", (long long)(${n})); bad = 1; }`;
  const lines = checks.map(([n, v]) => {
    const up = UPSTREAM[n];
    if (!up) return cmp(n, v);
    assert.equal(v, up.value, `${n}: uapi.ts says ${v}, upstream ${up.value}`);
    return up.since
      ? `#if LINUX_VERSION_CODE >= KERNEL_VERSION(${up.since[0]}, ${up.since[1]}, 0)\n${cmp(n, v)}\n#endif`
      : `#ifdef ${n}\n${cmp(n, v)}\n#endif`;
  });
  assert.ok(checks.length > 60, `${checks.length} numbers checked`);
  const dir = mkdtempSync(join(tmpdir(), 'mwuapi'));
  try {
    const src = [
      '#define _GNU_SOURCE',
      ...['stdio.h', 'errno.h', 'sched.h', 'sys/syscall.h', 'sys/socket.h', 'netinet/in.h', 'linux/version.h', 'linux/if_ether.h', 'linux/magic.h', 'linux/capability.h',
        'linux/bpf.h', 'linux/netfilter_ipv4.h', 'linux/netfilter_ipv6/ip6_tables.h', 'bpf/libbpf.h'].map((h) => `#include <${h}>`),
      'int main(void) { int bad = 0;', ...lines, 'return bad; }', '',
    ].join('\n');
    writeFileSync(join(dir, 'uapi.c'), src);
    const cc = spawnSync('gcc', ['-I/usr/include/x86_64-linux-gnu', '-o', join(dir, 'uapi'), join(dir, 'uapi.c')], { encoding: 'utf8' });
    assert.equal(cc.status, 0, cc.stderr);
    const r = spawnSync(join(dir, 'uapi'), { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

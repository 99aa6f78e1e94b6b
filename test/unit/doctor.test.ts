// SPDX-License-Identifier: Apache-2.0
// meshwarp doctor's verdicts from fake probe results (no kernel access).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allProbeIds } from '../../src/doctor/catalog.ts';
import { FEATURES, judge, exitCode, severity, adviceFor, type ProbeResult } from '../../src/doctor/features.ts';
import { buildReport, formatHuman, SCHEMA } from '../../src/doctor/report.ts';
import type { KernelInfo, HostInfo } from '../../src/doctor/probes.ts';

const MISSION_IDS = ['S1', 'S2', 'S3', 'S4', 'S5', 'S6', 'S7', 'A1', 'A2', 'A3', 'C1', 'C2', 'C3', 'C4', 'C5',
  'T1', 'O1', 'O2', 'O3', 'L1', 'B1', 'R1', 'N1', 'D1'];
const REQUIRED = ['S1', 'S2', 'S3', 'S5', 'S7', 'C3', 'R1'];

/** Every probe passes except those in `fail` (id → detail). */
function checks(fail: Record<string, string> = {}): ProbeResult[] {
  return allProbeIds().map((id) => ({ id, ok: !(id in fail), detail: fail[id] ?? 'fine' }));
}
const feature = (fs: ReturnType<typeof judge>, id: string) => fs.find((f) => f.id === id)!;

test('every feature of the mission table is judged once, required ones are the sidecar eBPF mode', () => {
  assert.deepEqual(FEATURES.map((f) => f.id), MISSION_IDS);
  assert.deepEqual(FEATURES.filter((f) => f.required).map((f) => f.id), REQUIRED);
});

test('every probe a feature depends on is one the doctor runs', () => {
  const known = new Set(allProbeIds());
  for (const f of FEATURES) {
    for (const id of [...f.needs, ...(f.soft ?? []).flatMap((s) => s.probes)]) assert.ok(known.has(id), `${f.id} needs unknown probe ${id}`);
  }
  assert.equal(known.size, allProbeIds().length, 'probe ids are unique');
});

test('all probes ok: every feature ready, exit 0, no advice', () => {
  const fs = judge(checks());
  assert.ok(fs.every((f) => f.status === 'ready' && f.advice === ''));
  assert.equal(exitCode(fs), 0);
});

test('a required feature unavailable: exit code 1 and the failed check is marked fail', () => {
  const c = checks({ 'prog.cgroup_sock_addr': 'not supported (needs Linux >= 4.17)' });
  const fs = judge(c);
  for (const id of ['S1', 'S3', 'S5', 'S7']) assert.equal(feature(fs, id).status, 'unavailable', id);
  assert.match(feature(fs, 'S1').advice, /BPF program type cgroup_sock_addr: upgrade to Linux >= 4\.17/);
  assert.equal(feature(fs, 'S2').status, 'ready');
  assert.equal(exitCode(fs), 1);
  assert.equal(severity(c.find((x) => x.id === 'prog.cgroup_sock_addr')!), 'fail');
});

test('tcx missing: T1 (and ambient A1) degraded with the cls_bpf fallback, not unavailable; exit 0', () => {
  const fs = judge(checks({ tcx: 'not supported (needs Linux >= 6.6)' }));
  const t1 = feature(fs, 'T1');
  assert.equal(t1.status, 'degraded');
  assert.match(t1.advice, /falls back to legacy tc \(cls_bpf\)/);
  assert.ok(fs.filter((f) => f.id !== 'T1' && f.id !== 'A1').every((f) => f.status === 'ready'));
  assert.equal(exitCode(fs), 0);
  assert.equal(severity({ id: 'tcx', ok: false, detail: '' }), 'warn');
});

test('ambient features: sk_assign from tc, bpf_redirect_peer, sk_lookup and tcx each give their own verdict; exit 0', () => {
  let fs = judge(checks({ 'helper.sched_cls.sk_assign': 'not supported (needs Linux >= 5.7)' }));
  assert.equal(feature(fs, 'A2').status, 'unavailable');
  assert.match(feature(fs, 'A2').advice, /bpf_sk_assign|sk_assign/);
  assert.equal(feature(fs, 'A1').status, 'ready');
  assert.equal(exitCode(fs), 0, 'ambient is optional: the sidecar mode still runs');
  fs = judge(checks({ 'helper.sched_cls.redirect_peer': 'not supported' }));
  assert.equal(feature(fs, 'A1').status, 'degraded');
  assert.match(feature(fs, 'A1').advice, /no bpf_redirect_peer/);
  // sk_lookup answers the listener lookup of a SYN that meets the proxy's TIME_WAIT socket.
  fs = judge(checks({ 'prog.sk_lookup': 'not supported' }));
  assert.equal(feature(fs, 'A2').status, 'unavailable');
  assert.match(feature(fs, 'A2').advice, /sk_lookup/);
  fs = judge(checks({ tcx: 'not supported' }));
  assert.equal(feature(fs, 'A1').status, 'degraded');
  assert.match(feature(fs, 'A1').advice, /ambient programs attach as legacy cls_bpf/);
  fs = judge(checks({ 'object.ambient': 'not built' }));
  for (const id of ['A1', 'A2', 'A3']) assert.equal(feature(fs, id).status, 'unavailable', id);
  assert.match(feature(fs, 'A1').advice, /make bpf/);
});

test('an optional feature unavailable does not fail the run', () => {
  const fs = judge(checks({ 'prog.sk_msg': 'not supported', 'map.sockhash': 'not supported' }));
  assert.equal(feature(fs, 'S4').status, 'unavailable');
  assert.equal(feature(fs, 'B1').status, 'degraded');
  assert.match(feature(fs, 'B1').advice, /sockmap/);
  assert.equal(exitCode(fs), 0);
  assert.equal(severity({ id: 'prog.sk_msg', ok: false, detail: '' }), 'warn');
});

test('bpffs missing: required features unavailable, advice is doctor --fix', () => {
  const fs = judge(checks({ bpffs: '/sys/fs/bpf is not a bpf filesystem' }));
  assert.equal(feature(fs, 'R1').status, 'unavailable');
  assert.equal(feature(fs, 'R1').advice, 'mount bpffs: meshwarp doctor --fix');
  assert.equal(exitCode(fs), 1);
});

test('connect6 missing degrades the capture features (IPv4 still works), fails nothing', () => {
  const fs = judge(checks({ 'attach.connect6': 'rejected' }));
  assert.deepEqual(fs.filter((f) => f.status !== 'ready').map((f) => [f.id, f.status]),
    [['S1', 'degraded'], ['S3', 'degraded'], ['D1', 'degraded']]);
  assert.equal(exitCode(fs), 0);
});

test('no bpf_get_netns_cookie in cgroup_sockopt (Linux < 5.15): S2 unavailable, advice names the release', () => {
  const fs = judge(checks({ 'helper.cgroup_sockopt.get_netns_cookie': 'helper bpf_get_netns_cookie in cgroup_sockopt programs not supported' }));
  assert.equal(feature(fs, 'S2').status, 'unavailable');
  assert.equal(feature(fs, 'S2').advice, 'kernel lacks helper bpf_get_netns_cookie in cgroup_sockopt programs: upgrade to Linux >= 5.15');
  assert.deepEqual(fs.filter((f) => f.status !== 'ready').map((f) => f.id), ['S2']);
});

test('a probe without a result counts as failed', () => {
  const fs = judge(checks().filter((c) => c.id !== 'map.sk_storage'));
  assert.equal(feature(fs, 'S2').status, 'unavailable');
  assert.equal(exitCode(fs), 1);
});

test('advice: not root, objects not built or rejected, helpers with a kernel version', () => {
  assert.match(adviceFor('helper.sched_cls.redirect_peer', 'not probed: needs root (CAP_BPF)'), /run as root/);
  assert.equal(adviceFor('object.sidecar', 'build/bpf/sidecar.bpf.o not built (make bpf)'), 'build the datapath: make bpf (needs clang)');
  assert.match(adviceFor('object.sidecar', 'load failed: …'), /kernel rejects build\/bpf\/sidecar\.bpf\.o/);
  assert.match(adviceFor('helper.sched_cls.redirect_peer'), /bpf_redirect_peer in sched_cls programs: upgrade to Linux >= 5\.10/);
  assert.match(adviceFor('tool.iptables'), /apt-get install iptables/);
  // Not root: all the eBPF advice collapses into one line.
  const notRoot = Object.fromEntries(allProbeIds().filter((id) => /^(prog|map|attach|helper|object)\.|^tcx$/.test(id))
    .map((id) => [id, 'not probed: needs root (CAP_BPF)']));
  const fs = judge(checks({ ...notRoot, privileges: 'uid 1000, missing CAP_BPF' }));
  assert.equal(feature(fs, 'S1').advice, 'run as root (needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)');
});

const kernel: KernelInfo = { release: '6.18.0-test', version: '6.18.0', major: 6, minor: 18, arch: 'x86_64', btf: true, tcx: true };
const host: HostInfo = {
  uid: 0, privileged: true, node: 'v24.0.0', cgroup2: { path: '/sys/fs/cgroup/unified', layout: 'hybrid' },
  bpffs: { path: '/sys/fs/bpf', mounted: true, mountedByFix: false }, iptables: null, ip6tables: null,
};

test('report: JSON keys and the human verdict', () => {
  const ok = buildReport({ kernel, host, checks: checks() });
  assert.deepEqual(Object.keys(ok), ['schema', 'kernel', 'host', 'checks', 'features', 'ready']);
  assert.equal(ok.schema, SCHEMA);
  assert.equal(ok.ready, true);
  assert.deepEqual(Object.keys(ok.features[0]), ['id', 'name', 'status', 'required', 'requires', 'advice']);
  assert.deepEqual(Object.keys(ok.checks[0]), ['id', 'ok', 'detail']);
  const text = formatHuman(ok);
  assert.match(text, /^system\n  ✓ kernel +fine$/m);
  assert.match(text, /^  ✓ S1 \* sidecar outbound capture +ready$/m);
  assert.match(text, /^verdict: ready — all 7 required features can run here \(24 ready, 0 degraded, 0 unavailable\)$/m);

  const bad = buildReport({ kernel, host, checks: checks({ 'prog.cgroup_sockopt': 'not supported', tcx: 'not supported' }) });
  assert.equal(bad.ready, false);
  const t = formatHuman(bad);
  assert.match(t, /^  ✗ prog\.cgroup_sockopt +not supported$/m);
  assert.match(t, /^  ! tcx +not supported$/m);
  assert.match(t, /^  ✗ S2 \* .*unavailable: kernel lacks BPF program type cgroup_sockopt/m);
  assert.match(t, /^  ! T1   .*degraded: kernel lacks tcx/m);
  assert.match(t, /^verdict: NOT ready — required feature S2 unavailable \(21 ready, 2 degraded, 1 unavailable\)$/m);
});

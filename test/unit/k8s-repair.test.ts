// SPDX-License-Identifier: Apache-2.0
// Repair by pod uid (the parts that need no kernel): which cgroup paths are a
// pod's, which leaf names a sandbox; the readiness check of the conflist entry.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { entryProblem } from '../../src/cni/install.ts';
import { cgroupOfPod, containerIdOfLeaf, locatePod } from '../../src/agent/sources/podns.ts';

const UID = '3f1c2a4e-9b7d-4c1e-8a2f-0d5e6b7c8d9e';

test('a pod\'s cgroup carries its uid: cgroupfs and systemd layouts, nothing looser', () => {
  assert.ok(cgroupOfPod(`/kubepods/besteffort/pod${UID}/abc123`, UID));
  assert.ok(cgroupOfPod(`/kubepods/pod${UID}/abc123`, UID));
  assert.ok(cgroupOfPod(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${UID.replaceAll('-', '_')}.slice/cri-containerd-abc.scope`, UID));
  assert.ok(cgroupOfPod(`/kubepods.slice/kubepods-pod${UID.replaceAll('-', '_')}.slice/crio-abc.scope`, UID));
  assert.ok(!cgroupOfPod(`/kubepods/pod${UID}x/abc`, UID), 'a longer uid is another pod');
  assert.ok(!cgroupOfPod(`/kubepods/besteffort/pod${UID.slice(0, -1)}/abc`, UID));
  assert.ok(!cgroupOfPod(`/system.slice/${UID}.service`, UID), 'the uid alone is not a pod cgroup');
});

test('the sandbox id is the cgroup leaf without the runtime\'s decoration', () => {
  assert.equal(containerIdOfLeaf('cri-containerd-0123abcd.scope'), '0123abcd');
  assert.equal(containerIdOfLeaf('crio-0123abcd.scope'), '0123abcd');
  assert.equal(containerIdOfLeaf('docker-0123abcd.scope'), '0123abcd');
  assert.equal(containerIdOfLeaf('0123abcd'), '0123abcd');
  assert.equal(containerIdOfLeaf(`pod${UID}`), undefined, 'a process directly in the pod cgroup names no sandbox');
  assert.equal(containerIdOfLeaf(`kubepods-pod${UID}.slice`), undefined);
  assert.equal(containerIdOfLeaf('a b'), undefined);
});

test('locatePod without a process of the pod says so and changes nothing', () => {
  const proc = mkdtempSync(join(tmpdir(), 'mw-proc-'));
  try {
    mkdirSync(join(proc, '42'));
    writeFileSync(join(proc, '42', 'cgroup'), '0::/kubepods/podother/abc\n');
    writeFileSync(join(proc, '42', 'stat'), '42 (sleep) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 100 0\n');
    const r = locatePod(UID, ['10.0.0.1'], { procRoot: proc, netnsDir: join(proc, 'netns') });
    assert.ok('error' in r && /no process of pod uid/.test(r.error), JSON.stringify(r));
  } finally {
    rmSync(proc, { recursive: true, force: true });
  }
});

test('entryProblem: ready only with exactly one valid meshwarp-cni entry pointing at the agent\'s socket', () => {
  const dir = mkdtempSync(join(tmpdir(), 'mw-conf-'));
  const write = (plugins: unknown[]) => writeFileSync(join(dir, '10-net.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'n', plugins }));
  const bridge = { type: 'bridge' };
  try {
    assert.match(entryProblem(dir)!, /no CNI network config/);
    write([bridge]);
    assert.match(entryProblem(dir)!, /0 meshwarp-cni entries/);
    write([bridge, { type: 'meshwarp-cni', meshwarp: { socket: '/run/meshwarp/agent.sock' } }]);
    assert.equal(entryProblem(dir), undefined);
    assert.equal(entryProblem(dir, '/run/meshwarp/agent.sock'), undefined);
    assert.match(entryProblem(dir, '/other.sock')!, /points at \/run\/meshwarp\/agent.sock/);
    write([bridge, { type: 'meshwarp-cni', meshwarp: { failurePolicy: 'sometimes' } }]);
    assert.match(entryProblem(dir)!, /entry is invalid/);
    write([bridge, { type: 'meshwarp-cni' }, { type: 'meshwarp-cni' }]);
    assert.match(entryProblem(dir)!, /2 meshwarp-cni entries/);
    rmSync(join(dir, '10-net.conflist'));
    writeFileSync(join(dir, '10-net.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'n', type: 'bridge' }));
    assert.match(entryProblem(dir)!, /single-plugin config/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

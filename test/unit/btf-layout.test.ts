// SPDX-License-Identifier: Apache-2.0
// Every TS codec against its C struct in the compiled object's BTF, and a
// proof that the check fails when a C struct changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Btf, checkLayout } from '../../src/bpf/index.ts';
import { selftestObject, selftestStructs } from '../../src/bpf/selftest.ts';
import { sidecarObject, sidecarStructs, STATS } from '../../src/datapath/sidecar/structs.ts';
import { run } from '../../src/sys/exec.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const objects = [
  { object: selftestObject, structs: selftestStructs },
  { object: sidecarObject, structs: sidecarStructs },
];

for (const { object, structs } of objects) {
  test(`TS codecs match the BTF of ${object.split('/').pop()}`, () => {
    const btf = Btf.fromElf(object);
    try {
      for (const c of structs) assert.deepEqual(checkLayout(c, btf.structLayout(c.cName)), [], c.cName);
    } finally {
      btf.close();
    }
  });
}

test('stat names in TS follow enum mw_stat in meshwarp.h', () => {
  const header = readFileSync(join(root, 'bpf/include/meshwarp.h'), 'utf8');
  const fromC = [...header.matchAll(/^\s*MW_STAT_([A-Z_]+) = (\d+),/gm)]
    .filter(([, n]) => n !== '_MAX').map(([, n, v]) => [n.toLowerCase(), Number(v)]);
  assert.deepEqual(fromC, STATS.map((n, i) => [n, i]));
});

test('moving a field in a C struct makes the layout check fail', () => {
  // Compile a copy of meshwarp.h with two pod_config fields swapped.
  const dir = mkdtempSync(join(tmpdir(), 'mw-btf-'));
  try {
    const header = readFileSync(join(root, 'bpf/include/meshwarp.h'), 'utf8');
    const swapped = header.replace(
      /(\t__u16 outbound_port;[^\n]*\n)(\t__u16 inbound_port;[^\n]*\n)/, '$2$1');
    assert.notEqual(swapped, header, 'test fixture: pod_config fields not found');
    writeFileSync(join(dir, 'meshwarp.h'), swapped);
    writeFileSync(join(dir, 'x.bpf.c'), '#include "meshwarp.h"\nstruct pod_config keep_in_btf;\n');
    run(['clang', '-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', join(dir, 'x.bpf.c'), '-o', join(dir, 'x.o')]);
    const btf = Btf.fromElf(join(dir, 'x.o'));
    const podConfig = sidecarStructs.find((c) => c.cName === 'pod_config')!;
    const diff = checkLayout(podConfig, btf.structLayout('pod_config'));
    btf.close();
    assert.deepEqual(diff, ['pod_config.inbound_port: offset 2 in TS, 0 in C', 'pod_config.outbound_port: offset 0 in TS, 2 in C']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

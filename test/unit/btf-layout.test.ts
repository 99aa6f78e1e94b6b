// SPDX-License-Identifier: Apache-2.0
// Every TS codec against its C struct, and every TS flag/id table against its
// C enum, in the compiled object's BTF; and proofs that the checks fail when
// a C struct or enum changes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Btf, checkLayout } from '../../src/bpf/index.ts';
import { checkEnum } from '../../src/bpf/layout.ts';
import { selftestObject, selftestStructs } from '../../src/bpf/selftest.ts';
import { sidecarEnums, sidecarObject, sidecarStructs } from '../../src/datapath/sidecar/structs.ts';
import { ambientEnums, ambientObject, ambientStructs } from '../../src/datapath/ambient/structs.ts';
import { run } from '../../src/sys/exec.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const objects = [
  { object: selftestObject, structs: selftestStructs },
  { object: sidecarObject, structs: sidecarStructs },
  { object: ambientObject, structs: ambientStructs },
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

test('TS flag, id and stat tables match the enums in the BTF of sidecar.bpf.o', () => {
  const btf = Btf.fromElf(sidecarObject);
  try {
    for (const e of sidecarEnums) assert.deepEqual(checkEnum(e, btf.enumLayout(e.cName)), [], e.cName);
  } finally {
    btf.close();
  }
});

test('TS tables match the enums in the BTF of ambient.bpf.o', () => {
  const btf = Btf.fromElf(ambientObject);
  try {
    for (const e of ambientEnums) assert.deepEqual(checkEnum(e, btf.enumLayout(e.cName)), [], e.cName);
  } finally {
    btf.close();
  }
});

/** Compiles `source` against a copy of meshwarp.h changed by `mutate` and returns the object's BTF. */
function compileMutated(dir: string, mutate: (header: string) => string, source: string): Btf {
  const header = readFileSync(join(root, 'bpf/include/meshwarp.h'), 'utf8');
  const changed = mutate(header);
  assert.notEqual(changed, header, 'test fixture: the text to change was not found');
  writeFileSync(join(dir, 'meshwarp.h'), changed);
  writeFileSync(join(dir, 'x.bpf.c'), `#include "meshwarp.h"\n${source}\n`);
  run(['clang', '-O2', '-g', '-target', 'bpf', '-I/usr/include/x86_64-linux-gnu', '-c', join(dir, 'x.bpf.c'), '-o', join(dir, 'x.o')]);
  return Btf.fromElf(join(dir, 'x.o'));
}

test('moving a field in a C struct makes the layout check fail', () => {
  // Compile a copy of meshwarp.h with two pod_config fields swapped.
  const dir = mkdtempSync(join(tmpdir(), 'mw-btf-'));
  try {
    const btf = compileMutated(dir, (h) => h.replace(
      /(\t__u16 outbound_port;[^\n]*\n)(\t__u16 inbound_port;[^\n]*\n)/, '$2$1'), 'struct pod_config keep_in_btf;');
    const podConfig = sidecarStructs.find((c) => c.cName === 'pod_config')!;
    const diff = checkLayout(podConfig, btf.structLayout('pod_config'));
    btf.close();
    assert.deepEqual(diff, ['pod_config.inbound_port: offset 2 in TS, 0 in C', 'pod_config.outbound_port: offset 0 in TS, 2 in C']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('changing or adding a value in a C enum makes the enum check fail', () => {
  // Compile a copy of meshwarp.h with one pod flag moved to another bit and one added.
  const dir = mkdtempSync(join(tmpdir(), 'mw-btf-'));
  try {
    const btf = compileMutated(dir, (h) => h.replace(
      /(\tMW_POD_F_HAS_INCLUDE_OUT_CIDRS = )1 << 1,([^\n]*\n)/, '$11 << 2,$2\tMW_POD_F_NEW = 1 << 3,\n'),
    'enum mw_pod_flag keep_in_btf;');
    const podFlags = sidecarEnums.find((e) => e.cName === 'mw_pod_flag')!;
    const diff = checkEnum(podFlags, btf.enumLayout('mw_pod_flag'));
    btf.close();
    assert.deepEqual(diff, [
      'enum mw_pod_flag: MW_POD_F_HAS_INCLUDE_OUT_CIDRS = 2 in TS, 4 in C',
      'enum mw_pod_flag: MW_POD_F_NEW = 8 in C, missing in TS',
    ]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

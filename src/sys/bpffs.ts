// SPDX-License-Identifier: Apache-2.0
// bpffs: where pins live. Some machines boot without it mounted.
import { statfsSync, existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { run } from './exec.ts';

export const BPFFS_DEFAULT = '/sys/fs/bpf';
const BPF_FS_MAGIC = 0xcafe4a11;

/** True when `path` (or its nearest existing ancestor) is on a bpffs. */
export function onBpffs(path: string): boolean {
  let p = path;
  while (!existsSync(p) && p !== '/') p = dirname(p);
  try {
    return statfsSync(p).type === BPF_FS_MAGIC;
  } catch {
    return false;
  }
}

/** Mounts bpffs at `path` when it is not there (what an agent does on a fresh node). */
export function ensureBpffs(path = BPFFS_DEFAULT): void {
  if (onBpffs(path)) return;
  run(['mount', '-t', 'bpf', 'bpf', path]);
}

/** Throws a clear error when a pin root is not on bpffs (pinning there cannot work). */
export function assertOnBpffs(pinRoot: string): void {
  if (!onBpffs(pinRoot)) {
    throw new Error(`pin root ${pinRoot} is not on a bpf filesystem; mount one (mount -t bpf bpf ${BPFFS_DEFAULT}) or run \`meshwarp doctor --fix\``);
  }
}

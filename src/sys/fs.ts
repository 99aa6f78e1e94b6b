// SPDX-License-Identifier: Apache-2.0
// Writing a file so that a crash at any moment leaves either the old or the new one.
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fsyncSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';

/**
 * Writes a temp file in the same directory, fsyncs it, renames it over `path` and fsyncs
 * the directory: readers see the old or the new content, never half, even after a power
 * loss. `mode` is applied exactly (not filtered by the umask); without it the file gets
 * the usual 0666 & ~umask.
 */
export function writeFileAtomic(path: string, data: string | Buffer, mode?: number): void {
  // A dot-name ending in ".tmp", so tools that scan the directory skip it (CNI runtimes
  // load *.conf, *.conflist and *.json from theirs).
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', mode ?? 0o666);
  try {
    try {
      const buf = typeof data === 'string' ? Buffer.from(data) : data;
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    if (mode !== undefined) chmodSync(tmp, mode);
    renameSync(tmp, path);
  } catch (e) {
    try { unlinkSync(tmp); } catch { /* already gone */ }
    throw e;
  }
  // The rename is durable only once the directory entry is on disk.
  const dfd = openSync(dir, 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

// SPDX-License-Identifier: Apache-2.0
// cgroup v2 helpers: find the mount, create/remove subtrees, pids and cgroup ids.
// Everything is synchronous so it can run from a process 'exit' handler.
import fs from 'node:fs';
import path from 'node:path';

let mountCache: string | undefined;

/** Decodes the octal escapes (\040 etc.) that /proc/self/mountinfo uses in paths. */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Mount point of the cgroup2 hierarchy, read from /proc/self/mountinfo (cached). */
export function cgroup2Mount(): string {
  if (mountCache !== undefined) return mountCache;
  const info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  for (const line of info.split('\n')) {
    // "id parent maj:min root mountpoint opts [optional...] - fstype source superopts"
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const fstype = line.slice(sep + 3).split(' ')[0];
    if (fstype !== 'cgroup2') continue;
    const fields = line.slice(0, sep).split(' ');
    mountCache = unescapeMountPath(fields[4]);
    return mountCache;
  }
  throw new Error('no cgroup2 filesystem mounted (see /proc/self/mountinfo)');
}

/** Absolute path of a cgroup given relative to the cgroup2 mount; refuses to escape it. */
export function cgroupPath(relPath: string): string {
  const root = cgroup2Mount();
  const abs = path.resolve(root, relPath.replace(/^\/+/, ''));
  if (abs === root || !abs.startsWith(root + '/')) {
    throw new Error(`cgroup path ${JSON.stringify(relPath)} must name a cgroup below ${root}`);
  }
  return abs;
}

/** Creates (mkdir -p) a cgroup below the cgroup2 mount; returns its absolute path. */
export function createCgroup(relPath: string): string {
  const abs = cgroupPath(relPath);
  fs.mkdirSync(abs, { recursive: true });
  return abs;
}

/** Pids directly in one cgroup (not its descendants). */
export function cgroupPids(absPath: string): number[] {
  return fs.readFileSync(path.join(absPath, 'cgroup.procs'), 'utf8')
    .split('\n').filter((l) => l !== '').map(Number);
}

/** True while the cgroup or any descendant has a live process (cgroup.events "populated"). */
export function cgroupPopulated(absPath: string): boolean {
  const ev = fs.readFileSync(path.join(absPath, 'cgroup.events'), 'utf8');
  return /^populated 1$/m.test(ev);
}

/** cgroup v2 path of a process relative to the mount (from /proc/PID/cgroup "0::/x"). */
export function cgroupOfPid(pid: number): string {
  const text = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8');
  const line = text.split('\n').find((l) => l.startsWith('0::'));
  if (line === undefined) throw new Error(`process ${pid} has no cgroup v2 entry`);
  return line.slice(3);
}

/** Kernel cgroup id (what bpf_get_current_cgroup_id() returns) = inode of the directory. */
export function cgroupId(absPath: string): bigint {
  return fs.statSync(absPath, { bigint: true }).ino;
}

const sleepCell = new Int32Array(new SharedArrayBuffer(4));
function sleepSync(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

function childCgroups(absPath: string): string[] {
  return fs.readdirSync(absPath, { withFileTypes: true })
    .filter((d) => d.isDirectory()).map((d) => path.join(absPath, d.name));
}

function killTree(absPath: string): void {
  const killFile = path.join(absPath, 'cgroup.kill');
  if (fs.existsSync(killFile)) {
    fs.writeFileSync(killFile, '1'); // kills the whole subtree at once (Linux >= 5.14)
    return;
  }
  for (const child of childCgroups(absPath)) killTree(child);
  for (const pid of cgroupPids(absPath)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
}

/**
 * Kills every process in a cgroup subtree, waits until it is empty and removes the
 * directories depth-first. A missing cgroup is fine (idempotent).
 */
export function removeCgroupTree(absPath: string, timeoutMs = 5000): void {
  const root = cgroup2Mount();
  if (absPath === root || !absPath.startsWith(root + '/')) {
    throw new Error(`refusing to remove ${absPath}: not a cgroup below ${root}`);
  }
  if (!fs.existsSync(absPath)) return;
  const deadline = Date.now() + timeoutMs;
  killTree(absPath);
  while (cgroupPopulated(absPath)) {
    if (Date.now() > deadline) throw new Error(`cgroup ${absPath} still has processes after ${timeoutMs} ms`);
    killTree(absPath); // catches processes forked while the first kill was in flight
    sleepSync(1);
  }
  rmdirTree(absPath, deadline);
}

function rmdirTree(absPath: string, deadline: number): void {
  for (const child of childCgroups(absPath)) rmdirTree(child, deadline);
  for (;;) {
    try {
      fs.rmdirSync(absPath);
      return;
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      // EBUSY: a task is still exiting, or one joined after the kill (a
      // process spawned just before removal writes itself into cgroup.procs
      // as its first step): kill again and retry.
      if (code !== 'EBUSY' || Date.now() > deadline) throw e;
      killTree(absPath);
      sleepSync(1);
    }
  }
}

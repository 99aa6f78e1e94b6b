// SPDX-License-Identifier: Apache-2.0
// Named network namespaces (/run/netns) and batched iproute2 calls inside them.
import fs from 'node:fs';
import { run, tryRun } from './exec.ts';
import { inNetns, linkByName } from './links.ts';
import { AF_INET, CLONE_NEWNET, SO_NETNS_COOKIE, SOCK_STREAM, SOL_SOCKET, close, getsockopt, setns, socket, sysError } from './libc.ts';

export const NETNS_DIR = '/run/netns';

export function netnsPath(name: string): string {
  return `${NETNS_DIR}/${name}`;
}

/** Names of all named network namespaces (read from /run/netns, no process spawned). */
export function listNetns(): string[] {
  try {
    return fs.readdirSync(NETNS_DIR);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** Creates named network namespaces with one `ip` process. */
export function addNetns(...names: string[]): void {
  if (names.length === 0) return;
  run(['ip', '-batch', '-'], { input: names.map((n) => `netns add ${n}\n`).join('') });
}

/** Deletes named network namespaces; missing ones are ignored. Returns those still present. */
export function deleteNetns(...names: string[]): string[] {
  const present = new Set(listNetns());
  const todo = names.filter((n) => present.has(n));
  if (todo.length === 0) return [];
  // -force keeps going past a failed line, so one bad entry does not leak the rest.
  tryRun(['ip', '-force', '-batch', '-'], { input: todo.map((n) => `netns del ${n}\n`).join(''), stdio: ['pipe', 'ignore', 'ignore'] });
  const after = new Set(listNetns());
  return todo.filter((n) => after.has(n));
}

/** Runs `ip -n NS -batch -` with the given lines (a command per line); returns stdout. */
export function ipBatch(ns: string, lines: string[], json = false): string {
  const argv = ['ip', '-n', ns, ...(json ? ['-j'] : []), '-batch', '-'];
  return run(argv, { input: lines.map((l) => l + '\n').join('') });
}

/** Runs argv inside a named netns (no cgroup change, as the caller's user). Returns stdout. */
export function nsRun(ns: string, argv: string[], input?: string): string {
  return inNetns(netnsPath(ns), argv, input);
}

/** Shell-quotes one word for sh. */
export function shQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * Shell commands writing per-netns sysctls (dotted keys, e.g. net.ipv6.conf.all.accept_dad).
 * Run inside a netns: /proc/sys/net of a process shows its own netns, never the host's.
 */
export function sysctlScript(values: Record<string, string | number>): string {
  return Object.entries(values)
    .map(([k, v]) => {
      if (!/^net\.[A-Za-z0-9_.-]+$/.test(k)) throw new Error(`not a per-netns sysctl: ${k}`);
      return `echo ${shQuote(String(v))} > /proc/sys/${k.replace(/\./g, '/')}`;
    })
    .join(' && ');
}

/** ifindex of a link inside a named netns. */
export function linkIndex(ns: string, ifname: string): number {
  return linkByName(ifname, netnsPath(ns)).ifindex;
}

/**
 * Runs `fn` synchronously with the calling thread inside the netns at `path`,
 * then switches back before returning (or throwing). setns() moves only this
 * thread, and nothing asynchronous can run in between, so no socket of the
 * event loop is ever created in the wrong netns. Use it for netlink/socket
 * work that must happen in a pod's or node's netns (tc attach, netns cookie).
 */
export function withNetns<T>(path: string, fn: () => T): T {
  const self = fs.openSync('/proc/thread-self/ns/net', 'r');
  const target = fs.openSync(path, 'r');
  try {
    if (setns(target, CLONE_NEWNET) !== 0) throw sysError(`setns(${path})`);
    try {
      return fn();
    } finally {
      if (setns(self, CLONE_NEWNET) !== 0) {
        // Cannot continue safely in the wrong netns.
        process.stderr.write(`fatal: cannot return from netns ${path}: ${sysError('setns').message}\n`);
        process.abort();
      }
    }
  } finally {
    fs.closeSync(target);
    fs.closeSync(self);
  }
}

/** The kernel's cookie of the netns at `path` (what bpf_get_netns_cookie() returns for its sockets). */
export function netnsCookie(path: string): bigint {
  return withNetns(path, () => {
    const fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) throw sysError('socket');
    try {
      const buf = Buffer.alloc(8);
      if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, buf, [8]) !== 0) throw sysError('getsockopt(SO_NETNS_COOKIE)');
      return buf.readBigUInt64LE();
    } finally {
      close(fd);
    }
  });
}

/** nsfs, the filesystem of namespace files (NSFS_MAGIC). */
const NSFS_MAGIC = 0x6e736673;

/**
 * The identity (`dev:ino`) of the network namespace at `path`, or why `path`
 * is not one: a regular file, a directory or a missing path is not a netns.
 * The identity changes when a netns of the same name is re-created.
 */
export function netnsIdentity(path: string): { id: string } | { error: string } {
  let st: fs.Stats;
  try {
    st = fs.statSync(path);
  } catch (e) {
    return { error: `${path} does not exist (${(e as NodeJS.ErrnoException).code})` };
  }
  if (st.isDirectory()) return { error: `${path} is a directory, not a network namespace` };
  let type: number;
  try { type = fs.statfsSync(path).type; } catch (e) { return { error: `${path}: ${(e as Error).message}` }; }
  if (type !== NSFS_MAGIC) return { error: `${path} is not a network namespace (not on nsfs)` };
  return { id: `${st.dev}:${st.ino}` };
}

/** The identity of the caller's own network namespace. */
export function ownNetnsIdentity(): string {
  const st = fs.statSync('/proc/thread-self/ns/net');
  return `${st.dev}:${st.ino}`;
}

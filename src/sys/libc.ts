// SPDX-License-Identifier: Apache-2.0
// The few libc entry points meshwarp needs, bound once through koffi.
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

export const errnoLocation = libc.func('int *__errno_location(void)');
/** Current thread's errno (valid right after a failed libc call). */
export function errno(): number {
  return koffi.decode(errnoLocation(), 'int') as number;
}
export const strerror = libc.func('const char *strerror(int errnum)');

export const close = libc.func('int close(int fd)');
export const getsockopt = libc.func('int getsockopt(int fd, int level, int optname, _Out_ void *optval, _Inout_ uint32_t *optlen)');
export const setsockopt = libc.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)');
export const socket = libc.func('int socket(int domain, int type, int protocol)');
/** Raw syscall with pointer-sized args; used for bpf() commands libbpf 1.1 lacks. */
export const syscall3 = libc.func('long syscall(long number, long a1, void *a2, long a3)');
export const vsnprintf = libc.func('int vsnprintf(_Out_ char *buf, size_t size, const char *fmt, void *ap)');
export const eventfd = libc.func('int eventfd(unsigned int initval, int flags)');
export const write = libc.func('long write(int fd, const void *buf, size_t count)');
export const epollWait = libc.func('int epoll_wait(int epfd, _Out_ void *events, int maxevents, int timeout)');
export const epollCtl = libc.func('int epoll_ctl(int epfd, int op, int fd, void *event)');
export const ifNameToIndex = libc.func('unsigned int if_nametoindex(const char *ifname)');

export const SOL_SOCKET = 1;
export const SOL_IP = 0;
export const SOL_IPV6 = 41;
/** SO_ORIGINAL_DST (IPv4) and IP6T_SO_ORIGINAL_DST (IPv6) share the number 80. */
export const SO_ORIGINAL_DST = 80;
export const SO_NETNS_COOKIE = 71;
export const SO_COOKIE = 57;

/** Throws an Error carrying errno and its text for a failed libc call. */
export function sysError(what: string, code = errno()): Error & { errno: number } {
  const e = new Error(`${what}: ${strerror(code)} (errno ${code})`) as Error & { errno: number };
  e.errno = code;
  return e;
}

export const setns = libc.func('int setns(int fd, int nstype)');
export const CLONE_NEWNET = 0x40000000;
export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;

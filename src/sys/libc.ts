// SPDX-License-Identifier: Apache-2.0
// The few libc entry points meshwarp needs, bound once through koffi.
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');

const errnoLocation = libc.func('int *__errno_location(void)');
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
export const ifNameToIndex = libc.func('unsigned int if_nametoindex(const char *ifname)');
export const setns = libc.func('int setns(int fd, int nstype)');
export const ioctl = libc.func('int ioctl(int fd, unsigned long request, void *argp)');
export const ifIndexToName = libc.func('char *if_indextoname(unsigned int ifindex, _Out_ char *ifname)');
/** glibc: returns free arena memory to the kernel (src/agent/trim.ts); 1 when it released some. */
export const mallocTrim = libc.func('int malloc_trim(size_t pad)') as (pad: number) => number;
export const SOCK_DGRAM = 2;

// The numbers these calls take live in uapi.ts; re-exported for the callers
// that import them from here (sys/netns.ts, test/conformance/podtool.ts).
export { AF_INET, CLONE_NEWNET, SOCK_STREAM, SOL_IP, SOL_IPV6, SOL_SOCKET, SO_NETNS_COOKIE, SO_ORIGINAL_DST } from '../bpf/uapi.ts';

/** Throws an Error carrying errno and its text for a failed libc call. */
export function sysError(what: string, code = errno()): Error & { errno: number } {
  const e = new Error(`${what}: ${strerror(code)} (errno ${code})`) as Error & { errno: number };
  e.errno = code;
  return e;
}

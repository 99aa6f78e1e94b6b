// SPDX-License-Identifier: Apache-2.0
// Transparent listening sockets for the HBONE node proxy. Node cannot set IP_TRANSPARENT,
// so the socket is made, bound and put in listen state through libc (koffi), and its fd
// handed to net.Server.listen({ fd }). IP_TRANSPARENT / IPV6_TRANSPARENT is what lets an
// accepted socket answer from the original destination (bpf_sk_assign kept it as the local
// address) and is what the node proxy contract asks of every listener (docs/ambient.md).
import koffi from 'koffi';
import net from 'node:net';
import { close, errno, socket, sysError } from '../../sys/libc.ts';
import { AF_INET, AF_INET6, SOCK_STREAM, SOL_IP, SOL_IPV6, SOL_SOCKET } from '../../bpf/uapi.ts';

const libc = koffi.load('libc.so.6');
const setsockopt = libc.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)');
const bind = libc.func('int bind(int fd, const void *addr, uint32_t addrlen)');
const listen = libc.func('int listen(int fd, int backlog)');

const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const SO_REUSEADDR = 2;
const IP_TRANSPARENT = 19;
const IPV6_V6ONLY = 26;
const IPV6_TRANSPARENT = 75;

function on(fd: number, level: number, opt: number, what: string): void {
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  if (setsockopt(fd, level, opt, one, 4) !== 0) throw sysError(`setsockopt(${what})`);
}

/** An fd listening on the wildcard address of `family` (v6: v6only), port `port`, transparent. */
export function transparentListenFd(family: 4 | 6, port: number, backlog = 4096): number {
  const fd = socket(family === 4 ? AF_INET : AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw sysError('socket');
  try {
    on(fd, SOL_SOCKET, SO_REUSEADDR, 'SO_REUSEADDR');
    if (family === 4) on(fd, SOL_IP, IP_TRANSPARENT, 'IP_TRANSPARENT');
    else {
      on(fd, SOL_IPV6, IPV6_V6ONLY, 'IPV6_V6ONLY');
      on(fd, SOL_IPV6, IPV6_TRANSPARENT, 'IPV6_TRANSPARENT');
    }
    // sockaddr_in / sockaddr_in6 with the wildcard address: family (host order), port (network order).
    const sa = Buffer.alloc(family === 4 ? 16 : 28);
    sa.writeUInt16LE(family === 4 ? AF_INET : AF_INET6, 0);
    sa.writeUInt16BE(port, 2);
    if (bind(fd, sa, sa.length) !== 0) throw sysError(`bind(${family === 4 ? '0.0.0.0' : '[::]'}:${port})`);
    if (listen(fd, backlog) !== 0) throw sysError('listen');
    return fd;
  } catch (e) {
    const code = errno();
    close(fd);
    if (e instanceof Error) throw e;
    throw sysError('transparent listener', code);
  }
}

/** Serves `onConnection` on transparent listeners of both families on `port`. */
export async function transparentServers(port: number, onConnection: (s: net.Socket) => void): Promise<net.Server[]> {
  const servers: net.Server[] = [];
  for (const fam of [4, 6] as const) {
    const fd = transparentListenFd(fam, port);
    const srv = net.createServer({ allowHalfOpen: true, noDelay: true }, onConnection);
    await new Promise<void>((resolve, reject) => { srv.once('error', reject); srv.listen({ fd }, () => { srv.off('error', reject); resolve(); }); });
    servers.push(srv);
  }
  return servers;
}

// SPDX-License-Identifier: Apache-2.0
// Reads the pre-redirect destination of an accepted connection (SO_ORIGINAL_DST).
import net from 'node:net';
import os from 'node:os';
import { errno, getsockopt, sysError } from '../sys/libc.ts';
import { AF_INET, AF_INET6, ERRNO, SOL_IP, SOL_IPV6, SO_ORIGINAL_DST } from '../bpf/uapi.ts';

export interface OrigDst { address: string; port: number; family: 4 | 6 }

const SOCKADDR_IN6_LEN = 28; // sizeof(struct sockaddr_in6)

/** Decodes a sockaddr_in (16 bytes) or sockaddr_in6 (28 bytes) as returned by getsockopt. */
export function decodeSockaddr(buf: Buffer, len = buf.length): OrigDst {
  // sa_family is in host byte order; the port and address are in network order.
  const family = os.endianness() === 'LE' ? buf.readUInt16LE(0) : buf.readUInt16BE(0);
  if (family === AF_INET && len >= 8) {
    return { address: `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`, port: buf.readUInt16BE(2), family: 4 };
  }
  if (family === AF_INET6 && len >= 24) {
    const groups: string[] = [];
    for (let i = 8; i < 24; i += 2) groups.push(buf.readUInt16BE(i).toString(16));
    // SocketAddress formats through libuv's inet_ntop: the same text node gives remoteAddress.
    const address = new net.SocketAddress({ address: groups.join(':'), family: 'ipv6' }).address;
    return { address, port: buf.readUInt16BE(2), family: 6 };
  }
  throw new Error(`unexpected sockaddr: family ${family}, length ${len}`);
}

/** The kernel fd of a connected TCP socket, for getsockopt. */
export function socketFd(socket: net.Socket): number {
  // Node exposes no public fd accessor; the TCPWrap handle of a connected
  // socket carries the kernel fd on Unix, which is all getsockopt needs.
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('socket has no file descriptor');
  return fd;
}

/**
 * The original destination of an accepted socket, or null when the connection
 * was not redirected (no conntrack/BPF answer). Throws on unexpected errors.
 */
export function originalDst(socket: net.Socket): OrigDst | null {
  const fd = socketFd(socket);
  // IPv4 peers, including v4-mapped ones on a dual-stack (AF_INET6) listener, are
  // answered at SOL_IP; an AF_INET6 socket may also be answered at SOL_IPV6
  // (asking an AF_INET socket at SOL_IPV6 is EOPNOTSUPP, so never do that).
  const mapped = /^::ffff:\d+\.\d+\.\d+\.\d+$/i.test(socket.remoteAddress ?? '');
  const levels = socket.remoteFamily === 'IPv4' ? [SOL_IP] : mapped ? [SOL_IP, SOL_IPV6] : [SOL_IPV6];
  for (const level of levels) {
    const buf = Buffer.alloc(SOCKADDR_IN6_LEN);
    const optlen = [level === SOL_IP ? 16 : SOCKADDR_IN6_LEN];
    if (getsockopt(fd, level, SO_ORIGINAL_DST, buf, optlen) === 0) return decodeSockaddr(buf, optlen[0]);
    const code = errno();
    if (code !== ERRNO.ENOENT && code !== ERRNO.ENOPROTOOPT) throw sysError(`getsockopt(SO_ORIGINAL_DST, level ${level})`, code);
  }
  return null;
}

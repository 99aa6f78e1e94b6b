// SPDX-License-Identifier: Apache-2.0
// Crafted Ethernet/IPv4/TCP frames for BPF_PROG_TEST_RUN of the tc programs,
// with valid IP and TCP checksums (the programs patch the TCP one).

export const TCP_FLAG = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

export interface Tcp4Spec {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  flags: number;
  /** Payload bytes (zeros). Default 0. */
  payload?: number;
  /** SYN options (MSS, SACK-permitted, timestamps, window scale) like Linux sends. Default: with SYN. */
  synOptions?: boolean;
}

function ip4(s: string): Buffer {
  const parts = s.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new Error(`not an IPv4 address: ${s}`);
  return Buffer.from(parts);
}

/** RFC 1071 ones' complement sum, folded, not inverted. */
function sum16(b: Buffer, init = 0): number {
  let s = init;
  for (let i = 0; i + 1 < b.length; i += 2) s += b.readUInt16BE(i);
  if (b.length % 2 === 1) s += b[b.length - 1] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

const SYN_OPTIONS = Buffer.from([
  0x02, 0x04, 0x05, 0xb4, // MSS 1460
  0x04, 0x02, // SACK permitted
  0x08, 0x0a, 0, 0, 0, 1, 0, 0, 0, 0, // timestamps
  0x01, // NOP
  0x03, 0x03, 0x07, // window scale 7
]);

/** One Ethernet + IPv4 + TCP frame, as a veth would carry it. */
export function tcp4Frame(spec: Tcp4Spec): Buffer {
  const opts = (spec.synOptions ?? (spec.flags & TCP_FLAG.SYN) !== 0) ? SYN_OPTIONS : Buffer.alloc(0);
  const payload = Buffer.alloc(spec.payload ?? 0);
  const tcpLen = 20 + opts.length + payload.length;
  const eth = Buffer.from([0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x00]);

  const ip = Buffer.alloc(20);
  ip[0] = 0x45;
  ip.writeUInt16BE(20 + tcpLen, 2);
  ip.writeUInt16BE(0x1234, 4); // id
  ip.writeUInt16BE(0x4000, 6); // DF
  ip[8] = 64;
  ip[9] = 6;
  ip4(spec.src).copy(ip, 12);
  ip4(spec.dst).copy(ip, 16);
  ip.writeUInt16BE(~sum16(ip) & 0xffff, 10);

  const tcp = Buffer.alloc(tcpLen);
  tcp.writeUInt16BE(spec.sport, 0);
  tcp.writeUInt16BE(spec.dport, 2);
  tcp.writeUInt32BE(0x1000_0000, 4);
  tcp.writeUInt32BE((spec.flags & TCP_FLAG.ACK) ? 0x2000_0000 : 0, 8);
  tcp[12] = ((20 + opts.length) / 4) << 4;
  tcp[13] = spec.flags;
  tcp.writeUInt16BE(64240, 14);
  opts.copy(tcp, 20);
  payload.copy(tcp, 20 + opts.length);
  const pseudo = Buffer.concat([ip.subarray(12, 20), Buffer.from([0, 6, tcpLen >> 8, tcpLen & 0xff])]);
  tcp.writeUInt16BE(~sum16(tcp, sum16(pseudo)) & 0xffff, 16);
  return Buffer.concat([eth, ip, tcp]);
}

/** The TCP ports of a frame made by tcp4Frame (to check a program's rewrite). */
export function tcp4Ports(frame: Buffer): { sport: number; dport: number } {
  const l4 = 14 + (frame[14] & 0x0f) * 4;
  return { sport: frame.readUInt16BE(l4), dport: frame.readUInt16BE(l4 + 2) };
}

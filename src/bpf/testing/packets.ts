// SPDX-License-Identifier: Apache-2.0
// Crafted Ethernet frames for BPF_PROG_TEST_RUN of tc programs: IPv4 (with
// options, fragments) or IPv6 (with a hop-by-hop header), carrying TCP or
// UDP, with valid IP and L4 checksums (the programs patch the TCP one
// incrementally, so a test can compare a rewritten frame byte for byte with
// one built with the new port).
import { parseIp } from '../../profiles/ip.ts';

export const TCP_FLAG = { FIN: 0x01, SYN: 0x02, RST: 0x04, PSH: 0x08, ACK: 0x10 } as const;

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;
const IPPROTO = { HOPOPTS: 0, TCP: 6, UDP: 17 } as const;
const ETH_HLEN = 14;

export interface FrameSpec {
  /** Both IPv4 or both IPv6. */
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** L4 protocol (default tcp). */
  l4?: 'tcp' | 'udp';
  /** TCP flags (TCP_FLAG bits); default 0. */
  flags?: number;
  /** Payload bytes (zeros). Default 0. */
  payload?: number;
  /** SYN options (MSS, SACK-permitted, timestamps, window scale) like Linux sends. Default: with SYN. */
  synOptions?: boolean;
  /** IPv4 only: bytes of IP options (NOPs then EOL), a multiple of 4 up to 40. */
  ipOptions?: number;
  /** IPv4 only: fragment offset in 8-byte units; > 0 is a non-first fragment (no L4 header of its own). */
  fragmentOffset?: number;
  /** IPv6 only: put an (empty) hop-by-hop options header before the L4 header. */
  hopByHop?: boolean;
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

function l4Segment(spec: FrameSpec): { proto: number; seg: Buffer; csumOff: number } {
  const payload = Buffer.alloc(spec.payload ?? 0);
  if (spec.l4 === 'udp') {
    const seg = Buffer.alloc(8 + payload.length);
    seg.writeUInt16BE(spec.sport, 0);
    seg.writeUInt16BE(spec.dport, 2);
    seg.writeUInt16BE(seg.length, 4);
    payload.copy(seg, 8);
    return { proto: IPPROTO.UDP, seg, csumOff: 6 };
  }
  const flags = spec.flags ?? 0;
  const opts = (spec.synOptions ?? (flags & TCP_FLAG.SYN) !== 0) ? SYN_OPTIONS : Buffer.alloc(0);
  const seg = Buffer.alloc(20 + opts.length + payload.length);
  seg.writeUInt16BE(spec.sport, 0);
  seg.writeUInt16BE(spec.dport, 2);
  seg.writeUInt32BE(0x1000_0000, 4);
  seg.writeUInt32BE((flags & TCP_FLAG.ACK) ? 0x2000_0000 : 0, 8);
  seg[12] = ((20 + opts.length) / 4) << 4;
  seg[13] = flags;
  seg.writeUInt16BE(64240, 14);
  opts.copy(seg, 20);
  payload.copy(seg, 20 + opts.length);
  return { proto: IPPROTO.TCP, seg, csumOff: 16 };
}

/** Fills in the L4 checksum of seg over the pseudo-header of src/dst. */
function l4Checksum(seg: Buffer, csumOff: number, proto: number, src: Uint8Array, dst: Uint8Array): void {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(seg.length);
  const pseudo = Buffer.concat([src, dst, src.length === 4 ? len.subarray(2) : len, Buffer.from(src.length === 4 ? [0, proto] : [0, 0, 0, proto])]);
  seg.writeUInt16BE(0, csumOff);
  seg.writeUInt16BE(~sum16(seg, sum16(pseudo)) & 0xffff, csumOff);
}

/** One Ethernet + IP + TCP/UDP frame, as a veth would carry it. */
export function buildFrame(spec: FrameSpec): Buffer {
  const src = parseIp(spec.src);
  const dst = parseIp(spec.dst);
  if (src.family !== dst.family) throw new Error(`frame: ${spec.src} and ${spec.dst} are of different families`);
  const { proto, seg, csumOff } = l4Segment(spec);
  l4Checksum(seg, csumOff, proto, src.bytes, dst.bytes);
  const eth = Buffer.from([0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01, 0, 0]);
  if (src.family === 4) {
    const optLen = spec.ipOptions ?? 0;
    if (optLen % 4 !== 0 || optLen > 40) throw new RangeError(`ipOptions: a multiple of 4 up to 40, got ${optLen}`);
    const ip = Buffer.alloc(20 + optLen, 0x01); // options: NOPs ...
    if (optLen > 0) ip[ip.length - 1] = 0x00; // ... then end of list
    ip[0] = 0x40 | ((20 + optLen) / 4);
    ip[1] = 0;
    ip.writeUInt16BE(ip.length + seg.length, 2);
    ip.writeUInt16BE(0x1234, 4); // id
    ip.writeUInt16BE(spec.fragmentOffset ? spec.fragmentOffset & 0x1fff : 0x4000, 6); // DF unless a fragment
    ip[8] = 64;
    ip[9] = proto;
    ip.writeUInt16BE(0, 10);
    ip.set(src.bytes, 12);
    ip.set(dst.bytes, 16);
    ip.writeUInt16BE(~sum16(ip) & 0xffff, 10);
    eth.writeUInt16BE(ETH_P_IP, 12);
    return Buffer.concat([eth, ip, seg]);
  }
  const ext = spec.hopByHop ? Buffer.from([proto, 0, 0x01, 0x04, 0, 0, 0, 0]) : Buffer.alloc(0); // PadN to 8 bytes
  const ip6 = Buffer.alloc(40);
  ip6.writeUInt32BE(0x6000_0000, 0);
  ip6.writeUInt16BE(ext.length + seg.length, 4);
  ip6[6] = spec.hopByHop ? IPPROTO.HOPOPTS : proto;
  ip6[7] = 64;
  ip6.set(src.bytes, 8);
  ip6.set(dst.bytes, 24);
  eth.writeUInt16BE(ETH_P_IPV6, 12);
  return Buffer.concat([eth, ip6, ext, seg]);
}

/** An Ethernet frame of another ethertype (e.g. 0x0806, ARP): no IP at all. */
export function otherFrame(ethertype: number, payload = 28): Buffer {
  const eth = Buffer.from([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x01, 0, 0]);
  eth.writeUInt16BE(ethertype, 12);
  return Buffer.concat([eth, Buffer.alloc(payload)]);
}

/** Offset of the L4 header of a frame made by buildFrame(). */
function l4Offset(f: Buffer): number {
  if (f.readUInt16BE(12) === ETH_P_IP) return ETH_HLEN + (f[ETH_HLEN] & 0x0f) * 4;
  return ETH_HLEN + 40 + (f[ETH_HLEN + 6] === IPPROTO.HOPOPTS ? 8 : 0);
}

/** The ports of a frame made by buildFrame() (to check a program's rewrite). */
export function framePorts(f: Buffer): { sport: number; dport: number } {
  const l4 = l4Offset(f);
  return { sport: f.readUInt16BE(l4), dport: f.readUInt16BE(l4 + 2) };
}

// SPDX-License-Identifier: Apache-2.0
// IP address and CIDR parsing into the byte form the datapath maps use (network order).
// node:net isIP() decides validity; the bytes are computed here because Node has no
// inet_pton. Zone ids (fe80::1%eth0) are rejected: they mean nothing in a CIDR or a map key.
import { isIP } from 'node:net';
import { PolicyError } from './errors.ts';

export interface IpAddr {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array;
}

export interface Cidr {
  family: 4 | 6;
  /** 4 or 16 bytes, host bits zeroed. */
  addr: Uint8Array;
  prefixLen: number;
  /** The text as the user wrote it (trimmed); use formatCidr() for the canonical form. */
  text: string;
}

/** Parses an IPv4 or IPv6 address; throws PolicyError (field 'ip') when it is not one. */
export function parseIp(text: string): IpAddr {
  const r = ipOrReason(text);
  if (typeof r === 'string') throw new PolicyError('ip', r, text);
  return r;
}

/**
 * Parses `addr/len` or a bare address (meaning /32 or /128). Host bits are zeroed in
 * `addr` (Istio and Linkerd accept 10.1.2.3/8 and mean 10.0.0.0/8); `text` keeps the input.
 * Throws PolicyError (field 'cidr').
 */
export function parseCidr(text: string): Cidr {
  const r = cidrOrReason(text);
  if (typeof r === 'string') throw new PolicyError('cidr', r); // the reason quotes the text
  return r;
}

/** Non-throwing form used by the annotation parsers: a Cidr, or the reason it is not one. */
export function cidrOrReason(text: string): Cidr | string {
  if (typeof text !== 'string') return 'not a string';
  const t = text.trim();
  if (/\s/.test(t)) return `${JSON.stringify(t)} contains whitespace`;
  const slash = t.indexOf('/');
  const addrText = slash < 0 ? t : t.slice(0, slash);
  const ip = ipOrReason(addrText);
  if (typeof ip === 'string') return `${JSON.stringify(t)} is not an IP address or CIDR (${ip})`;
  const max = ip.family === 4 ? 32 : 128;
  let prefixLen = max;
  if (slash >= 0) {
    const lenText = t.slice(slash + 1);
    // Digits only, no sign, no leading zeros (Go's netip rules; "/08" is a typo, not 8).
    if (!/^(0|[1-9][0-9]{0,2})$/.test(lenText) || Number(lenText) > max) {
      return `${JSON.stringify(t)} has a bad prefix length (0-${max} for IPv${ip.family})`;
    }
    prefixLen = Number(lenText);
  }
  return { family: ip.family, addr: maskBytes(ip.bytes, prefixLen), prefixLen, text: t };
}

/** Non-throwing form: an IpAddr, or a short reason. Leading/trailing whitespace is tolerated. */
export function ipOrReason(text: string): IpAddr | string {
  if (typeof text !== 'string') return 'not a string';
  const t = text.trim();
  if (t.includes('%')) return 'zone ids are not allowed';
  const family = isIP(t);
  if (family === 4) return { family: 4, bytes: v4Bytes(t) };
  if (family === 6) {
    const bytes = v6Bytes(t);
    if (bytes) return { family: 6, bytes };
  }
  return 'not an IPv4 or IPv6 address';
}

function v4Bytes(t: string): Uint8Array {
  // isIP() already guarantees four decimal octets 0-255 without leading zeros.
  return Uint8Array.from(t.split('.').map(Number));
}

/** Expands `::` and a trailing embedded IPv4 into 16 bytes; undefined if malformed. */
function v6Bytes(t: string): Uint8Array | undefined {
  const dbl = t.indexOf('::');
  if (dbl >= 0 && t.indexOf('::', dbl + 1) >= 0) return undefined;
  const head = dbl < 0 ? t : t.slice(0, dbl);
  const tail = dbl < 0 ? '' : t.slice(dbl + 2);
  const headWords = words(head, dbl < 0);
  const tailWords = words(tail, true);
  if (!headWords || !tailWords) return undefined;
  const n = headWords.length + tailWords.length;
  // Without "::" there must be exactly 8 words; "::" stands for at least one zero word.
  if (dbl < 0 ? n !== 8 : n > 7) return undefined;
  const all = [...headWords, ...new Array<number>(8 - n).fill(0), ...tailWords];
  const out = new Uint8Array(16);
  all.forEach((w, i) => {
    out[2 * i] = w >> 8;
    out[2 * i + 1] = w & 0xff;
  });
  return out;
}

/** Colon-separated hex words; the last one may be a dotted IPv4 (two words) if allowed. */
function words(part: string, v4Allowed: boolean): number[] | undefined {
  if (part === '') return [];
  const groups = part.split(':');
  const out: number[] = [];
  for (let i = 0; i < groups.length; i++) {
    const g = groups[i];
    if (g.includes('.')) {
      if (!v4Allowed || i !== groups.length - 1 || isIP(g) !== 4) return undefined;
      const b = v4Bytes(g);
      out.push((b[0] << 8) | b[1], (b[2] << 8) | b[3]);
    } else if (/^[0-9a-fA-F]{1,4}$/.test(g)) {
      out.push(parseInt(g, 16));
    } else {
      return undefined;
    }
  }
  return out;
}

/** Copy of `bytes` with everything after the first `prefixLen` bits cleared. */
export function maskBytes(bytes: Uint8Array, prefixLen: number): Uint8Array {
  const out = new Uint8Array(bytes);
  for (let i = 0; i < out.length; i++) {
    const keep = Math.max(0, Math.min(8, prefixLen - 8 * i));
    out[i] &= keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff;
  }
  return out;
}

/** True if `ip` lies inside `cidr` (same family only; see unmapV4 for ::ffff:a.b.c.d). */
export function cidrContains(cidr: Cidr, ip: IpAddr): boolean {
  if (cidr.family !== ip.family) return false;
  const masked = maskBytes(ip.bytes, cidr.prefixLen);
  return masked.every((b, i) => b === cidr.addr[i]);
}

/** ::ffff:a.b.c.d → a.b.c.d (a v4-mapped connect6 is an IPv4 connection); others unchanged. */
export function unmapV4(ip: IpAddr): IpAddr {
  if (ip.family !== 6) return ip;
  const b = ip.bytes;
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return ip;
  if (b[10] !== 0xff || b[11] !== 0xff) return ip;
  return { family: 4, bytes: b.slice(12) };
}

/** Canonical text: dotted quad, or RFC 5952 IPv6 (lower case, longest zero run compressed). */
export function formatIp(ip: IpAddr): string {
  const b = ip.bytes;
  if (ip.family === 4) return Array.from(b).join('.');
  const w = Array.from({ length: 8 }, (_, i) => (b[2 * i] << 8) | b[2 * i + 1]);
  if (w.slice(0, 5).every((x) => x === 0) && w[5] === 0xffff) {
    return `::ffff:${b[12]}.${b[13]}.${b[14]}.${b[15]}`;
  }
  let best = -1;
  let bestLen = 1; // a single zero word is not compressed (RFC 5952 4.2.2)
  for (let i = 0; i < 8; ) {
    if (w[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && w[j] === 0) j++;
    if (j - i > bestLen) {
      best = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (xs: number[]) => xs.map((x) => x.toString(16)).join(':');
  if (best < 0) return hex(w);
  return `${hex(w.slice(0, best))}::${hex(w.slice(best + bestLen))}`;
}

export function formatCidr(c: Cidr): string {
  return `${formatIp({ family: c.family, bytes: c.addr })}/${c.prefixLen}`;
}

/** Orders by family, then address bytes, then prefix length (for stable sorted lists). */
export function compareCidr(a: Cidr, b: Cidr): number {
  if (a.family !== b.family) return a.family - b.family;
  for (let i = 0; i < a.addr.length; i++) if (a.addr[i] !== b.addr[i]) return a.addr[i] - b.addr[i];
  return a.prefixLen - b.prefixLen;
}

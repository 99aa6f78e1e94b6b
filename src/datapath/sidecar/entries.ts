// SPDX-License-Identifier: Apache-2.0
// PodPolicy -> the map entries of one meshed pod (pure; unit-tested). The
// semantics of each entry are documented in bpf/include/meshwarp.h.
import { cidrContains, parseIp, type Cidr, type IpAddr as ParsedIp } from '../../profiles/ip.ts';
import type { PodPolicy } from '../../profiles/index.ts';
import {
  DIR, MAX_EXCLUDE_UIDS, POD_F, RULE,
  type CidrKey, type DnsServerKey, type IpAddr, type LocalPod, type PodConfig, type PortRuleKey,
} from './structs.ts';

export interface PodEntries {
  config: PodConfig;
  localPods: [IpAddr, LocalPod][];
  portRules: [PortRuleKey, number][];
  cidrRules: [CidrKey, number][];
  /** The pod's nameservers (DNS capture, only with a DNS port). */
  dnsServers: [DnsServerKey, number][];
}

const NONE: IpAddr = { addr: new Uint8Array(16) };

/** 16-byte map form of an address: IPv4 as ::ffff:a.b.c.d. */
export function toIpAddr(ip: ParsedIp | string): IpAddr {
  const p = typeof ip === 'string' ? parseIp(ip) : ip;
  if (p.family === 6) return { addr: new Uint8Array(p.bytes) };
  const a = new Uint8Array(16);
  a[10] = 0xff;
  a[11] = 0xff;
  a.set(p.bytes, 12);
  return { addr: a };
}

function cookieBytes(cookie: bigint): Uint8Array {
  const b = Buffer.alloc(8);
  b.writeBigUInt64BE(cookie);
  return new Uint8Array(b);
}

function cidrKeyOf(cookie: bigint, c: Cidr): CidrKey {
  const addr = c.family === 4 ? toIpAddr({ family: 4, bytes: c.addr }).addr : new Uint8Array(c.addr);
  return { prefixlen: 64 + (c.family === 4 ? 96 : 0) + c.prefixLen, netns_cookie: cookieBytes(cookie), addr };
}

const contains = (outer: Cidr, inner: Cidr) =>
  outer.family === inner.family && outer.prefixLen <= inner.prefixLen && cidrContains(outer, { family: inner.family, bytes: inner.addr });

/**
 * The entries for pod (cookie, ips, host veth) under `policy`. Throws on what
 * the datapath cannot express (more than MAX_EXCLUDE_UIDS extra uids).
 */
export function podEntries(cookie: bigint, pod: { ip4?: string; ip6?: string; ifindex?: number; dnsServers?: readonly string[] }, policy: PodPolicy): PodEntries {
  if (policy.excludeUids.length > MAX_EXCLUDE_UIDS) {
    throw new Error(`at most ${MAX_EXCLUDE_UIDS} excluded uids besides the proxy's (got ${policy.excludeUids.length})`);
  }
  let flags = 0;
  if (policy.dnsPort && policy.dnsCaptureAll) flags |= POD_F.DNS_CAPTURE_ALL;
  const dnsServers = new Map<string, [DnsServerKey, number]>();
  for (const ns of policy.dnsPort ? pod.dnsServers ?? [] : []) {
    const addr = toIpAddr(ns); // throws on a bad address: the pod is refused, nothing written
    dnsServers.set(Buffer.from(addr.addr).toString('hex'), [{ netns_cookie: cookie, addr }, 1]);
  }
  const portRules = new Map<string, [PortRuleKey, number]>();
  const rule = (port: number, direction: number, verdict: number) => {
    const k = `${direction}/${port}`;
    if (portRules.get(k)?.[1] === RULE.EXCLUDE) return; // exclusions win
    portRules.set(k, [{ netns_cookie: cookie, port, direction }, verdict]);
  };
  for (const p of policy.excludeOutboundPorts) rule(p, DIR.OUT, RULE.EXCLUDE);
  if (policy.includeOutboundPorts !== 'all') for (const p of policy.includeOutboundPorts) rule(p, DIR.OUT, RULE.INCLUDE);
  for (const p of policy.excludeInboundPorts) rule(p, DIR.IN, RULE.EXCLUDE);
  if (policy.includeInboundPorts !== 'all') {
    flags |= POD_F.HAS_INCLUDE_IN_PORTS;
    for (const p of policy.includeInboundPorts) rule(p, DIR.IN, RULE.INCLUDE);
  }

  // Only the longest CIDR match counts in the trie: an include inside an
  // exclude would win over it, so drop those (exclusions win).
  const cidrRules: [CidrKey, number][] = policy.excludeOutboundCidrs.map((c) => [cidrKeyOf(cookie, c), RULE.EXCLUDE]);
  if (policy.includeOutboundCidrs !== 'all' && policy.includeOutboundPorts !== 'all') {
    flags |= POD_F.HAS_INCLUDE_OUT_CIDRS;
    for (const c of policy.includeOutboundCidrs) {
      if (!policy.excludeOutboundCidrs.some((x) => contains(x, c))) cidrRules.push([cidrKeyOf(cookie, c), RULE.INCLUDE]);
    }
  }

  // An IPv6 range that covers ::ffff:0:0/96 would also match IPv4 destinations
  // (they are v4-mapped in the trie); IPv6 rules never apply to IPv4 traffic
  // (capturesOutbound, ip6tables), so a neutral /96 entry (value 0) shields them.
  const v4Space: Cidr = { family: 6, addr: toIpAddr('0.0.0.0').addr, prefixLen: 96, text: '::ffff:0:0/96' };
  if (cidrRules.some(([k]) => k.prefixlen < 64 + 96 && contains({ family: 6, addr: k.addr, prefixLen: k.prefixlen - 64, text: '' }, v4Space))) {
    cidrRules.push([cidrKeyOf(cookie, v4Space), 0]);
  }

  if (policy.sockmap === false) flags |= POD_F.NO_SOCKMAP;
  const uids = [...policy.excludeUids];
  const config: PodConfig = {
    outbound_port: policy.outboundPort,
    inbound_port: policy.inboundPort,
    dns_port: policy.dnsPort ?? 0,
    status_port: policy.statusPort ?? 0,
    proxy_uid: policy.proxyUid,
    flags,
    exclude_uid_count: uids.length,
    exclude_uids: [...uids, 0, 0, 0, 0].slice(0, MAX_EXCLUDE_UIDS),
    ipv4: pod.ip4 ? toIpAddr(pod.ip4) : NONE,
    ipv6: pod.ip6 ? toIpAddr(pod.ip6) : NONE,
  };
  const local: LocalPod = { netns_cookie: cookie, inbound_port: policy.inboundPort, ifindex: pod.ifindex ?? 0 };
  const localPods: [IpAddr, LocalPod][] = [];
  if (pod.ip4) localPods.push([config.ipv4, local]);
  if (pod.ip6) localPods.push([config.ipv6, local]);
  return { config, localPods, portRules: [...portRules.values()], cidrRules, dnsServers: [...dnsServers.values()] };
}

// SPDX-License-Identifier: Apache-2.0
// TS mirrors of bpf/include/meshwarp.h: one codec per C struct and one table
// per C enum, all checked against the object's BTF by
// test/unit/btf-layout.test.ts. Names are the C names (enum members without
// their prefix); ports the C side keeps in network order use be16.
import { struct, bytes, array, pad, u8, u32, u64, be16, type Codec } from '../../bpf/codec.ts';
import { listMirror, namesMirror, type EnumMirror } from '../../bpf/layout.ts';
import { fromRoot } from '../../paths.ts';

export const sidecarObject = fromRoot('build/bpf/sidecar.bpf.o');

/** 16 bytes, network order; IPv4 as ::ffff:a.b.c.d. */
export interface IpAddr { addr: Uint8Array }
export const ipAddr: Codec<IpAddr> = struct('ip_addr', [['addr', bytes(16)]], { align: 4 });

/** enum mw_pod_flag (pod_config.flags) and enum mw_pod_limit. */
export const POD_F = { HAS_INCLUDE_IN_PORTS: 1, HAS_INCLUDE_OUT_CIDRS: 2, DNS_CAPTURE_ALL: 4, NO_SOCKMAP: 8 } as const;
export const MAX_EXCLUDE_UIDS = 4;

export interface PodConfig {
  outbound_port: number; inbound_port: number; dns_port: number; status_port: number;
  proxy_uid: number; flags: number; exclude_uid_count: number; exclude_uids: number[];
  ipv4: IpAddr; ipv6: IpAddr;
}
export const podConfig: Codec<PodConfig> = struct('pod_config', [
  ['outbound_port', be16], ['inbound_port', be16], ['dns_port', be16], ['status_port', be16],
  ['proxy_uid', u32], ['flags', u32], ['exclude_uid_count', u32], ['exclude_uids', array(u32, MAX_EXCLUDE_UIDS)],
  ['ipv4', ipAddr], ['ipv6', ipAddr],
]);

export interface LocalPod { netns_cookie: bigint; inbound_port: number; ifindex: number }
export const localPod: Codec<LocalPod> = struct('local_pod', [
  ['netns_cookie', u64], ['inbound_port', be16], ['_pad0', pad(2)], ['ifindex', u32],
]);

/** enum mw_dir (port_rule_key.direction) and enum mw_rule (the rule maps' value). */
export const DIR = { OUT: 0, IN: 1 } as const;
export const RULE = { EXCLUDE: 1, INCLUDE: 2 } as const;

export interface PortRuleKey { netns_cookie: bigint; port: number; direction: number }
export const portRuleKey: Codec<PortRuleKey> = struct('port_rule_key', [
  ['netns_cookie', u64], ['port', be16], ['direction', u8], ['_pad', pad(5)],
]);

/** LPM key: prefixlen counts the 64 cookie bits plus the (v4-mapped) address bits. */
export interface CidrKey { prefixlen: number; netns_cookie: Uint8Array; addr: Uint8Array }
export const cidrKey: Codec<CidrKey> = struct('cidr_key', [
  ['prefixlen', u32], ['netns_cookie', bytes(8)], ['addr', bytes(16)],
]);

/** enum mw_origin_flag (origin.flags). */
export const ORIGIN_F = { CONNECT: 1, ACCEPTED: 2, TUPLE: 4, NAT: 8, INBOUND: 16, SOCKMAP: 32, NATIVE: 64 } as const;
export interface Origin { addr: IpAddr; port: number; family: number; flags: number }
export const origin: Codec<Origin> = struct('origin', [
  ['addr', ipAddr], ['port', be16], ['family', u8], ['flags', u8],
]);

export interface TupleKey { netns_cookie: bigint; saddr: IpAddr; daddr: IpAddr; sport: number; dport: number }
export const tupleKey: Codec<TupleKey> = struct('tuple_key', [
  ['netns_cookie', u64], ['saddr', ipAddr], ['daddr', ipAddr], ['sport', be16], ['dport', be16], ['_pad', pad(4)],
]);

export interface NatKey { remote: IpAddr; local: IpAddr; remote_port: number }
export const natKey: Codec<NatKey> = struct('nat_key', [
  ['remote', ipAddr], ['local', ipAddr], ['remote_port', be16], ['_pad', pad(6)],
]);

/** enum mw_nat_flag (nat_entry.flags). */
export const NAT_F = { ESTABLISHED: 1, TIME_WAIT: 2 } as const;
export interface NatEntry { orig_port: number; inbound_port: number; flags: number; since_ns: bigint }
export const natEntry: Codec<NatEntry> = struct('nat_entry', [
  ['orig_port', be16], ['inbound_port', be16], ['flags', u32], ['since_ns', u64],
]);

/** enum mw_stat in meshwarp.h, same order and values (append only). */
export const STATS = [
  'captured_out', 'captured_in_local', 'bypass_loopback', 'bypass_excluded', 'bypass_proxy',
  'update_failed', 'origdst_answered', 'tc_dnat', 'tc_undnat', 'bypass_self', 'tuple_added',
  'tuple_failed', 'tuple_moved', 'tuple_unclaimed', 'accept_failed', 'nat_added', 'nat_failed',
  'nat_collision', 'nat_bound', 'nat_closed', 'nat_reset', 'bypass_node', 'tc_rewrite_failed',
  'trace_dropped', 'nat_time_wait',
  // ambient (bpf/ambient/)
  'am_captured_out', 'am_captured_in', 'am_flow', 'am_bypass_proxy', 'am_bypass_host', 'am_bypass_existing',
  'am_bypass_udp', 'am_fail_open', 'am_fail_closed', 'am_spoof', 'am_redirect_failed', 'am_assigned',
  'am_no_listener', 'am_assign_failed', 'am_delivered', 'am_no_socket',
  // DNS capture (bpf/sidecar/dns.bpf.c)
  'dns_captured', 'dns_no_listener', 'dns_bypass_proxy', 'dns_not_server', 'dns_restored', 'dns_state_failed',
  // sockmap acceleration (bpf/sidecar/sockmap.bpf.c)
  'sockmap_added', 'sockmap_eexist', 'sockmap_ebusy', 'sockmap_einval', 'sockmap_enomem', 'sockmap_e2big',
  'sockmap_eother', 'sockmap_msgs', 'sockmap_bytes', 'sockmap_miss', 'sockmap_native', 'sockmap_off',
  'sockmap_opted_out',
  // ambient: SYN on the node proxy's TIME_WAIT socket (bpf/ambient/proxy.bpf.c)
  'am_tw_handoff', 'am_tw_assigned',
  // sockmap, continued
  'sockmap_eopnotsupp',
  // ambient DNS capture (bpf/ambient/dns.h; it also counts the dns_* above)
  'dns_unmatched',
] as const;
export type StatName = (typeof STATS)[number];

/** DNS capture (S6): a pod's nameserver (dns_servers key), and enum mw_dns_limit / mw_dns_flag. */
export interface DnsServerKey { netns_cookie: bigint; addr: IpAddr }
export const dnsServerKey: Codec<DnsServerKey> = struct('dns_server_key', [['netns_cookie', u64], ['addr', ipAddr]]);
export const DNS_LIMIT = { SERVERS: 4, QUEUE: 8 } as const;
export const DNS_F = { CONNECTED: 1 } as const;
/** struct dns_sock (socket storage; userspace only checks its layout). */
export const dnsSock: Codec<any> = struct('dns_sock', [
  ['server', array(ipAddr, DNS_LIMIT.SERVERS)], ['server_port', array(be16, DNS_LIMIT.SERVERS)], ['queue', bytes(DNS_LIMIT.QUEUE)],
  ['head', u8], ['tail', u8], ['count', u8], ['last', u8], ['flags', u8], ['_pad', pad(3)],
]);


/** sock_pairs key (S4): the enrolled socket's own ends, in its netns. */
export interface SockKey { netns_cookie: bigint; local: IpAddr; remote: IpAddr; lport: number; rport: number }
export const sockKey: Codec<SockKey> = struct('sock_key', [
  ['netns_cookie', u64], ['local', ipAddr], ['remote', ipAddr], ['lport', be16], ['rport', be16], ['_pad', pad(4)],
]);

/** sockmap_config[0]: the S4 off switch. */
export interface SockmapConfig { enabled: number }
export const sockmapConfig: Codec<SockmapConfig> = struct('sockmap_config', [['enabled', u32]]);

export interface TraceConfig { enabled: number }
export const traceConfig: Codec<TraceConfig> = struct('trace_config', [['enabled', u32]]);

/** trace_event.program / .verdict values (enum mw_trace_prog / mw_trace_verdict in meshwarp.h). */
export const TRACE_PROGRAMS: Record<number, string> = {
  1: 'connect4', 2: 'connect6', 3: 'sockops', 4: 'getsockopt', 5: 'tc_to_pod', 6: 'tc_from_pod',
  7: 'am_from_pod', 8: 'am_to_pod', 9: 'am_proxy_in',
  10: 'sendmsg4', 11: 'sendmsg6', 12: 'recvmsg4', 13: 'recvmsg6', 14: 'getpeername4', 15: 'getpeername6', 16: 'am_tw_lookup',
};
export const TRACE_VERDICTS: Record<number, string> = { 1: 'captured', 2: 'bypassed', 3: 'failed', 4: 'answered', 5: 'dropped', 6: 'restored' };

export interface TraceEvent {
  ts_ns: bigint; netns_cookie: bigint; orig: IpAddr; to: IpAddr; orig_port: number; to_port: number;
  uid: number; program: number; verdict: number; reason: number;
}
export const traceEvent: Codec<TraceEvent> = struct('trace_event', [
  ['ts_ns', u64], ['netns_cookie', u64], ['orig', ipAddr], ['to', ipAddr], ['orig_port', be16], ['to_port', be16],
  ['uid', u32], ['program', u8], ['verdict', u8], ['reason', u8], ['_pad', pad(5)],
]);

/** Every codec that crosses into sidecar.bpf.o, for the BTF layout test. */
export const sidecarStructs: Codec<any>[] = [
  ipAddr, podConfig, localPod, portRuleKey, cidrKey, origin, tupleKey, natKey, natEntry, traceConfig, traceEvent,
  dnsServerKey, dnsSock, sockKey, sockmapConfig,
];

/** Every TS table that mirrors an enum of meshwarp.h, for the BTF check. */
export const sidecarEnums: EnumMirror[] = [
  { cName: 'mw_pod_limit', prefix: 'MW_MAX_', values: { EXCLUDE_UIDS: MAX_EXCLUDE_UIDS } },
  { cName: 'mw_pod_flag', prefix: 'MW_POD_F_', values: POD_F },
  { cName: 'mw_dir', prefix: 'MW_DIR_', values: DIR },
  { cName: 'mw_rule', prefix: 'MW_RULE_', values: RULE },
  { cName: 'mw_origin_flag', prefix: 'MW_ORIGIN_F_', values: ORIGIN_F },
  { cName: 'mw_nat_flag', prefix: 'MW_NAT_F_', values: NAT_F },
  { cName: 'mw_dns_limit', prefix: 'MW_DNS_', values: DNS_LIMIT },
  { cName: 'mw_dns_flag', prefix: 'MW_DNS_F_', values: DNS_F },
  listMirror('mw_stat', 'MW_STAT_', STATS),
  namesMirror('mw_trace_prog', 'MW_PROG_', TRACE_PROGRAMS),
  namesMirror('mw_trace_verdict', 'MW_VERDICT_', TRACE_VERDICTS),
];

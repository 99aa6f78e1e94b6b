// SPDX-License-Identifier: Apache-2.0
// TS mirrors of bpf/include/mw_ambient.h (checked against the BTF of
// ambient.bpf.o by test/unit/btf-layout.test.ts). The shared types (ip_addr,
// trace_event, enum mw_stat) come from the sidecar mirrors of meshwarp.h.
import { BpfError } from '../../bpf/libbpf.ts';
import { BpfObject, type OpenOptions } from '../../bpf/object.ts';
import { struct, bytes, pad, u8, u32, u64, be16, type Codec } from '../../bpf/codec.ts';
import { listMirror, namesMirror, type EnumMirror } from '../../bpf/layout.ts';
import { STATS, TRACE_PROGRAMS, TRACE_VERDICTS, dnsServerKey, ipAddr, traceConfig, traceEvent, type IpAddr } from '../sidecar/structs.ts';
import { fromRoot } from '../../paths.ts';

export const ambientObject = fromRoot('build/bpf/ambient.bpf.o');

/**
 * Loads the ambient object. Kernels that refuse a sockmap update from tc (7.x) refuse
 * mwam_proxy_in with its TIME_WAIT hand-off: it is then loaded with the hand-off off
 * (`twHandoff: false`; a SYN meeting the proxy's TIME_WAIT socket waits for the client's retry).
 */
export function loadAmbientObject(path: string = ambientObject, opts: OpenOptions = {}): { obj: BpfObject; twHandoff: boolean } {
  try {
    return { obj: BpfObject.load(path, opts), twHandoff: true };
  } catch (e) {
    if (!(e instanceof BpfError) || !/cannot update sockmap in this context/.test(e.libbpfLog ?? '')) throw e;
    return { obj: BpfObject.load(path, { ...opts, config: { ...opts.config, mw_tw_handoff: 0 } }), twHandoff: false };
  }
}

/** enum mw_am_limit. */
export const MAX_PROXIES = 4;
/** am_tw_listener slots (one per CPU), BPF-only; mirrored so the enum check sees it. */
export const MAX_CPUS = 1024;
/** enum mw_am_fail (am_node.fail_policy). */
export const AM_FAIL = { CLOSED: 0, OPEN: 1 } as const;
export type FailPolicy = 'closed' | 'open';
/** enum mw_am_proxy_flag (am_proxy.flags). */
export const AM_PROXY_F = { LIVE: 1, READY: 2 } as const;

export interface AmPod { netns_cookie: bigint; ifindex: number; flags: number }
export const amPod: Codec<AmPod> = struct('am_pod', [['netns_cookie', u64], ['ifindex', u32], ['flags', u32]]);

export interface AmIface { netns_cookie: bigint; flags: number }
export const amIface: Codec<AmIface> = struct('am_iface', [['netns_cookie', u64], ['flags', u32], ['_pad', pad(4)]]);

export interface AmNode { fail_policy: number; active: number; mark_mask: number; mark_out: number; mark_local: number }
export const amNode: Codec<AmNode> = struct('am_node', [
  ['fail_policy', u32], ['active', u32], ['mark_mask', u32], ['mark_out', u32], ['mark_local', u32], ['_pad', pad(4)],
]);

export interface AmProxy {
  netns_cookie: bigint; netns_id: number; host_ifindex: number; flags: number;
  outbound_port: number; inbound_port: number; hbone_port: number; mac: Uint8Array;
  /** Its DNS listener (UDP and TCP); 0 = none announced. */
  dns_port: number;
}
/** netns_id is a __s32 in C; u32 carries the same bits (ids are >= 0). */
export const amProxy: Codec<AmProxy> = struct('am_proxy', [
  ['netns_cookie', u64], ['netns_id', u32], ['host_ifindex', u32], ['flags', u32],
  ['outbound_port', be16], ['inbound_port', be16], ['hbone_port', be16], ['mac', bytes(6)], ['dns_port', be16], ['_pad', pad(6)],
]);

/** DNS queries in flight (am_dns_queries): key = what the reply carries, value = the server it was sent to. */
export interface AmDnsKey { pod: IpAddr; pod_port: number; id: number }
export const amDnsKey: Codec<AmDnsKey> = struct('am_dns_key', [['pod', ipAddr], ['pod_port', be16], ['id', be16], ['_pad', pad(4)]]);
export interface AmDnsQuery { server: IpAddr; server_port: number; pending: number; since_ns: bigint }
export const amDnsQuery: Codec<AmDnsQuery> = struct('am_dns_query', [
  ['server', ipAddr], ['server_port', be16], ['pending', u8], ['_pad', pad(5)], ['since_ns', u64],
]);
/** enum mw_am_dns_limit. */
export const AM_DNS_LIMIT = { QUERIES: 16384 } as const;

export const EMPTY_PROXY: AmProxy = {
  netns_cookie: 0n, netns_id: 0, host_ifindex: 0, flags: 0, outbound_port: 0, inbound_port: 0, hbone_port: 0, mac: new Uint8Array(6), dns_port: 0,
};

/** Every codec that crosses into ambient.bpf.o, for the BTF layout test. */
export const ambientStructs: Codec<any>[] = [ipAddr, amPod, amIface, amNode, amProxy, traceConfig, traceEvent, dnsServerKey, amDnsKey, amDnsQuery];

export const ambientEnums: EnumMirror[] = [
  { cName: 'mw_am_limit', prefix: 'MW_AM_MAX_', values: { PROXIES: MAX_PROXIES, CPUS: MAX_CPUS } },
  { cName: 'mw_am_fail', prefix: 'MW_AM_FAIL_', values: AM_FAIL },
  { cName: 'mw_am_proxy_flag', prefix: 'MW_AM_PROXY_F_', values: AM_PROXY_F },
  { cName: 'mw_am_dns_limit', prefix: 'MW_AM_DNS_', values: AM_DNS_LIMIT },
  listMirror('mw_stat', 'MW_STAT_', STATS),
  namesMirror('mw_trace_prog', 'MW_PROG_', TRACE_PROGRAMS),
  namesMirror('mw_trace_verdict', 'MW_VERDICT_', TRACE_VERDICTS),
];

// SPDX-License-Identifier: Apache-2.0
// The names inside ambient.bpf.o (bpf/ambient/) and its maps opened with
// their codecs: the one place that pairs them.
import { codec, type BpfMap, type BpfObject, type Direction } from '../../bpf/index.ts';
import { dnsServerKey, ipAddr, traceConfig, type DnsServerKey, type IpAddr, type TraceConfig } from '../sidecar/structs.ts';
import { amDnsKey, amDnsQuery, amIface, amNode, amPod, amProxy, type AmDnsKey, type AmDnsQuery, type AmIface, type AmNode, type AmPod, type AmProxy } from './structs.ts';

/** Program names (mwam_ = meshwarp ambient, at most 15 characters). */
export const AMBIENT_PROG = {
  fromPod: 'mwam_from_pod',
  toPod: 'mwam_to_pod',
  proxyIn: 'mwam_proxy_in',
  /** sk_lookup in the proxy's netns: the TIME_WAIT hand-off of proxy.bpf.c. */
  twLookup: 'mwam_tw_lookup',
} as const;

/** The tc program of each direction of an enrolled pod's host-side veth. */
export const AMBIENT_TC_PROG: Readonly<Record<Direction, string>> = {
  ingress: AMBIENT_PROG.fromPod, // packets leaving the pod
  egress: AMBIENT_PROG.toPod,    // packets going into it
};

export const AMBIENT_MAP = {
  pods: 'am_pods',
  ifaces: 'am_ifaces',
  node: 'am_node',
  proxies: 'am_proxies',
  dnsServers: 'dns_servers',
  dnsQueries: 'am_dns_queries',
  stats: 'stats',
  traceConfig: 'trace_config',
  traceEvents: 'trace_events',
} as const;

export interface AmbientMaps {
  pods: BpfMap<IpAddr, AmPod>;
  ifaces: BpfMap<number, AmIface>;
  node: BpfMap<number, AmNode>;
  proxies: BpfMap<number, AmProxy>;
  dnsServers: BpfMap<DnsServerKey, number>;
  dnsQueries: BpfMap<AmDnsKey, AmDnsQuery>;
  stats: BpfMap<number, bigint>;
  traceConfig: BpfMap<number, TraceConfig>;
}

export function openAmbientMaps(obj: BpfObject): AmbientMaps {
  return {
    pods: obj.map(AMBIENT_MAP.pods, ipAddr, amPod),
    ifaces: obj.map(AMBIENT_MAP.ifaces, codec.u32, amIface),
    node: obj.map(AMBIENT_MAP.node, codec.u32, amNode),
    proxies: obj.map(AMBIENT_MAP.proxies, codec.u32, amProxy),
    dnsServers: obj.map(AMBIENT_MAP.dnsServers, dnsServerKey, codec.u8),
    dnsQueries: obj.map(AMBIENT_MAP.dnsQueries, amDnsKey, amDnsQuery),
    stats: obj.map(AMBIENT_MAP.stats, codec.u32, codec.u64),
    traceConfig: obj.map(AMBIENT_MAP.traceConfig, codec.u32, traceConfig),
  };
}

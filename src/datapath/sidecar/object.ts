// SPDX-License-Identifier: Apache-2.0
// The names inside sidecar.bpf.o (bpf/sidecar/) and each map opened with the
// codecs of its key and value: the one place that pairs them, for the driver,
// the benchmark and the tests.
import { codec, type BpfMap, type BpfObject, type Direction } from '../../bpf/index.ts';
import {
  cidrKey, dnsServerKey, ipAddr, localPod, natEntry, natKey, origin, podConfig, portRuleKey, sockKey, sockmapConfig, traceConfig, tupleKey,
  type CidrKey, type DnsServerKey, type IpAddr, type LocalPod, type NatEntry, type NatKey, type Origin, type PodConfig,
  type PortRuleKey, type SockKey, type SockmapConfig, type TraceConfig, type TupleKey,
} from './structs.ts';

/** Program names (the C function names; mwsc_ = meshwarp sidecar, at most 15 characters, see meshwarp.h). */
export const SIDECAR_PROG = {
  connect4: 'mwsc_connect4',
  connect6: 'mwsc_connect6',
  sockops: 'mwsc_sockops',
  getsockopt: 'mwsc_getsockopt',
  toPod: 'mwsc_to_pod',
  fromPod: 'mwsc_from_pod',
  sendmsg4: 'mwsc_sendmsg4',
  sendmsg6: 'mwsc_sendmsg6',
  recvmsg4: 'mwsc_recvmsg4',
  recvmsg6: 'mwsc_recvmsg6',
  getpeername4: 'mwsc_getpeer4',
  getpeername6: 'mwsc_getpeer6',
  skMsg: 'mwsc_sk_msg',
} as const;
export type SidecarProgName = (typeof SIDECAR_PROG)[keyof typeof SIDECAR_PROG];

/** The programs attached to the node's cgroup. */
export const SIDECAR_CGROUP_PROGS = [SIDECAR_PROG.connect4, SIDECAR_PROG.connect6, SIDECAR_PROG.sockops, SIDECAR_PROG.getsockopt,
  // DNS capture (S6, bpf/sidecar/dns.bpf.c); connected sockets go through the connect programs.
  SIDECAR_PROG.sendmsg4, SIDECAR_PROG.sendmsg6, SIDECAR_PROG.recvmsg4, SIDECAR_PROG.recvmsg6,
  SIDECAR_PROG.getpeername4, SIDECAR_PROG.getpeername6] as const;

/** The tc program of each direction of a pod's host-side veth. */
export const SIDECAR_TC_PROG: Readonly<Record<Direction, SidecarProgName>> = {
  egress: SIDECAR_PROG.toPod,    // host veth egress = packets going into the pod
  ingress: SIDECAR_PROG.fromPod, // host veth ingress = packets leaving the pod
};

/** Map names (also their pin names under <pinRoot>/maps/). */
export const SIDECAR_MAP = {
  podConfig: 'pod_config',
  localPods: 'local_pods',
  portRules: 'port_rules',
  cidrRules: 'cidr_rules',
  originBySock: 'origin_by_sock',
  originByTuple: 'origin_by_tuple',
  inboundNat: 'inbound_nat',
  nodeIps: 'node_ips',
  stats: 'stats',
  traceConfig: 'trace_config',
  traceEvents: 'trace_events',
  dnsServers: 'dns_servers',
  dnsBySock: 'dns_by_sock',
  sockPairs: 'sock_pairs',
  sockmapConfig: 'sockmap_config',
} as const;

/** The maps userspace reads and writes by key (origin_by_sock is per socket, trace_events a ring buffer). */
export interface SidecarMaps {
  podConfig: BpfMap<bigint, PodConfig>;
  localPods: BpfMap<IpAddr, LocalPod>;
  portRules: BpfMap<PortRuleKey, number>;
  cidrRules: BpfMap<CidrKey, number>;
  originByTuple: BpfMap<TupleKey, Origin>;
  inboundNat: BpfMap<NatKey, NatEntry>;
  nodeIps: BpfMap<IpAddr, number>;
  /** enum mw_stat -> per-CPU counter. */
  stats: BpfMap<number, bigint>;
  traceConfig: BpfMap<number, TraceConfig>;
  /** (netns cookie, nameserver) -> 1. */
  dnsServers: BpfMap<DnsServerKey, number>;
  /** S4: enrolled sockets (value: an fd to insert, the socket cookie on lookup). */
  sockPairs: BpfMap<SockKey, bigint>;
  sockmapConfig: BpfMap<number, SockmapConfig>;
}

/** Typed views of the maps of a loaded sidecar object. */
export function openSidecarMaps(obj: BpfObject): SidecarMaps {
  return {
    podConfig: obj.map(SIDECAR_MAP.podConfig, codec.u64, podConfig),
    localPods: obj.map(SIDECAR_MAP.localPods, ipAddr, localPod),
    portRules: obj.map(SIDECAR_MAP.portRules, portRuleKey, codec.u8),
    cidrRules: obj.map(SIDECAR_MAP.cidrRules, cidrKey, codec.u8),
    originByTuple: obj.map(SIDECAR_MAP.originByTuple, tupleKey, origin),
    inboundNat: obj.map(SIDECAR_MAP.inboundNat, natKey, natEntry),
    nodeIps: obj.map(SIDECAR_MAP.nodeIps, ipAddr, codec.u8),
    stats: obj.map(SIDECAR_MAP.stats, codec.u32, codec.u64),
    traceConfig: obj.map(SIDECAR_MAP.traceConfig, codec.u32, traceConfig),
    dnsServers: obj.map(SIDECAR_MAP.dnsServers, dnsServerKey, codec.u8),
    sockPairs: obj.map(SIDECAR_MAP.sockPairs, sockKey, codec.u64),
    sockmapConfig: obj.map(SIDECAR_MAP.sockmapConfig, codec.u32, sockmapConfig),
  };
}

// SPDX-License-Identifier: Apache-2.0
// What `meshwarp doctor` probes, as data: uapi numbers (enum bpf_prog_type,
// bpf_map_type, bpf_attach_type, bpf_func_id — checked against
// <linux/bpf.h> by test/kernel/doctor.test.ts), the kernel that added each
// one, and the probe id it is reported under. Pure: no kernel access here,
// so the feature mapping can be unit-tested.

export interface ProgTypeInfo { name: string; uapi: string; id: number; since: string }
export interface MapTypeInfo { name: string; uapi: string; id: number; since: string }
/** A program type loaded with a specific expected_attach_type (the hook itself). */
export interface AttachInfo { name: string; progType: string; uapi: string; id: number; since: string }
/** A helper called from one program type. `since` is the kernel that allows it there, when known. */
export interface HelperInfo { progType: string; name: string; id: number; since?: string }

export const PROG_TYPES: ProgTypeInfo[] = [
  { name: 'sched_cls', uapi: 'BPF_PROG_TYPE_SCHED_CLS', id: 3, since: '4.1' },
  { name: 'sock_ops', uapi: 'BPF_PROG_TYPE_SOCK_OPS', id: 13, since: '4.13' },
  { name: 'sk_skb', uapi: 'BPF_PROG_TYPE_SK_SKB', id: 14, since: '4.14' },
  { name: 'sk_msg', uapi: 'BPF_PROG_TYPE_SK_MSG', id: 16, since: '4.17' },
  { name: 'cgroup_sock_addr', uapi: 'BPF_PROG_TYPE_CGROUP_SOCK_ADDR', id: 18, since: '4.17' },
  { name: 'cgroup_sockopt', uapi: 'BPF_PROG_TYPE_CGROUP_SOCKOPT', id: 25, since: '5.3' },
  { name: 'sk_lookup', uapi: 'BPF_PROG_TYPE_SK_LOOKUP', id: 30, since: '5.9' },
];

export const MAP_TYPES: MapTypeInfo[] = [
  { name: 'lpm_trie', uapi: 'BPF_MAP_TYPE_LPM_TRIE', id: 11, since: '4.11' },
  { name: 'sockmap', uapi: 'BPF_MAP_TYPE_SOCKMAP', id: 15, since: '4.14' },
  { name: 'sockhash', uapi: 'BPF_MAP_TYPE_SOCKHASH', id: 18, since: '4.18' },
  { name: 'sk_storage', uapi: 'BPF_MAP_TYPE_SK_STORAGE', id: 24, since: '5.2' },
  { name: 'ringbuf', uapi: 'BPF_MAP_TYPE_RINGBUF', id: 27, since: '5.8' },
];

export const ATTACH_TYPES: AttachInfo[] = [
  { name: 'connect4', progType: 'cgroup_sock_addr', uapi: 'BPF_CGROUP_INET4_CONNECT', id: 10, since: '4.17' },
  { name: 'connect6', progType: 'cgroup_sock_addr', uapi: 'BPF_CGROUP_INET6_CONNECT', id: 11, since: '4.17' },
  { name: 'sendmsg4', progType: 'cgroup_sock_addr', uapi: 'BPF_CGROUP_UDP4_SENDMSG', id: 14, since: '4.18' },
  { name: 'sendmsg6', progType: 'cgroup_sock_addr', uapi: 'BPF_CGROUP_UDP6_SENDMSG', id: 15, since: '4.18' },
  { name: 'recvmsg4', progType: 'cgroup_sock_addr', uapi: 'BPF_CGROUP_UDP4_RECVMSG', id: 19, since: '5.2' },
  { name: 'recvmsg6', progType: 'cgroup_sock_addr', uapi: 'BPF_CGROUP_UDP6_RECVMSG', id: 20, since: '5.2' },
  { name: 'getsockopt', progType: 'cgroup_sockopt', uapi: 'BPF_CGROUP_GETSOCKOPT', id: 21, since: '5.3' },
];

/**
 * expected_attach_type used when probing helpers of a program type (the kernel
 * rejects these types without one). 36 = BPF_SK_LOOKUP.
 */
export const PROBE_ATTACH: Record<string, number> = { cgroup_sock_addr: 10, cgroup_sockopt: 21, sk_lookup: 36 };

/** tcx hooks (attach type: ATTACH.TCX_INGRESS in src/bpf/sys.ts) arrived in this kernel. */
export const TCX_SINCE = '6.6';

export const HELPERS: HelperInfo[] = [
  { progType: 'cgroup_sock_addr', name: 'get_netns_cookie', id: 122, since: '5.7' },
  { progType: 'cgroup_sock_addr', name: 'get_current_uid_gid', id: 15 },
  { progType: 'cgroup_sock_addr', name: 'get_socket_cookie', id: 46 },
  { progType: 'cgroup_sock_addr', name: 'sk_storage_get', id: 107 },
  { progType: 'cgroup_sock_addr', name: 'ringbuf_output', id: 130, since: '5.8' },
  { progType: 'sock_ops', name: 'get_netns_cookie', id: 122, since: '5.15' },
  { progType: 'sock_ops', name: 'sk_storage_get', id: 107 },
  { progType: 'sock_ops', name: 'sock_ops_cb_flags_set', id: 59, since: '4.16' },
  { progType: 'sock_ops', name: 'sock_hash_update', id: 70, since: '4.18' },
  { progType: 'cgroup_sockopt', name: 'sk_storage_get', id: 107, since: '5.3' },
  { progType: 'sk_msg', name: 'msg_redirect_hash', id: 71, since: '4.18' },
  { progType: 'sched_cls', name: 'redirect', id: 23 },
  { progType: 'sched_cls', name: 'redirect_peer', id: 155, since: '5.10' },
  { progType: 'sched_cls', name: 'sk_assign', id: 124, since: '5.7' },
  { progType: 'sched_cls', name: 'skc_lookup_tcp', id: 99, since: '5.2' },
  { progType: 'sched_cls', name: 'sk_release', id: 86 },
  { progType: 'sched_cls', name: 'ringbuf_output', id: 130, since: '5.8' },
];

/** eBPF objects the doctor loads (build/bpf/<name>.bpf.o); more are found from bpf/<dir>/*.bpf.c. */
export const OBJECTS = ['sidecar', 'selftest'];

/** External tools: probe id suffix → argv that prints a version. */
export const TOOLS: Record<string, string[]> = {
  iptables: ['iptables', '--version'],
  ip6tables: ['ip6tables', '--version'],
  ip: ['ip', '-V'],
  tc: ['tc', '-V'],
  clang: ['clang', '--version'],
};

/** Debian's containernetworking-plugins, chained by the lab's CNI config. */
export const CNI_PLUGIN_DIR = '/usr/lib/cni';
export const CNI_PLUGINS = ['bridge', 'host-local', 'loopback'];

export const progId = (name: string) => `prog.${name}`;
export const mapId = (name: string) => `map.${name}`;
export const attachId = (name: string) => `attach.${name}`;
export const helperId = (progType: string, name: string) => `helper.${progType}.${name}`;
export const objectId = (name: string) => `object.${name}`;
export const toolId = (name: string) => `tool.${name}`;

/** Probe ids that do not come from the tables above. */
export const FIXED_IDS = ['kernel', 'privileges', 'btf', 'cgroup2', 'bpffs', 'ipv6', 'node', 'tcx', 'tool.cni_plugins'];

/** Every probe id the doctor reports (objects discovered at run time come on top). */
export function allProbeIds(): string[] {
  return [
    ...FIXED_IDS,
    ...PROG_TYPES.map((p) => progId(p.name)),
    ...MAP_TYPES.map((m) => mapId(m.name)),
    ...ATTACH_TYPES.map((a) => attachId(a.name)),
    ...HELPERS.map((h) => helperId(h.progType, h.name)),
    ...OBJECTS.map(objectId),
    ...Object.keys(TOOLS).map(toolId),
  ];
}

// SPDX-License-Identifier: Apache-2.0
// Every number meshwarp takes from a header it does not own, in one place:
// <linux/bpf.h> enums and flags, errnos, socket options, capabilities,
// filesystem magics, libbpf's tc attach points, the bpf() syscall number. test/kernel/doctor.test.ts compiles each
// one against the installed headers; values newer than those headers (Debian
// 12 ships 6.1's) are checked there against upstream's documented value.
// Pure data, no imports: anything may depend on it.

/** The bpf() syscall (x86_64; the datapath is built for x86_64 only). */
export const SYS_bpf = 321;

/** enum bpf_cmd: the commands issued directly, without libbpf. */
export const BPF_CMD = {
  PROG_LOAD: 5,
  PROG_QUERY: 16,
  LINK_CREATE: 28,
} as const;

/** enum bpf_prog_type. */
export const PROG_TYPE = {
  SCHED_CLS: 3,
  SOCK_OPS: 13,
  SK_SKB: 14,
  SK_MSG: 16,
  CGROUP_SOCK_ADDR: 18,
  CGROUP_SOCKOPT: 25,
  SK_LOOKUP: 30,
} as const;

/** enum bpf_map_type. */
export const MAP_TYPE = {
  HASH: 1,
  ARRAY: 2,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LPM_TRIE: 11,
  SOCKMAP: 15,
  SOCKHASH: 18,
  SK_STORAGE: 24,
  RINGBUF: 27,
} as const;

/** enum bpf_attach_type (C names are BPF_<key>). */
export const ATTACH_TYPE = {
  CGROUP_INET4_CONNECT: 10,
  CGROUP_INET6_CONNECT: 11,
  CGROUP_UDP4_SENDMSG: 14,
  CGROUP_UDP6_SENDMSG: 15,
  CGROUP_UDP4_RECVMSG: 19,
  CGROUP_UDP6_RECVMSG: 20,
  CGROUP_GETSOCKOPT: 21,
  CGROUP_INET4_GETPEERNAME: 29,
  CGROUP_INET6_GETPEERNAME: 30,
  /** sk_msg verdict program of a sockmap/sockhash (BPF_PROG_ATTACH to the map's fd). */
  SK_MSG_VERDICT: 7,
  SK_LOOKUP: 36,
  /** Linux 6.6: newer than Debian 12's headers. */
  TCX_INGRESS: 46,
  TCX_EGRESS: 47,
} as const;

/** enum bpf_link_type, as bpf_link_info.type reports it. */
export const LINK_TYPE = {
  CGROUP: 3,
  /** Linux 6.6. */
  TCX: 11,
} as const;

/** Ordering flags of multi-program hooks (tcx): BPF_F_<key>, Linux 6.6. */
export const MPROG_FLAG = {
  BEFORE: 1 << 3,
  AFTER: 1 << 4,
  ID: 1 << 5,
  LINK: 1 << 13,
} as const;

/** bpf_map_update_elem flags: BPF_<key>. */
export const UPDATE_FLAG = {
  ANY: 0,
  NOEXIST: 1,
  EXIST: 2,
} as const;

/** Instruction fields (<linux/bpf_common.h>, <linux/bpf.h>): BPF_<key>. */
export const OPCODE = {
  K: 0x00,
  JMP: 0x05,
  ALU64: 0x07,
  CALL: 0x80,
  EXIT: 0x90,
  MOV: 0xb0,
} as const;

/** enum bpf_func_id: the helpers meshwarp probes or calls (BPF_FUNC_<key>). */
export const FUNC = {
  get_current_uid_gid: 15,
  redirect: 23,
  get_socket_cookie: 46,
  sock_ops_cb_flags_set: 59,
  sock_hash_update: 70,
  msg_redirect_hash: 71,
  sk_release: 86,
  skc_lookup_tcp: 99,
  sk_storage_get: 107,
  get_netns_cookie: 122,
  sk_assign: 124,
  ringbuf_output: 130,
  redirect_peer: 155,
} as const;

/** libbpf's enum bpf_tc_attach_point (<bpf/libbpf.h>): BPF_TC_<key>. */
export const TC_ATTACH = {
  INGRESS: 1 << 0,
  EGRESS: 1 << 1,
} as const;

/** errno values the code tells apart. */
export const ERRNO = {
  EPERM: 1,
  ENOENT: 2,
  EINTR: 4,
  E2BIG: 7,
  EBADF: 9,
  EAGAIN: 11,
  EACCES: 13,
  EEXIST: 17,
  ENODEV: 19,
  EINVAL: 22,
  ENOSPC: 28,
  ENOLINK: 67,
  ENOPROTOOPT: 92,
  EOPNOTSUPP: 95,
  /** Kernel-internal (include/linux/errno.h), yet bpf() returns it, e.g. from BPF_PROG_TEST_RUN. */
  ENOTSUPP: 524,
} as const;

/** Capability bits (<linux/capability.h>): CAP_<key>. */
export const CAP = {
  NET_ADMIN: 12,
  SYS_ADMIN: 21,
  /** Linux 5.8. */
  BPF: 39,
} as const;

/** statfs f_type of a cgroup2 mount (<linux/magic.h>). */
export const CGROUP2_SUPER_MAGIC = 0x63677270;
/** statfs f_type of a bpf filesystem (<linux/magic.h>). */
export const BPF_FS_MAGIC = 0xcafe4a11;

export const AF_INET = 2;
export const AF_INET6 = 10;
export const SOCK_STREAM = 1;
export const SOL_IP = 0;
export const SOL_SOCKET = 1;
export const SOL_IPV6 = 41;
/** Linux 5.14. */
export const SO_NETNS_COOKIE = 71;
/** SO_ORIGINAL_DST (IPv4, netfilter_ipv4.h) and IP6T_SO_ORIGINAL_DST (IPv6) share the number. */
export const SO_ORIGINAL_DST = 80;

/** enum bpf_stats_type: BPF_ENABLE_STATS of per-program run time (bench/dns-cost.ts). */
export const BPF_STATS_RUN_TIME = 0;

export const CLONE_NEWNET = 0x40000000;
/** Ethernet header: the smallest packet BPF_PROG_TEST_RUN takes for tc programs. */
export const ETH_HLEN = 14;

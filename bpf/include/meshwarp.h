// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The contract between the eBPF datapath and userspace: every struct that a
 * map holds, the flag bits inside them and the stats indices.
 *
 * Rules for everything in this file (the TS codecs mirror it and a test checks
 * them against the object's BTF):
 *  - fixed-size types only, explicit `_pad*` fields, no bitfields, no holes;
 *  - addresses are `struct ip_addr`: 16 bytes in network order, IPv4 always
 *    as v4-mapped ::ffff:a.b.c.d; all-zero means "none";
 *  - ports are in NETWORK byte order in every struct (TS codec `be16`): the
 *    kernel hands them over that way (sockaddr, packets), so the hot paths
 *    never convert;
 *  - netns cookies are native __u64 (TS `u64`), except cidr_key, which keeps
 *    them as big-endian bytes (see there);
 *  - uids, flags, ifindexes, timestamps are native;
 *  - every value that TS mirrors (flag bits, ids, stats indices) is an enum,
 *    not a #define: enums reach the object's BTF, so the same test checks
 *    the TS tables (each object keeps them in BTF with an anchor variable).
 *
 * Program names: "mw", a two-letter dataplane tag, "_", the hook; at most 15
 * characters, the length the kernel keeps in bpf_prog_info.name, so every
 * program stays distinct in `bpftool prog show`. mwsc_ is the sidecar
 * dataplane (mwam_ is for ambient). The "mw" prefix is how the agent tells its
 * own programs from other software's on the same hooks.
 */
#ifndef MESHWARP_H
#define MESHWARP_H

#include <linux/types.h>

/* Map capacities. Changing one changes the map's layout for pin reuse. */
#define MW_MAX_PODS		16384	/* pod_config, local_pods */
#define MW_MAX_PORT_RULES	65536	/* port_rules */
#define MW_MAX_CIDR_RULES	16384	/* cidr_rules */
#define MW_MAX_TUPLES		65536	/* origin_by_tuple (only handshakes in flight) */
#define MW_MAX_INBOUND_NAT	65536	/* inbound_nat (live cross-node inbound conns) */
#define MW_MAX_NODE_IPS		64	/* node_ips */
#define MW_MAX_DNS_SERVERS	65536	/* dns_servers (a few per pod) */
#define MW_STAT_SLOTS		64	/* stats: room to add counters without a new layout */

enum mw_pod_limit {
	MW_MAX_EXCLUDE_UIDS = 4,	/* pod_config.exclude_uids */
};

/* 16 network-order bytes; IPv4 as ::ffff:a.b.c.d. Only ever placed at 4-byte
 * aligned offsets, so the datapath may access it as four 32-bit words. */
struct ip_addr {
	__u8 addr[16];
} __attribute__((aligned(4)));

/* pod_config.flags */
enum mw_pod_flag {
	MW_POD_F_HAS_INCLUDE_IN_PORTS = 1 << 0,	 /* inbound: only ports with an include rule */
	MW_POD_F_HAS_INCLUDE_OUT_CIDRS = 1 << 1, /* outbound: only include CIDRs (or include ports) */
	MW_POD_F_DNS_CAPTURE_ALL = 1 << 2,	 /* DNS: port 53 to any address, not only dns_servers */
	MW_POD_F_NO_SOCKMAP = 1 << 3,	/* opted out of sockmap acceleration (annotation) */
};

/*
 * pod_config: netns cookie (native __u64) -> per-pod config, one per meshed
 * pod on this node. Absent = pod not managed: every program leaves it alone.
 *
 * Outbound capture (not proxy_uid, not in exclude_uids):
 *   not captured if the port has an exclude rule (dir 0) or the destination's
 *   longest cidr_rules match is an exclude; captured if the port has an
 *   include rule, or HAS_INCLUDE_OUT_CIDRS is clear, or the longest CIDR match
 *   is an include. (= capturesOutbound() in src/profiles/policy.ts.)
 * Inbound capture (tc SYN DNAT, proxy -> local pod at connect time):
 *   not captured on inbound_port, status_port, or a port with an exclude rule
 *   (dir 1); with HAS_INCLUDE_IN_PORTS only ports with an include rule.
 */
struct pod_config {
	__u16 outbound_port;		/* 0  network order */
	__u16 inbound_port;		/* 2  network order; == local_pods' copy */
	__u16 dns_port;			/* 4  network order; 0 = none (reserved for DNS) */
	__u16 status_port;		/* 6  network order; 0 = none */
	__u32 proxy_uid;		/* 8 */
	__u32 flags;			/* 12 enum mw_pod_flag bits */
	__u32 exclude_uid_count;	/* 16 valid entries in exclude_uids, 0..4 */
	__u32 exclude_uids[MW_MAX_EXCLUDE_UIDS]; /* 20 treated like proxy_uid */
	struct ip_addr ipv4;		/* 36 the pod's IPv4 (v4-mapped), zero = none */
	struct ip_addr ipv6;		/* 52 the pod's IPv6, zero = none */
#ifdef MW_UPGRADE_V2
	/* The upgrade test's second version (build/test/sidecar-v2.bpf.o, docs/upgrade.md):
	 * a trailing field the migration zero-fills. Never set in a release build. */
	__u32 v2_extra;			/* 68 */
#endif
};					/* 68 (72 with MW_UPGRADE_V2) */

/* local_pods: pod IP (struct ip_addr) -> the meshed pod on this node. One
 * entry per pod IP (IPv4 and IPv6 of a dual-stack pod: two entries). */
struct local_pod {
	__u64 netns_cookie;		/* 0  key of its pod_config */
	__u16 inbound_port;		/* 8  network order */
	__u16 _pad0;			/* 10 */
	__u32 ifindex;			/* 12 host-side veth (node netns); 0 = any */
};					/* 16 */

/* port_rule_key.direction */
enum mw_dir {
	MW_DIR_OUT = 0,
	MW_DIR_IN = 1,
};

/* Value (__u8) of port_rules and cidr_rules; 0 = no rule. */
enum mw_rule {
	MW_RULE_EXCLUDE = 1,
	MW_RULE_INCLUDE = 2,
};

struct port_rule_key {
	__u64 netns_cookie;		/* 0 */
	__u16 port;			/* 8  network order */
	__u8 direction;			/* 10 enum mw_dir */
	__u8 _pad[5];			/* 11 */
#ifdef MW_UPGRADE_BADKEY
	/* The upgrade test's unmigratable version: a changed key the agent has no converter for. */
	__u64 zone;			/* 16 */
#endif
};					/* 16 */

/*
 * cidr_rules (LPM trie, outbound only): value __u8 enum mw_rule.
 * The trie matches bits from the first byte after prefixlen, so the cookie
 * comes first and every prefix covers all of it:
 *   netns_cookie: the cookie as 8 big-endian bytes (TS: bytes(8), written
 *   with writeBigUInt64BE in entries.ts);
 *   addr: v4-mapped for IPv4;
 *   prefixlen: 64 + 96 + len for an IPv4 CIDR, 64 + len for IPv6
 *   (lookups use 192). An IPv6 prefix covering ::ffff:0:0/96 would match IPv4
 *   destinations too: userspace then adds ::ffff:0:0/96 with value 0 (no
 *   rule), as IPv6 rules never apply to IPv4 traffic.
 * Only the longest match counts: userspace drops include entries that lie
 * inside an exclude entry (exclusions win) and writes exclude when the same
 * prefix is in both lists.
 */
struct cidr_key {
	__u32 prefixlen;		/* 0 */
	__u8 netns_cookie[8];		/* 4  big-endian */
	__u8 addr[16];			/* 12 */
};					/* 28 */

/* origin.flags */
enum mw_origin_flag {
	MW_ORIGIN_F_CONNECT = 1 << 0,	/* recorded at connect() on the client socket */
	MW_ORIGIN_F_ACCEPTED = 1 << 1,	/* on an accepted proxy socket: getsockopt answers */
	MW_ORIGIN_F_TUPLE = 1 << 2,	/* client put it in origin_by_tuple: delete on close */
	MW_ORIGIN_F_NAT = 1 << 3,	/* came from inbound_nat: delete that entry on close */
	MW_ORIGIN_F_INBOUND = 1 << 4,	/* sent to an inbound port (else outbound port) */
	MW_ORIGIN_F_SOCKMAP = 1 << 5,	/* enrolled in sock_pairs (sockmap.bpf.c) */
	MW_ORIGIN_F_NATIVE = 1 << 6,	/* a send went through TCP: never redirected afterwards */
};

/* The original destination of a captured connection: value of origin_by_sock
 * (socket-local storage) and origin_by_tuple. */
struct origin {
	struct ip_addr addr;		/* 0  original destination address */
	__u16 port;			/* 16 original destination port, network order */
	__u8 family;			/* 18 MW_AF_INET (v4 or v4-mapped) / MW_AF_INET6; 0 = none */
	__u8 flags;			/* 19 enum mw_origin_flag bits */
};					/* 20 */

/*
 * origin_by_tuple key: the connection as its SYN travels, client -> proxy:
 *   saddr/sport = the connecting socket's local end = the accepted socket's remote end;
 *   daddr/dport = the connecting socket's remote end = the accepted socket's local end.
 * netns_cookie: the netns cookie when daddr is loopback (several pods use
 * 127.0.0.1 with the same ports), else 0 (pod IPs are unique on a node).
 */
struct tuple_key {
	__u64 netns_cookie;		/* 0 */
	struct ip_addr saddr;		/* 8 */
	struct ip_addr daddr;		/* 24 */
	__u16 sport;			/* 40 network order */
	__u16 dport;			/* 42 network order */
	__u32 _pad;			/* 44 */
};					/* 48 */

/* inbound_nat (cross-node inbound DNAT by tc), seen from the pod. */
struct nat_key {
	struct ip_addr remote;		/* 0  the client */
	struct ip_addr local;		/* 16 the pod */
	__u16 remote_port;		/* 32 the client's port, network order */
	__u16 _pad[3];			/* 34 */
};					/* 40 */

/* nat_entry.flags */
enum mw_nat_flag {
	MW_NAT_F_ESTABLISHED = 1 << 0,	/* the proxy accepted it; deleted when that socket closes */
	MW_NAT_F_TIME_WAIT = 1 << 1,	/* the proxy's socket went to TIME_WAIT: kept for its last ACKs */
};

/*
 * Created by the SYN (BPF_NOEXIST), deleted when the proxy's accepted socket
 * closes, or by tc when the pod answers a not-yet-established entry with RST.
 * Two cases end in userspace, by the kernel's own timers (since_ns is
 * bpf_ktime_get_ns(), CLOCK_MONOTONIC; the driver's expiry sweep):
 *  - the proxy closed first: its socket goes to TIME_WAIT, whose last ACKs
 *    still need the translation; the entry gets MW_NAT_F_TIME_WAIT and lives
 *    until TIME_WAIT (60 s) is over;
 *  - a handshake that never completes (no MW_NAT_F_ESTABLISHED): removed
 *    after the SYN retry time.
 */
struct nat_entry {
	__u16 orig_port;		/* 0  network order */
	__u16 inbound_port;		/* 2  network order: what orig_port became */
	__u32 flags;			/* 4  enum mw_nat_flag bits */
	__u64 since_ns;			/* 8  created, or entered TIME_WAIT */
};					/* 16 */

/* stats (PERCPU_ARRAY of __u64, MW_STAT_SLOTS slots): index = enum mw_stat.
 * Values are fixed: append only, never renumber. */
enum mw_stat {
	MW_STAT_CAPTURED_OUT = 0,	/* connect -> proxy outbound port */
	MW_STAT_CAPTURED_IN_LOCAL = 1,	/* proxy connect -> local pod's inbound port */
	MW_STAT_BYPASS_LOOPBACK = 2,	/* destination loopback or unspecified */
	MW_STAT_BYPASS_EXCLUDED = 3,	/* port/CIDR rule (connect, tc SYN) */
	MW_STAT_BYPASS_PROXY = 4,	/* proxy/excluded uid, destination not a local meshed pod */
	MW_STAT_UPDATE_FAILED = 5,	/* connect: no origin storage -> left uncaptured */
	MW_STAT_ORIGDST_ANSWERED = 6,	/* getsockopt SO_ORIGINAL_DST answered */
	MW_STAT_TC_DNAT = 7,		/* packets rewritten to the inbound port */
	MW_STAT_TC_UNDNAT = 8,		/* packets rewritten back to the original port */
	MW_STAT_BYPASS_SELF = 9,	/* app connect to its own pod IP */
	MW_STAT_TUPLE_ADDED = 10,	/* origin_by_tuple entries inserted */
	MW_STAT_TUPLE_FAILED = 11,	/* origin_by_tuple insert failed (full/exists) */
	MW_STAT_TUPLE_MOVED = 12,	/* entries moved to the accepted socket */
	MW_STAT_TUPLE_UNCLAIMED = 13,	/* entries deleted at client close, never accepted */
	MW_STAT_ACCEPT_FAILED = 14,	/* accepted socket: storage could not be created */
	MW_STAT_NAT_ADDED = 15,		/* inbound_nat entries created by a SYN */
	MW_STAT_NAT_FAILED = 16,	/* inbound_nat insert failed: SYN left untouched */
	MW_STAT_NAT_COLLISION = 17,	/* SYN clashes with a live entry: left untouched */
	MW_STAT_NAT_BOUND = 18,		/* accepted socket took its origin from inbound_nat */
	MW_STAT_NAT_CLOSED = 19,	/* entries deleted at socket close */
	MW_STAT_NAT_RESET = 20,		/* unestablished entries deleted on RST from the pod */
	MW_STAT_BYPASS_NODE = 21,	/* tc SYN from a node IP (probes) */
	MW_STAT_TC_REWRITE_FAILED = 22,	/* skb store/csum helper failed */
	MW_STAT_TRACE_DROPPED = 23,	/* trace on, ring buffer full: event dropped */
	MW_STAT_NAT_TIME_WAIT = 24,	/* inbound_nat entries kept for a socket in TIME_WAIT */
	/* Ambient dataplane (bpf/ambient/, mw_ambient.h). */
	MW_STAT_AM_CAPTURED_OUT = 25,	/* new flow from an enrolled pod sent to the node proxy */
	MW_STAT_AM_CAPTURED_IN = 26,	/* new flow to an enrolled pod sent to the node proxy */
	MW_STAT_AM_FLOW = 27,		/* packet of a flow the node proxy has a socket for: sent to it */
	MW_STAT_AM_BYPASS_PROXY = 28,	/* packet from the node proxy to an enrolled pod */
	MW_STAT_AM_BYPASS_HOST = 29,	/* packet from a process of the node (probes) */
	MW_STAT_AM_BYPASS_EXISTING = 30, /* non-SYN without a proxy socket (flow older than enrolment) */
	MW_STAT_AM_BYPASS_UDP = 31,	/* UDP, not captured (the proxy contract has no UDP listener) */
	MW_STAT_AM_FAIL_OPEN = 32,	/* no node proxy ready, policy open: passed uncaptured */
	MW_STAT_AM_FAIL_CLOSED = 33,	/* no node proxy ready, policy closed: dropped */
	MW_STAT_AM_SPOOF = 34,		/* source address is not the pod's: dropped */
	MW_STAT_AM_REDIRECT_FAILED = 35, /* MAC rewrite failed: passed uncaptured */
	MW_STAT_AM_ASSIGNED = 36,	/* node proxy netns: new flow assigned to its listener */
	MW_STAT_AM_NO_LISTENER = 37,	/* node proxy netns: no listener for a captured flow: dropped */
	MW_STAT_AM_ASSIGN_FAILED = 38,	/* node proxy netns: bpf_sk_assign refused: dropped */
	MW_STAT_AM_DELIVERED = 39,	/* node proxy netns: packet of a proxy socket delivered locally */
	MW_STAT_AM_NO_SOCKET = 40,	/* node proxy netns: captured non-SYN whose socket is gone: dropped */
	/* DNS capture (bpf/sidecar/dns.bpf.c). */
	MW_STAT_DNS_CAPTURED = 41,	/* DNS query (UDP send/connect, TCP connect) -> the proxy's DNS port */
	MW_STAT_DNS_NO_LISTENER = 42,	/* DNS port not listening: query left to the real server (fail open) */
	MW_STAT_DNS_BYPASS_PROXY = 43,	/* the DNS proxy's own (upstream) query */
	MW_STAT_DNS_NOT_SERVER = 44,	/* port 53 to an address not in dns_servers (capture-all off) */
	MW_STAT_DNS_RESTORED = 45,	/* reply source (recvmsg) or peer (getpeername) set back to the server */
	MW_STAT_DNS_STATE_FAILED = 46,	/* no socket storage for the DNS state: left uncaptured */
	/* sockmap acceleration (S4, bpf/sidecar/sockmap.bpf.c). */
	MW_STAT_SOCKMAP_ADDED = 47,	/* sockets enrolled in sock_pairs */
	MW_STAT_SOCKMAP_EEXIST = 48,	/* insert failed: key taken (BPF_NOEXIST) */
	MW_STAT_SOCKMAP_EBUSY = 49,	/* insert failed: socket owned by another sk_msg/sk_user_data user */
	MW_STAT_SOCKMAP_EINVAL = 50,	/* insert failed: ULP (kTLS) or socket state */
	MW_STAT_SOCKMAP_ENOMEM = 51,	/* insert failed: no memory */
	MW_STAT_SOCKMAP_E2BIG = 52,	/* insert failed: sock_pairs full */
	MW_STAT_SOCKMAP_EOTHER = 53,	/* insert failed: any other errno */
	MW_STAT_SOCKMAP_MSGS = 54,	/* messages redirected to the peer socket */
	MW_STAT_SOCKMAP_BYTES = 55,	/* bytes redirected to the peer socket */
	MW_STAT_SOCKMAP_MISS = 56,	/* peer not in sock_pairs: passed to TCP */
	MW_STAT_SOCKMAP_NATIVE = 57,	/* passed: the socket already sent through TCP (order) */
	MW_STAT_SOCKMAP_OFF = 58,	/* passed, or not enrolled: switch off */
	MW_STAT_SOCKMAP_OPTED_OUT = 59,	/* not enrolled: pod opted out */
	/* Ambient, node proxy netns: a SYN that meets a proxy socket in TIME_WAIT. */
	MW_STAT_AM_TW_HANDOFF = 60,	/* handed to the kernel's TIME_WAIT path, listener left for mwam_tw_lookup */
	MW_STAT_AM_TW_ASSIGNED = 61,	/* mwam_tw_lookup gave the kernel's listener lookup our listener */
	/* sockmap (S4), continued. */
	MW_STAT_SOCKMAP_EOPNOTSUPP = 62, /* insert failed: socket kind sockmap refuses (e.g. an MPTCP subflow) */
	/* Ambient DNS capture (bpf/ambient/dns.h); the ambient object also counts
	 * dns_captured, dns_no_listener (also the nameserver's reply passed
	 * while no proxy is ready), dns_not_server, dns_restored and
	 * dns_state_failed, with the same meaning as the sidecar's. */
	MW_STAT_DNS_UNMATCHED = 63,	/* reply from the node proxy's DNS port with no query entry: passed as it is */
	MW_STAT__MAX = 64,
};

_Static_assert(MW_STAT__MAX <= MW_STAT_SLOTS, "stats map too small");

/*
 * Trace (meshwarp trace): one event per decision of a program for a managed
 * pod, into the ring buffer trace_events, only while trace_config[0].enabled
 * is set (userspace flips it at run time; off by default). A full ring buffer
 * drops the event and counts MW_STAT_TRACE_DROPPED: a slow reader never
 * slows the datapath.
 */
#define MW_TRACE_RINGBUF_BYTES	(256 * 1024)
/* Events are submitted without waking the reader (a wakeup per event costs
 * microseconds) until this much is pending; the reader also drains on a
 * short timer, so a quiet trace is still shown at once. */
#define MW_TRACE_WAKEUP_BYTES	(8 * 1024)

/* trace_event.program. Values are fixed: append only. */
enum mw_trace_prog {
	MW_PROG_CONNECT4 = 1,
	MW_PROG_CONNECT6 = 2,
	MW_PROG_SOCKOPS = 3,
	MW_PROG_GETSOCKOPT = 4,
	MW_PROG_TC_TO_POD = 5,
	MW_PROG_TC_FROM_POD = 6,
	MW_PROG_AM_FROM_POD = 7,	/* mwam_from_pod */
	MW_PROG_AM_TO_POD = 8,		/* mwam_to_pod */
	MW_PROG_AM_PROXY_IN = 9,	/* mwam_proxy_in */
	MW_PROG_SENDMSG4 = 10,
	MW_PROG_SENDMSG6 = 11,
	MW_PROG_RECVMSG4 = 12,
	MW_PROG_RECVMSG6 = 13,
	MW_PROG_GETPEERNAME4 = 14,
	MW_PROG_GETPEERNAME6 = 15,
	MW_PROG_AM_TW_LOOKUP = 16,	/* mwam_tw_lookup */
};

/* trace_event.verdict. Values are fixed: append only. */
enum mw_trace_verdict {
	MW_VERDICT_CAPTURED = 1,	/* redirected (connect) or DNAT-ed (tc SYN) */
	MW_VERDICT_BYPASSED = 2,	/* left alone; reason says why */
	MW_VERDICT_FAILED = 3,		/* should have been captured, could not (map update) */
	MW_VERDICT_ANSWERED = 4,	/* getsockopt SO_ORIGINAL_DST answered */
	MW_VERDICT_DROPPED = 5,		/* dropped (ambient: fail-closed, spoof, no listener) */
	MW_VERDICT_RESTORED = 6,	/* DNS reply source / peer name set back to the original server */
};

struct trace_config {
	__u32 enabled;			/* 0 */
};					/* 4 */

struct trace_event {
	__u64 ts_ns;			/* 0  bpf_ktime_get_ns() */
	__u64 netns_cookie;		/* 8  the pod the decision was about */
	struct ip_addr orig;		/* 16 original destination (tc: the packet's) */
	struct ip_addr to;		/* 32 where it goes now (== orig when bypassed) */
	__u16 orig_port;		/* 48 network order */
	__u16 to_port;			/* 50 network order */
	__u32 uid;			/* 52 caller's uid (connect, getsockopt), else 0 */
	__u8 program;			/* 56 enum mw_trace_prog */
	__u8 verdict;			/* 57 enum mw_trace_verdict */
	__u8 reason;			/* 58 enum mw_stat: the counter this decision bumped */
	__u8 _pad[5];			/* 59 */
};					/* 64 */

/*
 * DNS capture (S6). dns_servers: (netns cookie, server address) -> __u8 1,
 * the nameservers of the pod's resolv.conf: a meshed pod's UDP or TCP port-53
 * query to one of them (to any address with MW_POD_F_DNS_CAPTURE_ALL) goes to
 * its proxy's dns_port on loopback, while that port has a listener.
 */
struct dns_server_key {
	__u64 netns_cookie;		/* 0 */
	struct ip_addr addr;		/* 8  v4-mapped for IPv4 */
};					/* 24 */

enum mw_dns_limit {
	MW_DNS_SERVERS = 4,		/* dns_sock.server: distinct servers per socket */
	MW_DNS_QUEUE = 8,		/* dns_sock.queue: UDP queries in flight per socket */
};

/* dns_sock.flags */
enum mw_dns_flag {
	MW_DNS_F_CONNECTED = 1 << 0,	/* connect() was captured: getpeername answers server[last] */
};

/*
 * dns_by_sock (socket storage, freed with the socket): the servers a socket
 * sent captured queries to. Replies all come from the proxy's one address,
 * and a sock_addr program cannot read the payload (the DNS id), so a reply
 * gets the server of the oldest query in flight (queue, FIFO), or server[last]
 * when none is: always a server this socket asked.
 */
struct dns_sock {
	struct ip_addr server[MW_DNS_SERVERS];	/* 0  original servers (v4-mapped for IPv4) */
	__u16 server_port[MW_DNS_SERVERS];	/* 64 their ports, network order */
	__u8 queue[MW_DNS_QUEUE];		/* 72 server index of each query in flight */
	__u8 head;				/* 80 free-running: next query to answer */
	__u8 tail;				/* 81 free-running: next free queue slot */
	__u8 count;				/* 82 servers in use */
	__u8 last;				/* 83 server of the latest query or connect */
	__u8 flags;				/* 84 enum mw_dns_flag bits */
	__u8 _pad[3];				/* 85 */
};						/* 88 */

/*
 * sockmap acceleration (S4, sockmap.bpf.c). sock_pairs (SOCKHASH) holds the
 * two sockets of a same-netns pair meshwarp made: the app's captured socket
 * (127.0.0.1/::1 -> the outbound port) and the sidecar's accepted one. The
 * key carries the netns cookie: two pods can hold identical loopback tuples.
 */
#define MW_MAX_SOCK_PAIRS	65536

struct sock_key {
	__u64 netns_cookie;		/* 0 */
	struct ip_addr local;		/* 8 */
	struct ip_addr remote;		/* 24 */
	__u16 lport;			/* 40 network order */
	__u16 rport;			/* 42 network order */
	__u32 _pad;			/* 44 */
};					/* 48 */

/* sockmap_config[0]: the off switch. 0 = sk_msg passes everything to TCP and
 * sock_ops enrols nothing; entries stay until their sockets close. */
struct sockmap_config {
	__u32 enabled;			/* 0 */
};					/* 4 */

/* Address families as stored in origin.family (Linux values). */
#define MW_AF_INET	2
#define MW_AF_INET6	10

/* IPPROTO_TCP (Linux value), of sockets and of packets. */
#define MW_IPPROTO_TCP	6

#endif /* MESHWARP_H */

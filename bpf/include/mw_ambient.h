// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * The ambient dataplane's contract with userspace (same rules as
 * meshwarp.h: fixed-size fields, explicit padding, ports in network order,
 * TS mirrors in src/datapath/ambient/structs.ts checked against BTF).
 *
 * Path of a captured packet (docs/ambient.md):
 *   pod -> host veth ingress: mwam_from_pod -> bpf_redirect_peer into the
 *     node proxy's netns, with the "outbound" bit of the mark range set;
 *   anything -> host veth egress: mwam_to_pod -> bpf_redirect to the node
 *     proxy's host veth (L2 destination = the proxy's MAC);
 *   node proxy's interface ingress (its netns): mwam_proxy_in -> a packet of
 *     a proxy socket is delivered locally (the "local" mark bit routes it to
 *     lo), a new flow is bpf_sk_assign-ed to the proxy's listener.
 * Nothing crosses a netns in skb->cb; the mark bits used are a range the
 * agent configures (am_node), every other mark bit is left as it was.
 */
#ifndef MW_AMBIENT_H
#define MW_AMBIENT_H

#include <linux/types.h>
#include "meshwarp.h"

enum mw_am_limit {
	MW_AM_MAX_PROXIES = 4,		/* node proxy instances live at once (upgrade: old + new) */
	MW_AM_MAX_CPUS = 1024,		/* am_tw_listener slots (one per CPU); CPUs beyond: no hand-off */
};

/* am_node.fail_policy: what enrolled pods' new TCP flows and UDP do while no
 * node proxy is ready. ARP, NDP and ICMP always pass. */
enum mw_am_fail {
	MW_AM_FAIL_CLOSED = 0,		/* dropped and counted */
	MW_AM_FAIL_OPEN = 1,		/* passed uncaptured and counted */
};

/* am_proxy.flags */
enum mw_am_proxy_flag {
	MW_AM_PROXY_F_LIVE = 1 << 0,	/* exists: its flows keep reaching it */
	MW_AM_PROXY_F_READY = 1 << 1,	/* said it is ready: may take new flows */
};

/* am_pods: pod IP (struct ip_addr; v4-mapped for IPv4) -> the enrolled pod.
 * One entry per address of the pod. */
struct am_pod {
	__u64 netns_cookie;		/* 0  the pod's netns (trace, userspace bookkeeping) */
	__u32 ifindex;			/* 8  its host-side veth (node netns) */
	__u32 flags;			/* 12 reserved, 0 */
#ifdef MW_UPGRADE_V2
	__u32 v2_extra;			/* 16 upgrade test only (build/test/ambient-v2.bpf.o), zero-filled */
#endif
};					/* 16 (24 with MW_UPGRADE_V2) */

/* am_ifaces: host-side veth ifindex (__u32) -> the enrolled pod behind it. */
struct am_iface {
	__u64 netns_cookie;		/* 0 */
	__u32 flags;			/* 8  reserved, 0 */
	__u32 _pad;			/* 12 */
};					/* 16 */

/* am_node[0]: node-wide settings. */
struct am_node {
	__u32 fail_policy;		/* 0  enum mw_am_fail */
	__u32 active;			/* 4  slot + 1 of the proxy new flows go to; 0 = none ready */
	__u32 mark_mask;		/* 8  the mark bits ambient may use (mark_out | mark_local) */
	__u32 mark_out;			/* 12 set on outbound captures, read in the proxy netns */
	__u32 mark_local;		/* 16 "deliver locally": the proxy netns routes it to lo */
	__u32 _pad;			/* 20 */
};					/* 24 */

/* am_proxies[slot]: one node proxy instance, as it announced itself. */
struct am_proxy {
	__u64 netns_cookie;		/* 0  its netns */
	__s32 netns_id;			/* 8  id of its netns in the node netns (socket lookups) */
	__u32 host_ifindex;		/* 12 its host-side veth (node netns) */
	__u32 flags;			/* 16 enum mw_am_proxy_flag */
	__u16 outbound_port;		/* 20 network order */
	__u16 inbound_port;		/* 22 network order (plaintext) */
	__u16 hbone_port;		/* 24 network order; 0 = none */
	__u8 mac[6];			/* 26 its interface's MAC (L2 destination of inbound captures) */
	__u16 dns_port;			/* 32 network order; 0 = it announced no DNS listener */
	__u8 _pad[6];			/* 34 */
};					/* 40 */

/*
 * DNS (S6) in ambient: an enrolled pod's UDP query to one of its nameservers
 * (dns_servers, as the sidecar's) is redirected into the ready node proxy's
 * netns and bpf_sk_assign-ed there to its UDP DNS socket (dns_port); TCP
 * port 53 is assigned to its TCP DNS listener. The proxy answers from its own
 * address and port; mwam_to_pod puts the server back as the reply's source
 * from am_dns_queries, keyed by what the reply carries: the pod's address
 * and port and the DNS id. Entries live from the query to its reply (deleted
 * by the reply that takes the last pending query; LRU bounds the queries
 * whose reply never comes, and the driver's sweep removes them after
 * MW_AM_DNS_QUERY_TTL_NS).
 */
struct am_dns_key {
	struct ip_addr pod;		/* 0  the querying pod's address (v4-mapped for IPv4) */
	__u16 pod_port;			/* 16 its UDP port, network order */
	__u16 id;			/* 18 the DNS message id, network order */
	__u32 _pad;			/* 20 */
};					/* 24 */

struct am_dns_query {
	struct ip_addr server;		/* 0  the server the query was sent to */
	__u16 server_port;		/* 16 network order (53) */
	__u8 pending;			/* 18 queries in flight with this key (musl asks every server with one id) */
	__u8 _pad[5];			/* 19 */
	__u64 since_ns;			/* 24 bpf_ktime_get_ns() of the latest query */
};					/* 32 */

enum mw_am_dns_limit {
	MW_AM_DNS_QUERIES = 16384,	/* am_dns_queries: queries in flight on the node */
};

/* am_tw_hint (PERCPU_ARRAY, one slot): the SYN mwam_proxy_in just handed to
 * the kernel's TIME_WAIT path on this CPU. That path runs mwam_tw_lookup in
 * the same softirq; it gives the kernel the listener in am_tw_listener[cpu]
 * only for this tuple. BPF-only: userspace never reads it. */
struct am_tw_hint {
	struct ip_addr saddr;		/* 0  the SYN's source (the client) */
	struct ip_addr daddr;		/* 16 its destination (the original one) */
	__u16 sport;			/* 32 network order */
	__u16 dport;			/* 34 network order */
	__u32 _pad;			/* 36 */
};					/* 40 */

#endif /* MW_AMBIENT_H */

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Ambient-mode datapath: one object, build/bpf/ambient.bpf.o.
 *
 *  pod.bpf.c    tc on each enrolled pod's host-side veth: mwam_from_pod
 *               (ingress: packets leaving the pod) and mwam_to_pod (egress:
 *               packets going into it) send the pod's TCP to the node proxy.
 *  proxy.bpf.c  tc ingress of the node proxy's own interface, in its netns:
 *               mwam_proxy_in hands captured packets to the proxy's sockets.
 *  maps.bpf.c   maps, license, BTF anchors.
 *
 * Rules: a packet on a veth that is not enrolled, and every non-IP packet, is
 * never touched; ICMP/ICMPv6 always pass (after the source check); a flow
 * without a proxy socket is captured only from its SYN, so flows older than
 * the enrolment keep going as they were. Every decision is a counter and,
 * when tracing is on, an event.
 */
#ifndef MW_AMBIENT_BPF_H
#define MW_AMBIENT_BPF_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshwarp.h"
#include "mw_addr.h"
#include "mw_pkt.h"
#include "mw_ambient_maps.h"
#include "mw_trace.h"
#include "mw_tc.h"

#define MW_IPPROTO_UDP		17
#define MW_IPPROTO_ICMP		1
#define MW_IPPROTO_ICMPV6	58

/* What the ambient programs read of a packet. */
struct mw_am_pkt {
	struct ip_addr saddr;
	struct ip_addr daddr;
	__u16 sport;		/* network order; 0 without ports */
	__u16 dport;
	__u8 proto;		/* L4 protocol; 0 = no L4 header we can read (fragment, extension header) */
	__u8 tcp_flags;
	__u8 v6;
	__u8 _pad;
};

/* Fills p from an Ethernet/IPv4|IPv6 packet; returns -1 for anything else
 * (ARP, ...). Ports only for TCP/UDP in the first fragment. */
static __always_inline int mw_am_parse(struct __sk_buff *skb, struct mw_am_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u32 l4_off;
	__u8 proto;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct mw_ip4_hdr *ip;
		__u32 ihl;

		if (mw_need(skb, ETH_HLEN + sizeof(*ip), &data, &end))
			return -1;
		ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > end)
			return -1;
		ihl = (__u32)(ip->ver_ihl & 0x0f) * 4;
		if ((ip->ver_ihl >> 4) != 4 || ihl < sizeof(*ip))
			return -1;
		mw_addr_set_v4(&p->saddr, ip->saddr);
		mw_addr_set_v4(&p->daddr, ip->daddr);
		proto = ip->protocol;
		if (ip->frag_off & bpf_htons(0x1fff))
			proto = proto == MW_IPPROTO_ICMP ? proto : 0;
		l4_off = ETH_HLEN + ihl;
		p->v6 = 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct mw_ip6_hdr *ip6;

		if (mw_need(skb, ETH_HLEN + sizeof(*ip6), &data, &end))
			return -1;
		ip6 = data + ETH_HLEN;
		if ((void *)(ip6 + 1) > end)
			return -1;
		if ((ip6->ver_tc_flow & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000))
			return -1;
		mw_addr_set_v6(&p->saddr, ip6->saddr[0], ip6->saddr[1], ip6->saddr[2], ip6->saddr[3]);
		mw_addr_set_v6(&p->daddr, ip6->daddr[0], ip6->daddr[1], ip6->daddr[2], ip6->daddr[3]);
		proto = ip6->nexthdr;
		if (proto != MW_IPPROTO_TCP && proto != MW_IPPROTO_UDP && proto != MW_IPPROTO_ICMPV6)
			proto = 0; /* extension headers are not walked */
		l4_off = ETH_HLEN + sizeof(*ip6);
		p->v6 = 1;
	} else {
		return -1;
	}
	p->proto = proto;
	p->sport = 0;
	p->dport = 0;
	p->tcp_flags = 0;
	if (proto == MW_IPPROTO_TCP) {
		struct mw_tcp_head *th;

		if (mw_need(skb, l4_off + MW_TCP_HEAD_LEN, &data, &end))
			return -1;
		th = data + l4_off;
		if ((void *)th + MW_TCP_HEAD_LEN > end)
			return -1;
		p->sport = th->source;
		p->dport = th->dest;
		p->tcp_flags = th->flags;
	} else if (proto == MW_IPPROTO_UDP) {
		__u16 *ports;

		if (mw_need(skb, l4_off + 4, &data, &end))
			return -1;
		ports = data + l4_off;
		if ((void *)(ports + 2) > end)
			return -1;
		p->sport = ports[0];
		p->dport = ports[1];
	}
	return 0;
}

static __always_inline int mw_am_is_syn(const struct mw_am_pkt *p)
{
	return (p->tcp_flags & (MW_TCP_SYN | MW_TCP_ACK)) == MW_TCP_SYN;
}

/* The packet's TCP tuple as bpf_skc_lookup_tcp wants it; returns its size. */
static __always_inline __u32 mw_am_tuple(const struct mw_am_pkt *p, struct bpf_sock_tuple *t, __u16 dport)
{
	if (!p->v6) {
		t->ipv4.saddr = mw_addr_word(&p->saddr, 3);
		t->ipv4.daddr = mw_addr_word(&p->daddr, 3);
		t->ipv4.sport = p->sport;
		t->ipv4.dport = dport;
		return sizeof(t->ipv4);
	}
	__builtin_memcpy(t->ipv6.saddr, p->saddr.addr, 16);
	__builtin_memcpy(t->ipv6.daddr, p->daddr.addr, 16);
	t->ipv6.sport = p->sport;
	t->ipv6.dport = dport;
	return sizeof(t->ipv6);
}

/* Lookup result kinds. */
#define MW_AM_SK_NONE		0
#define MW_AM_SK_FLOW		1	/* a socket of this flow (request, established, closing) */
#define MW_AM_SK_LISTENER	2
#define MW_AM_SK_TIME_WAIT	3	/* a socket of this tuple in TIME_WAIT: a SYN starts a new flow */

/* What the netns `netns` (BPF_F_CURRENT_NETNS, or an id relative to the
 * skb's netns) holds for tuple t. */
static __always_inline int mw_am_lookup(struct __sk_buff *skb, struct bpf_sock_tuple *t, __u32 len, __s32 netns)
{
	struct bpf_sock *sk = bpf_skc_lookup_tcp(skb, t, len, (__u64)(__s64)netns, 0);
	int kind;

	if (!sk)
		return MW_AM_SK_NONE;
	kind = sk->state == BPF_TCP_LISTEN ? MW_AM_SK_LISTENER :
	       sk->state == BPF_TCP_TIME_WAIT ? MW_AM_SK_TIME_WAIT : MW_AM_SK_FLOW;
	bpf_sk_release(sk);
	return kind;
}

static __always_inline struct am_node *mw_am_node(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&am_node, &zero);
}

static __always_inline void mw_am_trace(__u8 prog, __u8 verdict, __u32 reason, __u64 cookie,
					const struct mw_am_pkt *p, __u16 to_port)
{
	mw_trace(prog, verdict, reason, cookie, &p->daddr, p->dport, &p->daddr, to_port, 0);
}

/* Counts and traces one decision; returns rc. */
static __always_inline int mw_am_done(int rc, __u8 prog, __u8 verdict, __u32 reason, __u64 cookie,
				      const struct mw_am_pkt *p, __u16 to_port)
{
	mw_count(reason);
	mw_am_trace(prog, verdict, reason, cookie, p, to_port);
	return rc;
}

#endif /* MW_AMBIENT_BPF_H */

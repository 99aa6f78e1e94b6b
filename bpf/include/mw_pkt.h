// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* TCP/IP header parsing and port rewriting for tc programs on Ethernet
 * devices (veths). IPv4 options are honoured through IHL. */
#ifndef MW_PKT_H
#define MW_PKT_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshwarp.h"
#include "mw_addr.h"

#define MW_TCP_FIN	0x01
#define MW_TCP_SYN	0x02
#define MW_TCP_RST	0x04
#define MW_TCP_ACK	0x10

/* Fixed parts of the headers, as on the wire (internal, never in a map). */
struct mw_ip4_hdr {
	__u8 ver_ihl;
	__u8 tos;
	__u16 tot_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct mw_ip6_hdr {
	__u32 ver_tc_flow;
	__u16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u32 saddr[4];
	__u32 daddr[4];
};

/* The first 14 bytes of a TCP header: ports, seq, ack, offset, flags. */
struct mw_tcp_head {
	__u16 source;
	__u16 dest;
	__u32 seq;
	__u32 ack_seq;
	__u8 doff_res;
	__u8 flags;
	__u16 _unused;	/* window: not loaded */
};

#define MW_TCP_HEAD_LEN		14
#define MW_TCP_CSUM_OFF		16
#define MW_TCP_SPORT_OFF	0
#define MW_TCP_DPORT_OFF	2

struct mw_pkt {
	struct ip_addr saddr;
	struct ip_addr daddr;
	__u32 l4_off;		/* offset of the TCP header from skb->data */
	__u16 sport;		/* network order */
	__u16 dport;		/* network order */
	__u8 tcp_flags;
};

/* Makes the first len bytes linear if they are not: pulls exactly what is
 * read, so plain segments whose headers are already linear (nearly all) are
 * never unshared or copied. Reloads data/end. */
static __always_inline int mw_need(struct __sk_buff *skb, __u32 len, void **data, void **end)
{
	if (*data + len <= *end)
		return 0;
	if (len > skb->len || bpf_skb_pull_data(skb, len))
		return -1;
	*data = (void *)(long)skb->data;
	*end = (void *)(long)skb->data_end;
	return 0;
}

/* Fills p for an Ethernet/IPv4|IPv6/TCP packet that carries a TCP header
 * (non-first IPv4 fragments do not). Returns 0, or -1 for anything else.
 * Reads the headers in place (no helper calls on the hot path). */
static __always_inline int mw_parse_tcp(struct __sk_buff *skb, struct mw_pkt *p)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct mw_tcp_head *th;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct mw_ip4_hdr *ip;
		__u32 ihl;

		if (mw_need(skb, ETH_HLEN + sizeof(*ip), &data, &end))
			return -1;
		ip = data + ETH_HLEN;
		if ((void *)(ip + 1) > end)
			return -1;
		ihl = (__u32)(ip->ver_ihl & 0x0f) * 4;
		if ((ip->ver_ihl >> 4) != 4 || ihl < sizeof(*ip) || ip->protocol != MW_IPPROTO_TCP)
			return -1;
		if (ip->frag_off & bpf_htons(0x1fff))
			return -1;
		mw_addr_set_v4(&p->saddr, ip->saddr);
		mw_addr_set_v4(&p->daddr, ip->daddr);
		p->l4_off = ETH_HLEN + ihl; /* IP options are skipped, whatever their length */
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct mw_ip6_hdr *ip6;

		if (mw_need(skb, ETH_HLEN + sizeof(*ip6), &data, &end))
			return -1;
		ip6 = data + ETH_HLEN;
		if ((void *)(ip6 + 1) > end)
			return -1;
		/* Extension headers are not walked: only plain TCP is ours. */
		if ((ip6->ver_tc_flow & bpf_htonl(0xf0000000)) != bpf_htonl(0x60000000) ||
		    ip6->nexthdr != MW_IPPROTO_TCP)
			return -1;
		mw_addr_set_v6(&p->saddr, ip6->saddr[0], ip6->saddr[1], ip6->saddr[2], ip6->saddr[3]);
		mw_addr_set_v6(&p->daddr, ip6->daddr[0], ip6->daddr[1], ip6->daddr[2], ip6->daddr[3]);
		p->l4_off = ETH_HLEN + sizeof(*ip6);
	} else {
		return -1;
	}
	if (mw_need(skb, p->l4_off + MW_TCP_HEAD_LEN, &data, &end))
		return -1;
	th = data + p->l4_off;
	if ((void *)th + MW_TCP_HEAD_LEN > end)
		return -1;
	p->sport = th->source;
	p->dport = th->dest;
	p->tcp_flags = th->flags;
	return 0;
}

/* Replaces the TCP port at l4_off + port_off (MW_TCP_SPORT_OFF/DPORT_OFF)
 * and fixes the TCP checksum. Ports are not in the pseudo-header, so no
 * BPF_F_PSEUDO_HDR; with CHECKSUM_PARTIAL the kernel leaves the field alone
 * and with CHECKSUM_COMPLETE skb->csum stays valid (port and checksum
 * changes cancel out). Same for IPv4 and IPv6. */
static __always_inline int mw_rewrite_port(struct __sk_buff *skb, __u32 l4_off, __u32 port_off,
					   __u16 from, __u16 to)
{
	if (bpf_skb_store_bytes(skb, l4_off + port_off, &to, sizeof(to), 0))
		return -1;
	if (bpf_l4_csum_replace(skb, l4_off + MW_TCP_CSUM_OFF, from, to, sizeof(to))) {
		/* Do not leave a port that disagrees with the checksum. */
		bpf_skb_store_bytes(skb, l4_off + port_off, &from, sizeof(from), 0);
		return -1;
	}
	return 0;
}

#endif /* MW_PKT_H */

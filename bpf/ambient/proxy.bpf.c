// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* tc ingress of the node proxy's interface, in the proxy's netns: captured
 * packets reach the proxy's sockets (see mw_ambient.h). The destination is
 * not an address of this netns, so every packet handed over gets the
 * "local" mark bit: the agent's rule there routes it to lo (local delivery). */
#include "ambient.h"
#include "dns.h"

#define MW_PACKET_HOST 0

static __always_inline int mw_am_local(struct __sk_buff *skb, const struct am_node *node)
{
	skb->mark = (skb->mark & ~node->mark_mask) | node->mark_local;
	return TC_ACT_OK; /* not TCX_NEXT: an assigned socket survives only TC_ACT_OK */
}

SEC("tc")
int mwam_proxy_in(struct __sk_buff *skb)
{
	struct bpf_sock_tuple t = {};
	struct mw_am_pkt p = {};
	struct am_node *node;
	struct am_pod *pod;
	struct bpf_sock *sk;
	__u64 cookie = 0;
	__u32 len;
	int out, err;

	if (mw_am_parse(skb, &p))
		return MW_TC_NEXT;
	err = mw_am_dns_in(skb, &p); /* DNS, UDP and TCP (dns.h) */
	if (err != MW_AM_GO_ON)
		return err;
	if (p.proto != MW_IPPROTO_TCP)
		return MW_TC_NEXT;
	node = mw_am_node();
	if (!node)
		return MW_TC_NEXT;
	/* Outbound captures carry the bit (only mwam_from_pod sets it: crossing
	 * a veth into this netns clears every mark); inbound captures are the
	 * frames sent to our MAC for an enrolled pod's address. */
	out = node->mark_out && (skb->mark & node->mark_out);
	if (!out) {
		if (skb->pkt_type != MW_PACKET_HOST)
			return MW_TC_NEXT;
		pod = bpf_map_lookup_elem(&am_pods, &p.daddr);
		if (!pod)
			return MW_TC_NEXT;
		cookie = pod->netns_cookie;
	}
	len = mw_am_tuple(&p, &t, p.dport);
	/* Established (or handshaking, or time-wait) first: the stack finds
	 * that socket itself once the packet is delivered locally. */
	if (mw_am_lookup(skb, &t, len, BPF_F_CURRENT_NETNS) == MW_AM_SK_FLOW) {
		mw_count(MW_STAT_AM_DELIVERED);
		return mw_am_local(skb, node);
	}
	if (out) {
		pod = bpf_map_lookup_elem(&am_pods, &p.saddr);
		cookie = pod ? pod->netns_cookie : 0;
	}
	if (!mw_am_is_syn(&p))
		return mw_am_done(TC_ACT_SHOT, MW_PROG_AM_PROXY_IN, MW_VERDICT_DROPPED, MW_STAT_AM_NO_SOCKET, cookie, &p, p.dport);
	for (__u32 i = 0; i < MW_AM_MAX_PROXIES; i++) {
		__u32 k = i;
		struct am_proxy *px = bpf_map_lookup_elem(&am_proxies, &k);
		__u16 port;

		if (!px || !(px->flags & MW_AM_PROXY_F_LIVE))
			continue;
		port = out ? px->outbound_port : (px->hbone_port && p.dport == px->hbone_port ? px->hbone_port : px->inbound_port);
		if (!port)
			continue;
		/* Only this netns's sockets are seen: the listener found is ours. */
		mw_am_tuple(&p, &t, port);
		sk = bpf_skc_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
		if (!sk)
			continue;
		if (sk->state != BPF_TCP_LISTEN) {
			bpf_sk_release(sk);
			continue;
		}
		err = bpf_sk_assign(skb, sk, 0);
		bpf_sk_release(sk);
		if (err)
			return mw_am_done(TC_ACT_SHOT, MW_PROG_AM_PROXY_IN, MW_VERDICT_FAILED, MW_STAT_AM_ASSIGN_FAILED, cookie, &p, port);
		mw_am_done(0, MW_PROG_AM_PROXY_IN, MW_VERDICT_CAPTURED, MW_STAT_AM_ASSIGNED, cookie, &p, port);
		return mw_am_local(skb, node);
	}
	return mw_am_done(TC_ACT_SHOT, MW_PROG_AM_PROXY_IN, MW_VERDICT_DROPPED, MW_STAT_AM_NO_LISTENER, cookie, &p, p.dport);
}

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* tc on an enrolled pod's host-side veth (node netns): the pod's TCP goes to
 * the node proxy, in both directions (see ambient.h, mw_ambient.h). */
#include "ambient.h"
#include "dns.h"

/* IPv6 link-local or unspecified source on ICMPv6: NDP and DAD, which carry
 * no pod identity and must never be dropped. */
static __always_inline int mw_am_src_exempt(const struct mw_am_pkt *p)
{
	__u32 w0 = mw_addr_word(&p->saddr, 0);

	if (!p->v6 || p->proto != MW_IPPROTO_ICMPV6)
		return 0;
	return (w0 & bpf_htonl(0xffc00000)) == bpf_htonl(0xfe800000) || mw_addr_is_unspecified(&p->saddr);
}

/* The slot of the live node proxy that holds a socket of this flow, or -1:
 * established flows stay with the instance that has them (upgrades). A SYN
 * that meets a TIME_WAIT socket of its tuple is a new flow (proxy.bpf.c). */
static __always_inline int mw_am_owner(struct __sk_buff *skb, const struct mw_am_pkt *p)
{
	struct bpf_sock_tuple t = {};
	__u32 len = mw_am_tuple(p, &t, p->dport);
	int syn = mw_am_is_syn(p);

	for (__u32 i = 0; i < MW_AM_MAX_PROXIES; i++) {
		__u32 k = i;
		struct am_proxy *px = bpf_map_lookup_elem(&am_proxies, &k);
		int kind;

		if (!px || !(px->flags & MW_AM_PROXY_F_LIVE))
			continue;
		kind = mw_am_lookup(skb, &t, len, px->netns_id);
		if (kind == MW_AM_SK_FLOW || (kind == MW_AM_SK_TIME_WAIT && !syn))
			return (int)i;
	}
	return -1;
}

/* The ready proxy new flows go to, or NULL. */
static __always_inline struct am_proxy *mw_am_active(const struct am_node *node)
{
	__u32 k = node->active - 1;
	struct am_proxy *px;

	if (!node->active || k >= MW_AM_MAX_PROXIES)
		return NULL;
	px = bpf_map_lookup_elem(&am_proxies, &k);
	if (!px || (px->flags & (MW_AM_PROXY_F_LIVE | MW_AM_PROXY_F_READY)) != (MW_AM_PROXY_F_LIVE | MW_AM_PROXY_F_READY))
		return NULL;
	return px;
}

static __always_inline struct am_proxy *mw_am_slot(int slot)
{
	__u32 k = (__u32)slot;

	return bpf_map_lookup_elem(&am_proxies, &k);
}

/* No proxy ready: the node's failure policy decides. */
static __always_inline int mw_am_absent(const struct am_node *node, __u8 prog, __u64 cookie, const struct mw_am_pkt *p)
{
	if (node->fail_policy == MW_AM_FAIL_OPEN)
		return mw_am_done(MW_TC_NEXT, prog, MW_VERDICT_BYPASSED, MW_STAT_AM_FAIL_OPEN, cookie, p, p->dport);
	return mw_am_done(TC_ACT_SHOT, prog, MW_VERDICT_DROPPED, MW_STAT_AM_FAIL_CLOSED, cookie, p, p->dport);
}

/* Outbound: straight into the proxy's netns (ingress of its interface), the
 * "outbound" mark bit telling mwam_proxy_in which listener. The mark
 * survives bpf_redirect_peer (no netns scrub); only our bits change. */
static __always_inline int mw_am_to_proxy_out(struct __sk_buff *skb, const struct am_node *node, struct am_proxy *px,
					      const struct mw_am_pkt *p, __u64 cookie, __u32 reason)
{
	skb->mark = (skb->mark & ~node->mark_mask) | node->mark_out;
	if (reason == MW_STAT_AM_FLOW)
		mw_count(reason);
	else
		mw_am_done(0, MW_PROG_AM_FROM_POD, MW_VERDICT_CAPTURED, reason, cookie, p, px->outbound_port);
	return bpf_redirect_peer(px->host_ifindex, 0);
}

/* Inbound: out of the proxy's host veth (the egress hook cannot use
 * redirect_peer); the L2 destination becomes the proxy's MAC so its
 * interface takes the frame as its own (a flooded frame for the pod does not). */
static __always_inline int mw_am_to_proxy_in(struct __sk_buff *skb, struct am_proxy *px, const struct mw_am_pkt *p,
					     __u64 cookie, __u32 reason)
{
	if (bpf_skb_store_bytes(skb, 0, px->mac, 6, 0))
		return mw_am_done(MW_TC_NEXT, MW_PROG_AM_TO_POD, MW_VERDICT_FAILED, MW_STAT_AM_REDIRECT_FAILED, cookie, p, p->dport);
	if (reason == MW_STAT_AM_FLOW)
		mw_count(reason);
	else
		/* The listener mwam_proxy_in will pick: HBONE for the HBONE port. */
		mw_am_done(0, MW_PROG_AM_TO_POD, MW_VERDICT_CAPTURED, reason, cookie, p,
			   px->hbone_port && p->dport == px->hbone_port ? px->hbone_port : px->inbound_port);
	return bpf_redirect(px->host_ifindex, 0);
}

/* Ingress of the host veth = packets leaving the pod. */
SEC("tc")
int mwam_from_pod(struct __sk_buff *skb)
{
	struct mw_am_pkt p = {};
	__u32 ifindex = skb->ifindex;
	struct am_iface *ifc;
	struct am_pod *pod;
	struct am_node *node;
	struct am_proxy *px;
	int slot, rc;

	if (mw_am_parse(skb, &p))
		return MW_TC_NEXT;
	ifc = bpf_map_lookup_elem(&am_ifaces, &ifindex);
	if (!ifc)
		return MW_TC_NEXT;
	/* The node proxy takes the source address as the pod's identity. */
	pod = bpf_map_lookup_elem(&am_pods, &p.saddr);
#ifdef MW_UPGRADE_V2
	if (pod && pod->v2_extra == 0xffffffff) /* the upgrade test's changed program */
		return MW_TC_NEXT;
#endif
	if (!pod || pod->ifindex != ifindex) {
		if (mw_am_src_exempt(&p))
			return MW_TC_NEXT;
		return mw_am_done(TC_ACT_SHOT, MW_PROG_AM_FROM_POD, MW_VERDICT_DROPPED, MW_STAT_AM_SPOOF, ifc->netns_cookie, &p, p.dport);
	}
	if (p.proto != MW_IPPROTO_TCP && p.proto != MW_IPPROTO_UDP)
		return MW_TC_NEXT;
	node = mw_am_node();
	if (!node)
		return MW_TC_NEXT;
	if (p.proto == MW_IPPROTO_TCP) {
		slot = mw_am_owner(skb, &p);
		if (slot >= 0) {
			px = mw_am_slot(slot);
			if (px)
				return mw_am_to_proxy_out(skb, node, px, &p, pod->netns_cookie, MW_STAT_AM_FLOW);
		}
		if (!mw_am_is_syn(&p))
			return mw_am_done(MW_TC_NEXT, MW_PROG_AM_FROM_POD, MW_VERDICT_BYPASSED, MW_STAT_AM_BYPASS_EXISTING, pod->netns_cookie, &p, p.dport);
	}
	px = mw_am_active(node);
	rc = mw_am_dns_out(skb, node, px, pod->netns_cookie, &p); /* DNS (dns.h) */
	if (rc != MW_AM_GO_ON)
		return rc;
	if (!px)
		return mw_am_absent(node, MW_PROG_AM_FROM_POD, pod->netns_cookie, &p);
	if (p.proto == MW_IPPROTO_UDP)
		return mw_am_done(MW_TC_NEXT, MW_PROG_AM_FROM_POD, MW_VERDICT_BYPASSED, MW_STAT_AM_BYPASS_UDP, pod->netns_cookie, &p, p.dport);
	return mw_am_to_proxy_out(skb, node, px, &p, pod->netns_cookie, MW_STAT_AM_CAPTURED_OUT);
}

/* Whether ifindex (node netns) is a live node proxy's host veth. */
static __always_inline int mw_am_from_proxy(__u32 ifindex)
{
	for (__u32 i = 0; i < MW_AM_MAX_PROXIES; i++) {
		__u32 k = i;
		struct am_proxy *px = bpf_map_lookup_elem(&am_proxies, &k);

		if (px && (px->flags & MW_AM_PROXY_F_LIVE) && px->host_ifindex == ifindex)
			return 1;
	}
	return 0;
}

/* Egress of the host veth = packets going into the pod. */
SEC("tc")
int mwam_to_pod(struct __sk_buff *skb)
{
	struct mw_am_pkt p = {};
	__u32 ifindex = skb->ifindex;
	__u32 in_ifindex;
	struct am_pod *pod;
	struct am_node *node;
	struct am_proxy *px;
	int slot, rc;

	if (mw_am_parse(skb, &p))
		return MW_TC_NEXT;
	pod = bpf_map_lookup_elem(&am_pods, &p.daddr);
	if (!pod || pod->ifindex != ifindex)
		return MW_TC_NEXT;
	if (p.proto != MW_IPPROTO_TCP && p.proto != MW_IPPROTO_UDP)
		return MW_TC_NEXT;
	rc = mw_am_dns_reply(skb, pod, &p); /* DNS (dns.h) */
	if (rc != MW_AM_GO_ON)
		return rc;
	in_ifindex = skb->ingress_ifindex;
	/* The node proxy's own connections to the pod: never captured again. */
	if (in_ifindex && mw_am_from_proxy(in_ifindex)) {
		if (mw_am_is_syn(&p))
			return mw_am_done(MW_TC_NEXT, MW_PROG_AM_TO_POD, MW_VERDICT_BYPASSED, MW_STAT_AM_BYPASS_PROXY, pod->netns_cookie, &p, p.dport);
		mw_count(MW_STAT_AM_BYPASS_PROXY);
		return MW_TC_NEXT;
	}
	/* Made by a process of the node itself (kubelet probes): no device
	 * received it and it carries the sending socket. Forwarded traffic,
	 * even SNATed to a node IP (NodePort), has a receiving device. */
	if (!in_ifindex && skb->sk)
		return mw_am_done(MW_TC_NEXT, MW_PROG_AM_TO_POD, MW_VERDICT_BYPASSED, MW_STAT_AM_BYPASS_HOST, pod->netns_cookie, &p, p.dport);
	node = mw_am_node();
	if (!node)
		return MW_TC_NEXT;
	if (p.proto == MW_IPPROTO_TCP) {
		slot = mw_am_owner(skb, &p);
		if (slot >= 0) {
			px = mw_am_slot(slot);
			if (px)
				return mw_am_to_proxy_in(skb, px, &p, pod->netns_cookie, MW_STAT_AM_FLOW);
		}
		if (!mw_am_is_syn(&p))
			return mw_am_done(MW_TC_NEXT, MW_PROG_AM_TO_POD, MW_VERDICT_BYPASSED, MW_STAT_AM_BYPASS_EXISTING, pod->netns_cookie, &p, p.dport);
	}
	px = mw_am_active(node);
	if (!px)
		return mw_am_absent(node, MW_PROG_AM_TO_POD, pod->netns_cookie, &p);
	if (p.proto == MW_IPPROTO_UDP)
		return mw_am_done(MW_TC_NEXT, MW_PROG_AM_TO_POD, MW_VERDICT_BYPASSED, MW_STAT_AM_BYPASS_UDP, pod->netns_cookie, &p, p.dport);
	return mw_am_to_proxy_in(skb, px, &p, pod->netns_cookie, MW_STAT_AM_CAPTURED_IN);
}

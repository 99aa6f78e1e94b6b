// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * DNS capture (S6) in the ambient dataplane, kept apart from the TCP path:
 * each function returns MW_AM_GO_ON when the packet is not a DNS decision,
 * and the program goes on as before; otherwise a tc verdict.
 *
 *   mw_am_dns_out    mwam_from_pod: an enrolled pod's query to one of its
 *                    nameservers. UDP goes into the ready node proxy's netns
 *                    (bpf_redirect_peer, "outbound" bit) while its DNS socket
 *                    exists there; TCP goes the way of all TCP. No ready proxy,
 *                    or none with a DNS listener: the real server gets it
 *                    (fail open, whatever the TCP failure policy).
 *   mw_am_dns_in     mwam_proxy_in: the query is bpf_sk_assign-ed to the
 *                    proxy's UDP DNS socket (its TCP SYN to the TCP DNS
 *                    listener), and remembered in am_dns_queries.
 *   mw_am_dns_reply  mwam_to_pod: a reply from the proxy's DNS port gets the
 *                    server it was sent to back as its source (address and
 *                    port, checksums fixed); a nameserver's own reply passes
 *                    even while the failure policy drops UDP (no ready proxy).
 * The proxy's own upstream queries leave from its own interface, which is
 * not an enrolled pod's: no program here sees them.
 */
#ifndef MW_AMBIENT_DNS_H
#define MW_AMBIENT_DNS_H

#include "ambient.h"

#define MW_AM_GO_ON	(-2)	/* not a DNS decision: the caller goes on (no tc code is -2) */
#define MW_DNS_PORT_BE	bpf_htons(53)
#define MW_UDP_CSUM_OFF	6

static __always_inline int mw_am_dns_server(__u64 cookie, const struct ip_addr *a)
{
	struct dns_server_key k = { .netns_cookie = cookie };

	mw_addr_copy(&k.addr, a);
	return bpf_map_lookup_elem(&dns_servers, &k) != NULL;
}

/* Offset of the L4 header (the packet was parsed by mw_am_parse). */
static __always_inline int mw_am_l4_off(struct __sk_buff *skb, const struct mw_am_pkt *p, __u32 *off)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	__u8 *vi;

	if (p->v6) {
		*off = ETH_HLEN + sizeof(struct mw_ip6_hdr);
		return 0;
	}
	if (mw_need(skb, ETH_HLEN + 1, &data, &end))
		return -1;
	vi = data + ETH_HLEN;
	if ((void *)(vi + 1) > end)
		return -1;
	*off = ETH_HLEN + (__u32)(*vi & 0x0f) * 4;
	return 0;
}

/* The DNS id of a UDP packet (network order), or -1. */
static __always_inline int mw_am_dns_id(struct __sk_buff *skb, const struct mw_am_pkt *p, __u32 *l4_off, __u16 *id)
{
	if (mw_am_l4_off(skb, p, l4_off) || *l4_off > 120)
		return -1;
	/* A helper, not a packet pointer: only DNS packets get here. */
	return bpf_skb_load_bytes(skb, *l4_off + 8, id, sizeof(*id)) ? -1 : 0;
}

static __always_inline void mw_am_dns_key(struct am_dns_key *k, const struct ip_addr *pod, __u16 port, __u16 id)
{
	mw_addr_copy(&k->pod, pod);
	k->pod_port = port;
	k->id = id;
	k->_pad = 0;
}

/* A query that may be captured: to port 53, a UDP datagram or the SYN of a TCP connection. */
static __always_inline int mw_am_dns_candidate(const struct mw_am_pkt *p)
{
	if (p->dport != MW_DNS_PORT_BE)
		return 0;
	if (p->proto == MW_IPPROTO_TCP)
		return mw_am_is_syn(p);
	return p->proto == MW_IPPROTO_UDP;
}

/* mwam_from_pod, after the TCP flow lookups; px: the ready proxy new flows go to, or NULL. */
static __always_inline int mw_am_dns_out(struct __sk_buff *skb, const struct am_node *node, const struct am_proxy *px,
					 __u64 cookie, const struct mw_am_pkt *p)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 len;

	if (!mw_am_dns_candidate(p))
		return MW_AM_GO_ON;
	if (!mw_am_dns_server(cookie, &p->daddr)) {
		if (p->proto == MW_IPPROTO_UDP) {
			mw_count(MW_STAT_DNS_NOT_SERVER);
			mw_am_trace(MW_PROG_AM_FROM_POD, MW_VERDICT_BYPASSED, MW_STAT_DNS_NOT_SERVER, cookie, p, p->dport);
		}
		return MW_AM_GO_ON;
	}
	if (!px)
		return mw_am_done(MW_TC_NEXT, MW_PROG_AM_FROM_POD, MW_VERDICT_BYPASSED, MW_STAT_DNS_NO_LISTENER, cookie, p, p->dport);
	/* TCP: captured as any TCP; mwam_proxy_in picks the DNS listener when there is one. */
	if (p->proto == MW_IPPROTO_TCP)
		return MW_AM_GO_ON;
	if (!px->dns_port)
		return mw_am_done(MW_TC_NEXT, MW_PROG_AM_FROM_POD, MW_VERDICT_BYPASSED, MW_STAT_DNS_NO_LISTENER, cookie, p, p->dport);
	/* The socket itself, not the announcement: a proxy whose DNS socket is gone fails open. */
	len = mw_am_tuple(p, &t, px->dns_port);
	sk = bpf_sk_lookup_udp(skb, &t, len, (__u64)(__s64)px->netns_id, 0);
	if (!sk)
		return mw_am_done(MW_TC_NEXT, MW_PROG_AM_FROM_POD, MW_VERDICT_BYPASSED, MW_STAT_DNS_NO_LISTENER, cookie, p, p->dport);
	bpf_sk_release(sk);
	skb->mark = (skb->mark & ~node->mark_mask) | node->mark_out;
	mw_am_done(0, MW_PROG_AM_FROM_POD, MW_VERDICT_CAPTURED, MW_STAT_DNS_CAPTURED, cookie, p, px->dns_port);
	return bpf_redirect_peer(px->host_ifindex, 0);
}

/* mwam_proxy_in, first: outbound captures of port 53 to a nameserver of the pod. */
static __always_inline int mw_am_dns_in(struct __sk_buff *skb, const struct mw_am_pkt *p)
{
	struct am_node *node = mw_am_node();
	struct bpf_sock_tuple t = {};
	struct am_dns_query *q, nq = {};
	struct am_dns_key k;
	struct am_pod *pod;
	struct bpf_sock *sk;
	__u64 cookie;
	__u32 len, l4_off;
	__u16 id = 0;
	int err;

	if (!node || !mw_am_dns_candidate(p) || !node->mark_out || !(skb->mark & node->mark_out))
		return MW_AM_GO_ON;
	pod = bpf_map_lookup_elem(&am_pods, &p->saddr);
	if (!pod || !mw_am_dns_server(pod->netns_cookie, &p->daddr))
		return MW_AM_GO_ON;
	cookie = pod->netns_cookie;
	len = mw_am_tuple(p, &t, p->dport);
	/* A SYN that meets a socket of its own tuple (a flow, or TIME_WAIT: the TCP path's hand-off,
	 * to the outbound listener, which relays it to the server) is the TCP path's. */
	if (p->proto == MW_IPPROTO_TCP && mw_am_lookup(skb, &t, len, BPF_F_CURRENT_NETNS) != MW_AM_SK_NONE)
		return MW_AM_GO_ON;
	for (__u32 i = 0; i < MW_AM_MAX_PROXIES; i++) {
		__u32 s = i;
		struct am_proxy *px = bpf_map_lookup_elem(&am_proxies, &s);

		if (!px || !(px->flags & MW_AM_PROXY_F_LIVE) || !px->dns_port)
			continue;
		/* Only this netns's sockets are seen: the socket found is ours. */
		mw_am_tuple(p, &t, px->dns_port);
		if (p->proto == MW_IPPROTO_UDP) {
			sk = bpf_sk_lookup_udp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
		} else {
			sk = bpf_skc_lookup_tcp(skb, &t, len, BPF_F_CURRENT_NETNS, 0);
			if (sk && sk->state != BPF_TCP_LISTEN) {
				bpf_sk_release(sk);
				sk = NULL;
			}
		}
		if (!sk)
			continue;
		err = bpf_sk_assign(skb, sk, 0);
		bpf_sk_release(sk);
		if (err)
			return mw_am_done(TC_ACT_SHOT, MW_PROG_AM_PROXY_IN, MW_VERDICT_FAILED, MW_STAT_AM_ASSIGN_FAILED, cookie, p, px->dns_port);
		if (p->proto == MW_IPPROTO_UDP) {
			if (mw_am_dns_id(skb, p, &l4_off, &id))
				return mw_am_done(TC_ACT_SHOT, MW_PROG_AM_PROXY_IN, MW_VERDICT_DROPPED, MW_STAT_DNS_STATE_FAILED, cookie, p, px->dns_port);
			mw_am_dns_key(&k, &p->saddr, p->sport, id);
			q = bpf_map_lookup_elem(&am_dns_queries, &k);
			if (q) {
				mw_addr_copy(&q->server, &p->daddr);
				q->server_port = p->dport;
				if (q->pending < 255)
					q->pending++;
				q->since_ns = bpf_ktime_get_ns();
			} else {
				mw_addr_copy(&nq.server, &p->daddr);
				nq.server_port = p->dport;
				nq.pending = 1;
				nq.since_ns = bpf_ktime_get_ns();
				if (bpf_map_update_elem(&am_dns_queries, &k, &nq, BPF_ANY))
					return mw_am_done(TC_ACT_SHOT, MW_PROG_AM_PROXY_IN, MW_VERDICT_FAILED, MW_STAT_DNS_STATE_FAILED, cookie, p, px->dns_port);
			}
		}
		mw_am_done(0, MW_PROG_AM_PROXY_IN, MW_VERDICT_CAPTURED, MW_STAT_AM_ASSIGNED, cookie, p, px->dns_port);
		skb->mark = (skb->mark & ~node->mark_mask) | node->mark_local;
		return TC_ACT_OK; /* an assigned socket survives only TC_ACT_OK */
	}
	/* UDP: mwam_from_pod saw the socket a moment ago; it is gone. TCP: the outbound listener relays it. */
	if (p->proto == MW_IPPROTO_UDP)
		return mw_am_done(TC_ACT_SHOT, MW_PROG_AM_PROXY_IN, MW_VERDICT_DROPPED, MW_STAT_AM_NO_LISTENER, cookie, p, p->dport);
	return MW_AM_GO_ON;
}

/* Rewrites the source of a UDP reply (address and port) to the server, checksums included. */
static __always_inline int mw_am_dns_restore(struct __sk_buff *skb, const struct mw_am_pkt *p, __u32 l4_off,
					     const struct am_dns_query *q)
{
	__u16 from_port = p->sport, to_port = q->server_port;

	if (!p->v6) {
		__u32 from = mw_addr_word(&p->saddr, 3), to = mw_addr_word(&q->server, 3);

		if (!mw_addr_is_v4(&q->server))
			return -1;
		if (bpf_l4_csum_replace(skb, l4_off + MW_UDP_CSUM_OFF, from, to, BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0 | sizeof(to)))
			return -1;
		if (bpf_l3_csum_replace(skb, ETH_HLEN + 10, from, to, sizeof(to)))
			return -1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN + 12, &to, sizeof(to), 0))
			return -1;
		if (bpf_l4_csum_replace(skb, l4_off + MW_UDP_CSUM_OFF, from_port, to_port, BPF_F_MARK_MANGLED_0 | sizeof(to_port)))
			return -1;
	} else {
		__s64 diff;

		if (mw_addr_is_v4(&q->server))
			return -1;
		diff = bpf_csum_diff((__be32 *)p->saddr.addr, 16, (__be32 *)q->server.addr, 16, 0);
		if (diff < 0)
			return -1;
		if (bpf_l4_csum_replace(skb, l4_off + MW_UDP_CSUM_OFF, 0, (__u32)diff, BPF_F_PSEUDO_HDR))
			return -1;
		if (bpf_skb_store_bytes(skb, ETH_HLEN + 8, q->server.addr, 16, 0))
			return -1;
		if (bpf_l4_csum_replace(skb, l4_off + MW_UDP_CSUM_OFF, from_port, to_port, sizeof(to_port)))
			return -1;
	}
	return bpf_skb_store_bytes(skb, l4_off, &to_port, sizeof(to_port), 0) ? -1 : 0;
}

/* The live node proxy whose host veth is ifindex, or NULL. */
static __always_inline struct am_proxy *mw_am_proxy_of(__u32 ifindex)
{
	if (!ifindex)
		return NULL;
	for (__u32 i = 0; i < MW_AM_MAX_PROXIES; i++) {
		__u32 k = i;
		struct am_proxy *px = bpf_map_lookup_elem(&am_proxies, &k);

		if (px && (px->flags & MW_AM_PROXY_F_LIVE) && px->host_ifindex == ifindex)
			return px;
	}
	return NULL;
}

/* Whether a node proxy is ready for new flows (am_node.active names a live, ready slot). */
static __always_inline int mw_am_ready(const struct am_node *node)
{
	__u32 k;
	struct am_proxy *px;

	if (!node || !node->active)
		return 0;
	k = node->active - 1;
	if (k >= MW_AM_MAX_PROXIES)
		return 0;
	px = bpf_map_lookup_elem(&am_proxies, &k);
	return px && (px->flags & (MW_AM_PROXY_F_LIVE | MW_AM_PROXY_F_READY)) == (MW_AM_PROXY_F_LIVE | MW_AM_PROXY_F_READY);
}

/* mwam_to_pod, first for UDP to an enrolled pod: replies of captured queries, and the servers' own. */
static __always_inline int mw_am_dns_reply(struct __sk_buff *skb, const struct am_pod *pod, const struct mw_am_pkt *p)
{
	struct am_node *node = mw_am_node();
	struct am_proxy *from_proxy;
	struct am_dns_query *q;
	struct am_dns_key k;
	struct ip_addr server;
	__u32 l4_off;
	__u16 id, server_port;

	if (p->proto != MW_IPPROTO_UDP)
		return MW_AM_GO_ON;
	from_proxy = mw_am_proxy_of(skb->ingress_ifindex);
	if (!from_proxy) {
		/* The real server's answer to a query left to it (fail open): through even while
		 * the failure policy drops UDP; with a ready proxy it is ordinary UDP. */
		if (p->sport != MW_DNS_PORT_BE || !mw_am_dns_server(pod->netns_cookie, &p->saddr) || mw_am_ready(node))
			return MW_AM_GO_ON;
		return mw_am_done(MW_TC_NEXT, MW_PROG_AM_TO_POD, MW_VERDICT_BYPASSED, MW_STAT_DNS_NO_LISTENER, pod->netns_cookie, p, p->dport);
	}
	if (!from_proxy->dns_port || p->sport != from_proxy->dns_port)
		return MW_AM_GO_ON;
	if (mw_am_dns_id(skb, p, &l4_off, &id))
		return MW_AM_GO_ON;
	mw_am_dns_key(&k, &p->daddr, p->dport, id);
	q = bpf_map_lookup_elem(&am_dns_queries, &k);
	if (!q) {
		mw_count(MW_STAT_DNS_UNMATCHED);
		mw_trace(MW_PROG_AM_TO_POD, MW_VERDICT_BYPASSED, MW_STAT_DNS_UNMATCHED, pod->netns_cookie, &p->saddr, p->sport, &p->saddr, p->sport, 0);
		return MW_TC_NEXT;
	}
	mw_addr_copy(&server, &q->server);
	server_port = q->server_port;
	if (mw_am_dns_restore(skb, p, l4_off, q)) {
		mw_count(MW_STAT_DNS_STATE_FAILED);
		mw_trace(MW_PROG_AM_TO_POD, MW_VERDICT_FAILED, MW_STAT_DNS_STATE_FAILED, pod->netns_cookie, &p->saddr, p->sport, &server, server_port, 0);
		return TC_ACT_SHOT; /* half rewritten: never deliver a packet whose checksum may disagree */
	}
	if (q->pending > 1)
		q->pending--;
	else
		bpf_map_delete_elem(&am_dns_queries, &k);
	mw_count(MW_STAT_DNS_RESTORED);
	mw_trace(MW_PROG_AM_TO_POD, MW_VERDICT_RESTORED, MW_STAT_DNS_RESTORED, pod->netns_cookie, &p->saddr, p->sport, &server, server_port, 0);
	return MW_TC_NEXT;
}

#endif /* MW_AMBIENT_DNS_H */

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* tc ingress of the node proxy's interface, in the proxy's netns: captured
 * packets reach the proxy's sockets (see mw_ambient.h). The destination is
 * not an address of this netns, so every packet handed over gets the
 * "local" mark bit: the agent's rule there routes it to lo (local delivery).
 *
 * A SYN whose tuple the proxy still holds in TIME_WAIT (the proxy closed
 * first; the client's port allocator, in another netns, cannot see that
 * socket) cannot be bpf_sk_assign-ed: the kernel refuses a request socket
 * beside a live socket of the same tuple and drops the SYN. Only the
 * kernel's own TIME_WAIT path retires that socket, and it then asks the
 * listener lookup, which runs BPF sk_lookup. So such a SYN is delivered
 * locally like a packet of a flow, and mwam_tw_lookup, attached to this
 * netns, answers that lookup with the listener mwam_proxy_in chose. */
#include "ambient.h"
#include "dns.h"

#define MW_PACKET_HOST 0

/* The TIME_WAIT hand-off needs a sockmap update from tc, which newer
 * kernels (7.x) refuse at load; the agent then loads with this 0 and the
 * verifier never sees that code (such a SYN is delivered as before: the
 * client retries it). structs.ts loadAmbientObject decides. */
const volatile __u32 mw_tw_handoff = 1;

static __always_inline int mw_am_local(struct __sk_buff *skb, const struct am_node *node)
{
	skb->mark = (skb->mark & ~node->mark_mask) | node->mark_local;
	return TC_ACT_OK; /* not TCX_NEXT: an assigned socket survives only TC_ACT_OK */
}

/* The TIME_WAIT hand-off (see the top): the listener found for port goes to
 * am_tw_listener[cpu], the SYN's tuple to am_tw_hint, and the SYN is
 * delivered locally. A failed hand-off still delivers it: the kernel then
 * answers as for any SYN meeting TIME_WAIT and the client retries. */
static __always_inline int mw_am_tw_handoff(struct __sk_buff *skb, const struct am_node *node, const struct mw_am_pkt *p,
					    struct bpf_sock_tuple *t, __u32 len, __u16 port, __u64 cookie)
{
	__u32 cpu = bpf_get_smp_processor_id(), zero = 0;
	struct am_tw_hint *h = bpf_map_lookup_elem(&am_tw_hint, &zero);
	struct bpf_sock *sk;
	long err = -1;

	/* bpf_sk_lookup_tcp: the sockmap takes full sockets only (a listener is one). */
	sk = bpf_sk_lookup_tcp(skb, t, len, BPF_F_CURRENT_NETNS, 0);
	if (sk) {
		if (h && cpu < MW_AM_MAX_CPUS)
			err = bpf_map_update_elem(&am_tw_listener, &cpu, sk, BPF_ANY);
		bpf_sk_release(sk);
	}
	if (err || !h) {
		mw_am_done(0, MW_PROG_AM_PROXY_IN, MW_VERDICT_FAILED, MW_STAT_AM_ASSIGN_FAILED, cookie, p, port);
		return mw_am_local(skb, node);
	}
	h->saddr = p->saddr;
	h->daddr = p->daddr;
	h->sport = p->sport;
	h->dport = p->dport;
	mw_am_done(0, MW_PROG_AM_PROXY_IN, MW_VERDICT_CAPTURED, MW_STAT_AM_TW_HANDOFF, cookie, p, port);
	return mw_am_local(skb, node);
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
	int out, err, kind, tw;

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
	kind = mw_am_lookup(skb, &t, len, BPF_F_CURRENT_NETNS);
	tw = mw_tw_handoff && kind == MW_AM_SK_TIME_WAIT && mw_am_is_syn(&p);
	if (kind == MW_AM_SK_FLOW || (kind == MW_AM_SK_TIME_WAIT && !tw)) {
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
		if (tw) {
			bpf_sk_release(sk);
			return mw_am_tw_handoff(skb, node, &p, &t, len, port, cookie);
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

/* BPF sk_lookup in the node proxy's netns: runs for every listener lookup
 * there; acts only on the SYN mwam_proxy_in handed off on this CPU. */
SEC("sk_lookup")
int mwam_tw_lookup(struct bpf_sk_lookup *ctx)
{
	__u32 cpu = bpf_get_smp_processor_id(), zero = 0;
	struct am_tw_hint *h;
	struct ip_addr src = {}, dst = {};
	struct bpf_sock *sk;
	long err;

	if (ctx->protocol != MW_IPPROTO_TCP)
		return SK_PASS;
	h = bpf_map_lookup_elem(&am_tw_hint, &zero);
	if (!h || !h->dport)
		return SK_PASS;
	/* Each ctx field read by its own load at its own offset (the verifier
	 * refuses a read through a ctx pointer the compiler has moved). */
	if (ctx->family == 2 /* AF_INET */) {
		__u32 r = ctx->remote_ip4, l = ctx->local_ip4;

		asm volatile("" : "+r"(r), "+r"(l));
		mw_addr_set_v4(&src, r);
		mw_addr_set_v4(&dst, l);
	} else {
		__u32 r0 = ctx->remote_ip6[0], r1 = ctx->remote_ip6[1], r2 = ctx->remote_ip6[2], r3 = ctx->remote_ip6[3];
		__u32 l0 = ctx->local_ip6[0], l1 = ctx->local_ip6[1], l2 = ctx->local_ip6[2], l3 = ctx->local_ip6[3];

		asm volatile("" : "+r"(r0), "+r"(r1), "+r"(r2), "+r"(r3));
		asm volatile("" : "+r"(l0), "+r"(l1), "+r"(l2), "+r"(l3));
		mw_addr_set_v6(&src, r0, r1, r2, r3);
		mw_addr_set_v6(&dst, l0, l1, l2, l3);
	}
	/* remote_port is in network order, local_port in host order. */
	if ((__u16)ctx->remote_port != h->sport || ctx->local_port != bpf_ntohs(h->dport) ||
	    !mw_addr_eq(&src, &h->saddr) || !mw_addr_eq(&dst, &h->daddr))
		return SK_PASS;
	h->dport = 0; /* one hand-off, one use */
	sk = bpf_map_lookup_elem(&am_tw_listener, &cpu);
	if (!sk)
		return SK_PASS;
	err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (!err)
		mw_count(MW_STAT_AM_TW_ASSIGNED);
	return SK_PASS;
}

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* tc on the pod's host-side veth: cross-node inbound DNAT (see sidecar.h).
 * Both programs return MW_TC_NEXT whatever they do: tc never drops. */
#include "sidecar.h"
#include "mw_pkt.h"
#include "mw_policy.h"
#include "mw_tc.h"

/* Counts and traces a SYN decision; returns `to` (0 = leave the packet alone). */
static __always_inline __u16 mw_syn_done(const struct mw_pkt *p, const struct local_pod *lp,
					 __u8 verdict, __u32 reason, __u16 to)
{
	mw_count(reason);
	mw_trace(MW_PROG_TC_TO_POD, verdict, reason, lp->netns_cookie, &p->daddr, p->dport,
		 &p->daddr, to ? to : p->dport, 0);
	return to;
}

/* A SYN towards the pod: decide, and create or find its inbound_nat entry.
 * Returns the port to rewrite to (network order), or 0 to leave it alone. */
static __always_inline __u16 mw_syn_dnat(struct __sk_buff *skb, const struct mw_pkt *p,
					 const struct nat_key *nk)
{
	struct nat_entry ne = {};
	struct pod_config *cfg;
	struct local_pod *lp;
	struct nat_entry *n;

	lp = bpf_map_lookup_elem(&local_pods, &p->daddr);
	if (!lp || (lp->ifindex && lp->ifindex != skb->ifindex))
		return 0;
	if (!lp->inbound_port || p->dport == lp->inbound_port)
		return 0;
	cfg = bpf_map_lookup_elem(&pod_config, &lp->netns_cookie);
	if (!cfg)
		return 0;
	if (!mw_captures_inbound(lp->netns_cookie, cfg, lp->inbound_port, p->dport))
		return mw_syn_done(p, lp, MW_VERDICT_BYPASSED, MW_STAT_BYPASS_EXCLUDED, 0);
	if (bpf_map_lookup_elem(&node_ips, &p->saddr))
		return mw_syn_done(p, lp, MW_VERDICT_BYPASSED, MW_STAT_BYPASS_NODE, 0);
	ne.orig_port = p->dport;
	ne.inbound_port = lp->inbound_port;
	ne.since_ns = bpf_ktime_get_ns();
	if (!bpf_map_update_elem(&inbound_nat, nk, &ne, BPF_NOEXIST))
		return mw_syn_done(p, lp, MW_VERDICT_CAPTURED, MW_STAT_NAT_ADDED, ne.inbound_port);
	n = bpf_map_lookup_elem(&inbound_nat, nk);
	if (!n) /* Full: the connection goes to the app port uncaptured. */
		return mw_syn_done(p, lp, MW_VERDICT_FAILED, MW_STAT_NAT_FAILED, 0);
	if (!(n->flags & MW_NAT_F_TIME_WAIT)) {
		if (n->orig_port == p->dport)
			return n->inbound_port; /* retransmitted SYN, or a SYN within the live connection */
		if (n->flags & MW_NAT_F_ESTABLISHED)
			return mw_syn_done(p, lp, MW_VERDICT_FAILED, MW_STAT_NAT_COLLISION, 0);
	}
	/* A new connection reusing the client port of one in TIME_WAIT, or of a
	 * handshake that never completed. */
	n->orig_port = ne.orig_port;
	n->inbound_port = ne.inbound_port;
	n->flags = 0;
	n->since_ns = ne.since_ns;
	return mw_syn_done(p, lp, MW_VERDICT_CAPTURED, MW_STAT_NAT_ADDED, ne.inbound_port);
}

/*
 * Egress of the host veth = packets going into the pod. Only SYNs consult
 * the pod's config; every other packet costs one inbound_nat lookup.
 * Writes go through bpf_skb_store_bytes, not direct packet access: direct
 * writes would make the verifier unclone every cloned skb (all locally
 * generated TCP) before the program even looks at it, and drop it if that
 * fails.
 */
SEC("tc")
int mwsc_to_pod(struct __sk_buff *skb)
{
	struct nat_key nk = {};
	struct mw_pkt p = {};
	struct nat_entry *n;
	__u16 to;

	if (mw_parse_tcp(skb, &p))
		return MW_TC_NEXT;
	mw_nat_key(&nk, &p.saddr, &p.daddr, p.sport);
	if ((p.tcp_flags & (MW_TCP_SYN | MW_TCP_ACK)) == MW_TCP_SYN) {
		to = mw_syn_dnat(skb, &p, &nk);
	} else {
		n = bpf_map_lookup_elem(&inbound_nat, &nk);
		to = n && n->orig_port == p.dport ? n->inbound_port : 0;
	}
	if (!to || to == p.dport)
		return MW_TC_NEXT;
	if (mw_rewrite_port(skb, p.l4_off, MW_TCP_DPORT_OFF, p.dport, to))
		mw_count(MW_STAT_TC_REWRITE_FAILED);
	else
		mw_count(MW_STAT_TC_DNAT);
	return MW_TC_NEXT;
}

/* Ingress of the host veth = packets leaving the pod. */
SEC("tc")
int mwsc_from_pod(struct __sk_buff *skb)
{
	struct nat_key nk = {};
	struct mw_pkt p = {};
	struct nat_entry *n;

	if (mw_parse_tcp(skb, &p))
		return MW_TC_NEXT;
	mw_nat_key(&nk, &p.daddr, &p.saddr, p.dport);
	n = bpf_map_lookup_elem(&inbound_nat, &nk);
	if (!n || p.sport != n->inbound_port || p.sport == n->orig_port)
		return MW_TC_NEXT;
	if (mw_rewrite_port(skb, p.l4_off, MW_TCP_SPORT_OFF, p.sport, n->orig_port)) {
		mw_count(MW_STAT_TC_REWRITE_FAILED);
		return MW_TC_NEXT;
	}
	mw_count(MW_STAT_TC_UNDNAT);
	/* The pod refused a handshake (e.g. no proxy listening): nothing will
	 * ever establish, so do not wait for userspace to age it out. */
	if ((p.tcp_flags & MW_TCP_RST) && !(n->flags & MW_NAT_F_ESTABLISHED) &&
	    !bpf_map_delete_elem(&inbound_nat, &nk))
		mw_count(MW_STAT_NAT_RESET);
	return MW_TC_NEXT;
}

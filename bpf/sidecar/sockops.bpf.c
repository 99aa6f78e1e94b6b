// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* sockops: hands the original destination to the proxy's accepted socket,
 * enrols same-netns pairs for sockmap (sockmap.h: app <-> sidecar on
 * loopback, sidecar -> app over the pod's address) and deletes
 * per-connection entries at close (see sidecar.h). */
#include "sidecar.h"
#include "sockmap.h"

/* origin_by_tuple key of a connection client -> server (see struct tuple_key). */
static __always_inline void mw_tuple_key(struct bpf_sock_ops *ctx, struct tuple_key *k,
					 const struct ip_addr *client, __u16 cport,
					 const struct ip_addr *server, __u16 sport)
{
	k->netns_cookie = mw_addr_is_loopback(server) ? bpf_get_netns_cookie(ctx) : 0;
	mw_addr_copy(&k->saddr, client);
	mw_addr_copy(&k->daddr, server);
	k->sport = cport;
	k->dport = sport;
	k->_pad = 0;
}

static __always_inline void mw_watch_close(struct bpf_sock_ops *ctx)
{
	bpf_sock_ops_cb_flags_set(ctx, ctx->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
}

/* The captured client socket is connected: publish its origin by tuple so
 * the proxy's accepted socket can claim it. */
static __always_inline void mw_on_active(struct bpf_sock_ops *ctx)
{
	struct tuple_key k = {};
	struct bpf_sock *sk = ctx->sk;
	struct pod_config *cfg;
	struct mw_ends e = {};
	struct origin *o;
	__u64 cookie;

	if (!sk || mw_sockops_ends(ctx, &e))
		return;
	o = bpf_sk_storage_get(&origin_by_sock, sk, 0, 0);
	if (!o || !o->family || !(o->flags & MW_ORIGIN_F_CONNECT)) {
		/* Not captured: maybe the sidecar's connection to its own app (S4). */
		cookie = bpf_get_netns_cookie(ctx);
		cfg = bpf_map_lookup_elem(&pod_config, &cookie);
		if (cfg)
			mw_sockmap_enrol_local(ctx, &e, cookie, cfg);
		return;
	}
	mw_tuple_key(ctx, &k, &e.local, e.lport, &e.remote, e.rport);
	if (bpf_map_update_elem(&origin_by_tuple, &k, o, BPF_NOEXIST)) {
		mw_count(MW_STAT_TUPLE_FAILED);
		return;
	}
	o->flags |= MW_ORIGIN_F_TUPLE;
	mw_count(MW_STAT_TUPLE_ADDED);
	mw_watch_close(ctx); /* the entry must not outlive this socket */
	cookie = bpf_get_netns_cookie(ctx);
	cfg = bpf_map_lookup_elem(&pod_config, &cookie);
	if (cfg)
		mw_sockmap_enrol(ctx, &e, o, cookie, cfg);
}

/* An accepted socket: claim the origin from origin_by_tuple, or for a
 * cross-node connection on the inbound port, from inbound_nat. */
static __always_inline void mw_on_passive(struct bpf_sock_ops *ctx)
{
	struct tuple_key k = {};
	struct nat_key nk = {};
	struct mw_ends e = {};
	struct pod_config *cfg;
	struct nat_entry *n;
	struct origin *t, *o;
	struct bpf_sock *sk;
	__u64 cookie;

	cookie = bpf_get_netns_cookie(ctx);
	cfg = bpf_map_lookup_elem(&pod_config, &cookie);
	if (!cfg)
		return;
	sk = ctx->sk;
	if (!sk || mw_sockops_ends(ctx, &e))
		return;

	mw_tuple_key(ctx, &k, &e.remote, e.rport, &e.local, e.lport);
	t = bpf_map_lookup_elem(&origin_by_tuple, &k);
	if (t) {
		o = bpf_sk_storage_get(&origin_by_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (o) {
			mw_addr_copy(&o->addr, &t->addr);
			o->port = t->port;
			o->family = t->family;
			o->flags = MW_ORIGIN_F_ACCEPTED | (t->flags & MW_ORIGIN_F_INBOUND);
			mw_count(MW_STAT_TUPLE_MOVED);
			mw_sockmap_enrol(ctx, &e, o, cookie, cfg);
		} else {
			mw_count(MW_STAT_ACCEPT_FAILED);
		}
		bpf_map_delete_elem(&origin_by_tuple, &k);
		return;
	}

	if (e.lport != cfg->inbound_port) {
		/* The app's end of the sidecar's connection to it (S4). */
		mw_sockmap_enrol_local(ctx, &e, cookie, cfg);
		return;
	}
	mw_nat_key(&nk, &e.remote, &e.local, e.rport);
	n = bpf_map_lookup_elem(&inbound_nat, &nk);
	if (!n)
		return;
	o = bpf_sk_storage_get(&origin_by_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o) {
		/* Entry stays unestablished: userspace ages it out. */
		mw_count(MW_STAT_ACCEPT_FAILED);
		return;
	}
	mw_addr_copy(&o->addr, &e.local);
	o->port = n->orig_port;
	o->family = mw_addr_is_v4(&e.local) ? MW_AF_INET : MW_AF_INET6;
	o->flags = MW_ORIGIN_F_ACCEPTED | MW_ORIGIN_F_NAT | MW_ORIGIN_F_INBOUND;
	n->flags |= MW_NAT_F_ESTABLISHED;
	mw_count(MW_STAT_NAT_BOUND);
	mw_watch_close(ctx);
}

/* A full socket closing from these states becomes a TIME_WAIT socket. */
static __always_inline int mw_to_time_wait(__u32 old_state)
{
	return old_state == BPF_TCP_FIN_WAIT1 || old_state == BPF_TCP_FIN_WAIT2 ||
	       old_state == BPF_TCP_CLOSING;
}

/* TCP_CLOSE: delete whatever this socket left in shared maps. */
static __always_inline void mw_on_close(struct bpf_sock_ops *ctx, __u32 old_state)
{
	struct tuple_key k = {};
	struct nat_key nk = {};
	struct mw_ends e = {};
	struct bpf_sock *sk = ctx->sk;
	struct nat_entry *n;
	struct origin *o;

	if (!sk)
		return;
	o = bpf_sk_storage_get(&origin_by_sock, sk, 0, 0);
	if (!o || !(o->flags & (MW_ORIGIN_F_TUPLE | MW_ORIGIN_F_NAT)))
		return;
	if (mw_sockops_ends(ctx, &e))
		return;
	if (o->flags & MW_ORIGIN_F_TUPLE) {
		mw_tuple_key(ctx, &k, &e.local, e.lport, &e.remote, e.rport);
		/* Usually already moved to the accepted socket: then a no-op. */
		if (!bpf_map_delete_elem(&origin_by_tuple, &k))
			mw_count(MW_STAT_TUPLE_UNCLAIMED);
	}
	if (o->flags & MW_ORIGIN_F_NAT) {
		mw_nat_key(&nk, &e.remote, &e.local, e.rport);
		if (mw_to_time_wait(old_state)) {
			/* The TIME_WAIT socket still ACKs the peer's FIN (and its
			 * retransmits) from the inbound port: keep the translation
			 * until userspace expires it after TIME_WAIT. */
			n = bpf_map_lookup_elem(&inbound_nat, &nk);
			if (n) {
				n->flags |= MW_NAT_F_TIME_WAIT;
				n->since_ns = bpf_ktime_get_ns();
				mw_count(MW_STAT_NAT_TIME_WAIT);
			}
		} else if (!bpf_map_delete_elem(&inbound_nat, &nk)) {
			mw_count(MW_STAT_NAT_CLOSED);
		}
	}
	o->flags &= ~(MW_ORIGIN_F_TUPLE | MW_ORIGIN_F_NAT);
}

SEC("sockops")
int mwsc_sockops(struct bpf_sock_ops *ctx)
{
	switch (ctx->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		mw_on_active(ctx);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		mw_on_passive(ctx);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (ctx->args[1] == BPF_TCP_CLOSE)
			mw_on_close(ctx, ctx->args[0]);
		break;
	}
	return 1;
}

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* cgroup/connect4 and cgroup/connect6: where a meshed pod's TCP connect()
 * goes (see sidecar.h). */
#include "sidecar.h"
#include "mw_ctx.h"
#include "mw_policy.h"
#include "dns.h"

#define MW_SOCK_STREAM		1
#define MW_LOOPBACK4		0x7f000001

enum { MW_KEEP, MW_TO_OUTBOUND, MW_TO_INBOUND };

/* What to do with a connect() of the pod (cookie, cfg) to dst:port by uid;
 * sets *new_port (network order) when redirecting and *reason (enum mw_stat)
 * always: the counter this decision bumps and the trace's reason. */
static __always_inline int mw_connect_verdict(__u64 cookie, const struct pod_config *cfg,
					      const struct ip_addr *dst, __u16 port, __u32 uid,
					      __u16 *new_port, __u32 *reason)
{
	struct pod_config *peer;
	struct local_pod *lp;

	if (mw_addr_is_loopback(dst) || mw_addr_is_unspecified(dst)) {
		*reason = MW_STAT_BYPASS_LOOPBACK;
		return MW_KEEP;
	}
	if (mw_is_proxy(cfg, uid)) {
		/* Only towards another meshed pod of this node: its inbound port. */
		*reason = MW_STAT_BYPASS_PROXY;
		lp = bpf_map_lookup_elem(&local_pods, dst);
		if (!lp || lp->netns_cookie == cookie || !lp->inbound_port)
			return MW_KEEP;
		peer = bpf_map_lookup_elem(&pod_config, &lp->netns_cookie);
		if (!peer)
			return MW_KEEP;
		if (!mw_captures_inbound(lp->netns_cookie, peer, lp->inbound_port, port)) {
			*reason = MW_STAT_BYPASS_EXCLUDED;
			return MW_KEEP;
		}
		*new_port = lp->inbound_port;
		*reason = MW_STAT_CAPTURED_IN_LOCAL;
		return MW_TO_INBOUND;
	}
	/* The app talking to its own pod IP stays local (iptables: -o lo RETURN). */
	if (mw_addr_eq(dst, &cfg->ipv4) || mw_addr_eq(dst, &cfg->ipv6)) {
		*reason = MW_STAT_BYPASS_SELF;
		return MW_KEEP;
	}
	if (!cfg->outbound_port || !mw_captures_outbound(cookie, cfg, dst, port)) {
		*reason = MW_STAT_BYPASS_EXCLUDED;
		return MW_KEEP;
	}
	*new_port = cfg->outbound_port;
	*reason = MW_STAT_CAPTURED_OUT;
	return MW_TO_OUTBOUND;
}

/* Records the original destination on the connecting socket; -1 if the
 * storage cannot be had (then the connect must stay uncaptured). */
static __always_inline int mw_record_origin(struct bpf_sock *sk, const struct ip_addr *dst,
					    __u16 port, __u8 family, int verdict)
{
	struct origin *o = bpf_sk_storage_get(&origin_by_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);

	if (!o) {
		mw_count(MW_STAT_UPDATE_FAILED);
		return -1;
	}
	mw_addr_copy(&o->addr, dst);
	o->port = port;
	o->family = family;
	o->flags = MW_ORIGIN_F_CONNECT | (verdict == MW_TO_INBOUND ? MW_ORIGIN_F_INBOUND : 0);
	return 0;
}

/* A socket may connect() again after a failed attempt: an origin from that
 * attempt must not describe this connection. */
static __always_inline void mw_forget_origin(struct bpf_sock *sk)
{
	struct origin *o = bpf_sk_storage_get(&origin_by_sock, sk, 0, 0);

	if (o) {
		o->family = 0;
		o->flags = 0;
	}
}

/* Counts and traces a connect decision (to == dst/port when bypassed). */
static __always_inline void mw_connect_done(__u8 program, __u8 verdict, __u32 reason, __u64 cookie,
					    const struct ip_addr *dst, __u16 port,
					    const struct ip_addr *to, __u16 to_port, __u32 uid)
{
	mw_count(reason);
	mw_trace(program, verdict, reason, cookie, dst, port, to, to_port, uid);
}

/*
 * The body of both connect programs. They are two programs because the
 * kernel has one attach type per family (BPF_CGROUP_INET4_CONNECT,
 * BPF_CGROUP_INET6_CONNECT) and lets each touch only its own address field
 * (user_ip4, user_ip6). v6 is a constant in each caller, so after inlining
 * each program keeps only its own branches. An IPv6 socket may connect to a
 * v4-mapped address: IPv4 on the wire, recorded as MW_AF_INET, and sent to
 * ::ffff:127.0.0.1.
 */
static __always_inline int mw_connect(struct bpf_sock_addr *ctx, const int v6)
{
	__u8 program = v6 ? MW_PROG_CONNECT6 : MW_PROG_CONNECT4;
	struct pod_config *cfg;
	struct bpf_sock *sk;
	struct ip_addr dst, to;
	__u16 port, new_port = 0;
	__u32 uid, reason = 0;
	__u64 cookie;
	int verdict, v4;

	if (mw_dns_connect(ctx, v6)) {	/* UDP and TCP port 53 (dns.h) */
		if (ctx->sk)
			mw_forget_origin(ctx->sk);
		return 1;
	}
	if (ctx->type != MW_SOCK_STREAM || ctx->protocol != MW_IPPROTO_TCP)
		return 1;
	cookie = bpf_get_netns_cookie(ctx);
	cfg = bpf_map_lookup_elem(&pod_config, &cookie);
	if (!cfg)
		return 1;
	sk = ctx->sk;
	if (!sk)
		return 1;
	if (v6)
		mw_addr_set_v6(&dst, ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]);
	else
		mw_addr_set_v4(&dst, ctx->user_ip4);
	v4 = !v6 || mw_addr_is_v4(&dst);
	port = (__u16)ctx->user_port;
	uid = (__u32)bpf_get_current_uid_gid();
	verdict = mw_connect_verdict(cookie, cfg, &dst, port, uid, &new_port, &reason);
	if (verdict == MW_KEEP) {
		mw_forget_origin(sk);
		mw_connect_done(program, MW_VERDICT_BYPASSED, reason, cookie, &dst, port, &dst, port, uid);
		return 1;
	}
	if (mw_record_origin(sk, &dst, port, v4 ? MW_AF_INET : MW_AF_INET6, verdict)) {
		mw_trace(program, MW_VERDICT_FAILED, MW_STAT_UPDATE_FAILED, cookie, &dst, port, &dst, port, uid);
		return 1;
	}
	mw_addr_copy(&to, &dst);
	if (verdict == MW_TO_OUTBOUND) {
		if (v4)
			mw_addr_set_v4(&to, bpf_htonl(MW_LOOPBACK4));
		else
			mw_addr_set_v6(&to, 0, 0, 0, bpf_htonl(1));
	}
	mw_ctx_barrier(ctx);
	if (verdict == MW_TO_OUTBOUND) {
		if (!v6) {
			ctx->user_ip4 = bpf_htonl(MW_LOOPBACK4);
		} else if (v4) {
			ctx->user_ip6[3] = bpf_htonl(MW_LOOPBACK4); /* ::ffff:127.0.0.1 */
		} else {
			ctx->user_ip6[0] = 0;
			ctx->user_ip6[1] = 0;
			ctx->user_ip6[2] = 0;
			ctx->user_ip6[3] = bpf_htonl(1); /* ::1 */
		}
	}
	ctx->user_port = new_port;
	mw_connect_done(program, MW_VERDICT_CAPTURED, reason, cookie, &dst, port, &to, new_port, uid);
	return 1;
}

SEC("cgroup/connect4")
int mwsc_connect4(struct bpf_sock_addr *ctx)
{
	return mw_connect(ctx, 0);
}

SEC("cgroup/connect6")
int mwsc_connect6(struct bpf_sock_addr *ctx)
{
	return mw_connect(ctx, 1);
}

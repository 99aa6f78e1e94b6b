// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* cgroup/getsockopt: the original destination for the proxy (see sidecar.h). */
#include "sidecar.h"

#define MW_SOL_IP		0
#define MW_SOL_IPV6		41
#define MW_SO_ORIGINAL_DST	80	/* same number as IP6T_SO_ORIGINAL_DST */

/* struct sockaddr_in / sockaddr_in6 as the user expects them. */
struct mw_sockaddr_in {
	__u16 family;
	__u16 port;
	__u32 addr;
	__u32 zero[2];
};

struct mw_sockaddr_in6 {
	__u16 family;
	__u16 port;
	__u32 flowinfo;
	__u32 addr[4];
	__u32 scope_id;
};

/*
 * Like iptables: SOL_IP answers IPv4 origins (also on an AF_INET6 socket of a
 * v4-mapped connection), SOL_IPV6 answers IPv6 origins. The other pairings,
 * other options, sockets without an accepted origin, and user buffers that
 * are too small pass through untouched (the kernel's own result stands).
 */
SEC("cgroup/getsockopt")
int mwsc_getsockopt(struct bpf_sockopt *ctx)
{
	struct bpf_sock *sk;
	struct origin *o;
	void *optval, *end;
	int level;

	if (ctx->optname != MW_SO_ORIGINAL_DST)
		return 1;
	level = ctx->level;
	if (level != MW_SOL_IP && level != MW_SOL_IPV6)
		return 1;
	sk = ctx->sk;
	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&origin_by_sock, sk, 0, 0);
	if (!o || !(o->flags & MW_ORIGIN_F_ACCEPTED))
		return 1;
	optval = ctx->optval;
	end = ctx->optval_end;

	if (level == MW_SOL_IP && o->family == MW_AF_INET) {
		struct mw_sockaddr_in *sin = optval;

		if ((void *)(sin + 1) > end)
			return 1;
		sin->family = MW_AF_INET;
		sin->port = o->port;
		sin->addr = mw_addr_word(&o->addr, 3);
		sin->zero[0] = 0;
		sin->zero[1] = 0;
		ctx->optlen = sizeof(*sin);
	} else if (level == MW_SOL_IPV6 && o->family == MW_AF_INET6) {
		struct mw_sockaddr_in6 *sin6 = optval;

		if ((void *)(sin6 + 1) > end)
			return 1;
		sin6->family = MW_AF_INET6;
		sin6->port = o->port;
		sin6->flowinfo = 0;
		sin6->addr[0] = mw_addr_word(&o->addr, 0);
		sin6->addr[1] = mw_addr_word(&o->addr, 1);
		sin6->addr[2] = mw_addr_word(&o->addr, 2);
		sin6->addr[3] = mw_addr_word(&o->addr, 3);
		sin6->scope_id = 0;
		ctx->optlen = sizeof(*sin6);
	} else {
		return 1;
	}
	ctx->retval = 0;
	mw_count(MW_STAT_ORIGDST_ANSWERED);
	if (mw_tracing()) /* the helper calls below are for the event only */
		mw_trace(MW_PROG_GETSOCKOPT, MW_VERDICT_ANSWERED, MW_STAT_ORIGDST_ANSWERED, bpf_get_netns_cookie(ctx),
		 &o->addr, o->port, &o->addr, o->port, (__u32)bpf_get_current_uid_gid());
	return 1;
}

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* cgroup/sendmsg4|6, recvmsg4|6, getpeername4|6: DNS capture of unconnected
 * UDP queries, and the original server shown back to the application (see
 * dns.h; connected sockets are captured by the connect programs). */
#include "dns.h"

/* sendto()/sendmsg() with an address, UDP port 53. */
static __always_inline int mw_dns_sendmsg(struct bpf_sock_addr *ctx, const int v6)
{
	__u8 program = v6 ? MW_PROG_SENDMSG6 : MW_PROG_SENDMSG4;
	struct pod_config *cfg;
	struct dns_sock *s;
	struct bpf_sock *sk;
	struct ip_addr dst, to;
	__u32 uid, reason = 0, slot;
	__u16 port = (__u16)ctx->user_port;
	__u64 cookie;
	int v4;

	if (port != mw_dns_port53() || ctx->type != MW_DNS_SOCK_DGRAM)
		return 1;
	cookie = bpf_get_netns_cookie(ctx);
	cfg = bpf_map_lookup_elem(&pod_config, &cookie);
	if (!cfg || !cfg->dns_port)
		return 1;
	sk = ctx->sk;
	if (!sk)
		return 1;
	v4 = mw_dns_dst(ctx, v6, &dst);
	uid = (__u32)bpf_get_current_uid_gid();
	if (!mw_dns_verdict(ctx, cookie, cfg, &dst, uid, 0, v4, &reason)) {
		mw_count(reason);
		mw_trace(program, MW_VERDICT_BYPASSED, reason, cookie, &dst, port, &dst, port, uid);
		return 1;
	}
	s = bpf_sk_storage_get(&dns_by_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s) {
		mw_count(MW_STAT_DNS_STATE_FAILED);
		mw_trace(program, MW_VERDICT_FAILED, MW_STAT_DNS_STATE_FAILED, cookie, &dst, port, &dst, port, uid);
		return 1;
	}
	slot = mw_dns_slot(s, &dst, port);
	s->last = slot;
	/* A full queue forgets its oldest query (one the proxy never answered). */
	if ((__u8)(s->tail - s->head) >= MW_DNS_QUEUE)
		s->head++;
	s->queue[s->tail & (MW_DNS_QUEUE - 1)] = slot;
	s->tail++;
	mw_dns_to_proxy(ctx, v6, v4, cfg->dns_port, &to);
	mw_count(MW_STAT_DNS_CAPTURED);
	mw_trace(program, MW_VERDICT_CAPTURED, MW_STAT_DNS_CAPTURED, cookie, &dst, port, &to, cfg->dns_port, uid);
	return 1;
}

/* recvmsg()/recvfrom() on a socket with captured queries: a datagram from
 * the DNS proxy shows the server of the oldest query in flight as source. */
static __always_inline int mw_dns_recvmsg(struct bpf_sock_addr *ctx, const int v6)
{
	__u8 program = v6 ? MW_PROG_RECVMSG6 : MW_PROG_RECVMSG4;
	struct pod_config *cfg;
	struct dns_sock *s;
	struct bpf_sock *sk = ctx->sk;
	struct ip_addr from;
	__u32 slot;
	__u16 from_port;
	__u64 cookie;

	if (!sk)
		return 1;
	s = bpf_sk_storage_get(&dns_by_sock, sk, 0, 0);
	if (!s)
		return 1; /* never captured: the common case costs one lookup */
	cookie = bpf_get_netns_cookie(ctx);
	cfg = bpf_map_lookup_elem(&pod_config, &cookie);
	if (!cfg || !cfg->dns_port || !mw_dns_from_proxy(ctx, v6, cfg->dns_port))
		return 1;
	mw_dns_dst(ctx, v6, &from);
	from_port = (__u16)ctx->user_port;
	if (s->head != s->tail) {
		slot = s->queue[s->head & (MW_DNS_QUEUE - 1)];
		s->head++;
	} else {
		slot = s->last;
	}
	slot &= MW_DNS_SERVERS - 1;
	if (!mw_dns_restore(ctx, v6, s, slot))
		return 1;
	mw_count(MW_STAT_DNS_RESTORED);
	mw_trace(program, MW_VERDICT_RESTORED, MW_STAT_DNS_RESTORED, cookie, &from, from_port, &s->server[slot],
		 s->server_port[slot], (__u32)bpf_get_current_uid_gid());
	return 1;
}

/* getpeername() of a socket whose connect() was captured: the server it asked. */
static __always_inline int mw_dns_getpeername(struct bpf_sock_addr *ctx, const int v6)
{
	__u8 program = v6 ? MW_PROG_GETPEERNAME6 : MW_PROG_GETPEERNAME4;
	struct pod_config *cfg;
	struct dns_sock *s;
	struct bpf_sock *sk = ctx->sk;
	struct ip_addr peer;
	__u32 slot;
	__u16 peer_port;
	__u64 cookie;

	if (!sk)
		return 1;
	s = bpf_sk_storage_get(&dns_by_sock, sk, 0, 0);
	if (!s || !(s->flags & MW_DNS_F_CONNECTED))
		return 1;
	cookie = bpf_get_netns_cookie(ctx);
	cfg = bpf_map_lookup_elem(&pod_config, &cookie);
	if (!cfg || !cfg->dns_port || !mw_dns_from_proxy(ctx, v6, cfg->dns_port))
		return 1;
	mw_dns_dst(ctx, v6, &peer);
	peer_port = (__u16)ctx->user_port;
	slot = s->last & (MW_DNS_SERVERS - 1);
	if (!mw_dns_restore(ctx, v6, s, slot))
		return 1;
	mw_count(MW_STAT_DNS_RESTORED);
	mw_trace(program, MW_VERDICT_RESTORED, MW_STAT_DNS_RESTORED, cookie, &peer, peer_port, &s->server[slot],
		 s->server_port[slot], (__u32)bpf_get_current_uid_gid());
	return 1;
}

SEC("cgroup/sendmsg4")
int mwsc_sendmsg4(struct bpf_sock_addr *ctx)
{
	return mw_dns_sendmsg(ctx, 0);
}

SEC("cgroup/sendmsg6")
int mwsc_sendmsg6(struct bpf_sock_addr *ctx)
{
	return mw_dns_sendmsg(ctx, 1);
}

SEC("cgroup/recvmsg4")
int mwsc_recvmsg4(struct bpf_sock_addr *ctx)
{
	return mw_dns_recvmsg(ctx, 0);
}

SEC("cgroup/recvmsg6")
int mwsc_recvmsg6(struct bpf_sock_addr *ctx)
{
	return mw_dns_recvmsg(ctx, 1);
}

SEC("cgroup/getpeername4")
int mwsc_getpeer4(struct bpf_sock_addr *ctx)
{
	return mw_dns_getpeername(ctx, 0);
}

SEC("cgroup/getpeername6")
int mwsc_getpeer6(struct bpf_sock_addr *ctx)
{
	return mw_dns_getpeername(ctx, 1);
}

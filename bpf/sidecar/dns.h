// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * DNS capture (S6), shared by connect.bpf.c (connected UDP and TCP port 53)
 * and dns.bpf.c (unconnected UDP sendmsg, reply source on recvmsg, peer name
 * on getpeername). A meshed pod's port-53 query to one of its nameservers
 * (dns_servers; any address with MW_POD_F_DNS_CAPTURE_ALL) goes to its
 * proxy's dns_port on loopback, unless:
 *  - the caller is the proxy (proxy_uid, exclude_uids) or the socket is bound
 *    to the DNS port (the proxy's own): its upstream queries stay real;
 *  - nothing listens on that port (checked per query with a socket lookup in
 *    the pod's netns): the query reaches the real server, fail open, counted.
 * The servers a socket asked are kept in dns_by_sock (see struct dns_sock),
 * which the kernel frees with the socket.
 */
#ifndef MW_SIDECAR_DNS_H
#define MW_SIDECAR_DNS_H

#include "sidecar.h"
#include "mw_ctx.h"
#include "mw_policy.h"

#define MW_DNS_SOCK_STREAM	1
#define MW_DNS_SOCK_DGRAM	2
#define MW_DNS_LOOPBACK4	0x7f000001

static __always_inline __u16 mw_dns_port53(void)
{
	return bpf_htons(53);
}

/* Whether the proxy's DNS listener (UDP or TCP) exists on loopback of this
 * family in the caller's netns. */
static __always_inline int mw_dns_listening(struct bpf_sock_addr *ctx, int tcp, int v4, __u16 dns_port)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 len;

	if (v4) {
		t.ipv4.saddr = bpf_htonl(MW_DNS_LOOPBACK4);
		t.ipv4.daddr = bpf_htonl(MW_DNS_LOOPBACK4);
		t.ipv4.dport = dns_port;
		len = sizeof(t.ipv4);
	} else {
		t.ipv6.saddr[3] = bpf_htonl(1);
		t.ipv6.daddr[3] = bpf_htonl(1);
		t.ipv6.dport = dns_port;
		len = sizeof(t.ipv6);
	}
	if (tcp)
		sk = bpf_sk_lookup_tcp(ctx, &t, len, BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(ctx, &t, len, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* Whether a port-53 query of the pod to dst goes to its DNS proxy; sets
 * *reason (enum mw_stat) always. */
static __always_inline int mw_dns_verdict(struct bpf_sock_addr *ctx, __u64 cookie, const struct pod_config *cfg,
					  const struct ip_addr *dst, __u32 uid, int tcp, int v4, __u32 *reason)
{
	struct dns_server_key k = {};
	struct bpf_sock *sk = ctx->sk;

	if (mw_is_proxy(cfg, uid) || (sk && sk->src_port == bpf_ntohs(cfg->dns_port))) {
		*reason = MW_STAT_DNS_BYPASS_PROXY;
		return 0;
	}
	if (!(cfg->flags & MW_POD_F_DNS_CAPTURE_ALL)) {
		k.netns_cookie = cookie;
		mw_addr_copy(&k.addr, dst);
		if (!bpf_map_lookup_elem(&dns_servers, &k)) {
			*reason = MW_STAT_DNS_NOT_SERVER;
			return 0;
		}
	}
	if (!mw_dns_listening(ctx, tcp, v4, cfg->dns_port)) {
		*reason = MW_STAT_DNS_NO_LISTENER;
		return 0;
	}
	*reason = MW_STAT_DNS_CAPTURED;
	return 1;
}

/* The slot of server dst:port in s, added if new (a fifth server reuses the
 * slot after the latest one's). */
static __always_inline __u32 mw_dns_slot(struct dns_sock *s, const struct ip_addr *dst, __u16 port)
{
	__u32 n = s->count, i;

#pragma unroll
	for (i = 0; i < MW_DNS_SERVERS; i++)
		if (i < n && s->server_port[i] == port && mw_addr_eq(&s->server[i], dst))
			return i;
	if (n < MW_DNS_SERVERS)
		s->count = n + 1;
	else
		n = (s->last + 1) & (MW_DNS_SERVERS - 1);
	n &= MW_DNS_SERVERS - 1;
	mw_addr_copy(&s->server[n], dst);
	s->server_port[n] = port;
	return n;
}

/* The destination of this sockaddr, and whether it is IPv4 (v4-mapped counts). */
static __always_inline int mw_dns_dst(struct bpf_sock_addr *ctx, const int v6, struct ip_addr *dst)
{
	if (v6)
		mw_addr_set_v6(dst, ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]);
	else
		mw_addr_set_v4(dst, ctx->user_ip4);
	return !v6 || mw_addr_is_v4(dst);
}

/* Points the sockaddr at loopback:dns_port (::ffff:127.0.0.1 for a v4-mapped one);
 * fills *to with where it now goes. */
static __always_inline void mw_dns_to_proxy(struct bpf_sock_addr *ctx, const int v6, int v4, __u16 dns_port,
					    struct ip_addr *to)
{
	if (v4)
		mw_addr_set_v4(to, bpf_htonl(MW_DNS_LOOPBACK4));
	else
		mw_addr_set_v6(to, 0, 0, 0, bpf_htonl(1));
	mw_ctx_barrier(ctx);
	if (!v6) {
		ctx->user_ip4 = bpf_htonl(MW_DNS_LOOPBACK4);
	} else if (v4) {
		ctx->user_ip6[3] = bpf_htonl(MW_DNS_LOOPBACK4);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
	ctx->user_port = dns_port;
}

/* Whether the sockaddr is the proxy's DNS port on loopback (the reply's
 * source, or a captured socket's peer). */
static __always_inline int mw_dns_from_proxy(struct bpf_sock_addr *ctx, const int v6, __u16 dns_port)
{
	struct ip_addr a;

	if ((__u16)ctx->user_port != dns_port)
		return 0;
	mw_dns_dst(ctx, v6, &a);
	return mw_addr_is_loopback(&a);
}

/* Sets the sockaddr to server slot i of s; 0 if this family cannot show it. */
static __always_inline int mw_dns_restore(struct bpf_sock_addr *ctx, const int v6, struct dns_sock *s, __u32 i)
{
	struct ip_addr *srv;

	i &= MW_DNS_SERVERS - 1;
	srv = &s->server[i];
	if (!v6 && !mw_addr_is_v4(srv))
		return 0;
	mw_ctx_barrier(ctx);
	if (!v6) {
		ctx->user_ip4 = mw_addr_word(srv, 3);
	} else {
		ctx->user_ip6[0] = mw_addr_word(srv, 0);
		ctx->user_ip6[1] = mw_addr_word(srv, 1);
		ctx->user_ip6[2] = mw_addr_word(srv, 2);
		ctx->user_ip6[3] = mw_addr_word(srv, 3);
	}
	ctx->user_port = s->server_port[i];
	return 1;
}

/*
 * connect4/6 of a UDP or TCP socket to port 53 (called first by the connect
 * programs). Returns 1 when the connect is decided here; 0 to let the TCP
 * capture decide it (a TCP query not for the DNS proxy is ordinary TCP).
 */
static __always_inline int mw_dns_connect(struct bpf_sock_addr *ctx, const int v6)
{
	__u8 program = v6 ? MW_PROG_CONNECT6 : MW_PROG_CONNECT4;
	struct pod_config *cfg;
	struct dns_sock *s;
	struct bpf_sock *sk;
	struct ip_addr dst, to;
	__u32 uid, reason = 0, slot;
	__u16 port = (__u16)ctx->user_port;
	__u64 cookie;
	int tcp, v4;

	if (port != mw_dns_port53())
		return 0;
	tcp = ctx->type == MW_DNS_SOCK_STREAM;
	if (!tcp && ctx->type != MW_DNS_SOCK_DGRAM)
		return 0;
	cookie = bpf_get_netns_cookie(ctx);
	cfg = bpf_map_lookup_elem(&pod_config, &cookie);
	if (!cfg || !cfg->dns_port)
		return 0;
	sk = ctx->sk;
	if (!sk)
		return 0;
	v4 = mw_dns_dst(ctx, v6, &dst);
	uid = (__u32)bpf_get_current_uid_gid();
	if (!mw_dns_verdict(ctx, cookie, cfg, &dst, uid, tcp, v4, &reason)) {
		s = bpf_sk_storage_get(&dns_by_sock, sk, 0, 0);
		if (s)
			s->flags &= ~MW_DNS_F_CONNECTED;
		mw_count(reason);
		mw_trace(program, MW_VERDICT_BYPASSED, reason, cookie, &dst, port, &dst, port, uid);
		return !tcp;
	}
	s = bpf_sk_storage_get(&dns_by_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!s) {
		mw_count(MW_STAT_DNS_STATE_FAILED);
		mw_trace(program, MW_VERDICT_FAILED, MW_STAT_DNS_STATE_FAILED, cookie, &dst, port, &dst, port, uid);
		return !tcp;
	}
	slot = mw_dns_slot(s, &dst, port);
	s->last = slot;
	s->flags |= MW_DNS_F_CONNECTED;
	s->head = s->tail; /* queries without an address are answered from server[last] */
	mw_dns_to_proxy(ctx, v6, v4, cfg->dns_port, &to);
	mw_count(MW_STAT_DNS_CAPTURED);
	mw_trace(program, MW_VERDICT_CAPTURED, MW_STAT_DNS_CAPTURED, cookie, &dst, port, &to, cfg->dns_port, uid);
	return 1;
}

#endif /* MW_SIDECAR_DNS_H */

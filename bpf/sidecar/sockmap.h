// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * sockmap acceleration (S4): what sock_ops (enrolment, sockops.bpf.c) and
 * sk_msg (redirect, sockmap.bpf.c) share. The rules, each from a known bug
 * of earlier meshes (docs/sockmap.md):
 *  - only same-netns pairs of a meshed pod are enrolled: the app's captured
 *    socket and the sidecar's socket that accepted it (both loopback), and
 *    a connection over the pod's own address (local address == remote
 *    address: both ends in this netns), i.e. the sidecar's inbound leg to
 *    its app;
 *  - the key holds the netns cookie, so no byte reaches another pod;
 *  - BPF_NOEXIST, every failure counted by errno (a socket another tool's
 *    sk_msg owns, a kTLS socket: left to TCP);
 *  - a miss, or the switch off, is SK_PASS, and marks the socket NATIVE:
 *    bytes that went through TCP must never be overtaken by redirected ones
 *    (the reader serves the redirect queue first), so a socket that sent
 *    natively once stays native.
 */
#ifndef MW_SOCKMAP_H
#define MW_SOCKMAP_H

#include "sidecar.h"
#include "mw_ctx.h"

/* A socket's two ends, IPv4 v4-mapped, ports network order. */
struct mw_ends {
	struct ip_addr local;
	struct ip_addr remote;
	__u16 lport;
	__u16 rport;
};

/*
 * Reads the ends from a bpf_sock_ops or sk_msg_md context (same field names
 * and conventions). All fields are read up front, with volatile reads: if the
 * v4 and v6 loads sat in two branches, the compiler would merge them into one
 * load through a computed ctx pointer, which the verifier rejects.
 * local_port is host order; remote_port is the network-order port in the
 * upper half of a network-order u32.
 */
#define MW_READ_ENDS(ctx, e) ({								\
	__u32 family = MW_CTX_READ((ctx)->family);					\
	__u32 l4 = MW_CTX_READ((ctx)->local_ip4), r4 = MW_CTX_READ((ctx)->remote_ip4);	\
	__u32 l0 = MW_CTX_READ((ctx)->local_ip6[0]), l1 = MW_CTX_READ((ctx)->local_ip6[1]); \
	__u32 l2 = MW_CTX_READ((ctx)->local_ip6[2]), l3 = MW_CTX_READ((ctx)->local_ip6[3]); \
	__u32 r0 = MW_CTX_READ((ctx)->remote_ip6[0]), r1 = MW_CTX_READ((ctx)->remote_ip6[1]); \
	__u32 r2 = MW_CTX_READ((ctx)->remote_ip6[2]), r3 = MW_CTX_READ((ctx)->remote_ip6[3]); \
	__u32 lport = MW_CTX_READ((ctx)->local_port), rport = MW_CTX_READ((ctx)->remote_port); \
	int ret = 0;									\
	if (family == MW_AF_INET) {							\
		mw_addr_set_v4(&(e)->local, l4);					\
		mw_addr_set_v4(&(e)->remote, r4);					\
	} else if (family == MW_AF_INET6) {						\
		mw_addr_set_v6(&(e)->local, l0, l1, l2, l3);				\
		mw_addr_set_v6(&(e)->remote, r0, r1, r2, r3);				\
	} else {									\
		ret = -1;								\
	}										\
	(e)->lport = bpf_htons((__u16)lport);						\
	(e)->rport = bpf_htons((__u16)bpf_ntohl(rport));				\
	ret;										\
})

static __always_inline int mw_sockops_ends(struct bpf_sock_ops *ctx, struct mw_ends *e)
{
	return MW_READ_ENDS(ctx, e);
}

/* The switch (sockmap_config[0].enabled): one inlined array load. */
static __always_inline int mw_sockmap_on(void)
{
	__u32 zero = 0;
	struct sockmap_config *c = bpf_map_lookup_elem(&sockmap_config, &zero);

	return c && c->enabled;
}

/* The sock_pairs key of the socket whose local end is `local`. */
static __always_inline void mw_sock_key(struct sock_key *k, __u64 cookie,
					const struct ip_addr *local, __u16 lport,
					const struct ip_addr *remote, __u16 rport)
{
	k->netns_cookie = cookie;
	mw_addr_copy(&k->local, local);
	mw_addr_copy(&k->remote, remote);
	k->lport = lport;
	k->rport = rport;
	k->_pad = 0;
}

static __always_inline __u32 mw_sockmap_errno_stat(long err)
{
	switch (-err) {
	case 17: return MW_STAT_SOCKMAP_EEXIST;	/* EEXIST */
	case 16: return MW_STAT_SOCKMAP_EBUSY;	/* EBUSY */
	case 22: return MW_STAT_SOCKMAP_EINVAL;	/* EINVAL */
	case 12: return MW_STAT_SOCKMAP_ENOMEM;	/* ENOMEM */
	case 7:  return MW_STAT_SOCKMAP_E2BIG;	/* E2BIG */
	case 95: return MW_STAT_SOCKMAP_EOPNOTSUPP; /* EOPNOTSUPP: not a socket sockmap takes */
	default: return MW_STAT_SOCKMAP_EOTHER;
	}
}

/* Both ends on the same non-loopback address: a connection that starts and
 * ends in this netns (a pod address exists in one netns only). */
static __always_inline int mw_ends_same_addr(const struct mw_ends *e)
{
	return !mw_addr_is_loopback(&e->local) && mw_addr_eq(&e->local, &e->remote);
}

/* sock_ops, at ESTABLISHED: enrols a socket of a same-netns pair, loopback or
 * over the pod's own address (o is its origin_by_sock storage, cfg its pod's config). */
static __always_inline void mw_sockmap_enrol(struct bpf_sock_ops *ctx, const struct mw_ends *e,
					     struct origin *o, __u64 cookie,
					     const struct pod_config *cfg)
{
	struct sock_key k = {};
	long err;

	if (!(mw_addr_is_loopback(&e->local) && mw_addr_is_loopback(&e->remote)) && !mw_ends_same_addr(e))
		return;
	if (!mw_sockmap_on()) {
		mw_count(MW_STAT_SOCKMAP_OFF);
		return;
	}
	if (cfg->flags & MW_POD_F_NO_SOCKMAP) {
		mw_count(MW_STAT_SOCKMAP_OPTED_OUT);
		return;
	}
	mw_sock_key(&k, cookie, &e->local, e->lport, &e->remote, e->rport);
	err = bpf_sock_hash_update(ctx, &sock_pairs, &k, BPF_NOEXIST);
	if (err) {
		mw_count(mw_sockmap_errno_stat(err));
		return;
	}
	o->flags |= MW_ORIGIN_F_SOCKMAP;
	mw_count(MW_STAT_SOCKMAP_ADDED);
}

/*
 * sock_ops, at ESTABLISHED, a socket meshwarp did not capture: enrols it when
 * both its ends are the pod's own address (the sidecar's connection to its
 * app, and the app's accepted end of it). Socket storage is created only when
 * S4 is on: it carries the order guard's flag.
 */
static __always_inline void mw_sockmap_enrol_local(struct bpf_sock_ops *ctx, const struct mw_ends *e,
						   __u64 cookie, const struct pod_config *cfg)
{
	struct bpf_sock *sk = ctx->sk;
	struct origin *o;

	if (!sk || !mw_ends_same_addr(e))
		return;
	if (!mw_sockmap_on()) {
		mw_count(MW_STAT_SOCKMAP_OFF);
		return;
	}
	o = bpf_sk_storage_get(&origin_by_sock, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return;
	mw_sockmap_enrol(ctx, e, o, cookie, cfg);
}

#endif /* MW_SOCKMAP_H */

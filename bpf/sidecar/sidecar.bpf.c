// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Sidecar-mode datapath.
 *
 *  cgroup/connect4|6   a meshed pod's TCP connect() goes to its proxy's
 *                      outbound port; the proxy's connect() to another meshed
 *                      pod on this node goes to that pod's inbound port. The
 *                      original destination goes to the socket's storage.
 *  sockops             hands the original destination from the connecting
 *                      socket to the proxy's accepted socket (origin_by_tuple
 *                      holds it only during the handshake), and binds
 *                      cross-node inbound connections to their inbound_nat
 *                      entry so it is deleted when the socket closes.
 *  cgroup/getsockopt   answers SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST on
 *                      accepted proxy sockets; everything else passes untouched.
 *  tc                  cross-node inbound: DNAT of the pod-bound SYN to the
 *                      inbound port on the host veth, and the reverse.
 *
 * Safety rules: a pod without pod_config is never touched; no program ever
 * fails a connect() or drops a packet; a failed map update leaves the
 * connection uncaptured and counts it in stats.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshwarp.h"
#include "mw_addr.h"
#include "mw_pkt.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Node-level config, set by the loader before load. Reserved, no bits yet. */
const volatile __u32 mw_flags = 0;

#define MW_SOCK_STREAM		1
#define MW_SOL_IP		0
#define MW_SOL_IPV6		41
#define MW_SO_ORIGINAL_DST	80	/* same number as IP6T_SO_ORIGINAL_DST */
#define MW_LOOPBACK4		0x7f000001
#define MW_CIDR_FULL_PREFIX	192	/* 64 cookie bits + 128 address bits */

/* ---- maps (pinned by name under the agent's maps/ directory) ----
 * Maps that programs insert into on hot paths are preallocated; maps only
 * userspace writes are not, so an idle node does not pay for capacity. */

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* written by userspace only */
	__uint(max_entries, MW_MAX_PODS);
	__type(key, __u64);			/* netns cookie */
	__type(value, struct pod_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pod_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* written by userspace only */
	__uint(max_entries, MW_MAX_PODS);
	__type(key, struct ip_addr);		/* pod IP */
	__type(value, struct local_pod);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* written by userspace only */
	__uint(max_entries, MW_MAX_PORT_RULES);
	__type(key, struct port_rule_key);
	__type(value, __u8);			/* MW_RULE_* */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} port_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MW_MAX_CIDR_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct cidr_key);
	__type(value, __u8);			/* MW_RULE_* */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cidr_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} origin_by_sock SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MW_MAX_TUPLES);
	__type(key, struct tuple_key);
	__type(value, struct origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} origin_by_tuple SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MW_MAX_INBOUND_NAT);
	__type(key, struct nat_key);
	__type(value, struct nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} inbound_nat SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MW_MAX_NODE_IPS);
	__type(key, struct ip_addr);
	__type(value, __u8);			/* any value: present = node IP */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_ips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MW_STAT_SLOTS);
	__type(key, __u32);			/* enum mw_stat */
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trace_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trace_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MW_TRACE_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trace_events SEC(".maps");

/* The ring buffer has no value type: this keeps struct trace_event in BTF
 * for the layout check of its TS codec. */
const struct trace_event *mw_btf_trace_event __attribute__((unused));

static __always_inline void mw_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

/* Whether tracing is on: one inlined array load. */
static __always_inline int mw_tracing(void)
{
	__u32 zero = 0;
	struct trace_config *tc = bpf_map_lookup_elem(&trace_config, &zero);

	return tc && tc->enabled;
}

/* Emits a trace event when tracing is on (one inlined array load when off). */
static __always_inline void mw_trace(__u8 program, __u8 verdict, __u32 reason, __u64 cookie,
				     const struct ip_addr *orig, __u16 orig_port,
				     const struct ip_addr *to, __u16 to_port, __u32 uid)
{
	struct trace_event *ev;

	if (!mw_tracing())
		return;
	ev = bpf_ringbuf_reserve(&trace_events, sizeof(*ev), 0);
	if (!ev) {
		mw_count(MW_STAT_TRACE_DROPPED);
		return;
	}
	ev->ts_ns = bpf_ktime_get_ns();
	ev->netns_cookie = cookie;
	mw_addr_copy(&ev->orig, orig);
	mw_addr_copy(&ev->to, to);
	ev->orig_port = orig_port;
	ev->to_port = to_port;
	ev->uid = uid;
	ev->program = program;
	ev->verdict = verdict;
	ev->reason = (__u8)reason;
	__builtin_memset(ev->_pad, 0, sizeof(ev->_pad));
	bpf_ringbuf_submit(ev, bpf_ringbuf_query(&trace_events, BPF_RB_AVAIL_DATA) >= MW_TRACE_WAKEUP_BYTES ?
			       BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

/* ---- policy ---- */

static __always_inline __u8 mw_port_rule(__u64 cookie, __u16 port, __u8 dir)
{
	struct port_rule_key k = {};
	__u8 *v;

	k.netns_cookie = cookie;
	k.port = port;
	k.direction = dir;
	v = bpf_map_lookup_elem(&port_rules, &k);
	return v ? *v : 0;
}

static __always_inline __u8 mw_cidr_rule(__u64 cookie, const struct ip_addr *dst)
{
	struct cidr_key k = {};
	__u64 be = bpf_cpu_to_be64(cookie);
	__u8 *v;

	k.prefixlen = MW_CIDR_FULL_PREFIX;
	__builtin_memcpy(k.netns_cookie, &be, sizeof(be));
	__builtin_memcpy(k.addr, dst->addr, sizeof(k.addr));
	v = bpf_map_lookup_elem(&cidr_rules, &k);
	return v ? *v : 0;
}

/* The proxy's own traffic: proxy_uid or one of exclude_uids. */
static __always_inline int mw_is_proxy(const struct pod_config *cfg, __u32 uid)
{
	__u32 n = cfg->exclude_uid_count;

	if (uid == cfg->proxy_uid)
		return 1;
#pragma unroll
	for (int i = 0; i < MW_MAX_EXCLUDE_UIDS; i++)
		if ((__u32)i < n && cfg->exclude_uids[i] == uid)
			return 1;
	return 0;
}

/* Whether a connection to `port` of the pod goes to its inbound port. */
static __always_inline int mw_captures_inbound(__u64 cookie, const struct pod_config *cfg,
					       __u16 inbound_port, __u16 port)
{
	__u8 r;

	if (port == inbound_port || port == cfg->inbound_port || port == cfg->status_port)
		return 0;
	r = mw_port_rule(cookie, port, MW_DIR_IN);
	if (r == MW_RULE_EXCLUDE)
		return 0;
	if ((cfg->flags & MW_POD_F_HAS_INCLUDE_IN_PORTS) && r != MW_RULE_INCLUDE)
		return 0;
	return 1;
}

/* Whether an app connect() to dst:port goes to the outbound port. */
static __always_inline int mw_captures_outbound(__u64 cookie, const struct pod_config *cfg,
						const struct ip_addr *dst, __u16 port)
{
	__u8 pr = mw_port_rule(cookie, port, MW_DIR_OUT);
	__u8 cr;

	if (pr == MW_RULE_EXCLUDE)
		return 0;
	cr = mw_cidr_rule(cookie, dst);
	if (cr == MW_RULE_EXCLUDE)
		return 0;
	return pr == MW_RULE_INCLUDE || !(cfg->flags & MW_POD_F_HAS_INCLUDE_OUT_CIDRS) ||
	       cr == MW_RULE_INCLUDE;
}

/* ---- connect ---- */

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

/* Makes ctx opaque to the compiler, so it cannot keep a pointer into the
 * context computed earlier (the verifier only allows ctx + constant). */
#define mw_ctx_barrier(ctx) asm volatile("" : "+r"(ctx))
#define MW_CTX_READ(field) (*(volatile typeof(field) *)&(field))

/* Counts and traces a connect decision (to == dst/port when bypassed). */
static __always_inline void mw_connect_done(__u8 program, __u8 verdict, __u32 reason, __u64 cookie,
					    const struct ip_addr *dst, __u16 port,
					    const struct ip_addr *to, __u16 to_port, __u32 uid)
{
	mw_count(reason);
	mw_trace(program, verdict, reason, cookie, dst, port, to, to_port, uid);
}

SEC("cgroup/connect4")
int sidecar_connect4(struct bpf_sock_addr *ctx)
{
	struct pod_config *cfg;
	struct bpf_sock *sk;
	struct ip_addr dst, to;
	__u16 port, new_port = 0;
	__u32 uid, reason = 0;
	__u64 cookie;
	int verdict;

	if (ctx->type != MW_SOCK_STREAM || ctx->protocol != MW_IPPROTO_TCP)
		return 1;
	cookie = bpf_get_netns_cookie(ctx);
	cfg = bpf_map_lookup_elem(&pod_config, &cookie);
	if (!cfg)
		return 1;
	sk = ctx->sk;
	if (!sk)
		return 1;
	mw_addr_set_v4(&dst, ctx->user_ip4);
	port = (__u16)ctx->user_port;
	uid = (__u32)bpf_get_current_uid_gid();
	verdict = mw_connect_verdict(cookie, cfg, &dst, port, uid, &new_port, &reason);
	if (verdict == MW_KEEP) {
		mw_forget_origin(sk);
		mw_connect_done(MW_PROG_CONNECT4, MW_VERDICT_BYPASSED, reason, cookie, &dst, port, &dst, port, uid);
		return 1;
	}
	if (mw_record_origin(sk, &dst, port, MW_AF_INET, verdict)) {
		mw_trace(MW_PROG_CONNECT4, MW_VERDICT_FAILED, MW_STAT_UPDATE_FAILED, cookie, &dst, port, &dst, port, uid);
		return 1;
	}
	mw_addr_copy(&to, &dst);
	if (verdict == MW_TO_OUTBOUND)
		mw_addr_set_v4(&to, bpf_htonl(MW_LOOPBACK4));
	mw_ctx_barrier(ctx);
	if (verdict == MW_TO_OUTBOUND)
		ctx->user_ip4 = bpf_htonl(MW_LOOPBACK4);
	ctx->user_port = new_port;
	mw_connect_done(MW_PROG_CONNECT4, MW_VERDICT_CAPTURED, reason, cookie, &dst, port, &to, new_port, uid);
	return 1;
}

SEC("cgroup/connect6")
int sidecar_connect6(struct bpf_sock_addr *ctx)
{
	struct pod_config *cfg;
	struct bpf_sock *sk;
	struct ip_addr dst, to;
	__u16 port, new_port = 0;
	__u32 uid, reason = 0;
	__u64 cookie;
	int verdict, v4;

	if (ctx->type != MW_SOCK_STREAM || ctx->protocol != MW_IPPROTO_TCP)
		return 1;
	cookie = bpf_get_netns_cookie(ctx);
	cfg = bpf_map_lookup_elem(&pod_config, &cookie);
	if (!cfg)
		return 1;
	sk = ctx->sk;
	if (!sk)
		return 1;
	mw_addr_set_v6(&dst, ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]);
	v4 = mw_addr_is_v4(&dst); /* v4-mapped: IPv4 on the wire */
	port = (__u16)ctx->user_port;
	uid = (__u32)bpf_get_current_uid_gid();
	verdict = mw_connect_verdict(cookie, cfg, &dst, port, uid, &new_port, &reason);
	if (verdict == MW_KEEP) {
		mw_forget_origin(sk);
		mw_connect_done(MW_PROG_CONNECT6, MW_VERDICT_BYPASSED, reason, cookie, &dst, port, &dst, port, uid);
		return 1;
	}
	if (mw_record_origin(sk, &dst, port, v4 ? MW_AF_INET : MW_AF_INET6, verdict)) {
		mw_trace(MW_PROG_CONNECT6, MW_VERDICT_FAILED, MW_STAT_UPDATE_FAILED, cookie, &dst, port, &dst, port, uid);
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
		if (v4) {
			ctx->user_ip6[3] = bpf_htonl(MW_LOOPBACK4); /* ::ffff:127.0.0.1 */
		} else {
			ctx->user_ip6[0] = 0;
			ctx->user_ip6[1] = 0;
			ctx->user_ip6[2] = 0;
			ctx->user_ip6[3] = bpf_htonl(1); /* ::1 */
		}
	}
	ctx->user_port = new_port;
	mw_connect_done(MW_PROG_CONNECT6, MW_VERDICT_CAPTURED, reason, cookie, &dst, port, &to, new_port, uid);
	return 1;
}

/* ---- sockops ---- */

/* A socket's two ends, IPv4 v4-mapped, ports network order. */
struct mw_ends {
	struct ip_addr local;
	struct ip_addr remote;
	__u16 lport;
	__u16 rport;
};

static __always_inline int mw_sockops_ends(struct bpf_sock_ops *ctx, struct mw_ends *e)
{
	/* All fields are read up front, with volatile reads: if the v4 and v6
	 * loads sat in two branches, the compiler would merge them into one
	 * load through a computed ctx pointer, which the verifier rejects. */
	__u32 family = MW_CTX_READ(ctx->family);
	__u32 l4 = MW_CTX_READ(ctx->local_ip4), r4 = MW_CTX_READ(ctx->remote_ip4);
	__u32 l0 = MW_CTX_READ(ctx->local_ip6[0]), l1 = MW_CTX_READ(ctx->local_ip6[1]);
	__u32 l2 = MW_CTX_READ(ctx->local_ip6[2]), l3 = MW_CTX_READ(ctx->local_ip6[3]);
	__u32 r0 = MW_CTX_READ(ctx->remote_ip6[0]), r1 = MW_CTX_READ(ctx->remote_ip6[1]);
	__u32 r2 = MW_CTX_READ(ctx->remote_ip6[2]), r3 = MW_CTX_READ(ctx->remote_ip6[3]);
	__u32 lport = MW_CTX_READ(ctx->local_port), rport = MW_CTX_READ(ctx->remote_port);

	if (family == MW_AF_INET) {
		mw_addr_set_v4(&e->local, l4);
		mw_addr_set_v4(&e->remote, r4);
	} else if (family == MW_AF_INET6) {
		mw_addr_set_v6(&e->local, l0, l1, l2, l3);
		mw_addr_set_v6(&e->remote, r0, r1, r2, r3);
	} else {
		return -1;
	}
	/* local_port is host order; remote_port is the network-order port in
	 * the upper half of a network-order u32. */
	e->lport = bpf_htons((__u16)lport);
	e->rport = bpf_htons((__u16)bpf_ntohl(rport));
	return 0;
}

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

static __always_inline void mw_nat_key(struct nat_key *k, const struct ip_addr *remote,
				       const struct ip_addr *local, __u16 remote_port)
{
	mw_addr_copy(&k->remote, remote);
	mw_addr_copy(&k->local, local);
	k->remote_port = remote_port;
	k->_pad[0] = 0;
	k->_pad[1] = 0;
	k->_pad[2] = 0;
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
	struct mw_ends e = {};
	struct origin *o;

	if (!sk)
		return;
	o = bpf_sk_storage_get(&origin_by_sock, sk, 0, 0);
	if (!o || !o->family || !(o->flags & MW_ORIGIN_F_CONNECT))
		return;
	if (mw_sockops_ends(ctx, &e))
		return;
	mw_tuple_key(ctx, &k, &e.local, e.lport, &e.remote, e.rport);
	if (bpf_map_update_elem(&origin_by_tuple, &k, o, BPF_NOEXIST)) {
		mw_count(MW_STAT_TUPLE_FAILED);
		return;
	}
	o->flags |= MW_ORIGIN_F_TUPLE;
	mw_count(MW_STAT_TUPLE_ADDED);
	mw_watch_close(ctx); /* the entry must not outlive this socket */
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
		} else {
			mw_count(MW_STAT_ACCEPT_FAILED);
		}
		bpf_map_delete_elem(&origin_by_tuple, &k);
		return;
	}

	if (e.lport != cfg->inbound_port)
		return;
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
int sidecar_sockops(struct bpf_sock_ops *ctx)
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

/* ---- getsockopt ---- */

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
int sidecar_getsockopt(struct bpf_sockopt *ctx)
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

/* ---- tc: cross-node inbound DNAT on the pod's host-side veth ---- */

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
int sidecar_tc_to_pod(struct __sk_buff *skb)
{
	struct nat_key nk = {};
	struct mw_pkt p = {};
	struct nat_entry *n;
	__u16 to;

	if (mw_parse_tcp(skb, &p))
		return TC_ACT_UNSPEC;
	mw_nat_key(&nk, &p.saddr, &p.daddr, p.sport);
	if ((p.tcp_flags & (MW_TCP_SYN | MW_TCP_ACK)) == MW_TCP_SYN) {
		to = mw_syn_dnat(skb, &p, &nk);
	} else {
		n = bpf_map_lookup_elem(&inbound_nat, &nk);
		to = n && n->orig_port == p.dport ? n->inbound_port : 0;
	}
	if (!to || to == p.dport)
		return TC_ACT_UNSPEC;
	if (mw_rewrite_port(skb, p.l4_off, MW_TCP_DPORT_OFF, p.dport, to))
		mw_count(MW_STAT_TC_REWRITE_FAILED);
	else
		mw_count(MW_STAT_TC_DNAT);
	return TC_ACT_UNSPEC;
}

/* Ingress of the host veth = packets leaving the pod. */
SEC("tc")
int sidecar_tc_from_pod(struct __sk_buff *skb)
{
	struct nat_key nk = {};
	struct mw_pkt p = {};
	struct nat_entry *n;

	if (mw_parse_tcp(skb, &p))
		return TC_ACT_UNSPEC;
	mw_nat_key(&nk, &p.daddr, &p.saddr, p.dport);
	n = bpf_map_lookup_elem(&inbound_nat, &nk);
	if (!n || p.sport != n->inbound_port || p.sport == n->orig_port)
		return TC_ACT_UNSPEC;
	if (mw_rewrite_port(skb, p.l4_off, MW_TCP_SPORT_OFF, p.sport, n->orig_port)) {
		mw_count(MW_STAT_TC_REWRITE_FAILED);
		return TC_ACT_UNSPEC;
	}
	mw_count(MW_STAT_TC_UNDNAT);
	/* The pod refused a handshake (e.g. no proxy listening): nothing will
	 * ever establish, so do not wait for userspace to age it out. */
	if ((p.tcp_flags & MW_TCP_RST) && !(n->flags & MW_NAT_F_ESTABLISHED) &&
	    !bpf_map_delete_elem(&inbound_nat, &nk))
		mw_count(MW_STAT_NAT_RESET);
	return TC_ACT_UNSPEC;
}

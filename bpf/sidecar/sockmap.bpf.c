// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* sk_msg verdict of sock_pairs: a send on an enrolled socket goes straight
 * to its peer's receive queue (BPF_F_INGRESS), or through TCP (see sockmap.h
 * for the rules). Never SK_DROP: a drop would fail the sender's send(). */
#include "sockmap.h"

SEC("sk_msg")
int mwsc_sk_msg(struct sk_msg_md *msg)
{
	struct sock_key k = {};
	struct mw_ends e = {};
	struct origin *o;
	struct bpf_sock *sk;
	__u32 size;
	__u64 cookie;

	sk = msg->sk;
	if (!sk)
		return SK_PASS;
	o = bpf_sk_storage_get(&origin_by_sock, sk, 0, 0);
	if (!o)
		return SK_PASS; /* enrolled by someone else (the gate): no order state */
	if (o->flags & MW_ORIGIN_F_NATIVE) {
		mw_count(MW_STAT_SOCKMAP_NATIVE);
		return SK_PASS;
	}
	if (!mw_sockmap_on()) {
		o->flags |= MW_ORIGIN_F_NATIVE;
		mw_count(MW_STAT_SOCKMAP_OFF);
		return SK_PASS;
	}
	size = msg->size;
	if (MW_READ_ENDS(msg, &e)) {
		o->flags |= MW_ORIGIN_F_NATIVE;
		return SK_PASS;
	}
	cookie = bpf_get_netns_cookie(msg);
	/* The peer's key: its local end is our remote end. */
	mw_sock_key(&k, cookie, &e.remote, e.rport, &e.local, e.lport);
	if (bpf_msg_redirect_hash(msg, &sock_pairs, &k, BPF_F_INGRESS) != SK_PASS) {
		o->flags |= MW_ORIGIN_F_NATIVE;
		mw_count(MW_STAT_SOCKMAP_MISS);
		return SK_PASS;
	}
	mw_count(MW_STAT_SOCKMAP_MSGS);
	mw_count_add(MW_STAT_SOCKMAP_BYTES, size);
	return SK_PASS;
}

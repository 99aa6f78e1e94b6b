// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* struct ip_addr helpers. Word access goes through memcpy so the compiler
 * neither breaks strict aliasing nor splits it into byte loads (ip_addr is
 * 4-byte aligned). */
#ifndef MW_ADDR_H
#define MW_ADDR_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshwarp.h"

/* Word i (0..3) of the address, network order. */
static __always_inline __u32 mw_addr_word(const struct ip_addr *a, int i)
{
	__u32 w;

	__builtin_memcpy(&w, &a->addr[i * 4], sizeof(w));
	return w;
}

static __always_inline void mw_addr_set_word(struct ip_addr *a, int i, __u32 w)
{
	__builtin_memcpy(&a->addr[i * 4], &w, sizeof(w));
}

/* IPv4 (network order) as ::ffff:a.b.c.d */
static __always_inline void mw_addr_set_v4(struct ip_addr *a, __u32 ip4)
{
	mw_addr_set_word(a, 0, 0);
	mw_addr_set_word(a, 1, 0);
	mw_addr_set_word(a, 2, bpf_htonl(0x0000ffff));
	mw_addr_set_word(a, 3, ip4);
}

static __always_inline void mw_addr_set_v6(struct ip_addr *a, __u32 w0, __u32 w1, __u32 w2, __u32 w3)
{
	mw_addr_set_word(a, 0, w0);
	mw_addr_set_word(a, 1, w1);
	mw_addr_set_word(a, 2, w2);
	mw_addr_set_word(a, 3, w3);
}

static __always_inline int mw_addr_is_v4(const struct ip_addr *a)
{
	return mw_addr_word(a, 0) == 0 && mw_addr_word(a, 1) == 0 &&
	       mw_addr_word(a, 2) == bpf_htonl(0x0000ffff);
}

/* 127.0.0.0/8 (v4-mapped) or ::1 */
static __always_inline int mw_addr_is_loopback(const struct ip_addr *a)
{
	__u32 w3 = mw_addr_word(a, 3);

	if (mw_addr_is_v4(a))
		return (w3 & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000);
	return mw_addr_word(a, 0) == 0 && mw_addr_word(a, 1) == 0 &&
	       mw_addr_word(a, 2) == 0 && w3 == bpf_htonl(1);
}

/* :: or 0.0.0.0 (connect() to it reaches the local host) */
static __always_inline int mw_addr_is_unspecified(const struct ip_addr *a)
{
	__u32 w2 = mw_addr_word(a, 2);

	return mw_addr_word(a, 0) == 0 && mw_addr_word(a, 1) == 0 &&
	       (w2 == 0 || w2 == bpf_htonl(0x0000ffff)) && mw_addr_word(a, 3) == 0;
}

static __always_inline int mw_addr_eq(const struct ip_addr *a, const struct ip_addr *b)
{
	return mw_addr_word(a, 0) == mw_addr_word(b, 0) && mw_addr_word(a, 1) == mw_addr_word(b, 1) &&
	       mw_addr_word(a, 2) == mw_addr_word(b, 2) && mw_addr_word(a, 3) == mw_addr_word(b, 3);
}

static __always_inline void mw_addr_copy(struct ip_addr *dst, const struct ip_addr *src)
{
	__builtin_memcpy(dst, src, sizeof(*dst));
}

#endif /* MW_ADDR_H */

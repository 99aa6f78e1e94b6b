// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Capture policy of a meshed pod: its port and CIDR rules, its proxy's uids,
 * and the inbound/outbound decisions built on them. The semantics are
 * capturesInbound()/capturesOutbound() in src/profiles/policy.ts; the rules
 * are spelled out at struct pod_config in meshwarp.h. */
#ifndef MW_POLICY_H
#define MW_POLICY_H

#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshwarp.h"
#include "mw_sidecar_maps.h"

#define MW_CIDR_FULL_PREFIX	192	/* 64 cookie bits + 128 address bits */

/* The port rule (enum mw_rule, 0 = none) of a pod for port in direction dir. */
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

/* The rule (enum mw_rule, 0 = none) of the pod's longest CIDR match for dst. */
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

/* The proxy's own traffic: proxy_uid or one of exclude_uids. The loop is
 * unrolled: with 4 entries the code stays small, every load is at a constant
 * offset into the map value (nothing for the verifier to bound), and there is
 * no back edge for it to walk iteration by iteration. */
static __always_inline int mw_is_proxy(const struct pod_config *cfg, __u32 uid)
{
	__u32 n = cfg->exclude_uid_count;

#ifdef MW_UPGRADE_V2
	/* The changed program of the upgrade test: reads the field only the new map has. */
	if (cfg->v2_extra == 0xffffffff)
		return 1;
#endif
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

#endif /* MW_POLICY_H */

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Maps of the sidecar dataplane: per-pod config and rules, and the original
 * destination of captured connections. Defined like mw_maps.h (MW_MAP). */
#ifndef MW_SIDECAR_MAPS_H
#define MW_SIDECAR_MAPS_H

#include "mw_maps.h"

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* written by userspace only */
	__uint(max_entries, MW_MAX_PODS);
	__type(key, __u64);			/* netns cookie */
	__type(value, struct pod_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pod_config SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* written by userspace only */
	__uint(max_entries, MW_MAX_PORT_RULES);
	__type(key, struct port_rule_key);
	__type(value, __u8);			/* enum mw_rule */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} port_rules SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, MW_MAX_CIDR_RULES);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* required for LPM tries */
	__type(key, struct cidr_key);
	__type(value, __u8);			/* enum mw_rule */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} cidr_rules SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* required for socket storage */
	__type(key, int);
	__type(value, struct origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} origin_by_sock SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MW_MAX_TUPLES);
	__type(key, struct tuple_key);
	__type(value, struct origin);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} origin_by_tuple SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MW_MAX_INBOUND_NAT);
	__type(key, struct nat_key);
	__type(value, struct nat_entry);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} inbound_nat SEC(".maps");

#include "mw_dns_maps.h"

/* The servers each captured DNS socket asked (struct dns_sock). */
MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* required for socket storage */
	__type(key, int);
	__type(value, struct dns_sock);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dns_by_sock SEC(".maps");

/* sockmap acceleration (S4, see struct sock_key): the enrolled socket pairs, and the off switch. */
MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, MW_MAX_SOCK_PAIRS);
	__type(key, struct sock_key);
	__type(value, __u64);			/* socket (fd from userspace, cookie on lookup) */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sock_pairs SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sockmap_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} sockmap_config SEC(".maps");

#endif /* MW_SIDECAR_MAPS_H */

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* The pods' nameservers (S6), one map for every dataplane that captures DNS
 * (sidecar, ambient); defined like mw_maps.h (MW_MAP). */
#ifndef MW_DNS_MAPS_H
#define MW_DNS_MAPS_H

#include "mw_maps.h"

/* DNS capture (S6, see struct dns_server_key): the pods' nameservers. */
MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* written by userspace only */
	__uint(max_entries, MW_MAX_DNS_SERVERS);
	__type(key, struct dns_server_key);
	__type(value, __u8);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} dns_servers SEC(".maps");

#endif /* MW_DNS_MAPS_H */

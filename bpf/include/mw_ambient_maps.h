// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Maps of the ambient dataplane; defined like mw_maps.h (MW_MAP). am_pods and
 * am_ifaces are sized by the agent at load (max pods per node with headroom);
 * the default below is what a load without that setting gets. */
#ifndef MW_AMBIENT_MAPS_H
#define MW_AMBIENT_MAPS_H

#include "mw_maps.h"
#include "mw_ambient.h"
#include "mw_dns_maps.h"

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* written by userspace only */
	__uint(max_entries, MW_MAX_PODS);
	__type(key, struct ip_addr);
	__type(value, struct am_pod);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} am_pods SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* written by userspace only */
	__uint(max_entries, MW_MAX_PODS);
	__type(key, __u32);
	__type(value, struct am_iface);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} am_ifaces SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct am_node);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} am_node SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MW_AM_MAX_PROXIES);
	__type(key, __u32);
	__type(value, struct am_proxy);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} am_proxies SEC(".maps");

/* DNS queries in flight, from the query to its reply (struct am_dns_query). */
MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, MW_AM_DNS_QUERIES);
	__type(key, struct am_dns_key);
	__type(value, struct am_dns_query);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} am_dns_queries SEC(".maps");

/* TIME_WAIT hand-off (proxy.bpf.c): per CPU, the SYN handed over and the
 * listener it must reach. Both are overwritten by the next hand-off on that
 * CPU; a listener leaves am_tw_listener by itself when it closes. */
MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct am_tw_hint);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} am_tw_hint SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, MW_AM_MAX_CPUS);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} am_tw_listener SEC(".maps");

#endif /* MW_AMBIENT_MAPS_H */

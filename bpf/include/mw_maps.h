// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Maps every meshwarp dataplane shares: the meshed pods of this node by IP,
 * the node's own addresses, the counters and the trace. All are pinned by
 * name under the agent's maps/ directory, so every object of the node sees
 * the same ones. Maps that programs insert into on hot paths are
 * preallocated; maps only userspace writes are not, so an idle node does not
 * pay for capacity.
 *
 * An object made of several translation units defines each map in exactly
 * one of them (the one that defines MW_DEFINE_MAPS before its includes); the
 * others see the same text as an extern declaration. `bpftool gen object`
 * (libbpf's static linker) resolves them and rejects a declaration that
 * differs from the definition.
 */
#ifndef MW_MAPS_H
#define MW_MAPS_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "meshwarp.h"

#ifdef MW_DEFINE_MAPS
#define MW_MAP
#else
#define MW_MAP extern
#endif

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);	/* written by userspace only */
	__uint(max_entries, MW_MAX_PODS);
	__type(key, struct ip_addr);		/* pod IP */
	__type(value, struct local_pod);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} local_pods SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MW_MAX_NODE_IPS);
	__type(key, struct ip_addr);
	__type(value, __u8);			/* any value: present = node IP */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} node_ips SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MW_STAT_SLOTS);
	__type(key, __u32);			/* enum mw_stat */
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} stats SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct trace_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trace_config SEC(".maps");

MW_MAP struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, MW_TRACE_RINGBUF_BYTES);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} trace_events SEC(".maps");

#endif /* MW_MAPS_H */

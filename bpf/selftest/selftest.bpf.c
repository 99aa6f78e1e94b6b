// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Small programs, one of each kind meshwarp uses, for the binding's kernel
 * tests and `meshwarp doctor`: cgroup connect4 rewrite, tc and tcx on a veth,
 * ring buffer delivery, pinned maps. Not part of any datapath. The st_ prefix
 * keeps them apart from the datapath's mw programs.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "mw_tc.h"

#define ST_SOCK_STREAM	1
#define ST_LOOPBACK4	0x7f000001

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader before load (tests the .rodata config path). */
const volatile __u16 st_from_port = 0;	/* host order */
const volatile __u16 st_to_port = 0;	/* host order */

/* One event per rewritten connect; mirrored by selftestEvent in TS. */
struct st_event {
	__u64 cookie;
	__u32 orig_ip4;		/* network order */
	__u16 orig_port;	/* host order */
	__u16 new_port;		/* host order */
	__u32 uid;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} st_events SEC(".maps");

/* [0] connects rewritten, [1] tc packets seen; pinned so a second process
 * can read it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} st_counters SEC(".maps");

/* tcx ordering: [0] sequence, [1] position of prog a, [2] position of prog b. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u32);
} st_order SEC(".maps");

/* A tiny hash map to exercise "map full" from userspace. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u32);
} st_hash SEC(".maps");

/* Keeps struct st_event in BTF for the layout check. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct st_event);
} st_last SEC(".maps");

/* st_counters is one array shared by all CPUs and tests expect exact counts,
 * so the add is atomic (unlike mw_count's per-CPU increment). */
static __always_inline void st_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&st_counters, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

SEC("cgroup/connect4")
int st_connect4(struct bpf_sock_addr *ctx)
{
	struct st_event ev = {};
	__u32 zero = 0;

	if (ctx->type != ST_SOCK_STREAM || bpf_ntohs(ctx->user_port) != st_from_port)
		return 1;
	ev.cookie = bpf_get_socket_cookie(ctx);
	ev.orig_ip4 = ctx->user_ip4;
	ev.orig_port = st_from_port;
	ev.new_port = st_to_port;
	ev.uid = (__u32)bpf_get_current_uid_gid();
	ctx->user_ip4 = bpf_htonl(ST_LOOPBACK4);
	ctx->user_port = bpf_htons(st_to_port);
	st_count(0);
	bpf_map_update_elem(&st_last, &zero, &ev, BPF_ANY);
	bpf_ringbuf_output(&st_events, &ev, sizeof(ev), 0);
	return 1;
}

SEC("tc")
int st_tc_count(struct __sk_buff *skb)
{
	st_count(1);
	return MW_TC_NEXT;
}

/* Records at which position of the tcx chain the program in `slot` ran
 * first, then passes the packet on to the next one. */
static __always_inline int st_record_order(__u32 slot)
{
	__u32 zero = 0;
	__u32 *seq = bpf_map_lookup_elem(&st_order, &zero);
	__u32 *pos = bpf_map_lookup_elem(&st_order, &slot);

	/* Not __sync_fetch_and_add(seq, 1): with -mcpu=v3 that is BPF_ATOMIC|BPF_FETCH
	 * (Linux >= 5.12) and 5.10 would reject the whole object. The order test sends
	 * one packet at a time, so a plain read-modify-write is exact. */
	if (seq && pos && *pos == 0) {
		__u32 next = *seq + 1;

		*seq = next;
		*pos = next;
	}
	return MW_TC_NEXT;
}

SEC("tc")
int st_tcx_a(struct __sk_buff *skb)
{
	return st_record_order(1);
}

SEC("tc")
int st_tcx_b(struct __sk_buff *skb)
{
	return st_record_order(2);
}

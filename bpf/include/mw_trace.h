// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Counting (stats) and tracing (trace_events) of datapath decisions. */
#ifndef MW_TRACE_H
#define MW_TRACE_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "meshwarp.h"
#include "mw_addr.h"
#include "mw_maps.h"

/*
 * Bumps counter idx (enum mw_stat) of this CPU. A plain increment, not an
 * atomic one: stats is per-CPU, so no other CPU writes this slot, and
 * userspace sums the CPUs. The one race left is a program interrupted on the
 * same CPU, between load and store, by another that bumps the same counter
 * (a tc program in softirq, or another task's connect on a preemptible
 * kernel): that loses one count, which is fine for statistics and cheaper
 * than a locked add on every decision. (The selftest's counters are one
 * shared array that tests read exactly: it adds atomically.)
 */
static __always_inline void mw_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

/* Adds n to counter idx of this CPU (byte counters); same race as mw_count. */
static __always_inline void mw_count_add(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += n;
}

/* Whether tracing is on: one inlined array load. */
static __always_inline int mw_tracing(void)
{
	__u32 zero = 0;
	struct trace_config *tc = bpf_map_lookup_elem(&trace_config, &zero);

	return tc && tc->enabled;
}

/* Emits a trace event when tracing is on (one inlined array load when off).
 * program is an enum mw_trace_prog, verdict an enum mw_trace_verdict, reason
 * the enum mw_stat the decision counted. */
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

#endif /* MW_TRACE_H */

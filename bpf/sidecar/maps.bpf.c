// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* What the sidecar object holds exactly once, whatever unit uses it: the
 * map definitions (the other units see them extern), the config globals,
 * the license and the BTF anchors. */
#define MW_DEFINE_MAPS
#include "sidecar.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 mw_flags = 0;

/*
 * Types TS mirrors that nothing else would put in BTF: the ring buffer has no
 * value type, and the enums type no struct field (fields are fixed-size
 * integers). A never-read pointer to this struct makes clang emit them all,
 * for the checks in test/unit/btf-layout.test.ts. Members are by value:
 * behind a pointer member clang would emit only a forward declaration.
 */
struct mw_btf_anchor {
	struct trace_event trace_event;
	struct sock_key sock_key;
	struct sockmap_config sockmap_config;
	enum mw_stat stat;
	enum mw_pod_limit pod_limit;
	enum mw_pod_flag pod_flag;
	enum mw_dir dir;
	enum mw_rule rule;
	enum mw_origin_flag origin_flag;
	enum mw_nat_flag nat_flag;
	enum mw_trace_prog trace_prog;
	enum mw_trace_verdict trace_verdict;
	enum mw_dns_limit dns_limit;
	enum mw_dns_flag dns_flag;
};

const struct mw_btf_anchor *mw_btf_anchor __attribute__((unused));

// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* What the ambient object holds exactly once: the map definitions (the
 * other units see them extern), the license and the BTF anchors. */
#define MW_DEFINE_MAPS
#include "ambient.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Types and enums TS mirrors that no map field would put in BTF (see
 * bpf/sidecar/maps.bpf.c). */
struct mw_am_btf_anchor {
	struct trace_event trace_event;
	enum mw_stat stat;
	enum mw_trace_prog trace_prog;
	enum mw_trace_verdict trace_verdict;
	enum mw_am_limit am_limit;
	enum mw_am_fail am_fail;
	enum mw_am_proxy_flag am_proxy_flag;
	enum mw_am_dns_limit am_dns_limit;
};

const struct mw_am_btf_anchor *mw_am_btf_anchor __attribute__((unused));

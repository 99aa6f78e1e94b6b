// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/* Return codes of tc programs, under tcx links and legacy cls_bpf alike. */
#ifndef MW_TC_H
#define MW_TC_H

#include <linux/pkt_cls.h>

/*
 * "Not my business, go on": tcx runs the next program of the chain, then the
 * device's default (TCX_NEXT); cls_bpf does the same for TC_ACT_UNSPEC. Both
 * are -1. Ours, because the build host's uapi headers may predate tcx (6.6)
 * and a #define TCX_NEXT would clash with newer headers' enum.
 */
#define MW_TC_NEXT	(-1)

_Static_assert(MW_TC_NEXT == TC_ACT_UNSPEC, "tcx and cls_bpf must share the pass-on code");

#endif /* MW_TC_H */

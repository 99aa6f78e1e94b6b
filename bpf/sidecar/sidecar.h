// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Sidecar-mode datapath: one object, build/bpf/sidecar.bpf.o, linked from
 * one translation unit per hook (the Makefile links every .bpf.c of this
 * directory).
 *
 *  connect.bpf.c     cgroup/connect4|6: a meshed pod's TCP connect() goes to
 *                    its proxy's outbound port; the proxy's connect() to
 *                    another meshed pod on this node goes to that pod's
 *                    inbound port. The original destination goes to the
 *                    socket's storage.
 *  sockops.bpf.c     hands the original destination from the connecting
 *                    socket to the proxy's accepted socket (origin_by_tuple
 *                    holds it only during the handshake), and binds
 *                    cross-node inbound connections to their inbound_nat
 *                    entry so it is deleted when the socket closes.
 *                    Also enrols same-netns loopback pairs in sock_pairs.
 *  sockmap.bpf.c     sk_msg: sends of an enrolled socket go straight to its
 *                    peer's receive queue (S4, rules in sockmap.h).
 *  getsockopt.bpf.c  answers SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST on
 *                    accepted proxy sockets; everything else passes untouched.
 *  dns.bpf.c         cgroup/sendmsg4|6, recvmsg4|6, getpeername4|6: DNS
 *                    capture (dns.h; the connect programs call
 *                    mw_dns_connect first for connected UDP and TCP 53).
 *  tc.bpf.c          cross-node inbound: DNAT of the pod-bound SYN to the
 *                    inbound port on the host veth, and the reverse.
 *  maps.bpf.c        what exists once per object: maps, config, license,
 *                    BTF anchors.
 *
 * Safety rules: a pod without pod_config is never touched; no program ever
 * fails a connect() or drops a packet; a failed map update leaves the
 * connection uncaptured and counts it in stats.
 */
#ifndef MW_SIDECAR_H
#define MW_SIDECAR_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "meshwarp.h"
#include "mw_addr.h"
#include "mw_sidecar_maps.h"
#include "mw_trace.h"

/* Node-level config, set by the loader before load (.rodata, defined in
 * maps.bpf.c). Reserved, no bits yet. */
extern const volatile __u32 mw_flags;

/* inbound_nat key of a connection, seen from the pod (see struct nat_key). */
static __always_inline void mw_nat_key(struct nat_key *k, const struct ip_addr *remote,
				       const struct ip_addr *local, __u16 remote_port)
{
	mw_addr_copy(&k->remote, remote);
	mw_addr_copy(&k->local, local);
	k->remote_port = remote_port;
	k->_pad[0] = 0;
	k->_pad[1] = 0;
	k->_pad[2] = 0;
}

#endif /* MW_SIDECAR_H */

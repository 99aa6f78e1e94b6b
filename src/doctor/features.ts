// SPDX-License-Identifier: Apache-2.0
// From probe results to a verdict per feature of the mission's table. Pure.
// A feature is judged on whether this machine can run it, whether or not
// meshwarp implements it yet: "unavailable" = a hard need is missing,
// "degraded" = it runs with a documented fallback or without a part.
import { feature, isFeatureId } from '../bpf/features.ts';
import { CNI_PLUGIN_DIR, progId, mapId, attachId, helperId, objectId, toolId } from './catalog.ts';

export type Status = 'ready' | 'degraded' | 'unavailable';

export interface ProbeResult { id: string; ok: boolean; detail: string }

/** Probes a feature depends on. `soft` ones only degrade it, with `advice`. */
export interface FeatureRule {
  id: string;
  name: string;
  /** Needed by the default sidecar eBPF mode: when unavailable, doctor exits 1. */
  required: boolean;
  needs: string[];
  soft?: { probes: string[]; advice: string }[];
}

export interface FeatureVerdict {
  id: string;
  name: string;
  status: Status;
  required: boolean;
  /** Probe ids this feature depends on (hard and soft). */
  requires: string[];
  /** What to do; empty when ready. */
  advice: string;
}

const P = progId, M = mapId, A = attachId, H = helperId, O = objectId, T = toolId;

// Shared groups of needs.
const BASE = ['privileges', 'cgroup2', 'bpffs'];
const CONNECT = [P('cgroup_sock_addr'), A('connect4'), H('cgroup_sock_addr', 'get_netns_cookie'), H('cgroup_sock_addr', 'get_current_uid_gid')];
const ORIGIN = [M('sk_storage'), H('cgroup_sock_addr', 'sk_storage_get'), P('sock_ops'), H('sock_ops', 'sk_storage_get')];
const SIDECAR = O('sidecar');
/** Every probe the sidecar object needs to load (src/bpf/features.ts DATAPATHS): names what 5.10 lacks. */
const SIDECAR_DP = 'datapath.sidecar';
const NO_V6 = (what: string) => ({ probes: [A('connect6')], advice: `IPv6 ${what} not captured (cgroup/connect6 missing)` });
const TCX = { probes: ['tcx'], advice: `kernel lacks tcx (Linux >= ${feature('tcx').since}): meshwarp falls back to legacy tc (cls_bpf) — degraded, works` };

export const FEATURES: FeatureRule[] = [
  { id: 'S1', name: 'sidecar outbound capture', required: true, needs: [...BASE, ...CONNECT, ...ORIGIN.slice(0, 2), SIDECAR, SIDECAR_DP], soft: [NO_V6('connects are')] },
  { id: 'S2', name: 'original destination (getsockopt)', required: true,
    needs: [...BASE, P('cgroup_sockopt'), A('getsockopt'), H('cgroup_sockopt', 'sk_storage_get'), H('cgroup_sockopt', 'get_netns_cookie'), ...ORIGIN, SIDECAR, SIDECAR_DP] },
  { id: 'S3', name: 'inbound capture', required: true,
    needs: [...BASE, ...CONNECT, ...ORIGIN, H('sock_ops', 'get_netns_cookie'), H('sock_ops', 'sock_ops_cb_flags_set'), P('sched_cls'), SIDECAR, SIDECAR_DP],
    soft: [NO_V6('inbound connects are')] },
  { id: 'S4', name: 'sockmap/sk_msg acceleration', required: false,
    needs: ['privileges', P('sock_ops'), P('sk_msg'), M('sockhash'), H('sock_ops', 'sock_hash_update'), H('sk_msg', 'msg_redirect_hash')] },
  { id: 'S5', name: 'exclusions and bypass', required: true, needs: [...BASE, ...CONNECT, M('lpm_trie'), SIDECAR, SIDECAR_DP] },
  { id: 'S6', name: 'UDP DNS capture', required: false,
    needs: [...BASE, P('cgroup_sock_addr'), A('sendmsg4'), A('recvmsg4'), H('cgroup_sock_addr', 'get_netns_cookie'), M('sk_storage')],
    soft: [{ probes: [A('sendmsg6'), A('recvmsg6')], advice: 'IPv6 DNS not captured (cgroup udp6 sendmsg/recvmsg missing)' },
      { probes: [A('getpeername4'), A('getpeername6')], advice: 'connected DNS sockets see the proxy as their peer (cgroup getpeername4/6 missing, kernel < 5.8)' }] },
  { id: 'S7', name: 'mesh profiles', required: true, needs: [...BASE, ...CONNECT, SIDECAR, SIDECAR_DP] },
  { id: 'A1', name: 'ambient capture (tc on pod veths)', required: false,
    needs: ['privileges', 'bpffs', P('sched_cls'), H('sched_cls', 'redirect'), O('ambient'), 'datapath.ambient'],
    soft: [{ probes: [H('sched_cls', 'redirect_peer')], advice: 'no bpf_redirect_peer: delivery takes one more hop through the host stack' },
      { probes: ['tcx'], advice: `kernel lacks tcx (Linux >= ${feature('tcx').since}): ambient programs attach as legacy cls_bpf at their own priority — degraded, works` }] },
  // sk_lookup + sockmap: a SYN that meets the proxy's TIME_WAIT socket of its tuple (docs/ambient.md).
  { id: 'A2', name: 'node-proxy delivery (bpf_sk_assign, sk_lookup)', required: false,
    needs: ['privileges', P('sched_cls'), H('sched_cls', 'sk_assign'), H('sched_cls', 'skc_lookup_tcp'), H('sched_cls', 'sk_release'),
      P('sk_lookup'), M('sockmap'), O('ambient'), 'datapath.ambient'] },
  { id: 'A3', name: 'node-proxy absence policy', required: false, needs: ['privileges', 'bpffs', P('sched_cls'), O('ambient'), 'datapath.ambient'] },
  { id: 'C1', name: 'chained CNI plugin', required: false, needs: ['node'] },
  { id: 'C2', name: 'CNI config installer', required: false, needs: ['node'] },
  { id: 'C3', name: 'agent (redirection control plane)', required: true, needs: [...BASE, 'node', SIDECAR, SIDECAR_DP] },
  { id: 'C4', name: 'Kubernetes integration', required: false, needs: ['node'] },
  { id: 'C5', name: 'mode switch ebpf/iptables', required: false, needs: [T('iptables')],
    soft: [{ probes: [T('ip6tables')], advice: 'iptables mode without IPv6: install ip6tables (apt-get install iptables)' }] },
  { id: 'T1', name: 'tc coexistence (tcx / cls_bpf)', required: false, needs: ['privileges', P('sched_cls')], soft: [TCX] },
  { id: 'O1', name: 'trace ring buffer', required: false, needs: ['privileges', M('ringbuf'), H('cgroup_sock_addr', 'ringbuf_output')],
    soft: [{ probes: [H('sched_cls', 'ringbuf_output')], advice: 'tc programs cannot emit trace events' }] },
  { id: 'O2', name: 'metrics and status', required: false, needs: ['privileges', 'bpffs', 'node'] },
  { id: 'O3', name: 'doctor', required: false, needs: ['node'] },
  { id: 'L1', name: 'lab (netns topology, demo)', required: false, needs: [...BASE, T('ip'), T('cni_plugins'), SIDECAR, SIDECAR_DP] },
  { id: 'B1', name: 'A/B benchmark', required: false, needs: [...BASE, T('ip'), T('iptables'), SIDECAR, SIDECAR_DP],
    soft: [{ probes: [P('sk_msg'), M('sockhash'), H('sk_msg', 'msg_redirect_hash')], advice: 'no eBPF+sockmap column' }] },
  { id: 'R1', name: 'restart keeps traffic (pins)', required: true, needs: [...BASE, SIDECAR, SIDECAR_DP] },
  { id: 'N1', name: 'NetworkPolicy still honoured', required: false, needs: [...BASE, T('iptables')] },
  { id: 'D1', name: 'IPv4 + IPv6 dual stack', required: false, needs: ['ipv6'],
    soft: [{ probes: [A('connect6')], advice: 'no cgroup/connect6: IPv6 is not captured' },
      { probes: [T('ip6tables')], advice: 'no ip6tables: iptables mode is IPv4 only' }] },
];

/** What to do when a probe fails (the probe's detail says what was found). */
export function adviceFor(id: string, detail = ''): string {
  if (id === 'privileges' || detail.startsWith('not probed')) return 'run as root (needs CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)';
  switch (id) {
    case 'cgroup2': return 'mount cgroup2 (mount -t cgroup2 none /sys/fs/cgroup/unified) or boot with systemd.unified_cgroup_hierarchy=1';
    case 'bpffs': return 'mount bpffs: meshwarp doctor --fix';
    case 'btf': return 'use a kernel built with CONFIG_DEBUG_INFO_BTF=y';
    case 'ipv6': return 'enable IPv6 (sysctl net.ipv6.conf.all.disable_ipv6=0)';
    case 'node': return 'use Node.js >= 24 (scripts/setup.sh installs it under .tools/)';
    case 'tcx': return TCX.advice;
    case T('iptables'): case T('ip6tables'): return 'install iptables (apt-get install iptables)';
    case T('ip'): case T('tc'): return 'install iproute2 (apt-get install iproute2)';
    case T('clang'): return 'install clang to rebuild the datapath (apt-get install clang)';
    case T('cni_plugins'): return `install the reference CNI plugins into ${CNI_PLUGIN_DIR} (apt-get install containernetworking-plugins)`;
  }
  if (id.startsWith('object.')) {
    const name = id.slice('object.'.length);
    return detail.includes('not built') ? 'build the datapath: make bpf (needs clang)' : `the kernel rejects build/bpf/${name}.bpf.o (see check ${id})`;
  }
  if (id.startsWith('datapath.')) {
    // The detail names every missing probe: repeat them, with the minimum and the way out (docs/kernels.md).
    const f = feature(id as 'datapath.sidecar');
    const missing = /missing ([^—]+) —/.exec(detail)?.[1]?.trim();
    return `${f.name} needs Linux >= ${f.since}${missing ? ` (missing ${missing})` : ''}${id === 'datapath.sidecar' ? '; on this kernel use --engine iptables or the ambient dataplane' : ''} (see check ${id}, docs/kernels.md)`;
  }
  if (isFeatureId(id)) {
    const f = feature(id);
    return `kernel lacks ${f.name}: upgrade to Linux >= ${f.since}`;
  }
  return `check ${id} failed`;
}

/** Judges every feature against probe results; an id without a result counts as failed. */
export function judge(checks: ProbeResult[]): FeatureVerdict[] {
  const byId = new Map(checks.map((c) => [c.id, c]));
  const failed = (ids: string[]) => ids.filter((id) => byId.get(id)?.ok !== true);
  const adviceOf = (ids: string[]) => dedupe(ids.map((id) => adviceFor(id, byId.get(id)?.detail)));
  return FEATURES.map((f) => {
    const hard = failed(f.needs);
    const soft = (f.soft ?? []).filter((s) => failed(s.probes).length > 0);
    const requires = dedupe([...f.needs, ...(f.soft ?? []).flatMap((s) => s.probes)]);
    let status: Status = 'ready';
    let advice = '';
    if (hard.length > 0) {
      status = 'unavailable';
      advice = adviceOf(hard).join('; ');
    } else if (soft.length > 0) {
      status = 'degraded';
      advice = dedupe(soft.map((s) => s.advice)).join('; ');
    }
    return { id: f.id, name: f.name, status, required: f.required, requires, advice };
  });
}

/** 1 when a feature the default sidecar eBPF mode needs is unavailable, else 0. */
export function exitCode(features: FeatureVerdict[]): number {
  return features.some((f) => f.required && f.status === 'unavailable') ? 1 : 0;
}

/**
 * How bad a check is: 'fail' when a feature of the default sidecar eBPF mode
 * cannot do without it, 'warn' for any other failure (optional feature,
 * fallback, informational).
 */
export function severity(check: ProbeResult): 'ok' | 'warn' | 'fail' {
  if (check.ok) return 'ok';
  return FEATURES.some((f) => f.required && f.needs.includes(check.id)) ? 'fail' : 'warn';
}

function dedupe<T>(xs: T[]): T[] { return [...new Set(xs)]; }

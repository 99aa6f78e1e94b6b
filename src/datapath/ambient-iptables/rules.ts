// SPDX-License-Identifier: Apache-2.0
// The ambient dataplane's in-pod rules (engine iptables, what Istio >= 1.21 ships), pure and
// unit-tested: restore scripts for the mangle table inside one enrolled pod's netns, and the
// probe SNAT chain in the node's nat table. The node proxy's listeners live in that same pod
// netns (it opened them there when the agent sent it the pod, docs/ambient.md), so
// redirection is TPROXY on the same host, for IPv4 and IPv6 alike (no SO_ORIGINAL_DST needed:
// the accepted socket's local address is the original destination).
//
//   mangle PREROUTING -j MESHWARP_AM_PRE
//     -i lo, marked <M>        TPROXY to outbound   (the pod's own SYNs, rerouted to lo below)
//     -i lo                    RETURN
//     -s <probe address>       RETURN                am_bypass_host (kubelet, SNATed on the node)
//     SYN to a pod address     TPROXY to inbound     am_captured_in
//   mangle OUTPUT -j MESHWARP_AM_OUT
//     -o lo                    RETURN                (the pod talking to itself)
//     -j MESHWARP_AM_SRC       anti-spoof: a source that is not the pod's is dropped (am_spoof)
//     -m cgroup --path <proxy> RETURN                am_bypass_proxy (each live instance)
//     connmark <M>             MARK <M>              (later packets of a captured flow)
//     SYN                      -j MESHWARP_AM_CAP    am_captured_out: connmark+mark <M>; the
//                                                    mark routes it to lo (ip rule, table T)
//   nat OUTPUT -p udp/tcp --dport 53 -j MESHWARP_AM_DNS   (DNS, S6, Istio's in-pod way)
//     -m cgroup --path <proxy> RETURN                dns_bypass_proxy (its upstream queries)
//     -d <nameserver> -p udp|tcp REDIRECT --to-ports <dns>   dns_captured (the proxy's DNS
//                                                    listener in this netns, 127.0.0.1/::1;
//                                                    conntrack restores the reply's source)
//     -d <nameserver> -p udp RETURN                  dns_no_listener (no ready proxy announced
//                                                    a DNS port: the real server answers)
//   mangle OUTPUT also RETURNs UDP 53 to the nameservers (never dropped by `closed`: DNS fails
//   open) and, while capturing, TCP 53 (REDIRECTed above, not TPROXYed to outbound); mangle
//   PREROUTING lets the nameservers' UDP replies through.
//   nat POSTROUTING (node netns) -j MESHWARP_AM_PROBE
//     -d <enrolled pod address> -m owner --socket-exists  SNAT to the probe address
//
// Only SYNs start a capture, so flows older than the enrolment pass untouched. With no
// ready node proxy the SYN rules become DROP (am_fail_closed, UDP too) or RETURN
// (am_fail_open). Only these five chains and their jump lines are ever touched.
import { formatIp, type IpAddr } from '../../profiles/ip.ts';
import { address, type Family } from '../iptables/rules.ts';

export const AM_CHAIN = {
  pre: 'MESHWARP_AM_PRE',
  out: 'MESHWARP_AM_OUT',
  src: 'MESHWARP_AM_SRC',
  cap: 'MESHWARP_AM_CAP',
  probe: 'MESHWARP_AM_PROBE',
  dns: 'MESHWARP_AM_DNS',
} as const;
export const POD_CHAINS: readonly string[] = [AM_CHAIN.pre, AM_CHAIN.out, AM_CHAIN.src, AM_CHAIN.cap];
export const POD_JUMPS = [
  { hook: 'PREROUTING', spec: `-j ${AM_CHAIN.pre}` },
  { hook: 'OUTPUT', spec: `-j ${AM_CHAIN.out}` },
] as const;
export const NODE_JUMP = { hook: 'POSTROUTING', spec: `-j ${AM_CHAIN.probe}` } as const;
/** The pod netns's nat table: DNS capture. */
export const DNS_CHAINS: readonly string[] = [AM_CHAIN.dns];
export const DNS_JUMPS = [
  { hook: 'OUTPUT', spec: `-p udp -m udp --dport 53 -j ${AM_CHAIN.dns}` },
  { hook: 'OUTPUT', spec: `-p tcp -m tcp --dport 53 -j ${AM_CHAIN.dns}` },
] as const;

/** Where kubelet's probes appear to come from inside the pod (Istio's in-pod addresses). */
export const PROBE_SOURCE: Record<Family, string> = { 4: '169.254.7.127', 6: 'fd16:9254:7127:1337:ffff:ffff:ffff:ffff' };
const HOST_LEN: Record<Family, number> = { 4: 32, 6: 128 };

/** What the SYN rules do: redirect to a ready node proxy, or, with none ready, the failure policy. */
export type CaptureMode = 'redirect' | 'closed' | 'open';

export interface PodRulesInput {
  /** The pod's addresses (any family; the others are ignored). */
  ips: readonly string[];
  ports: { outbound: number; inbound: number };
  /** The single mark bit of capture (routes to lo and tags the flow's connmark). */
  mark: number;
  /** cgroup v2 paths (relative to the mount, starting with /) of the live node proxy instances. */
  proxyCgroups: readonly string[];
  mode: CaptureMode;
  /** The pod's nameservers (any family): DNS capture to them. */
  dnsServers?: readonly string[];
  /** The active proxy's DNS listener (in this netns); undefined: not capturing DNS (queries reach the servers). */
  dnsPort?: number;
}

/** One table of `*-save` output: its chains and `-A` lines (counters stripped into `counts`). */
export interface TableState {
  chains: Set<string>;
  rules: string[];
  /** Packet counters by rule comment (only rules with `-m comment`). */
  counts: Map<string, bigint>;
}

export function parseTableSave(text: string, table: string): TableState {
  const st: TableState = { chains: new Set(), rules: [], counts: new Map() };
  let inTable = false;
  for (const raw of text.split('\n')) {
    let line = raw.trimEnd();
    if (line.startsWith('*')) { inTable = line === `*${table}`; continue; }
    if (!inTable || line.startsWith('#')) continue;
    let packets = 0n;
    const c = /^\[(\d+):\d+\] /.exec(line);
    if (c) { packets = BigInt(c[1]); line = line.slice(c[0].length); }
    if (line.startsWith(':')) st.chains.add(line.slice(1).split(' ')[0]);
    else if (line.startsWith('-A ')) {
      st.rules.push(line);
      const m = / --comment "?([a-z_]+)"?/.exec(line);
      if (m) st.counts.set(m[1], (st.counts.get(m[1]) ?? 0n) + packets);
    }
  }
  return st;
}

function hosts(family: Family, ips: readonly string[]): string[] {
  return [...new Set(ips.map((t) => address('pod IP', t)).filter((ip: IpAddr) => ip.family === family)
    .map((ip) => `${formatIp(ip)}/${HOST_LEN[family]}`))];
}

function checkPort(what: string, p: number): number {
  if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`${what}: expected a port 1-65535, got ${p}`);
  return p;
}

/** A cgroup path as `-m cgroup --path` takes it; anything odd is refused (it goes into a script). */
export function cgroupArg(path: string): string {
  if (!/^\/[A-Za-z0-9_.:@/-]*$/.test(path) || path.split('/').includes('..')) throw new Error(`cgroup: ${JSON.stringify(path)} is not a plain cgroup path`);
  return path;
}

const comment = (c: string) => `-m comment --comment ${c}`;

/** The `-A` lines of our four pod chains, one family. */
export function podChainRules(family: Family, input: PodRulesInput): string[] {
  const outPort = checkPort('ports.outbound', input.ports.outbound);
  const inPort = checkPort('ports.inbound', input.ports.inbound);
  if (!Number.isInteger(input.mark) || input.mark <= 0 || (input.mark & (input.mark - 1)) !== 0) throw new Error(`mark: expected one bit, got ${input.mark}`);
  const M = `0x${input.mark.toString(16)}/0x${input.mark.toString(16)}`;
  const own = hosts(family, input.ips);
  const P = AM_CHAIN.pre;
  const O = AM_CHAIN.out;
  const S = AM_CHAIN.src;
  const syn = '-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN';
  const out: string[] = [];
  if (input.mode === 'redirect') out.push(`-A ${P} -i lo -p tcp -m mark --mark ${M} -j TPROXY --on-port ${outPort} --tproxy-mark ${M}`);
  out.push(`-A ${P} -i lo -j RETURN`);
  out.push(`-A ${P} -s ${PROBE_SOURCE[family]}/${HOST_LEN[family]} -p tcp ${comment('am_bypass_host')} -j RETURN`);
  for (const d of hosts(family, input.dnsServers ?? [])) out.push(`-A ${P} -s ${d} -p udp -m udp --sport 53 -j RETURN`);
  for (const d of own) {
    if (input.mode === 'redirect') out.push(`-A ${P} -d ${d} ${syn} ${comment('am_captured_in')} -j TPROXY --on-port ${inPort} --tproxy-mark ${M}`);
    else if (input.mode === 'closed') out.push(`-A ${P} -d ${d} ${syn} ${comment('am_fail_closed')} -j DROP`, `-A ${P} -d ${d} -p udp ${comment('am_fail_closed')} -j DROP`);
    else out.push(`-A ${P} -d ${d} ${syn} ${comment('am_fail_open')} -j RETURN`);
  }

  out.push(`-A ${O} -o lo -j RETURN`, `-A ${O} -j ${S}`);
  for (const cg of input.proxyCgroups) out.push(`-A ${O} -m cgroup --path ${cgroupArg(cg)} ${comment('am_bypass_proxy')} -j RETURN`);
  const dns = hosts(family, input.dnsServers ?? []);
  const capturing = input.mode === 'redirect' && input.dnsPort !== undefined;
  for (const d of dns) {
    out.push(`-A ${O} -d ${d} -p udp -m udp --dport 53 -j RETURN`);
    // TCP 53 is REDIRECTed to the DNS listener while capturing, reaches the server with no ready proxy
    // (fail open); with a ready proxy that has no DNS listener it is ordinary TCP (captured below).
    if (capturing || input.mode !== 'redirect') out.push(`-A ${O} -d ${d} -p tcp -m tcp --dport 53 -j RETURN`);
  }
  out.push(`-A ${O} -p tcp -m connmark --mark ${M} -j MARK --set-xmark ${M}`);
  if (input.mode === 'redirect') out.push(`-A ${O} ${syn} ${comment('am_captured_out')} -j ${AM_CHAIN.cap}`);
  else if (input.mode === 'closed') out.push(`-A ${O} ${syn} ${comment('am_fail_closed')} -j DROP`, `-A ${O} -p udp ${comment('am_fail_closed')} -j DROP`);
  else out.push(`-A ${O} ${syn} ${comment('am_fail_open')} -j RETURN`);
  out.push(`-A ${AM_CHAIN.cap} -j CONNMARK --set-xmark ${M}`, `-A ${AM_CHAIN.cap} -j MARK --set-xmark ${M}`);

  for (const s of own) out.push(`-A ${S} -s ${s} -j RETURN`);
  // NDP and DAD come from link-local or unspecified sources.
  if (family === 6) out.push(`-A ${S} -s fe80::/10 -p ipv6-icmp -j RETURN`, `-A ${S} -s ::/128 -p ipv6-icmp -j RETURN`);
  out.push(`-A ${S} ${comment('am_spoof')} -j DROP`);
  return out;
}

const jumpLine = (j: { hook: string; spec: string }) => `-A ${j.hook} ${j.spec}`;

/** Installs or replaces our chains and jumps in one transaction (declaring a chain under --noflush flushes it). */
function installScript(table: string, chains: readonly string[], rules: string[], jumps: readonly { hook: string; spec: string }[], cur: TableState): string {
  const lines = [`*${table}`, ...chains.map((c) => `:${c} - [0:0]`), ...rules];
  for (const j of jumps) {
    const n = cur.rules.filter((r) => r === jumpLine(j)).length;
    if (n === 0) lines.push(`-I ${j.hook} 1 ${j.spec}`);
    for (let i = 1; i < n; i++) lines.push(`-D ${j.hook} ${j.spec}`);
  }
  lines.push('COMMIT');
  return lines.join('\n') + '\n';
}

/** Removes exactly our jumps and chains (null: none there); refuses when a rule we did not create jumps into ours. */
function removeScript(table: string, chains: readonly string[], jumps: readonly { hook: string; spec: string }[], cur: TableState): string | null {
  const present = chains.filter((c) => cur.chains.has(c));
  const ours = new Set(jumps.map(jumpLine));
  const del = jumps.flatMap((j) => cur.rules.filter((r) => r === jumpLine(j)).map(() => `-D ${j.hook} ${j.spec}`));
  if (present.length === 0 && del.length === 0) return null;
  const foreign = cur.rules.filter((r) => !chains.includes(r.split(' ')[1]) && !ours.has(r) && chains.some((c) => new RegExp(`\\s-[jg] ${c}(\\s|$)`).test(r)));
  if (foreign.length > 0) throw new Error(`rules we did not create jump into our chains: ${foreign.join(' | ')}`);
  return [`*${table}`, ...del, ...present.map((c) => `-F ${c}`), ...present.map((c) => `-X ${c}`), 'COMMIT'].join('\n') + '\n';
}

export function podMeshScript(family: Family, input: PodRulesInput, cur: TableState): string {
  return installScript('mangle', POD_CHAINS, podChainRules(family, input), POD_JUMPS, cur);
}

export function podUnmeshScript(cur: TableState): string | null {
  return removeScript('mangle', POD_CHAINS, POD_JUMPS, cur);
}

/** The `-A` lines of MESHWARP_AM_DNS (nat, pod netns), one family. */
export function dnsChainRules(family: Family, input: PodRulesInput): string[] {
  const D = AM_CHAIN.dns;
  const out = input.proxyCgroups.map((cg) => `-A ${D} -m cgroup --path ${cgroupArg(cg)} ${comment('dns_bypass_proxy')} -j RETURN`);
  const servers = hosts(family, input.dnsServers ?? []);
  if (input.mode === 'redirect' && input.dnsPort !== undefined) {
    const port = checkPort('ports.dns', input.dnsPort);
    for (const d of servers) for (const p of ['udp', 'tcp']) out.push(`-A ${D} -d ${d} -p ${p} ${comment('dns_captured')} -j REDIRECT --to-ports ${port}`);
  } else {
    for (const d of servers) out.push(`-A ${D} -d ${d} -p udp ${comment('dns_no_listener')} -j RETURN`);
  }
  return out;
}

export function dnsMeshScript(family: Family, input: PodRulesInput, cur: TableState): string {
  return installScript('nat', DNS_CHAINS, dnsChainRules(family, input), DNS_JUMPS, cur);
}

export function dnsUnmeshScript(cur: TableState): string | null {
  return removeScript('nat', DNS_CHAINS, DNS_JUMPS, cur);
}

/** The node's probe SNAT chain for every enrolled pod address of one family (empty list: chain removed). */
export function probeScript(family: Family, podIps: readonly string[], cur: TableState): string | null {
  const own = hosts(family, podIps);
  if (own.length === 0) return removeScript('nat', [AM_CHAIN.probe], [NODE_JUMP], cur);
  const rules = own.map((d) => `-A ${AM_CHAIN.probe} -d ${d} -p tcp -m owner --socket-exists -j SNAT --to-source ${PROBE_SOURCE[family]}`);
  return installScript('nat', [AM_CHAIN.probe], rules, [NODE_JUMP], cur);
}

// SPDX-License-Identifier: Apache-2.0
// PodPolicy -> `iptables-restore --noflush` / `ip6tables-restore --noflush` scripts for one
// pod's netns (pure; unit-tested). The rules state the eBPF sidecar semantics
// (bpf/include/meshwarp.h, capturesInbound/capturesOutbound in src/profiles/policy.ts):
//
//   nat OUTPUT     -p tcp -j MESHWARP_OUTPUT       (inserted first, like connect() rewrite
//                                                   which runs before any netfilter rule)
//   MESHWARP_OUTPUT   RETURN: loopback destination, proxy uid, excluded uids, the pod's own
//                     IP, excluded ports, excluded CIDRs; then -> MESHWARP_REDIRECT for
//                     everything, or only include ports / include CIDRs.
//   MESHWARP_REDIRECT REDIRECT --to-ports <outbound>
//   nat PREROUTING -p tcp -j MESHWARP_INBOUND
//   MESHWARP_INBOUND  RETURN: not to the pod's IP, from a node IP (kubelet probes), the
//                     inbound/status/excluded ports; then -> MESHWARP_IN_REDIRECT for
//                     every port, or only include ports.
//   MESHWARP_IN_REDIRECT REDIRECT --to-ports <inbound>
//   nat OUTPUT     -p udp/tcp --dport 53 -j MESHWARP_DNS  (before MESHWARP_OUTPUT)
//   MESHWARP_DNS   DNS capture (S6, Istio's way): RETURN for the proxy and excluded uids
//                  (the proxy's upstream queries), then REDIRECT --to-ports <dns> for the
//                  pod's nameservers (any destination with dnsCaptureAll); empty without a
//                  DNS port. Conntrack gives the reply the server's address back. Unlike
//                  eBPF it cannot fail open: with the proxy down, queries are refused.
//
// The proxy's connections to other meshed pods need no rule: they leave as uid proxyUid
// (RETURN here) and the peer pod's PREROUTING sends them to its inbound port, which is
// what the eBPF connect hook does in one step. Only the four chains below and the two
// jump lines are ever created, flushed or deleted.
import { cidrOrReason, formatCidr, formatIp, ipOrReason, unmapV4, type IpAddr } from '../../profiles/ip.ts';
import type { PodPolicy } from '../../profiles/index.ts';

export type Family = 4 | 6;
export const FAMILIES: readonly Family[] = [4, 6];

export const CHAIN = {
  output: 'MESHWARP_OUTPUT',
  redirect: 'MESHWARP_REDIRECT',
  inbound: 'MESHWARP_INBOUND',
  inRedirect: 'MESHWARP_IN_REDIRECT',
  dns: 'MESHWARP_DNS',
} as const;
/** Exactly the chains this driver owns; a foreign chain with a similar name is not ours. */
export const OUR_CHAINS: readonly string[] = [CHAIN.output, CHAIN.inbound, CHAIN.redirect, CHAIN.inRedirect, CHAIN.dns];

/** Our hooks into the built-in chains, spelled exactly as iptables-save prints them. */
export const JUMPS: readonly { hook: 'OUTPUT' | 'PREROUTING'; spec: string }[] = [
  { hook: 'OUTPUT', spec: `-p tcp -j ${CHAIN.output}` },
  { hook: 'PREROUTING', spec: `-p tcp -j ${CHAIN.inbound}` },
  // Inserted after the one above, so they come first in OUTPUT.
  { hook: 'OUTPUT', spec: `-p udp -m udp --dport 53 -j ${CHAIN.dns}` },
  { hook: 'OUTPUT', spec: `-p tcp -m tcp --dport 53 -j ${CHAIN.dns}` },
];

/** multiport takes at most 15 ports per rule. */
const MULTIPORT_MAX = 15;
const LOOPBACK: Record<Family, string> = { 4: '127.0.0.0/8', 6: '::1/128' };
const HOST_LEN: Record<Family, number> = { 4: 32, 6: 128 };

/** What the rules of one family need besides the policy. */
export interface FamilyInput {
  /** The pod's address of this family; without it nothing is captured inbound (as eBPF). */
  podIp?: string;
  /** Node addresses (any family; the others are ignored). */
  nodeIps: readonly string[];
  /** The pod's nameservers (any family; the others are ignored), for DNS capture. */
  dnsServers?: readonly string[];
}

/** The nat table of one family as `iptables-save -t nat` shows it. */
export interface NatState {
  chains: Set<string>;
  /** `-A CHAIN ...` lines in order. */
  rules: string[];
}

export function parseNatSave(text: string): NatState {
  const chains = new Set<string>();
  const rules: string[] = [];
  let inNat = false;
  for (const raw of text.split('\n')) {
    const line = raw.trimEnd();
    if (line.startsWith('*')) inNat = line === '*nat';
    else if (!inNat || line.startsWith('#')) continue;
    else if (line.startsWith(':')) chains.add(line.slice(1).split(' ')[0]);
    else if (line.startsWith('-A ')) rules.push(line);
  }
  return { chains, rules };
}

/** Parses an address (v4-mapped IPv6 counts as IPv4); throws naming `what`. */
export function address(what: string, text: string): IpAddr {
  const r = ipOrReason(text);
  if (typeof r === 'string') throw new Error(`${what}: ${JSON.stringify(text)}: ${r}`);
  return unmapV4(r);
}

function checkInt(what: string, v: unknown, max: number): number {
  if (!Number.isInteger(v) || (v as number) < 0 || (v as number) > max) throw new Error(`${what}: ${JSON.stringify(v)} is not an integer 0-${max}`);
  return v as number;
}

const checkPorts = (what: string, xs: readonly number[]) => xs.map((p, i) => checkInt(`${what}[${i}]`, p, 65535));

/** `-p tcp --dport P` or multiport groups, each followed by `tail`. */
function portRules(chain: string, ports: readonly number[], tail: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < ports.length; i += MULTIPORT_MAX) {
    const group = ports.slice(i, i + MULTIPORT_MAX);
    const match = group.length === 1 ? `--dport ${group[0]}` : `-m multiport --dports ${group.join(',')}`;
    out.push(`-A ${chain} -p tcp ${match} ${tail}`);
  }
  return out;
}

function cidrsOf(family: Family, what: string, cidrs: PodPolicy['excludeOutboundCidrs']): string[] {
  return cidrs.map((c, i) => {
    // Re-derive from the bytes: the text goes into a script and must be a plain CIDR.
    const r = cidrOrReason(formatCidr(c));
    if (typeof r === 'string') throw new Error(`${what}[${i}]: ${r}`);
    return r;
  }).filter((c) => c.family === family).map(formatCidr);
}

/** The `-A` lines of our four chains for one family. */
export function chainRules(family: Family, policy: PodPolicy, input: FamilyInput): string[] {
  const outboundPort = checkInt('outboundPort', policy.outboundPort, 65535);
  const inboundPort = checkInt('inboundPort', policy.inboundPort, 65535);
  const proxyUid = checkInt('proxyUid', policy.proxyUid, 0xffffffff);
  const uids = policy.excludeUids.map((u, i) => checkInt(`excludeUids[${i}]`, u, 0xffffffff));
  let podIp: string | undefined;
  if (input.podIp !== undefined) {
    const ip = address('pod IP', input.podIp);
    if (ip.family !== family) throw new Error(`pod IP ${input.podIp} is not IPv${family}`);
    podIp = `${formatIp(ip)}/${HOST_LEN[family]}`;
  }
  const nodeIps = input.nodeIps.map((t) => address('node IP', t)).filter((ip) => ip.family === family)
    .map((ip) => `${formatIp(ip)}/${HOST_LEN[family]}`);

  const out: string[] = [];
  const O = CHAIN.output;
  if (outboundPort !== 0) {
    out.push(`-A ${O} -d ${LOOPBACK[family]} -j RETURN`);
    for (const u of [proxyUid, ...uids.filter((u) => u !== proxyUid)]) out.push(`-A ${O} -m owner --uid-owner ${u} -j RETURN`);
    if (podIp) out.push(`-A ${O} -d ${podIp} -j RETURN`);
    out.push(...portRules(O, checkPorts('excludeOutboundPorts', policy.excludeOutboundPorts), '-j RETURN'));
    for (const c of cidrsOf(family, 'excludeOutboundCidrs', policy.excludeOutboundCidrs)) out.push(`-A ${O} -d ${c} -j RETURN`);
    const to = `-j ${CHAIN.redirect}`;
    if (policy.includeOutboundPorts === 'all' || policy.includeOutboundCidrs === 'all') {
      out.push(`-A ${O} ${to}`);
    } else {
      out.push(...portRules(O, checkPorts('includeOutboundPorts', policy.includeOutboundPorts), to));
      for (const c of cidrsOf(family, 'includeOutboundCidrs', policy.includeOutboundCidrs)) out.push(`-A ${O} -d ${c} ${to}`);
    }
    out.push(`-A ${CHAIN.redirect} -p tcp -j REDIRECT --to-ports ${outboundPort}`);
  }

  const I = CHAIN.inbound;
  if (inboundPort !== 0 && podIp) {
    const excluded = checkPorts('excludeInboundPorts', policy.excludeInboundPorts);
    const status = policy.statusPort === undefined ? [] : [checkInt('statusPort', policy.statusPort, 65535)];
    const skip = [...new Set([inboundPort, ...status, ...excluded])].sort((a, b) => a - b);
    out.push(`-A ${I} ! -d ${podIp} -j RETURN`);
    for (const n of nodeIps) out.push(`-A ${I} -s ${n} -j RETURN`);
    out.push(...portRules(I, skip, '-j RETURN'));
    const to = `-j ${CHAIN.inRedirect}`;
    if (policy.includeInboundPorts === 'all') out.push(`-A ${I} ${to}`);
    else out.push(...portRules(I, checkPorts('includeInboundPorts', policy.includeInboundPorts).filter((p) => !skip.includes(p)), to));
    out.push(`-A ${CHAIN.inRedirect} -p tcp -j REDIRECT --to-ports ${inboundPort}`);
  }
  out.push(...dnsRules(family, policy, input, [proxyUid, ...uids.filter((u) => u !== proxyUid)]));
  return out;
}

/** MESHWARP_DNS of one family: empty without a DNS port or without servers of this family. */
function dnsRules(family: Family, policy: PodPolicy, input: FamilyInput, uids: number[]): string[] {
  if (!policy.dnsPort) return [];
  const dnsPort = checkInt('dnsPort', policy.dnsPort, 65535);
  const servers = [...new Set((input.dnsServers ?? []).map((t) => address('nameserver', t)).filter((ip) => ip.family === family)
    .map((ip) => `${formatIp(ip)}/${HOST_LEN[family]}`))];
  const targets = policy.dnsCaptureAll ? [''] : servers.map((d) => `-d ${d} `);
  if (targets.length === 0) return [];
  const D = CHAIN.dns;
  return [
    ...uids.map((u) => `-A ${D} -m owner --uid-owner ${u} -j RETURN`),
    ...targets.flatMap((d) => ['udp', 'tcp'].map((p) => `-A ${D} ${d}-p ${p} -j REDIRECT --to-ports ${dnsPort}`)),
  ];
}

const jumpLine = (j: (typeof JUMPS)[number]) => `-A ${j.hook} ${j.spec}`;

/**
 * The restore script that installs (or replaces) our chains in one transaction: declaring
 * an existing chain under --noflush flushes it, so there is no moment without capture.
 * A missing jump is inserted first in its hook; duplicates of our jump are deleted.
 */
export function meshScript(family: Family, policy: PodPolicy, input: FamilyInput, current: NatState): string {
  const lines = ['*nat', ...OUR_CHAINS.map((c) => `:${c} - [0:0]`), ...chainRules(family, policy, input)];
  for (const j of JUMPS) {
    const n = current.rules.filter((r) => r === jumpLine(j)).length;
    if (n === 0) lines.push(`-I ${j.hook} 1 ${j.spec}`);
    for (let i = 1; i < n; i++) lines.push(`-D ${j.hook} ${j.spec}`);
  }
  lines.push('COMMIT');
  return lines.join('\n') + '\n';
}

/** Rules outside our chains that jump into them, other than our own jump lines. */
export function foreignReferences(current: NatState): string[] {
  const ours = new Set(JUMPS.map(jumpLine));
  return current.rules.filter((r) => {
    const chain = r.split(' ')[1];
    if (OUR_CHAINS.includes(chain) || ours.has(r)) return false;
    return OUR_CHAINS.some((c) => new RegExp(`\\s-[jg] ${c}(\\s|$)`).test(r));
  });
}

/**
 * The restore script that removes exactly our jump lines and chains, or null when none
 * of them is there. Throws if a rule we did not create jumps into one of our chains
 * (deleting the chain would need deleting that rule, which is not ours to touch).
 */
export function unmeshScript(current: NatState): string | null {
  const present = OUR_CHAINS.filter((c) => current.chains.has(c));
  const jumps = JUMPS.flatMap((j) => current.rules.filter((r) => r === jumpLine(j)).map(() => `-D ${j.hook} ${j.spec}`));
  if (present.length === 0 && jumps.length === 0) return null;
  const foreign = foreignReferences(current);
  if (foreign.length > 0) throw new Error(`rules we did not create jump into our chains: ${foreign.join(' | ')}`);
  // Flush all before deleting any: our chains jump into each other.
  const lines = ['*nat', ...jumps, ...present.map((c) => `-F ${c}`), ...present.map((c) => `-X ${c}`), 'COMMIT'];
  return lines.join('\n') + '\n';
}

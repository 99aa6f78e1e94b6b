// SPDX-License-Identifier: Apache-2.0
// The resolved per-pod policy the datapath drivers (eBPF and iptables) consume: a profile
// plus the pod's annotations plus node-wide overrides, validated, deduplicated and sorted.
// capturesInbound()/capturesOutbound() state the semantics once, so every driver and the
// conformance suite agree on what each field means.
import { parseAnnotations } from './annotations.ts';
import { PolicyError } from './errors.ts';
import { cidrContains, cidrOrReason, compareCidr, formatCidr, maskBytes, unmapV4, type Cidr, type IpAddr } from './ip.ts';
import { checkPort, checkUid, getProfile, validateProfile, type Profile } from './profiles.ts';

export type { Cidr } from './ip.ts';

export interface PodPolicy {
  profile: string;
  outboundPort: number;
  inboundPort: number;
  proxyUid: number;
  dnsPort?: number;
  /**
   * DNS capture (S6, with dnsPort): port-53 queries to any address, not only to the pod's
   * nameservers (per pod: annotation meshwarp.io/dns-capture-all; per node: overrides).
   */
  dnsCaptureAll?: boolean;
  statusPort?: number;
  /** Always wins over includeInboundPorts. Holds the proxy's own ports. */
  excludeInboundPorts: number[];
  /** 'all' (default) or only these ports are captured inbound. */
  includeInboundPorts: number[] | 'all';
  excludeOutboundPorts: number[];
  /**
   * Ports captured outbound whatever the destination address (Istio's includeOutboundPorts):
   * OR-ed with includeOutboundCidrs. Default [] (no extra ports); 'all' captures every port.
   */
  includeOutboundPorts: number[] | 'all';
  excludeOutboundCidrs: Cidr[];
  /** 'all' (default) or only destinations in these ranges are captured (plus includeOutboundPorts). */
  includeOutboundCidrs: Cidr[] | 'all';
  /** In addition to proxyUid, whose traffic is never captured outbound. */
  excludeUids: number[];
  /** false: the pod opted out of sockmap acceleration (annotation SOCKMAP_ANNOTATION); absent = allowed. */
  sockmap?: false;
}

/** Per-pod S4 opt-out, the same key in every dialect: "disabled" or "enabled" (the default). */
export const SOCKMAP_ANNOTATION = 'meshwarp.io/sockmap';

function sockmapAnnotation(annotations: Readonly<Record<string, string>>): false | undefined {
  if (!annotations || !Object.hasOwn(annotations, SOCKMAP_ANNOTATION)) return undefined;
  const v = annotations[SOCKMAP_ANNOTATION];
  if (v === 'disabled') return false;
  if (v === 'enabled') return undefined;
  throw new PolicyError(SOCKMAP_ANNOTATION, 'expected "disabled" or "enabled"', v);
}

/** Node-wide additions (agent config), applied to every pod on top of profile and annotations. */
export interface PolicyOverrides {
  excludeInboundPorts?: readonly number[];
  excludeOutboundPorts?: readonly number[];
  excludeOutboundCidrs?: readonly (string | Cidr)[];
  excludeUids?: readonly number[];
  /** DNS capture of port 53 to any address for every pod of the node (a pod's annotation can still say "false"). */
  dnsCaptureAll?: boolean;
}

const overrideKeys = new Set(['excludeInboundPorts', 'excludeOutboundPorts', 'excludeOutboundCidrs', 'excludeUids', 'dnsCaptureAll']);

/** Per-pod DNS capture-all switch, whatever the mesh ("true" / "false"). */
export const DNS_CAPTURE_ALL_ANNOTATION = 'meshwarp.io/dns-capture-all';

/**
 * Resolves a pod's policy. Throws PolicyError naming the annotation/option and the bad value;
 * never returns a partial policy.
 */
export function resolvePodPolicy(
  profile: string | Profile,
  annotations: Readonly<Record<string, string>> = {},
  overrides: PolicyOverrides = {},
): PodPolicy {
  const p = typeof profile === 'string' ? getProfile(profile) : profile;
  validateProfile(p);
  const ov = checkOverrides(overrides);
  const a = parseAnnotations(p.dialect, annotations);

  const statusPort = a.statusPort === undefined ? p.statusPort : (a.statusPort ?? undefined);
  // The proxy's own listeners are never captured inbound: capturing them would loop.
  const ownPorts = [p.inboundPort, p.outboundPort, ...p.adminPorts];
  for (const x of [statusPort, p.metricsPort, p.hbonePort]) if (x !== undefined) ownPorts.push(x);

  const policy: PodPolicy = {
    profile: p.name,
    outboundPort: p.outboundPort,
    inboundPort: p.inboundPort,
    proxyUid: p.proxyUid,
    excludeInboundPorts: sortedPorts([...p.defaultExcludeInboundPorts, ...ownPorts, ...a.excludeInboundPorts, ...ov.excludeInboundPorts]),
    includeInboundPorts: a.includeInboundPorts === undefined ? 'all' : orAll(a.includeInboundPorts, sortedPorts),
    excludeOutboundPorts: sortedPorts([...p.defaultExcludeOutboundPorts, ...a.excludeOutboundPorts, ...ov.excludeOutboundPorts]),
    includeOutboundPorts: a.includeOutboundPorts === undefined ? [] : orAll(a.includeOutboundPorts, sortedPorts),
    excludeOutboundCidrs: sortedCidrs([...a.excludeOutboundCidrs, ...ov.excludeOutboundCidrs]),
    includeOutboundCidrs: a.includeOutboundCidrs === undefined ? 'all' : orAll(a.includeOutboundCidrs, sortedCidrs),
    excludeUids: [...new Set(ov.excludeUids)].filter((u) => u !== p.proxyUid).sort((x, y) => x - y),
  };
  if (p.dnsPort !== undefined) {
    policy.dnsPort = p.dnsPort;
    const all = annotations[DNS_CAPTURE_ALL_ANNOTATION];
    if (all !== undefined && all !== 'true' && all !== 'false') {
      throw new PolicyError(DNS_CAPTURE_ALL_ANNOTATION, 'expected "true" or "false"', all);
    }
    if (all === 'true' || (all === undefined && ov.dnsCaptureAll)) policy.dnsCaptureAll = true;
  }
  if (statusPort !== undefined) policy.statusPort = statusPort;
  if (sockmapAnnotation(annotations) === false) policy.sockmap = false;
  return policy;
}

/** Whether a TCP connection to `port` of the pod is sent to the proxy's inbound port. */
export function capturesInbound(policy: PodPolicy, port: number): boolean {
  if (policy.excludeInboundPorts.includes(port)) return false;
  return policy.includeInboundPorts === 'all' || policy.includeInboundPorts.includes(port);
}

/**
 * Whether the pod's connect() to dst:port by `uid` goes to the proxy's outbound port,
 * as far as the policy decides. Exclusions win; then the destination must be in
 * includeOutboundCidrs OR its port in includeOutboundPorts (Istio's iptables order).
 * Datapath-wide rules (loopback destinations, the proxy's connects to local pods) are
 * the drivers' and not modelled here. v4-mapped IPv6 destinations match IPv4 ranges.
 */
export function capturesOutbound(policy: PodPolicy, dst: IpAddr, port: number, uid: number): boolean {
  if (uid === policy.proxyUid || policy.excludeUids.includes(uid)) return false;
  if (policy.excludeOutboundPorts.includes(port)) return false;
  const ip = unmapV4(dst);
  if (policy.excludeOutboundCidrs.some((c) => cidrContains(c, ip))) return false;
  if (policy.includeOutboundPorts === 'all' || policy.includeOutboundPorts.includes(port)) return true;
  return policy.includeOutboundCidrs === 'all' || policy.includeOutboundCidrs.some((c) => cidrContains(c, ip));
}

function orAll<T>(v: T[] | 'all', norm: (xs: T[]) => T[]): T[] | 'all' {
  return v === 'all' ? 'all' : norm(v);
}

function sortedPorts(xs: readonly number[]): number[] {
  return [...new Set(xs)].sort((x, y) => x - y);
}

/** Sorted, without exact duplicates (same network after masking); the first text is kept. */
function sortedCidrs(xs: readonly Cidr[]): Cidr[] {
  const sorted = [...xs].sort(compareCidr); // stable: equal networks keep input order
  return sorted.filter((c, i) => i === 0 || compareCidr(sorted[i - 1], c) !== 0);
}

interface CheckedOverrides {
  dnsCaptureAll: boolean;
  excludeInboundPorts: number[];
  excludeOutboundPorts: number[];
  excludeOutboundCidrs: Cidr[];
  excludeUids: number[];
}

function checkOverrides(o: PolicyOverrides): CheckedOverrides {
  if (typeof o !== 'object' || o === null) throw new PolicyError('overrides', 'expected an object', o);
  for (const k of Object.keys(o)) {
    if (!overrideKeys.has(k)) throw new PolicyError(`overrides.${k}`, `unknown option; known: ${[...overrideKeys].join(', ')}`);
  }
  const list = <T>(k: keyof PolicyOverrides, check: (field: string, v: unknown) => T): T[] => {
    const v: unknown = o[k];
    if (v === undefined) return [];
    if (!Array.isArray(v)) throw new PolicyError(`overrides.${k}`, 'expected an array', v);
    return v.map((x, i) => check(`overrides.${k}[${i}]`, x));
  };
  const port = (f: string, v: unknown) => (checkPort(f, v), v as number);
  if (o.dnsCaptureAll !== undefined && typeof o.dnsCaptureAll !== 'boolean') {
    throw new PolicyError('overrides.dnsCaptureAll', 'expected true or false', o.dnsCaptureAll);
  }
  return {
    dnsCaptureAll: o.dnsCaptureAll === true,
    excludeInboundPorts: list('excludeInboundPorts', port),
    excludeOutboundPorts: list('excludeOutboundPorts', port),
    excludeOutboundCidrs: list('excludeOutboundCidrs', checkCidr),
    excludeUids: list('excludeUids', (f, v) => (checkUid(f, v), v as number)),
  };
}

/** Accepts CIDR text or a Cidr object; objects are re-validated and their host bits zeroed. */
function checkCidr(field: string, v: unknown): Cidr {
  if (typeof v === 'string') {
    const c = cidrOrReason(v);
    if (typeof c === 'string') throw new PolicyError(field, c);
    return c;
  }
  const c = v as Partial<Cidr> | null;
  const len = c?.family === 4 ? 4 : c?.family === 6 ? 16 : -1;
  if (
    !c ||
    len < 0 ||
    !(c.addr instanceof Uint8Array) ||
    c.addr.length !== len ||
    !Number.isInteger(c.prefixLen) ||
    (c.prefixLen as number) < 0 ||
    (c.prefixLen as number) > len * 8
  ) {
    throw new PolicyError(field, 'expected CIDR text or { family, addr, prefixLen, text }', v);
  }
  const prefixLen = c.prefixLen as number;
  const out: Cidr = { family: c.family as 4 | 6, addr: maskBytes(c.addr, prefixLen), prefixLen, text: '' };
  out.text = typeof c.text === 'string' && c.text !== '' ? c.text : formatCidr(out);
  return out;
}

// SPDX-License-Identifier: Apache-2.0
// Per-pod annotations of each mesh (S5), parsed strictly: a value is either fully valid or
// the whole pod policy is refused with the annotation named. Silently ignoring a user's
// exclusion is what made Merbridge's annotations untrustworthy, so annotations we cannot
// honour are refused too, not skipped.
import { PolicyError, show } from './errors.ts';
import { cidrOrReason, type Cidr } from './ip.ts';
import type { Dialect } from './profiles.ts';

export type Target =
  | 'excludeInboundPorts'
  | 'includeInboundPorts'
  | 'excludeOutboundPorts'
  | 'includeOutboundPorts'
  | 'excludeOutboundCidrs'
  | 'includeOutboundCidrs'
  | 'statusPort';

export interface AnnotationSpec {
  key: string;
  target: Target;
  /** `*` as the whole value means "all" (Istio's include lists). */
  wildcard?: boolean;
  /** Port ranges `a-b` are accepted and expanded (Linkerd). */
  ranges?: boolean;
  /** An empty value is refused instead of meaning "none" (OSM's inclusion list). */
  emptyIsError?: boolean;
  /** Present: the annotation is refused with this explanation. */
  unsupported?: string;
}

const I = 'traffic.sidecar.istio.io/';
const istio: AnnotationSpec[] = [
  { key: `${I}excludeInboundPorts`, target: 'excludeInboundPorts' },
  { key: `${I}includeInboundPorts`, target: 'includeInboundPorts', wildcard: true },
  { key: `${I}excludeOutboundPorts`, target: 'excludeOutboundPorts' },
  { key: `${I}includeOutboundPorts`, target: 'includeOutboundPorts', wildcard: true },
  { key: `${I}excludeOutboundIPRanges`, target: 'excludeOutboundCidrs' },
  { key: `${I}includeOutboundIPRanges`, target: 'includeOutboundCidrs', wildcard: true },
  { key: 'status.sidecar.istio.io/port', target: 'statusPort' },
  {
    key: `${I}excludeInterfaces`,
    target: 'excludeOutboundCidrs',
    unsupported: 'the egress interface is not known when connect() is captured; exclude the CIDRs behind it with excludeOutboundIPRanges',
  },
];

// OSM and FSM: an absent inclusion list means "capture all", so an empty one is ambiguous
// (OSM itself rejects it) and refused.
function osmStyle(prefix: string): AnnotationSpec[] {
  return [
    { key: `${prefix}/inbound-port-exclusion-list`, target: 'excludeInboundPorts' },
    { key: `${prefix}/outbound-port-exclusion-list`, target: 'excludeOutboundPorts' },
    { key: `${prefix}/outbound-ip-range-exclusion-list`, target: 'excludeOutboundCidrs' },
    { key: `${prefix}/outbound-ip-range-inclusion-list`, target: 'includeOutboundCidrs', emptyIsError: true },
  ];
}

const K = 'traffic.kuma.io/';
const kuma: AnnotationSpec[] = [
  { key: `${K}exclude-inbound-ports`, target: 'excludeInboundPorts' },
  { key: `${K}exclude-outbound-ports`, target: 'excludeOutboundPorts' },
  { key: `${K}exclude-outbound-ips`, target: 'excludeOutboundCidrs' },
  {
    key: `${K}exclude-inbound-ips`,
    target: 'excludeInboundPorts',
    unsupported: 'inbound exclusion by source address is not implemented',
  },
  {
    key: `${K}exclude-outbound-ports-for-uids`,
    target: 'excludeOutboundPorts',
    unsupported: 'per-uid port exclusions are not implemented; use exclude-outbound-ports',
  },
];

const L = 'config.linkerd.io/';
const linkerd: AnnotationSpec[] = [
  { key: `${L}skip-inbound-ports`, target: 'excludeInboundPorts', ranges: true },
  { key: `${L}skip-outbound-ports`, target: 'excludeOutboundPorts', ranges: true },
  { key: `${L}skip-subnets`, target: 'excludeOutboundCidrs' },
];

export const DIALECT_ANNOTATIONS: Readonly<Record<Dialect, readonly AnnotationSpec[]>> = Object.freeze({
  istio,
  linkerd,
  kuma,
  osm: osmStyle('openservicemesh.io'),
  fsm: [...osmStyle('openservicemesh.io'), ...osmStyle('flomesh.io')],
  none: [],
});

/** What a pod's annotations say; undefined include lists / statusPort mean "not annotated". */
export interface ParsedAnnotations {
  excludeInboundPorts: number[];
  excludeOutboundPorts: number[];
  excludeOutboundCidrs: Cidr[];
  includeInboundPorts?: number[] | 'all';
  includeOutboundPorts?: number[] | 'all';
  includeOutboundCidrs?: Cidr[] | 'all';
  /** null: the annotation disabled the status port (Istio's `0`). */
  statusPort?: number | null;
}

/** Reads the dialect's annotations; other meshes' annotations are not this pod's business. */
export function parseAnnotations(dialect: Dialect, annotations: Readonly<Record<string, string>> | undefined): ParsedAnnotations {
  if (annotations !== undefined && (typeof annotations !== 'object' || annotations === null || Array.isArray(annotations))) {
    throw new PolicyError('annotations', 'expected an object of annotation key to string value', annotations);
  }
  const out: ParsedAnnotations = { excludeInboundPorts: [], excludeOutboundPorts: [], excludeOutboundCidrs: [] };
  for (const spec of DIALECT_ANNOTATIONS[dialect]) {
    if (!annotations || !Object.hasOwn(annotations, spec.key)) continue;
    const raw: unknown = annotations[spec.key];
    if (typeof raw !== 'string') throw new PolicyError(spec.key, 'annotation values must be strings', raw);
    if (spec.unsupported) throw new PolicyError(spec.key, `not supported by meshwarp: ${spec.unsupported}`, raw);
    switch (spec.target) {
      case 'statusPort':
        out.statusPort = parseStatusPort(spec, raw);
        break;
      case 'excludeInboundPorts':
      case 'excludeOutboundPorts':
        out[spec.target].push(...asList(spec, raw, parsePorts(spec, raw)));
        break;
      case 'includeInboundPorts':
      case 'includeOutboundPorts':
        out[spec.target] = mergeInclude(out[spec.target], parsePorts(spec, raw));
        break;
      case 'excludeOutboundCidrs':
        out.excludeOutboundCidrs.push(...asList(spec, raw, parseCidrs(spec, raw)));
        break;
      case 'includeOutboundCidrs':
        out.includeOutboundCidrs = mergeInclude(out.includeOutboundCidrs, parseCidrs(spec, raw));
        break;
    }
  }
  return out;
}

/** Two annotations for one list (FSM's two prefixes): union, and "all" wins. */
function mergeInclude<T>(prev: T[] | 'all' | undefined, next: T[] | 'all'): T[] | 'all' {
  if (prev === 'all' || next === 'all') return 'all';
  return [...(prev ?? []), ...next];
}

function asList<T>(spec: AnnotationSpec, raw: string, v: T[] | 'all'): T[] {
  if (v === 'all') throw new PolicyError(spec.key, '"*" is not accepted here', raw);
  return v;
}

/** Splits a comma list. Empty (or blank) value: none, or an error; `*` alone: 'all'. */
function items(spec: AnnotationSpec, raw: string): string[] | 'all' {
  const t = raw.trim();
  if (t === '') {
    if (spec.emptyIsError) throw new PolicyError(spec.key, 'empty list; remove the annotation to capture all', raw);
    return [];
  }
  if (t === '*') {
    if (spec.wildcard) return 'all';
    throw new PolicyError(spec.key, '"*" is not accepted here', raw);
  }
  const parts = t.split(',').map((s) => s.trim());
  for (const p of parts) {
    if (p === '') throw new PolicyError(spec.key, 'empty entry (stray comma)', raw);
    if (p === '*') throw new PolicyError(spec.key, '"*" must be the whole value, not one entry of a list', raw);
  }
  return parts;
}

function parsePorts(spec: AnnotationSpec, raw: string): number[] | 'all' {
  const parts = items(spec, raw);
  if (parts === 'all') return 'all';
  const ports: number[] = [];
  for (const p of parts) {
    const one = portValue(p);
    if (one !== undefined) {
      ports.push(one);
      continue;
    }
    const m = /^([0-9]+)\s*-\s*([0-9]+)$/.exec(p);
    if (m && spec.ranges) {
      const lo = portValue(m[1]);
      const hi = portValue(m[2]);
      if (lo === undefined || hi === undefined || lo > hi) {
        throw new PolicyError(spec.key, `${show(p)} is not a port range (a-b, 1 <= a <= b <= 65535)`, raw);
      }
      for (let x = lo; x <= hi; x++) ports.push(x);
      continue;
    }
    const hint = m ? '; port ranges are not accepted by this annotation' : spec.ranges ? ' or a range a-b' : '';
    throw new PolicyError(spec.key, `${show(p)} is not a port (1-65535)${hint}`, raw);
  }
  return ports;
}

function portValue(s: string): number | undefined {
  if (!/^[0-9]{1,5}$/.test(s)) return undefined;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : undefined;
}

function parseCidrs(spec: AnnotationSpec, raw: string): Cidr[] | 'all' {
  const parts = items(spec, raw);
  if (parts === 'all') return 'all';
  return parts.map((p) => {
    const c = cidrOrReason(p);
    if (typeof c === 'string') throw new PolicyError(spec.key, c, raw);
    return c;
  });
}

function parseStatusPort(spec: AnnotationSpec, raw: string): number | null {
  const t = raw.trim();
  if (t === '0') return null; // Istio: 0 disables the status server
  const n = portValue(t);
  if (n === undefined) throw new PolicyError(spec.key, `${show(t)} is not a port (1-65535, or 0 to disable)`, raw);
  return n;
}

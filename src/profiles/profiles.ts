// SPDX-License-Identifier: Apache-2.0
// Mesh profiles (S7): the fixed facts about each mesh's sidecar that the datapath needs —
// where the proxy listens, which uid it runs as (its own traffic is never captured), which
// of its ports must never be captured inbound, and how its pods' annotations are spelled.
import { PolicyError } from './errors.ts';

/** Annotation spelling a profile reads per-pod exclusions in (see annotations.ts). */
export type Dialect = 'istio' | 'linkerd' | 'kuma' | 'osm' | 'fsm' | 'none';
export const DIALECTS: readonly Dialect[] = Object.freeze(['istio', 'linkerd', 'kuma', 'osm', 'fsm', 'none']);

/** How to recognise a pod that carries this mesh's sidecar. */
export interface SidecarHint {
  containerName?: string;
  /** A label key whose presence marks an injected pod. */
  label?: string;
}

export interface Profile {
  readonly name: string;
  /** Transparent outbound listener (connect() of the app is rewritten to it). */
  readonly outboundPort: number;
  /** Transparent inbound listener (inbound connections to the pod are sent to it). */
  readonly inboundPort: number;
  /** uid the proxy runs as; its own connections are never redirected. */
  readonly proxyUid: number;
  /** UDP/TCP DNS listener of the proxy, if the mesh captures DNS (S6). */
  readonly dnsPort?: number;
  /** Port kubelet probes the sidecar's health on; never captured inbound. */
  readonly statusPort?: number;
  /** Prometheus scrape port of the proxy; never captured inbound. */
  readonly metricsPort?: number;
  /** HBONE (HTTP CONNECT over mTLS) listener, Istio only; never captured inbound. */
  readonly hbonePort?: number;
  /** Admin/control ports of the proxy; never captured inbound. */
  readonly adminPorts: readonly number[];
  /** The mesh's own default inbound exclusions (as its injector would set them). */
  readonly defaultExcludeInboundPorts: readonly number[];
  readonly defaultExcludeOutboundPorts: readonly number[];
  readonly dialect: Dialect;
  readonly sidecar: Readonly<SidecarHint>;
}

const builtins: Profile[] = [
  {
    name: 'istio',
    outboundPort: 15001,
    inboundPort: 15006,
    proxyUid: 1337,
    dnsPort: 15053,
    // 15021 is Envoy's /healthz/ready; 15020 (pilot-agent: app-probe rewriting, merged
    // metrics) is the annotation's default in Istio and is excluded below either way.
    statusPort: 15021,
    metricsPort: 15090,
    hbonePort: 15008,
    adminPorts: [15000],
    defaultExcludeInboundPorts: [15006, 15001, 15008, 15090, 15021, 15020, 15000],
    defaultExcludeOutboundPorts: [],
    dialect: 'istio',
    sidecar: { containerName: 'istio-proxy' },
  },
  {
    name: 'linkerd',
    outboundPort: 4140,
    inboundPort: 4143,
    proxyUid: 2102,
    // 4191 is the admin server: metrics and the /ready probe kubelet calls. 4190 is the
    // control (tap) port. Linkerd's proxy-init always skips both inbound.
    statusPort: 4191,
    metricsPort: 4191,
    adminPorts: [4190, 4191],
    // 4567/4568 (Galera replication) are Linkerd's chart defaults for
    // proxyInit.ignoreInboundPorts/ignoreOutboundPorts: server-speaks-first protocols.
    defaultExcludeInboundPorts: [4190, 4191, 4567, 4568],
    defaultExcludeOutboundPorts: [4567, 4568],
    dialect: 'linkerd',
    sidecar: { containerName: 'linkerd-proxy' },
  },
  {
    name: 'kuma',
    outboundPort: 15001,
    inboundPort: 15006,
    proxyUid: 5678,
    // kuma-dp's embedded DNS server; Envoy's admin API on 9901.
    dnsPort: 15053,
    adminPorts: [9901],
    defaultExcludeInboundPorts: [9901],
    defaultExcludeOutboundPorts: [],
    dialect: 'kuma',
    sidecar: { containerName: 'kuma-sidecar' },
  },
  {
    name: 'osm',
    // OSM's Envoy: outbound listener 15001, inbound 15003 (osm-edge's doc wrongly says
    // outbound 15003), admin 15000, Prometheus listener 15010. Its injector rewrites app
    // probes to 15901 (liveness), 15902 (readiness), 15903 (startup) and 15904 (TCP/gRPC
    // health check) and its init container skips them inbound, so they are defaults here.
    outboundPort: 15001,
    inboundPort: 15003,
    proxyUid: 1500,
    metricsPort: 15010,
    adminPorts: [15000],
    defaultExcludeInboundPorts: [15000, 15010, 15901, 15902, 15903, 15904],
    defaultExcludeOutboundPorts: [],
    dialect: 'osm',
    sidecar: { label: 'osm-proxy-uuid' },
  },
];
// FSM (Flomesh's OSM fork, Pipy sidecar) keeps OSM's ports and uid; it reads both the
// openservicemesh.io/ and flomesh.io/ annotations and labels injected pods fsm-proxy-uuid.
builtins.push({ ...builtins[3], name: 'fsm', dialect: 'fsm', sidecar: { label: 'fsm-proxy-uuid' } });

const PROFILES = new Map<string, Profile>(builtins.map((p) => [p.name, deepFreeze(p)]));
/** Profiles known to be valid (built-ins and customProfile results), to skip re-validation. */
const validated = new WeakSet<Profile>(PROFILES.values());

/** Names accepted by getProfile(). `custom` is not one: build it with customProfile(). */
export function profileNames(): string[] {
  return [...PROFILES.keys()];
}

export function getProfile(name: string): Profile {
  const p = PROFILES.get(name);
  if (p) return p;
  const known = profileNames().join(', ');
  if (name === 'custom') {
    throw new PolicyError('profile', `the custom profile needs explicit ports and uid (customProfile()); built-in profiles: ${known}`, name);
  }
  throw new PolicyError('profile', `unknown mesh profile; known profiles: ${known}, or custom`, name);
}

export interface CustomProfileOptions {
  name?: string;
  outboundPort: number;
  inboundPort: number;
  proxyUid: number;
  dnsPort?: number;
  statusPort?: number;
  metricsPort?: number;
  hbonePort?: number;
  adminPorts?: readonly number[];
  excludeInboundPorts?: readonly number[];
  excludeOutboundPorts?: readonly number[];
  /** Which annotations pods of this profile are read with; default 'none'. */
  dialect?: Dialect;
  sidecar?: SidecarHint;
}

const customKeys = new Set([
  'name', 'outboundPort', 'inboundPort', 'proxyUid', 'dnsPort', 'statusPort', 'metricsPort',
  'hbonePort', 'adminPorts', 'excludeInboundPorts', 'excludeOutboundPorts', 'dialect', 'sidecar',
]);

/** Builds and validates a profile from explicit values (config file, CLI flags, lab). */
export function customProfile(opts: CustomProfileOptions): Profile {
  if (typeof opts !== 'object' || opts === null) throw new PolicyError('custom', 'expected an object of profile values', opts);
  for (const k of Object.keys(opts)) {
    if (!customKeys.has(k)) throw new PolicyError(k, `unknown custom profile option; known: ${[...customKeys].join(', ')}`);
  }
  const p: Profile = {
    name: opts.name ?? 'custom',
    outboundPort: opts.outboundPort,
    inboundPort: opts.inboundPort,
    proxyUid: opts.proxyUid,
    ...(opts.dnsPort !== undefined && { dnsPort: opts.dnsPort }),
    ...(opts.statusPort !== undefined && { statusPort: opts.statusPort }),
    ...(opts.metricsPort !== undefined && { metricsPort: opts.metricsPort }),
    ...(opts.hbonePort !== undefined && { hbonePort: opts.hbonePort }),
    adminPorts: copyList('adminPorts', opts.adminPorts),
    defaultExcludeInboundPorts: copyList('excludeInboundPorts', opts.excludeInboundPorts),
    defaultExcludeOutboundPorts: copyList('excludeOutboundPorts', opts.excludeOutboundPorts),
    dialect: opts.dialect ?? 'none',
    sidecar: opts.sidecar === undefined ? {} : { ...opts.sidecar },
  };
  if (opts.sidecar !== undefined && (typeof opts.sidecar !== 'object' || opts.sidecar === null)) {
    throw new PolicyError('sidecar', 'expected { containerName?, label? }', opts.sidecar);
  }
  if (PROFILES.has(p.name)) {
    throw new PolicyError('name', 'is a built-in profile; give the custom profile another name', p.name);
  }
  validateProfile(p);
  const frozen = deepFreeze(p);
  validated.add(frozen);
  return frozen;
}

/** Throws PolicyError unless `p` is a usable profile (for hand-built Profile objects). */
export function validateProfile(p: Profile): void {
  if (validated.has(p)) return;
  if (typeof p !== 'object' || p === null) throw new PolicyError('profile', 'expected a profile object', p);
  if (typeof p.name !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,62})$/.test(p.name)) {
    throw new PolicyError('name', 'must be 1-63 characters of a-z, 0-9 and "-", starting with a letter or digit', p.name);
  }
  checkPort('outboundPort', p.outboundPort);
  checkPort('inboundPort', p.inboundPort);
  if (p.outboundPort === p.inboundPort) {
    throw new PolicyError('inboundPort', `must differ from outboundPort (${p.outboundPort})`, p.inboundPort);
  }
  checkUid('proxyUid', p.proxyUid);
  for (const k of ['dnsPort', 'statusPort', 'metricsPort', 'hbonePort'] as const) {
    if (p[k] !== undefined) checkPort(k, p[k]);
  }
  checkPortList('adminPorts', p.adminPorts);
  checkPortList('excludeInboundPorts', p.defaultExcludeInboundPorts);
  checkPortList('excludeOutboundPorts', p.defaultExcludeOutboundPorts);
  if (!DIALECTS.includes(p.dialect)) {
    throw new PolicyError('dialect', `unknown annotation dialect; known: ${DIALECTS.join(', ')}`, p.dialect);
  }
  if (typeof p.sidecar !== 'object' || p.sidecar === null) throw new PolicyError('sidecar', 'expected { containerName?, label? }', p.sidecar);
  for (const k of ['containerName', 'label'] as const) {
    const v = p.sidecar[k];
    if (v !== undefined && (typeof v !== 'string' || v === '')) throw new PolicyError(`sidecar.${k}`, 'must be a non-empty string', v);
  }
}

export function isPort(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 65535;
}

/** uid_t is 32 bits and (uid_t)-1 means "no uid", so 0..2^32-2. */
export function isUid(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xfffffffe;
}

export function checkPort(field: string, v: unknown): void {
  if (!isPort(v)) throw new PolicyError(field, 'is not a port (1-65535)', v);
}

export function checkUid(field: string, v: unknown): void {
  if (!isUid(v)) throw new PolicyError(field, 'is not a uid (integer 0-4294967294)', v);
}

export function checkPortList(field: string, v: unknown): void {
  if (!Array.isArray(v)) throw new PolicyError(field, 'expected an array of ports', v);
  v.forEach((x, i) => checkPort(`${field}[${i}]`, x));
}

/**
 * Which mesh's sidecar a pod carries, from its container names and labels; undefined when
 * none. Several at once is a misconfiguration we refuse to guess about.
 */
export function detectProfile(pod: { containerNames: readonly string[]; labels?: Readonly<Record<string, string>> }): Profile | undefined {
  const labels = pod.labels ?? {};
  const hits = [...PROFILES.values()].filter(
    (p) =>
      (p.sidecar.containerName !== undefined && pod.containerNames.includes(p.sidecar.containerName)) ||
      (p.sidecar.label !== undefined && Object.hasOwn(labels, p.sidecar.label)),
  );
  if (hits.length > 1) {
    throw new PolicyError('sidecar', `pod carries sidecars of several meshes: ${hits.map((p) => p.name).join(', ')}`);
  }
  return hits[0];
}

function copyList(field: string, v: readonly number[] | undefined): number[] {
  if (v === undefined) return [];
  checkPortList(field, v);
  return [...v];
}

function deepFreeze<T extends object>(o: T): T {
  for (const v of Object.values(o)) if (typeof v === 'object' && v !== null) deepFreeze(v);
  return Object.freeze(o);
}

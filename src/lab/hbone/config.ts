// SPDX-License-Identifier: Apache-2.0
// What the lab's control plane (src/lab/hbone/mesh.ts, istiod's role) tells each HBONE node
// proxy: the mesh's workloads and nodes (the WDS part of xDS, reduced to what the proxy
// decides on), the root certificate, and the certificates of the identities of the workloads
// on the proxy's own node (the CA issues a node proxy nothing else). One snapshot, replaced
// whole: PUT /v1/config on the proxy's control socket.
import net from 'node:net';

export interface HboneWorkload {
  /** Pod name, namespace and service account: the identity is spiffe://<td>/ns/<namespace>/sa/<serviceAccount>. */
  name: string;
  namespace: string;
  serviceAccount: string;
  node: string;
  ips: string[];
  /** Enrolled in the ambient dataplane (reached over HBONE); false: a pod outside the mesh. */
  hbone: boolean;
  /** Authorization: SPIFFE ids refused towards this workload (401), the lab's one policy. */
  denyFrom?: string[];
}

export interface HboneNodeInfo { name: string; proxyIps: string[] }

export interface HboneConfig {
  node: string;
  trustDomain: string;
  cluster: string;
  /** PEM of the mesh root (trust anchor for both directions). */
  ca: string;
  /** Certificates (PEM) of the identities of this node's workloads. */
  identities: { id: string; cert: string; key: string }[];
  workloads: HboneWorkload[];
  nodes: HboneNodeInfo[];
}

/** An address as the proxy's sockets report it (v4-mapped folded to v4, v6 canonical). */
export function canonicalIp(ip: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (m) return m[1];
  if (net.isIPv6(ip)) return new net.SocketAddress({ address: ip, family: 'ipv6' }).address;
  return ip;
}

/** ip:port, [v6]:port */
export function hostPort(ip: string, port: number): string {
  return net.isIPv6(ip) ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** Parses an HBONE authority (ip:port or [v6]:port); null when it is not one. */
export function parseAuthority(a: string | undefined): { ip: string; port: number } | null {
  if (!a) return null;
  const v6 = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(a);
  const m = v6 ?? /^(\d+\.\d+\.\d+\.\d+):(\d{1,5})$/.exec(a);
  if (!m || net.isIP(m[1]) !== (v6 ? 6 : 4)) return null;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return null;
  return { ip: canonicalIp(m[1]), port };
}

export function identityOf(td: string, w: Pick<HboneWorkload, 'namespace' | 'serviceAccount'>): string {
  return `spiffe://${td}/ns/${w.namespace}/sa/${w.serviceAccount}`;
}

/** Checks the shape of a snapshot (the control socket's 400). */
export function checkConfig(c: unknown): HboneConfig {
  const o = c as HboneConfig;
  const str = (v: unknown, f: string) => { if (typeof v !== 'string' || v === '') throw new Error(`${f}: expected a string`); };
  if (typeof o !== 'object' || o === null) throw new Error('expected an object');
  str(o.node, 'node'); str(o.trustDomain, 'trustDomain'); str(o.cluster, 'cluster'); str(o.ca, 'ca');
  if (!Array.isArray(o.identities) || !Array.isArray(o.workloads) || !Array.isArray(o.nodes)) throw new Error('identities, workloads, nodes: expected arrays');
  o.identities.forEach((i, n) => { str(i.id, `identities[${n}].id`); str(i.cert, `identities[${n}].cert`); str(i.key, `identities[${n}].key`); });
  o.workloads.forEach((w, n) => {
    for (const f of ['name', 'namespace', 'serviceAccount', 'node'] as const) str(w[f], `workloads[${n}].${f}`);
    if (!Array.isArray(w.ips) || w.ips.some((ip) => net.isIP(ip) === 0)) throw new Error(`workloads[${n}].ips: expected IP addresses`);
    if (typeof w.hbone !== 'boolean') throw new Error(`workloads[${n}].hbone: expected a boolean`);
  });
  o.nodes.forEach((x, n) => {
    str(x.name, `nodes[${n}].name`);
    if (!Array.isArray(x.proxyIps) || x.proxyIps.some((ip) => net.isIP(ip) === 0)) throw new Error(`nodes[${n}].proxyIps: expected IP addresses`);
  });
  return o;
}

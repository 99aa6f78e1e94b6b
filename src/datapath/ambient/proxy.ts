// SPDX-License-Identifier: Apache-2.0
// The node proxy contract (docs/ambient.md): what a node proxy announces to
// the agent, how the agent checks it, and what the agent sets up in the
// proxy's netns so captured packets reach its sockets.
import { inNetns, links, type Link } from '../../sys/links.ts';
import { netnsIdentity } from '../../sys/netns.ts';
import { run } from '../../sys/exec.ts';

/** One node proxy instance, as it announces itself (POST /v1/ambient/proxy). */
export interface NodeProxy {
  /** Instance name, unique on the node (e.g. the proxy pod's uid); a new instance (upgrade) has a new id. */
  id: string;
  /** Path of the proxy's network namespace (/proc/<pid>/ns/net or /run/netns/<name>). */
  netns: string;
  /** Its interface in that netns: a veth whose peer is in the node netns (wired like a pod's). */
  ifName: string;
  /**
   * Its transparent listeners, bound in its netns on every address (IP_TRANSPARENT). `dns`: its DNS
   * listener, UDP and TCP on the same port (ztunnel: 15053); enrolled pods' queries to their
   * nameservers are captured to it only while it is announced, ready and open.
   */
  ports: { outbound: number; inbound: number; hbone?: number; dns?: number };
  /** Ready for new flows. false: keeps its flows, takes no new ones (draining, or not ready yet). */
  ready: boolean;
  /**
   * In-pod engine (iptables) only: the unix socket (HTTP) where the proxy takes the snapshot of
   * enrolled pods whose netns it opens its listeners in (PUT /v1/pods), and its cgroup (v2, absolute
   * or relative to the mount), whose sockets the pod rules never capture.
   */
  control?: string;
  cgroup?: string;
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$/;
const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

function port(v: unknown, what: string, optional = false): number | undefined {
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 65535) throw new Error(`${what}: expected a port 1-65535, got ${JSON.stringify(v)}`);
  return v;
}

/** Validates an announcement; throws an Error naming the bad field. Changes nothing. */
export function parseNodeProxy(body: unknown): NodeProxy {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('node proxy announcement: expected a JSON object');
  const b = body as Record<string, unknown>;
  if (typeof b.id !== 'string' || !ID_RE.test(b.id)) throw new Error(`id: expected ${ID_RE}, got ${JSON.stringify(b.id)}`);
  if (typeof b.netns !== 'string' || !b.netns.startsWith('/')) throw new Error(`netns: expected an absolute path, got ${JSON.stringify(b.netns)}`);
  if (typeof b.ifName !== 'string' || !IFNAME_RE.test(b.ifName)) throw new Error(`ifName: expected an interface name, got ${JSON.stringify(b.ifName)}`);
  if (typeof b.ready !== 'boolean') throw new Error(`ready: expected true or false, got ${JSON.stringify(b.ready)}`);
  const p = b.ports;
  if (typeof p !== 'object' || p === null) throw new Error('ports: expected { outbound, inbound, hbone?, dns? }');
  const ports = p as Record<string, unknown>;
  const out = port(ports.outbound, 'ports.outbound')!;
  const inb = port(ports.inbound, 'ports.inbound')!;
  const hbone = port(ports.hbone, 'ports.hbone', true);
  const dns = port(ports.dns, 'ports.dns', true);
  const all = [out, inb, hbone, dns].filter((x) => x !== undefined);
  if (new Set(all).size !== all.length) throw new Error('ports: outbound, inbound, hbone and dns must differ');
  for (const k of ['control', 'cgroup'] as const) {
    const v = b[k];
    if (v !== undefined && (typeof v !== 'string' || !v.startsWith('/') || v.includes('\n') || v.split('/').includes('..'))) {
      throw new Error(`${k}: expected an absolute path, got ${JSON.stringify(v)}`);
    }
  }
  return {
    id: b.id, netns: b.netns, ifName: b.ifName, ready: b.ready, ports: { outbound: out, inbound: inb, ...(hbone ? { hbone } : {}), ...(dns ? { dns } : {}) },
    ...(typeof b.control === 'string' ? { control: b.control } : {}), ...(typeof b.cgroup === 'string' ? { cgroup: b.cgroup } : {}),
  };
}

/** What the agent found for an announced proxy. */
export interface ProxyLink {
  /** The proxy's interface, in its netns. */
  ifindex: number;
  mac: Uint8Array;
  /** The host-side peer, in the node netns. */
  hostIfindex: number;
  hostName: string;
  /** Id of the proxy's netns in the node netns (for socket lookups from the node's tc programs). */
  netnsId: number;
}

interface IpLink extends Link { address?: string; link_netnsid?: number; link_type?: string }

/** Finds the proxy's veth pair from its announcement; throws a clear Error when it is not one. */
export function resolveProxyLink(p: NodeProxy, nodeNetns?: string): ProxyLink {
  const id = netnsIdentity(p.netns);
  if ('error' in id) throw new Error(`netns: ${id.error}`);
  let inside: IpLink;
  try {
    inside = JSON.parse(inNetns(p.netns, ['ip', '-j', 'link', 'show', 'dev', p.ifName]))[0] as IpLink;
  } catch (e) {
    throw new Error(`ifName: no interface ${p.ifName} in ${p.netns}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (!inside.link_index || inside.link_netnsid === undefined) throw new Error(`ifName: ${p.ifName} in ${p.netns} is not a veth with its peer in another netns`);
  if (!inside.address || !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(inside.address)) throw new Error(`ifName: ${p.ifName} has no Ethernet address`);
  // The listing assigns the node's id for the proxy netns if it had none.
  const host = (links(nodeNetns) as IpLink[]).find((l) => l.ifindex === inside.link_index);
  if (!host || host.link_index !== inside.ifindex || host.link_netnsid === undefined) {
    throw new Error(`ifName: the peer of ${p.ifName} (ifindex ${inside.link_index}) is not in the node netns`);
  }
  return {
    ifindex: inside.ifindex, mac: Uint8Array.from(inside.address.split(':').map((h) => parseInt(h, 16))),
    hostIfindex: host.ifindex, hostName: host.ifname, netnsId: host.link_netnsid,
  };
}

/** Routing in the proxy's netns: packets with the "local" mark bit are delivered locally (dst is not ours). */
export interface ProxyRouting { markLocal: number; table: number }

function ip(netns: string, args: string[]): string {
  return inNetns(netns, ['ip', ...args]);
}

/** Installs (idempotently) one rule and one local route per family in the proxy's netns. */
export function installProxyRouting(netns: string, r: ProxyRouting): void {
  const mark = `0x${r.markLocal.toString(16)}/0x${r.markLocal.toString(16)}`;
  for (const fam of ['-4', '-6']) {
    const rules = JSON.parse(ip(netns, [fam, '-j', 'rule', 'show', 'table', String(r.table)]) || '[]') as unknown[];
    if (rules.length === 0) ip(netns, [fam, 'rule', 'add', 'fwmark', mark, 'lookup', String(r.table), 'pref', String(r.table)]);
    ip(netns, [fam, 'route', 'replace', 'local', fam === '-4' ? '0.0.0.0/0' : '::/0', 'dev', 'lo', 'table', String(r.table)]);
  }
}

/**
 * Forgets the proxy netns's neighbour entries of a pod's addresses (the pod is gone). A pod
 * made later with the same address has another MAC; without this the proxy, which reaches
 * pods over L2, would send to the old one until the entry went stale and failed its probes
 * (tens of seconds of lost SYNs). A netns already gone is fine.
 */
export function forgetNeighbours(netns: string, ips: readonly string[]): void {
  if (ips.length === 0) return;
  // One process per proxy however many addresses (-force: go on past a line that fails).
  try { inNetns(netns, ['ip', '-force', '-batch', '-'], ips.map((a) => `neigh flush to ${a}\n`).join('')); } catch { /* gone already */ }
}

/** Removes what installProxyRouting made (a netns already gone is fine). */
export function removeProxyRouting(netns: string, r: ProxyRouting): void {
  for (const fam of ['-4', '-6']) {
    try {
      run(['nsenter', `--net=${netns}`, '--', 'ip', fam, 'rule', 'del', 'table', String(r.table)], { stdio: ['ignore', 'ignore', 'ignore'] });
      run(['nsenter', `--net=${netns}`, '--', 'ip', fam, 'route', 'flush', 'table', String(r.table)], { stdio: ['ignore', 'ignore', 'ignore'] });
    } catch { /* gone already */ }
  }
}

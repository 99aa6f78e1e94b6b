// SPDX-License-Identifier: Apache-2.0
// Network plumbing of the lab, kept apart from the topology bookkeeping so pod wiring can
// later be done by the real CNI chain instead of wirePodDirect().
// Nothing here touches the host netns: links are created inside lab namespaces only.
import { writeFileSync } from 'node:fs';
import { addNetns, ipBatch, netnsPath, withNetns } from '../sys/netns.ts';
import { setLinkUp } from '../sys/ifup.ts';
import { FABRIC_BRIDGE_MAC, fabricPortName, nodeAddrs } from './addr.ts';
import { labCni } from './cni.ts';

export const NODE_BRIDGE = 'mwbr0';
export const FABRIC_BRIDGE = 'mwfab0';
/** A node's transit interface, and a pod's interface, in their own netns. */
export const NODE_UPLINK = 'eth0';
export const POD_IFNAME = 'eth0';

/** Addresses must be usable at once, without waiting for duplicate address detection. */
const NO_DAD = {
  'net.ipv6.conf.all.accept_dad': 0,
  'net.ipv6.conf.default.accept_dad': 0,
};
/** Routing only inside the node netns (never the host's). */
const ROUTER = {
  'net.ipv4.ip_forward': 1,
  'net.ipv6.conf.all.forwarding': 1,
};

/** Creates a named netns with DAD off and `lo` up: what a container runtime's sandbox gives. */
export function createSandboxNetns(ns: string, router = false): void {
  addNetns(ns);
  const sysctls: Record<string, number> = router ? { ...NO_DAD, ...ROUTER } : NO_DAD;
  // In process, with this thread in the new netns: /proc/sys/net shows the netns of the thread
  // that opens it, and the ioctl socket is made there (no `nsenter sh`, no `ip`, per pod).
  withNetns(netnsPath(ns), () => {
    for (const [k, v] of Object.entries(sysctls)) writeFileSync(`/proc/sys/${k.replace(/\./g, '/')}`, String(v));
    setLinkUp('lo');
  });
}

/** The fabric netns holds the transit bridge that joins all node netns (a switch). */
export function createFabric(fabricNs: string): void {
  createSandboxNetns(fabricNs);
  ipBatch(fabricNs, [
    `link add ${FABRIC_BRIDGE} address ${FABRIC_BRIDGE_MAC} type bridge`,
    `link set ${FABRIC_BRIDGE} up`,
  ]);
}

/**
 * Builds a node netns: pod bridge (the pods' gateway), an uplink into the fabric with the
 * node IP, and routes to the pod CIDRs of `peers` (indexes of nodes that already exist).
 */
export function createNodeNetwork(fabricNs: string, nodeNs: string, index: number, peers: number[]): void {
  const a = nodeAddrs(index);
  createSandboxNetns(nodeNs, true);
  const port = fabricPortName(index);
  ipBatch(fabricNs, [
    `link add ${port} type veth peer name ${NODE_UPLINK} netns ${nodeNs}`,
    `link set ${port} master ${FABRIC_BRIDGE}`,
    `link set ${port} up`,
  ]);
  ipBatch(nodeNs, [
    `link add ${NODE_BRIDGE} address ${a.bridgeMac} type bridge`,
    `addr add ${a.gw4}/24 dev ${NODE_BRIDGE}`,
    `addr add ${a.gw6}/64 dev ${NODE_BRIDGE} nodad`,
    `link set ${NODE_BRIDGE} up`,
    `addr add ${a.ip4}/24 dev ${NODE_UPLINK}`,
    `addr add ${a.ip6}/64 dev ${NODE_UPLINK} nodad`,
    `link set ${NODE_UPLINK} up`,
    ...peers.flatMap((p) => routeLines(p)),
  ]);
}

function routeLines(peer: number): string[] {
  const p = nodeAddrs(peer);
  return [
    `route add ${p.podCidr4} via ${p.ip4} dev ${NODE_UPLINK}`,
    `route add ${p.podCidr6} via ${p.ip6} dev ${NODE_UPLINK}`,
  ];
}

/** Adds routes in an existing node netns to a newly added node's pod CIDRs. */
export function addPeerRoutes(nodeNs: string, peer: number): void {
  ipBatch(nodeNs, routeLines(peer));
}

export interface PodNetwork {
  ip4: string;
  ip6: string;
  gw4: string;
  gw6: string;
  /** Host-side veth in the node netns and its ifindex there. */
  hostVeth: string;
  hostIfindex: number;
}

/**
 * Direct wiring (stand-in for the CNI bridge + host-local chain): a veth from the node's
 * bridge to `eth0` in the pod netns, the given addresses, default routes via the bridge
 * (with MESHWARP_CNI=ptp: a routed veth, as ptp + host-local make it).
 */
export function wirePodDirect(
  nodeNs: string, nodeIndex: number, podNs: string, hostVeth: string, addrs: { ip4: string; ip6: string },
): PodNetwork {
  const a = nodeAddrs(nodeIndex);
  // MESHWARP_CNI=ptp: wired as Debian's ptp plugin does it (the CNI matrix) — the host veth is
  // on no bridge, it carries the gateway addresses itself (/32, /128), the node routes the
  // pod's /32 and /128 to it, and the pod reaches even its own subnet through the gateway.
  const ptp = labCni() === 'ptp';
  const shown = ipBatch(nodeNs, [
    `link add ${hostVeth} type veth peer name ${POD_IFNAME} netns ${podNs}`,
    ...(ptp
      ? [`addr add ${a.gw4}/32 dev ${hostVeth}`, `addr add ${a.gw6}/128 dev ${hostVeth} nodad`]
      : [`link set ${hostVeth} master ${NODE_BRIDGE}`]),
    `link set ${hostVeth} up`,
    ...(ptp ? [`route add ${addrs.ip4}/32 dev ${hostVeth} scope link`, `route add ${addrs.ip6}/128 dev ${hostVeth}`] : []),
    `link show dev ${hostVeth}`,
  ], true);
  ipBatch(podNs, [
    `addr add ${addrs.ip4}/${ptp ? 32 : 24} dev ${POD_IFNAME}`,
    `addr add ${addrs.ip6}/${ptp ? 128 : 64} dev ${POD_IFNAME} nodad`,
    `link set ${POD_IFNAME} up`,
    ...(ptp ? [`route add ${a.gw4}/32 dev ${POD_IFNAME} scope link`, `route add ${a.gw6}/128 dev ${POD_IFNAME}`] : []),
    `route add 0.0.0.0/0 via ${a.gw4} dev ${POD_IFNAME}`,
    `route add ::/0 via ${a.gw6} dev ${POD_IFNAME}`,
  ]);
  return { ...addrs, gw4: a.gw4, gw6: a.gw6, hostVeth, hostIfindex: parseIfindex(shown, hostVeth) };
}

function parseIfindex(jsonOut: string, ifname: string): number {
  // `ip -j -batch` prints one JSON array per show command; take the last one.
  const m = jsonOut.trim().match(/\[[^\n]*\]\s*$/);
  const arr = m ? JSON.parse(m[0]) as Array<{ ifindex?: number; ifname?: string }> : [];
  const hit = arr.find((l) => l.ifname === ifname);
  if (hit?.ifindex === undefined) throw new Error(`could not read ifindex of ${ifname} from ip output: ${jsonOut}`);
  return hit.ifindex;
}

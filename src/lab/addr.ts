// SPDX-License-Identifier: Apache-2.0
// The lab's address and interface-name plan. Every lab uses the same private ranges:
// they only exist inside the lab's own network namespaces, so labs never collide.
// IPv6 groups reuse the decimal digits of the IPv4 octet (10.244.1.12 ↔ fd00:244:1::12),
// which is still canonical IPv6 text, so strings compare equal to what the kernel prints.

export const MAX_NODES = 254;
/** Pod host numbers per node: .2 … .254 (.1 is the bridge gateway). */
export const FIRST_POD_HOST = 2;
export const LAST_POD_HOST = 254;

export interface NodeAddrs {
  podCidr4: string;
  podCidr6: string;
  gw4: string;
  gw6: string;
  /** The node IP: its address on the transit network that joins the nodes. */
  ip4: string;
  ip6: string;
  /** Fixed bridge MAC: a bridge without one takes its lowest port's MAC, which changes as pods come and go. */
  bridgeMac: string;
}

export const TRANSIT_CIDR4 = '10.255.0.0/24';
export const TRANSIT_CIDR6 = 'fd00:255::/64';
export const FABRIC_BRIDGE_MAC = '02:00:0a:ff:00:01';

function checkNode(i: number): void {
  if (!Number.isInteger(i) || i < 1 || i > MAX_NODES) throw new Error(`node index ${i} out of range 1..${MAX_NODES}`);
}

export function nodeAddrs(i: number): NodeAddrs {
  checkNode(i);
  return {
    podCidr4: `10.244.${i}.0/24`,
    podCidr6: `fd00:244:${i}::/64`,
    gw4: `10.244.${i}.1`,
    gw6: `fd00:244:${i}::1`,
    ip4: `10.255.0.${i}`,
    ip6: `fd00:255::${i}`,
    bridgeMac: `02:00:0a:f4:${i.toString(16).padStart(2, '0')}:01`,
  };
}

export function podAddrs(nodeIndex: number, host: number): { ip4: string; ip6: string } {
  checkNode(nodeIndex);
  if (!Number.isInteger(host) || host < FIRST_POD_HOST || host > LAST_POD_HOST) {
    throw new Error(`pod host number ${host} out of range ${FIRST_POD_HOST}..${LAST_POD_HOST}`);
  }
  return { ip4: `10.244.${nodeIndex}.${host}`, ip6: `fd00:244:${nodeIndex}::${host}` };
}

/** Lab prefixes: short enough that `${prefix}p${n}` stays within IFNAMSIZ-1 = 15 chars. */
export const PREFIX_RE = /^[a-z][a-z0-9]{1,5}$/;
/** Node and pod names (DNS-label-like, no dots so they never clash with cgroup.* files). */
export const NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** Host-side veth of a pod in its node netns: unique per lab (the pod sequence never repeats). */
export function hostVethName(prefix: string, podSeq: number): string {
  const name = `${prefix}p${podSeq}`;
  if (name.length > 15) throw new Error(`interface name ${name} longer than 15 characters`);
  return name;
}

/** The node's end of its transit link, inside the fabric netns. */
export function fabricPortName(nodeIndex: number): string {
  return `n${nodeIndex}`;
}

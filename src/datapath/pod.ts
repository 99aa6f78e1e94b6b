// SPDX-License-Identifier: Apache-2.0
// The one pod model. A PodIntent is what the agent wants for one pod sandbox,
// whatever told it (CNI now, the Kubernetes watch next); a PodTarget is the
// part a datapath driver needs. One key everywhere: the sandbox id (CNI's
// container id), because a pod can have two sandboxes at once while Kubernetes
// re-creates one, and a runtime may give every pod the same name.
import { isIP } from 'node:net';
import type { Dataplane } from './driver.ts';

export interface PodKey {
  /** The sandbox (CNI container id): the key in the agent, the state file and the datapath. */
  sandboxId: string;
  /** Kubernetes pod uid ('' outside Kubernetes). */
  uid: string;
  namespace: string;
  name: string;
}

export interface HostVeth { name: string; ifindex: number }

export interface PodTarget {
  key: PodKey;
  /** The sandbox's network namespace (e.g. /run/netns/<name> or /proc/<pid>/ns/net). */
  netns: string;
  /** Addresses of the pod's interface, IPv4 and IPv6 (several per family allowed). */
  ips: string[];
  /** The pod's host-side veth in the node's netns. */
  hostVeth?: HostVeth;
  /**
   * The nameservers of the pod's resolv.conf (kubelet writes the cluster DNS there): its
   * port-53 queries to them go to the proxy's DNS port when the profile has one (S6).
   */
  dnsServers?: string[];
}

export interface PodIntent extends PodTarget {
  /** The pod's interface inside its netns (CNI_IFNAME). */
  ifName: string;
  dataplane: Dataplane;
  /** Mesh profile (istio, linkerd, kuma, osm, fsm, custom). */
  profile: string;
  annotations: Record<string, string>;
  /** When the agent first applied it (ISO time). */
  meshedAt: string;
}

/** "namespace/name" for people; the sandbox id when the runtime gave no name (not Kubernetes). */
export function podName(k: PodKey): string {
  return k.name ? `${k.namespace || 'default'}/${k.name}` : k.sandboxId;
}

/** A pod's first address of each family (the sidecar datapath keys one address per family). */
export function firstIps(ips: readonly string[]): { ip4?: string; ip6?: string } {
  return { ip4: ips.find((ip) => isIP(ip) === 4), ip6: ips.find((ip) => isIP(ip) === 6) };
}

/** A PodTarget for a sandbox that is not Kubernetes' (lab, tests, bench): the name is its key. */
export function labTarget(sandboxId: string, netns: string, ips: (string | undefined)[], hostVeth?: HostVeth): PodTarget {
  return { key: { sandboxId, uid: '', namespace: '', name: '' }, netns, ips: ips.filter((ip): ip is string => !!ip), hostVeth };
}

// SPDX-License-Identifier: Apache-2.0
// The interface every interception mode implements, so one conformance suite
// runs against all of them: "mesh this pod with this policy", "unmesh it".
import type { PodPolicy } from '../profiles/index.ts';

export type Mode = 'ebpf' | 'iptables';
export const MODES: readonly Mode[] = ['ebpf', 'iptables'];

/** Parses a mode name; unknown names are a clear error. */
export function parseMode(s: string): Mode {
  if ((MODES as readonly string[]).includes(s)) return s as Mode;
  throw new Error(`unknown mode "${s}" (known: ${MODES.join(', ')})`);
}

/** What a driver needs to know about a pod on its node. */
export interface PodRef {
  /** Stable id, e.g. "namespace/name". */
  id: string;
  /** The pod's network namespace (e.g. /run/netns/<name> or /proc/<pid>/ns/net). */
  netnsPath: string;
  ip4?: string;
  ip6?: string;
  /** The pod's host-side veth in the node's netns. */
  hostVeth?: { name: string; ifindex: number };
}

/** Something a mode cannot do, declared rather than silently skipped. */
export interface Limitation { feature: string; reason: string }

export interface InterceptionDriver {
  readonly mode: Mode;
  /** Node-level setup (load, attach); idempotent. */
  start(): Promise<void>;
  /** Starts intercepting `pod` with `policy`. Meshing a meshed pod again replaces its policy. */
  mesh(pod: PodRef, policy: PodPolicy): Promise<void>;
  /** Stops intercepting `pod`; a pod that is not meshed is a no-op. */
  unmesh(pod: PodRef): Promise<void>;
  /** Removes everything the driver made on the node. */
  stop(): Promise<void>;
  /** Features of the conformance suite this mode cannot provide, with the reason. */
  limitations(): Limitation[];
}

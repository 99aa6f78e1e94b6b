// SPDX-License-Identifier: Apache-2.0
// Links and addresses as iproute2 reports them (`ip -j`), in this netns or in the one at a
// path, and running a command inside another netns.
import { run } from './exec.ts';

/**
 * Runs argv inside the netns at `netnsPath` (the network namespace only: same mounts,
 * cgroup and user) and returns its stdout. nsenter rather than `ip netns exec`, which
 * remounts /sys and would hide the /sys/fs/bpf pins.
 */
export function inNetns(netnsPath: string, argv: string[], input?: string): string {
  return run(['nsenter', `--net=${netnsPath}`, '--', ...argv], input === undefined ? {} : { input });
}

function ipJson<T>(args: string[], netnsPath?: string): T {
  const argv = ['ip', '-j', ...args];
  return JSON.parse(netnsPath === undefined ? run(argv) : inNetns(netnsPath, argv)) as T;
}

export interface Link {
  ifindex: number;
  ifname: string;
  /** A veth's peer ifindex, in the peer's netns. */
  link_index?: number;
}

export interface Address {
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
  scope: string;
}

/** Every link of the netns (this one when no path is given). */
export function links(netnsPath?: string): Link[] {
  return ipJson<Link[]>(['link', 'show'], netnsPath);
}

/** The link named `ifname`; throws CommandError when there is none. */
export function linkByName(ifname: string, netnsPath?: string): Link {
  return ipJson<Link[]>(['link', 'show', 'dev', ifname], netnsPath)[0];
}

/** The link's kind (`ip -d`'s linkinfo.info_kind: veth, macvlan, ipvlan, bridge…); undefined for a plain device. */
export function linkKind(ifname: string, netnsPath?: string): string | undefined {
  return ipJson<{ linkinfo?: { info_kind?: string } }[]>(['-d', 'link', 'show', 'dev', ifname], netnsPath)[0]?.linkinfo?.info_kind;
}

export function linkByIndex(ifindex: number, netnsPath?: string): Link | undefined {
  return links(netnsPath).find((l) => l.ifindex === ifindex);
}

/** Every address of the netns, with the link it is on. */
export function addresses(netnsPath?: string): (Address & { ifname: string })[] {
  const all = ipJson<{ ifname: string; addr_info?: Address[] }[]>(['addr', 'show'], netnsPath);
  return all.flatMap((l) => (l.addr_info ?? []).map((a) => ({ ...a, ifname: l.ifname })));
}

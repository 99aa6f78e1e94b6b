// SPDX-License-Identifier: Apache-2.0
// A pod's host-side veth, found in process: the ethtool ioctl (SIOCETHTOOL) gives a link's
// driver and a veth's peer ifindex in the calling thread's netns (entered with withNetns), what
// `ip -d link` (info_kind) and `ip link` (link_index) report, without the `nsenter ip` processes
// (a few ms each, more under load) a CNI ADD used to wait for.
import koffi from 'koffi';
import { AF_INET, SOCK_DGRAM, close, errno, ifIndexToName, ifNameToIndex, ioctl, socket, sysError } from './libc.ts';
import { withNetns } from './netns.ts';
import { ERRNO } from '../bpf/uapi.ts';

const SIOCETHTOOL = 0x8946;
const ETHTOOL_GDRVINFO = 0x03;
const ETHTOOL_GSTRINGS = 0x1b;
const ETHTOOL_GSTATS = 0x1d;
const ETH_SS_STATS = 1;
const ETH_GSTRING_LEN = 32;
/** struct ethtool_drvinfo: driver at 4, n_stats at 180, 196 bytes. */
const DRVINFO_SIZE = 196;

/** Thrown when the interface does not exist in the netns. */
export class NoSuchLink extends Error {}

/** One SIOCETHTOOL call on `ifname` with `data` (its first u32 the command); false when the device has no such ethtool op. */
function ethtool(ifname: string, data: Buffer): boolean {
  if (Buffer.byteLength(ifname) > 15) throw new NoSuchLink(`interface name ${JSON.stringify(ifname)} is longer than 15 bytes`);
  const ifr = Buffer.alloc(40); // struct ifreq: name[16], then the ifr_data pointer
  ifr.write(ifname, 0, 'utf8');
  ifr.writeBigUInt64LE(BigInt(koffi.address(data)), 16);
  const fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) throw sysError('socket');
  try {
    if (ioctl(fd, SIOCETHTOOL, ifr) === 0) return true;
    const e = errno();
    if (e === ERRNO.ENODEV) throw new NoSuchLink(`no interface ${JSON.stringify(ifname)}`);
    if (e === ERRNO.EOPNOTSUPP) return false;
    throw sysError(`SIOCETHTOOL(${ifname})`, e);
  } finally {
    close(fd);
  }
}

const cstr = (b: Buffer, at: number, len: number): string => {
  const s = b.subarray(at, at + len);
  const z = s.indexOf(0);
  return s.toString('utf8', 0, z < 0 ? len : z);
};

/** The link's driver ("veth", "macvlan", "ipvlan", "bridge"…) and its stat count; undefined driver when it reports none. */
function drvinfo(ifname: string): { driver: string | undefined; nStats: number } {
  const b = Buffer.alloc(DRVINFO_SIZE);
  b.writeUInt32LE(ETHTOOL_GDRVINFO, 0);
  if (!ethtool(ifname, b)) return { driver: undefined, nStats: 0 };
  return { driver: cstr(b, 4, 32) || undefined, nStats: b.readUInt32LE(180) };
}

export function linkDriver(ifname: string): string | undefined {
  return drvinfo(ifname).driver;
}

/**
 * The ifindex of a veth's peer (in the peer's netns), read from the veth driver's ethtool
 * statistic "peer_ifindex" (found by name, not position); undefined when `ifname` is not a
 * veth or has no peer. Throws NoSuchLink when there is no such interface.
 */
export function vethPeerIndex(ifname: string): number | undefined {
  const { driver, nStats } = drvinfo(ifname);
  if (driver !== 'veth' || nStats === 0) return undefined;
  const names = Buffer.alloc(12 + nStats * ETH_GSTRING_LEN);
  names.writeUInt32LE(ETHTOOL_GSTRINGS, 0);
  names.writeUInt32LE(ETH_SS_STATS, 4);
  names.writeUInt32LE(nStats, 8);
  if (!ethtool(ifname, names)) return undefined;
  const n = Math.min(nStats, names.readUInt32LE(8));
  let at = -1;
  for (let i = 0; i < n && at < 0; i++) if (cstr(names, 12 + i * ETH_GSTRING_LEN, ETH_GSTRING_LEN) === 'peer_ifindex') at = i;
  if (at < 0) return undefined;
  const stats = Buffer.alloc(8 + nStats * 8);
  stats.writeUInt32LE(ETHTOOL_GSTATS, 0);
  stats.writeUInt32LE(nStats, 4);
  if (!ethtool(ifname, stats) || at >= stats.readUInt32LE(4)) return undefined;
  const peer = Number(stats.readBigUInt64LE(8 + at * 8));
  return peer > 0 ? peer : undefined;
}

/** The name of the link with `ifindex` in the calling thread's netns; undefined when there is none. */
export function linkName(ifindex: number): string | undefined {
  const buf = Buffer.alloc(16);
  return ifIndexToName(ifindex, buf) === null ? undefined : cstr(buf, 0, 16);
}

/**
 * The host-side peer (in this netns, the node's) of interface `ifName` of the pod netns at
 * `netns`; undefined when it is not a veth (a macvlan's or ipvlan's parent is the node's uplink,
 * never the pod's own interface) or its peer is not here. Throws NoSuchLink when the pod has no `ifName`.
 */
export function hostVethOf(netns: string, ifName: string): { name: string; ifindex: number } | undefined {
  const peer = withNetns(netns, () => vethPeerIndex(ifName));
  if (peer === undefined) return undefined;
  const name = linkName(peer);
  // The link may have been renamed or deleted (its index reused) since the pod side was read.
  if (name === undefined || ifNameToIndex(name) !== peer) return undefined;
  return { name, ifindex: peer };
}

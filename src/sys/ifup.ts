// SPDX-License-Identifier: Apache-2.0
// Setting a link up in the calling thread's netns (entered with withNetns) with the
// SIOCGIFFLAGS/SIOCSIFFLAGS ioctls, what `ip link set X up` does, without its process
// (a sandbox netns used to cost an `nsenter sh` and an `ip`, a few ms each and more under load).
import { AF_INET, SOCK_DGRAM, close, ioctl, socket, sysError } from './libc.ts';

const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const IFF_UP = 0x1;

/** Sets `ifname` (of the calling thread's netns) up; throws with errno when it cannot. */
export function setLinkUp(ifname: string): void {
  if (Buffer.byteLength(ifname) > 15) throw new Error(`interface name ${JSON.stringify(ifname)} is longer than 15 bytes`);
  const ifr = Buffer.alloc(40); // struct ifreq: name[16], then ifr_flags (short)
  ifr.write(ifname, 0, 'utf8');
  const fd = socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) throw sysError('socket');
  try {
    if (ioctl(fd, SIOCGIFFLAGS, ifr) !== 0) throw sysError(`SIOCGIFFLAGS(${ifname})`);
    ifr.writeUInt16LE(ifr.readUInt16LE(16) | IFF_UP, 16);
    if (ioctl(fd, SIOCSIFFLAGS, ifr) !== 0) throw sysError(`SIOCSIFFLAGS(${ifname})`);
  } finally {
    close(fd);
  }
}

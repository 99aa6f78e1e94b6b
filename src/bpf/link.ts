// SPDX-License-Identifier: Apache-2.0
// Attachments. cgroup and tcx attachments are bpf_links: the kernel keeps them
// while a fd or a pin holds them, other programs on the same hook keep running
// (links are multi-attach), and a link can swap its program in place.
// Legacy tc is a cls_bpf filter on clsact with our own priority/handle.
import { closeSync, mkdirSync, openSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import koffi from 'koffi';
import { close } from '../sys/libc.ts';
import { assertOnBpffs } from '../sys/bpffs.ts';
import { fn, check, BpfError, TcHook, TcOpts } from './libbpf.ts';
import { tcxLinkCreate, tcxQuery, type TcxAnchor } from './sys.ts';
import { ATTACH_TYPE, ERRNO as E, TC_ATTACH } from './uapi.ts';
import { haveTcx, UnsupportedFeatureError } from './features.ts';
import type { Program } from './object.ts';

export type Direction = 'ingress' | 'egress';
export interface LinkInfo {
  type: number; id: number; progId: number;
  /** tcx links: the device's ifindex, 0 once the device is gone (a defunct link). */
  ifindex: number;
  /** netns links (sk_lookup): the inode of the netns, 0 once it is gone. Same union slot as ifindex. */
  netnsIno: number;
}

export class Link {
  readonly fd: number;
  readonly what: string;
  pinPath: string | undefined;
  #closed = false;

  private constructor(fd: number, what: string, pinPath?: string) {
    this.fd = fd;
    this.what = what;
    this.pinPath = pinPath;
  }

  /** Attaches a cgroup program (connect4/6, sock_ops, getsockopt, …) to the cgroup at `cgroupPath`. */
  static attachCgroup(prog: Program, cgroupPath: string): Link {
    const cg = openSync(cgroupPath, 'r');
    try {
      const fd = check(`attach ${prog.name} to cgroup ${cgroupPath}`, fn.linkCreate(prog.fd, cg, prog.expectedAttachType, null));
      return new Link(fd, `${prog.name}@cgroup:${cgroupPath}`);
    } finally {
      closeSync(cg);
    }
  }

  /** Attaches a netns program (BPF sk_lookup) to the network namespace at `netnsPath`. */
  static attachNetns(prog: Program, netnsPath: string): Link {
    const ns = openSync(netnsPath, 'r');
    try {
      const fd = check(`attach ${prog.name} to netns ${netnsPath}`, fn.linkCreate(prog.fd, ns, prog.expectedAttachType, null));
      return new Link(fd, `${prog.name}@netns:${netnsPath}`);
    } finally {
      closeSync(ns);
    }
  }

  /**
   * Attaches a tc program as a tcx link at a chosen place in the hook's order.
   * On a kernel without tcx this throws UnsupportedFeatureError: ask haveTcx()
   * first to pick legacy tc instead.
   */
  static attachTcx(prog: Program, ifindex: number, dir: Direction, anchor?: TcxAnchor): Link {
    try {
      return new Link(tcxLinkCreate(prog.fd, ifindex, tcxAttachType(dir), anchor), `${prog.name}@tcx:${ifindex}/${dir}`);
    } catch (e) {
      // The attach errno alone cannot tell "no tcx" from a bad argument; the probe can.
      if (e instanceof BpfError) {
        const tcx = haveTcx();
        if (!tcx.available && !tcx.unknown) throw new UnsupportedFeatureError('tcx', e.errno);
      }
      throw e;
    }
  }

  /** Adopts a pinned link (e.g. after an agent restart). */
  static open(pinPath: string): Link {
    const fd = check(`open pinned link ${pinPath}`, fn.objGet(pinPath));
    return new Link(fd, `pinned:${pinPath}`, pinPath);
  }

  pin(path: string): void {
    assertOnBpffs(path);
    mkdirSync(dirname(path), { recursive: true });
    check(`pin ${this.what} at ${path}`, fn.objPin(this.fd, path));
    this.pinPath = path;
  }

  unpin(): void {
    if (this.pinPath) unlinkSync(this.pinPath);
    this.pinPath = undefined;
  }

  /** Replaces the program in place: no window where the hook runs nothing. */
  update(prog: Program): void {
    check(`update ${this.what} to ${prog.name}`, fn.linkUpdate(this.fd, prog.fd, null));
  }

  info(): LinkInfo {
    const buf = Buffer.alloc(256);
    const len = [buf.length];
    check(`link info of ${this.what}`, fn.objGetInfoByFd(this.fd, buf, len));
    const target = buf.readUInt32LE(16);
    return { type: buf.readUInt32LE(0), id: buf.readUInt32LE(4), progId: buf.readUInt32LE(8), ifindex: target, netnsIno: target };
  }

  /** Detaches from the hook now (even if pinned), unpins, and closes. */
  destroy(): void {
    if (this.#closed) return;
    const r = fn.linkDetachFd(this.fd);
    if (r < 0 && r !== -E.ENOENT && r !== -E.EINVAL) throw new BpfError(`detach ${this.what}`, -r);
    if (this.pinPath) { try { this.unpin(); } catch { /* already gone */ } }
    this.close();
  }

  /** Closes our fd only: a pinned link stays attached. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    close(this.fd);
  }
}

/**
 * A program attached to a map (BPF_PROG_ATTACH): the sk_msg verdict of a
 * sockhash. Not a bpf_link on libbpf 1.1: the map itself holds the program,
 * so it stays attached as long as the (pinned) map lives, across agent
 * restarts. Attaching again swaps the program for sockets enrolled from then
 * on; sockets already enrolled keep the program they were enrolled with.
 */
export class MapProgAttachment {
  readonly mapFd: number;
  readonly attachType: number;
  readonly what: string;

  private constructor(mapFd: number, attachType: number, what: string) {
    this.mapFd = mapFd;
    this.attachType = attachType;
    this.what = what;
  }

  static attach(prog: Program, mapFd: number, mapName: string, attachType: number = prog.expectedAttachType): MapProgAttachment {
    const what = `${prog.name}@map:${mapName}`;
    check(`attach ${what}`, fn.progAttach(prog.fd, mapFd, attachType, 0));
    return new MapProgAttachment(mapFd, attachType, what);
  }

  /** Detaches `prog` from the map (the program must be the one attached). */
  detach(prog: Program): void {
    const r = fn.progDetach2(prog.fd, this.mapFd, this.attachType);
    if (r < 0 && r !== -E.ENOENT) throw new BpfError(`detach ${this.what}`, -r);
  }
}

const tcxAttachType = (dir: Direction) => (dir === 'ingress' ? ATTACH_TYPE.TCX_INGRESS : ATTACH_TYPE.TCX_EGRESS);

/** Program ids on a tcx hook, in run order. */
export function tcxPrograms(ifindex: number, dir: Direction): number[] {
  return tcxQuery(ifindex, tcxAttachType(dir)).progIds;
}

/** BPF_TC_F_REPLACE (libbpf's bpf_tc_opts flag). */
const TC_F_REPLACE = 1;
const hookOf = (ifindex: number, dir: Direction) =>
  ({ sz: koffi.sizeof(TcHook), ifindex, attach_point: dir === 'ingress' ? TC_ATTACH.INGRESS : TC_ATTACH.EGRESS, parent: 0 });
const tcOpts = (o: { prog_fd?: number; flags?: number; handle: number; priority: number }) =>
  ({ sz: koffi.sizeof(TcOpts), prog_fd: 0, flags: 0, prog_id: 0, ...o });

/**
 * A legacy cls_bpf filter (direct-action) on the clsact qdisc. We create the
 * qdisc only when absent and never replace a filter: a priority/handle already
 * taken by someone else is an error, not an overwrite.
 */
export class TcFilter {
  readonly ifindex: number;
  readonly dir: Direction;
  readonly priority: number;
  readonly handle: number;
  readonly createdQdisc: boolean;

  private constructor(ifindex: number, dir: Direction, priority: number, handle: number, createdQdisc: boolean) {
    this.ifindex = ifindex;
    this.dir = dir;
    this.priority = priority;
    this.handle = handle;
    this.createdQdisc = createdQdisc;
  }

  /**
   * `replace` swaps the program of the filter at priority/handle in place
   * (BPF_TC_F_REPLACE): for a filter the caller has proven to be its own.
   */
  static attach(prog: Program, ifindex: number, dir: Direction, opts: { priority: number; handle: number; replace?: boolean }): TcFilter {
    const hook = hookOf(ifindex, dir);
    const r = fn.tcHookCreate(hook);
    if (r < 0 && r !== -E.EEXIST) throw new BpfError(`create clsact on ifindex ${ifindex}`, -r);
    const o = tcOpts({ prog_fd: prog.fd, flags: opts.replace ? TC_F_REPLACE : 0, handle: opts.handle, priority: opts.priority });
    const a = fn.tcAttach(hook, o);
    if (a === -E.EEXIST) {
      throw new BpfError(`attach ${prog.name} to ifindex ${ifindex} ${dir}`, E.EEXIST, '',
        `priority ${opts.priority} handle ${opts.handle} is taken by another filter; choose another priority (we never replace filters we did not create)`);
    }
    check(`attach ${prog.name} to ifindex ${ifindex} ${dir}`, a);
    return new TcFilter(ifindex, dir, opts.priority, opts.handle, r === 0);
  }

  /** The filter slot at priority/handle (whatever is there, if anything): to query or detach it. */
  static at(ifindex: number, dir: Direction, priority: number, handle: number): TcFilter {
    return new TcFilter(ifindex, dir, priority, handle, false);
  }

  /** The program id at our priority/handle, or undefined when our filter is gone. */
  progId(): number | undefined {
    const o = tcOpts({ handle: this.handle, priority: this.priority });
    const r = fn.tcQuery(hookOf(this.ifindex, this.dir), o);
    // The kernel answers a query for a missing filter with ENOENT or, once the
    // chain is gone too, EINVAL; the hook and opts are known-valid here.
    if (r === -E.ENOENT || r === -E.EINVAL) return undefined;
    check('tc query', r);
    return o.prog_id;
  }

  /** Removes exactly our filter; the clsact qdisc stays (others may use it). */
  detach(): void {
    const o = tcOpts({ handle: this.handle, priority: this.priority });
    const r = fn.tcDetach(hookOf(this.ifindex, this.dir), o);
    if (r < 0 && r !== -E.ENOENT && r !== -E.EINVAL) throw new BpfError(`detach tc filter prio ${this.priority} on ifindex ${this.ifindex}`, -r);
  }
}

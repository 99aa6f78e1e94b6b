// SPDX-License-Identifier: Apache-2.0
// tc attachment of a pod's host-side veth, for every eBPF dataplane: a tcx link
// (kernel >= 6.6, ordered, multi-attach) or, without tcx, a legacy cls_bpf
// filter at our own priority/handle. Either way the attachment is recorded as
// a pin under `<pinDir>/<sandbox>/`, keyed by the sandbox (never by ifindex,
// which the kernel reuses):
//   tcx-<dir>               the tcx link
//   cls-<ifindex>-<dir>     the program of our cls_bpf filter on that ifindex
// The pin is how a restarted agent knows a filter is its own: a filter at our
// priority whose program id is not the pinned one belongs to someone else and
// is never touched. Every operation is idempotent and restart-safe.
//
// What `auto` picks (TcOptions.auto): each tcx attach or detach waits for an
// RCU grace period with RTNL held (12 ms each on Debian's HZ=250 kernels, and
// every netlink user of the node waits with it; concurrent ones serialize),
// while a cls_bpf filter costs ~0.2 ms. A pod's veth gets two at ADD and two
// at DEL, so per-pod attachers ('shared') take a tcx link only where the hook
// already holds tcx programs — someone else's, and tcx runs before any legacy
// filter, so ours must be a link to be ordered among them — and a legacy
// filter otherwise. Attachers of a few node-wide devices ('tcx') always link.
import { existsSync, mkdirSync, readdirSync, rmSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { BpfError, Link, TcFilter, haveTcx, tcxPrograms, type Direction, type Program } from '../../bpf/index.ts';
import { check, fn } from '../../bpf/libbpf.ts';
import { ERRNO } from '../../bpf/uapi.ts';
import { close } from '../../sys/libc.ts';
import { withNetns } from '../../sys/netns.ts';
import type { HostVeth } from '../pod.ts';

export type TcMode = 'auto' | 'tcx' | 'legacy';
export const DIRECTIONS: readonly Direction[] = ['ingress', 'egress'];

export interface TcOptions {
  /** bpffs directory of the per-sandbox pins (e.g. <pinRoot>/links/tc). */
  pinDir: string;
  mode: TcMode;
  /** Priority of our legacy cls_bpf filters (lower runs first); handle is always 1. */
  priority: number;
  /** Netns holding the host veths (default: the caller's). */
  nodeNetns?: string;
  /**
   * What mode `auto` takes on a kernel with tcx: 'tcx' always a link; 'shared' a link only
   * where the hook already holds tcx programs, else a legacy filter (see the file's head).
   * Default 'tcx'.
   */
  auto?: 'tcx' | 'shared';
}

/** Host veth ingress = packets leaving the pod; egress = packets going into it. A direction left out is not attached. */
export type TcPrograms = Partial<Record<Direction, Program>>;

const HANDLE = 1;

function objectId(fd: number): number {
  const buf = Buffer.alloc(256);
  check('object info', fn.objGetInfoByFd(fd, buf, [buf.length]));
  return buf.readUInt32LE(4);
}

/** The id of the object pinned at `path`, or undefined when the pin is gone. */
function pinnedId(path: string): number | undefined {
  const fd = fn.objGet(path);
  if (fd < 0) return undefined;
  try { return objectId(fd); } finally { close(fd); }
}

function isErrno(e: unknown, errno: number): boolean {
  return e instanceof BpfError && e.errno === errno;
}

export class TcAttacher {
  readonly opts: TcOptions;
  constructor(opts: TcOptions) { this.opts = opts; }

  #inNode<T>(f: () => T): T {
    return this.opts.nodeNetns ? withNetns(this.opts.nodeNetns, f) : f();
  }

  /** bpffs refuses '.' in names and a container id may hold one: '.' and '/' are %-encoded. */
  #dir(key: string): string { return join(this.opts.pinDir, encodeURIComponent(key).replace(/\./g, '%2E')); }

  /** Sandboxes that have tc pins (ours, from this run or an earlier one). */
  keys(): string[] {
    try { return readdirSync(this.opts.pinDir).map(decodeURIComponent); } catch { return []; }
  }

  /**
   * Attaches both programs to `veth` for sandbox `key`, or swaps them in place
   * when this sandbox is attached already (restart, upgrade, duplicate ADD):
   * no moment without a program. Attachments of `key` on another device
   * (veth re-created) are removed.
   */
  attach(key: string, veth: HostVeth, progs: TcPrograms): void {
    this.#inNode(() => {
      const existed = existsSync(this.#dir(key));
      const done: Direction[] = [];
      try {
        for (const dir of DIRECTIONS) {
          const prog = progs[dir];
          if (prog) { this.#attachOne(key, veth, dir, prog); done.push(dir); }
        }
      } catch (e) {
        // A new pod half attached is worse than none: undo it, pins included. An update
        // that failed keeps what it had (the caller reports the error; CHECK sees it).
        if (!existed) {
          for (const dir of done) this.#detachOne(key, dir);
          rmSync(this.#dir(key), { recursive: true, force: true });
        }
        throw e;
      }
    });
  }

  #attachOne(key: string, veth: HostVeth, dir: Direction, prog: Program): void {
    const dirPath = this.#dir(key);
    const tcxPin = join(dirPath, `tcx-${dir}`);
    if (existsSync(tcxPin)) {
      const link = Link.open(tcxPin);
      try {
        if (link.info().ifindex === veth.ifindex) {
          link.update(prog);
          return;
        }
      } catch (e) {
        if (!isErrno(e, ERRNO.ENOLINK)) throw e; // defunct: the veth was deleted while we were down
      } finally {
        link.close();
      }
      this.#destroyTcx(tcxPin); // defunct (device gone) or on an old device
    }
    for (const pin of this.#clsPins(key, dir)) {
      if (pin.ifindex === veth.ifindex && this.#ownsFilter(pin)) {
        TcFilter.attach(prog, veth.ifindex, dir, { priority: this.opts.priority, handle: HANDLE, replace: true });
        this.#repin(pin.path, prog);
        return;
      }
      this.#detachCls(pin);
    }
    if (this.#wantTcx(veth.ifindex, dir)) {
      const link = Link.attachTcx(prog, veth.ifindex, dir);
      try { link.pin(tcxPin); } catch (e) { link.destroy(); throw e; }
      link.close();
      return;
    }
    // Pin first: a crash between the two leaves a pin without filter (cleaned
    // next time), never a filter we cannot recognise as ours.
    const path = join(dirPath, `cls-${veth.ifindex}-${dir}`);
    this.#pinProg(path, prog);
    try {
      TcFilter.attach(prog, veth.ifindex, dir, { priority: this.opts.priority, handle: HANDLE });
    } catch (e) {
      rmSync(path, { force: true });
      throw e;
    }
  }

  /** tcx: insist (a clear error on < 6.6); auto: where the kernel has it (probed once), and for 'shared' only on a hook others use. */
  #wantTcx(ifindex: number, dir: Direction): boolean {
    if (this.opts.mode !== 'auto') return this.opts.mode === 'tcx';
    if (!haveTcx().available) return false;
    return (this.opts.auto ?? 'tcx') === 'tcx' || tcxPrograms(ifindex, dir).length > 0;
  }

  /**
   * Swaps the program of every attachment pinned here, in place (an upgrade:
   * old programs must not keep running on maps the new object replaced).
   * Defunct links and filters that are no longer ours are left to attach/detach.
   * Legacy filters are reached in the attacher's netns only. Returns how many were swapped.
   */
  updateAll(progs: TcPrograms): number {
    return this.#inNode(() => {
      let n = 0;
      for (const key of this.keys()) {
        for (const dir of DIRECTIONS) {
          const prog = progs[dir];
          if (!prog) continue;
          const tcxPin = join(this.#dir(key), `tcx-${dir}`);
          if (existsSync(tcxPin)) {
            const link = Link.open(tcxPin);
            try { link.update(prog); n++; } catch (e) { if (!isErrno(e, ERRNO.ENOLINK)) throw e; } finally { link.close(); }
          }
          for (const pin of this.#clsPins(key, dir)) {
            if (!this.#ownsFilter(pin)) continue;
            TcFilter.attach(prog, pin.ifindex, dir, { priority: this.opts.priority, handle: HANDLE, replace: true });
            this.#repin(pin.path, prog);
            n++;
          }
        }
      }
      return n;
    });
  }

  /** Removes every attachment of sandbox `key` (and its pins). Idempotent. */
  detach(key: string): void {
    this.#inNode(() => {
      for (const dir of DIRECTIONS) this.#detachOne(key, dir);
      rmSync(this.#dir(key), { recursive: true, force: true });
    });
  }

  #detachOne(key: string, dir: Direction): void {
    const tcxPin = join(this.#dir(key), `tcx-${dir}`);
    if (existsSync(tcxPin)) this.#destroyTcx(tcxPin);
    for (const pin of this.#clsPins(key, dir)) this.#detachCls(pin);
  }

  /** Why `key` is not attached to `veth` as it should be, or undefined when it is. */
  verify(key: string, veth: HostVeth, dirs: readonly Direction[] = DIRECTIONS): string | undefined {
    return this.#inNode(() => {
      for (const dir of dirs) {
        const tcxPin = join(this.#dir(key), `tcx-${dir}`);
        if (existsSync(tcxPin)) {
          const link = Link.open(tcxPin);
          try {
            if (link.info().ifindex !== veth.ifindex) return `tcx ${dir} link is no longer attached to ${veth.name} (detached, or the device is gone)`;
          } finally { link.close(); }
          continue;
        }
        const pin = this.#clsPins(key, dir).find((p) => p.ifindex === veth.ifindex);
        if (!pin) return `no tc ${dir} program on ${veth.name}`;
        if (!this.#ownsFilter(pin)) return `our tc ${dir} filter on ${veth.name} is gone`;
      }
      return undefined;
    });
  }

  #clsPins(key: string, dir: Direction): { path: string; ifindex: number; dir: Direction }[] {
    let names: string[];
    try { names = readdirSync(this.#dir(key)); } catch { return []; }
    return names.flatMap((n) => {
      const m = /^cls-(\d+)-(ingress|egress)$/.exec(n);
      return m && m[2] === dir ? [{ path: join(this.#dir(key), n), ifindex: Number(m[1]), dir }] : [];
    });
  }

  /** Our filter = the program at our priority/handle is the one we pinned. */
  #ownsFilter(pin: { path: string; ifindex: number; dir: Direction }): boolean {
    const want = pinnedId(pin.path);
    if (want === undefined) return false;
    try {
      return TcFilter.at(pin.ifindex, pin.dir, this.opts.priority, HANDLE).progId() === want;
    } catch (e) {
      if (isErrno(e, ERRNO.ENOENT) || isErrno(e, ERRNO.ENODEV)) return false; // device gone
      throw e;
    }
  }

  #detachCls(pin: { path: string; ifindex: number; dir: Direction }): void {
    if (this.#ownsFilter(pin)) TcFilter.at(pin.ifindex, pin.dir, this.opts.priority, HANDLE).detach();
    rmSync(pin.path, { force: true });
  }

  #destroyTcx(pin: string): void {
    const link = Link.open(pin);
    try { link.destroy(); } catch (e) { link.close(); rmSync(pin, { force: true }); if (!isErrno(e, ERRNO.ENOLINK)) throw e; }
    rmSync(pin, { force: true });
  }

  #pinProg(path: string, prog: Program): void {
    mkdirSync(join(path, '..'), { recursive: true });
    rmSync(path, { force: true });
    check(`pin ${prog.name} at ${path}`, fn.objPin(prog.fd, path));
  }

  #repin(path: string, prog: Program): void {
    unlinkSync(path);
    this.#pinProg(path, prog);
  }
}

// SPDX-License-Identifier: Apache-2.0
// bpf() commands that libbpf 1.1 does not wrap: tcx link creation with
// ordering, BPF_PROG_QUERY for tcx hooks (union bpf_attr's link_create and
// query members, kernel >= 6.6) and BPF_PROG_LOAD of raw instructions.
import koffi from 'koffi';
import { syscall3, errno } from '../sys/libc.ts';
import { BpfError } from './libbpf.ts';
import { BPF_CMD, ERRNO, MPROG_FLAG as F, OPCODE as OP, SYS_bpf } from './uapi.ts';

function bpf(cmd: number, attr: Buffer, what: string): number {
  const r = Number(syscall3(SYS_bpf, cmd, attr, attr.length));
  if (r < 0) throw new BpfError(what, errno());
  return r;
}

/** Where a new tcx program goes relative to others on the same hook. */
export type TcxAnchor =
  | { before: 'all' } | { after: 'all' }
  | { before: { linkFd: number } } | { after: { linkFd: number } }
  | { before: { progId: number } } | { after: { progId: number } };

/** BPF_LINK_CREATE for tcx: returns the new link's fd. */
export function tcxLinkCreate(progFd: number, ifindex: number, attachType: number, anchor?: TcxAnchor, expectedRevision = 0n): number {
  const attr = Buffer.alloc(64);
  attr.writeUInt32LE(progFd, 0);
  attr.writeUInt32LE(ifindex, 4);
  attr.writeUInt32LE(attachType, 8);
  let flags = 0;
  let relative = 0;
  if (anchor) {
    const [side, target] = Object.entries(anchor)[0] as ['before' | 'after', 'all' | { linkFd?: number; progId?: number }];
    flags |= side === 'before' ? F.BEFORE : F.AFTER;
    if (target !== 'all') {
      if (target.linkFd !== undefined) { flags |= F.LINK; relative = target.linkFd; }
      else { flags |= F.ID; relative = target.progId!; }
    }
  }
  attr.writeUInt32LE(flags, 12);
  attr.writeUInt32LE(relative, 16);      // tcx.relative_fd / relative_id
  attr.writeBigUInt64LE(expectedRevision, 24); // tcx.expected_revision (0 = any)
  return bpf(BPF_CMD.LINK_CREATE, attr, `tcx link create (ifindex ${ifindex}, attach type ${attachType})`);
}

/** BPF_PROG_QUERY on a tcx hook: program ids and link ids in run order, and the revision. */
export function tcxQuery(ifindex: number, attachType: number, max = 64): { progIds: number[]; linkIds: number[]; revision: bigint } {
  const progIds = Buffer.alloc(4 * max);
  const linkIds = Buffer.alloc(4 * max);
  const attr = Buffer.alloc(72);
  attr.writeUInt32LE(ifindex, 0);
  attr.writeUInt32LE(attachType, 4);
  attr.writeBigUInt64LE(addressOf(progIds), 16);
  attr.writeUInt32LE(max, 24);
  attr.writeBigUInt64LE(addressOf(linkIds), 40);
  bpf(BPF_CMD.PROG_QUERY, attr, `tcx query (ifindex ${ifindex}, attach type ${attachType})`);
  const n = attr.readUInt32LE(24);
  const ids = (b: Buffer) => Array.from({ length: n }, (_, i) => b.readUInt32LE(i * 4));
  return { progIds: ids(progIds), linkIds: ids(linkIds), revision: attr.readBigUInt64LE(56) };
}

function addressOf(buf: Buffer): bigint { return koffi.address(buf); }

/** One BPF instruction with an immediate (no registers but r0 / none). */
function insn(code: number, imm: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt8(code, 0);
  b.writeInt32LE(imm, 4);
  return b;
}
export const MOV_R0 = (imm: number) => insn(OP.ALU64 | OP.MOV | OP.K, imm); // r0 = imm
export const EXIT = insn(OP.JMP | OP.EXIT, 0);
export const CALL = (helper: number) => insn(OP.JMP | OP.CALL, helper);
const GPL = Buffer.from('GPL\0'); // helpers may be GPL-only

// libbpf retries BPF_PROG_LOAD this often too: the verifier answers EAGAIN
// when a signal is pending (e.g. SIGCHLD from a child process that just ended).
const LOAD_ATTEMPTS = 5;

/**
 * Raw BPF_PROG_LOAD of hand-assembled instructions (probes, the empty floor
 * program of a benchmark): returns the fd (or -1), errno and the verifier log.
 */
export function progLoadRaw(progType: number, insns: Buffer, opts: { expectedAttachType?: number; name?: string } = {}): { fd: number; errno: number; log: string } {
  const log = Buffer.alloc(4096);
  const attr = Buffer.alloc(72); // union bpf_attr up to expected_attach_type
  attr.writeUInt32LE(progType, 0);
  attr.writeUInt32LE(insns.length / 8, 4);
  attr.writeBigUInt64LE(koffi.address(insns), 8);
  attr.writeBigUInt64LE(koffi.address(GPL), 16);
  attr.writeUInt32LE(1, 24); // log_level
  attr.writeUInt32LE(log.length, 28);
  attr.writeBigUInt64LE(koffi.address(log), 32);
  if (opts.name) attr.write(opts.name.slice(0, 15), 48, 'latin1'); // prog_name[16]
  attr.writeUInt32LE(opts.expectedAttachType ?? 0, 68);
  let fd = -1;
  let err = 0;
  for (let attempt = 1; attempt <= LOAD_ATTEMPTS; attempt++) {
    log.fill(0, 0, 1); // a retry that logs nothing must not show the last attempt's log
    fd = Number(syscall3(SYS_bpf, BPF_CMD.PROG_LOAD, attr, attr.length));
    err = fd < 0 ? errno() : 0;
    if (err !== ERRNO.EAGAIN) break;
  }
  const end = log.indexOf(0);
  return { fd, errno: err, log: log.toString('utf8', 0, end < 0 ? log.length : end) };
}

// SPDX-License-Identifier: Apache-2.0
// The S4 behaviour gate: a version check cannot tell whether this kernel's
// sockmap keeps the promises applications rely on (6.6.128+/6.12.75+/6.18.14+
// report FIONREAD 0 for native bytes on a sockmap socket; older ones ignored
// redirected bytes), so the agent asks the kernel. A private instance of the
// sidecar object (nothing pinned, nothing shared with the node's maps) gets
// its sk_msg program attached to its own sock_pairs; mw-sockcheck
// (sockcheck.c) enrols loopback pairs in a private netns and checks
// transfers, FIONREAD, EPOLLET edges, MSG_PEEK, half-close and bounded
// memory (a sender whose peer reads nothing must stall within what plain
// TCP's buffers hold). Any failure keeps S4 off, with the failed checks as
// the reason.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { BpfObject, MapProgAttachment } from '../../bpf/index.ts';
import { sumStats } from '../ebpf/observe.ts';
import { SIDECAR_MAP, SIDECAR_PROG, openSidecarMaps } from './object.ts';
import { STATS, sidecarObject } from './structs.ts';
import { fromRoot } from '../../paths.ts';

export const sockcheckBinary = fromRoot('build/bin/mw-sockcheck');

export interface GateCheck { check: string; ok: boolean; detail: string; family: 4 | 6 }
export interface GateVerdict {
  pass: boolean;
  /** One line: what failed (or "all N checks passed"). */
  reason: string;
  checks: GateCheck[];
  /** Messages the private sk_msg program redirected: > 0 proves the checks ran through sockmap. */
  redirected: number;
  /** Sends it passed to TCP: peer not enrolled (miss), or the socket had sent natively before (the order guard). */
  miss?: number;
  native?: number;
  kernel: string;
}

export interface GateOptions {
  objectPath?: string;
  /** Largest transfer, MiB (default 16). */
  maxMb?: number;
  /** EPOLLET request/response cycles (default 1000). */
  cycles?: number;
  /** Do not enrol (plain TCP): the control run. */
  noEnrol?: boolean;
  families?: (4 | 6)[];
  /** Only the checks whose name starts with this (tests; the agent always runs all). */
  only?: string;
}

/** Runs mw-sockcheck once with the private maps' fds as its fds 3 and 4. */
function runCheck(pairsFd: number, originFd: number, args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(sockcheckBinary, ['3', '4', ...args], { stdio: ['ignore', 'pipe', 'pipe', pairsFd, originFd] });
    let out = '', err = '';
    child.stdout!.on('data', (b) => { out += b; });
    child.stderr!.on('data', (b) => { err += b; });
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? -1 : null), out, err: err + (signal ? ` (killed by ${signal})` : '') }));
  });
}

export async function runSockmapGate(o: GateOptions = {}): Promise<GateVerdict> {
  const kernel = (await import('node:os')).release();
  if (!existsSync(sockcheckBinary)) return { pass: false, reason: `${sockcheckBinary} missing (make bpf)`, checks: [], redirected: 0, kernel };
  let obj: BpfObject;
  try {
    obj = BpfObject.load(o.objectPath ?? sidecarObject);
  } catch (e) {
    return { pass: false, reason: `cannot load the sidecar object: ${(e as Error).message}`, checks: [], redirected: 0, kernel };
  }
  try {
    const maps = openSidecarMaps(obj);
    MapProgAttachment.attach(obj.program(SIDECAR_PROG.skMsg), obj.mapInfo(SIDECAR_MAP.sockPairs).fd, SIDECAR_MAP.sockPairs);
    maps.sockmapConfig.update(0, { enabled: 1 });
    const checks: GateCheck[] = [];
    const problems: string[] = [];
    for (const family of o.families ?? [4, 6]) {
      const args = ['-m', String(o.maxMb ?? 16), '-c', String(o.cycles ?? 1000), ...(family === 6 ? ['-6'] : []), ...(o.noEnrol ? ['-n'] : []), ...(o.only ? ['-o', o.only] : [])];
      const r = await runCheck(obj.mapInfo(SIDECAR_MAP.sockPairs).fd, obj.mapInfo(SIDECAR_MAP.originBySock).fd, args);
      for (const line of r.out.split('\n').filter((l) => l.startsWith('{'))) {
        const c = JSON.parse(line) as Omit<GateCheck, 'family'>;
        checks.push({ ...c, family });
        if (!c.ok) problems.push(`IPv${family} ${c.check}: ${c.detail}`);
      }
      if (r.code !== 0 && !problems.length) problems.push(`IPv${family}: mw-sockcheck exited ${r.code}${r.err ? `: ${r.err.trim()}` : ''}`);
    }
    const st = sumStats(maps.stats, STATS);
    const redirected = Number(st.sockmap_msgs);
    if (!o.noEnrol && !o.only && redirected === 0 && problems.length === 0) problems.push('no message was redirected: the checks did not run through sockmap');
    const pass = problems.length === 0;
    return { pass, reason: pass ? `all ${checks.length} checks passed` : problems.join('; '), checks, redirected, miss: Number(st.sockmap_miss), native: Number(st.sockmap_native), kernel };
  } catch (e) {
    return { pass: false, reason: `gate setup failed: ${(e as Error).message}`, checks: [], redirected: 0, kernel };
  } finally {
    obj.close();
  }
}

/**
 * The app <-> sidecar leg alone: request/response latency of one loopback
 * pair, 64-byte messages, through sockmap vs plain loopback TCP, `rounds`
 * interleaved runs of `iters` round trips. Returns ns per round trip per run.
 */
export async function legLatency(rounds = 5, iters = 20_000, objectPath?: string): Promise<{ sockmapNs: number[]; tcpNs: number[] }> {
  const obj = BpfObject.load(objectPath ?? sidecarObject);
  try {
    const maps = openSidecarMaps(obj);
    MapProgAttachment.attach(obj.program(SIDECAR_PROG.skMsg), obj.mapInfo(SIDECAR_MAP.sockPairs).fd, SIDECAR_MAP.sockPairs);
    maps.sockmapConfig.update(0, { enabled: 1 });
    const one = async (enrol: boolean): Promise<number> => {
      const r = await runCheck(obj.mapInfo(SIDECAR_MAP.sockPairs).fd, obj.mapInfo(SIDECAR_MAP.originBySock).fd, ['-R', String(iters), ...(enrol ? [] : ['-n'])]);
      const line = r.out.split('\n').find((l) => l.includes('rr-latency-ns'));
      if (!line) throw new Error(`leg micro-benchmark failed: ${r.out}${r.err}`);
      return Number((JSON.parse(line) as { detail: string }).detail);
    };
    const sockmapNs: number[] = [], tcpNs: number[] = [];
    for (let i = 0; i < rounds; i++) { tcpNs.push(await one(false)); sockmapNs.push(await one(true)); }
    return { sockmapNs, tcpNs };
  } finally {
    obj.close();
  }
}

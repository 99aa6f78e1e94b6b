// SPDX-License-Identifier: Apache-2.0
// Starting processes inside a lab sandbox (netns + cgroup, optional uid).
// The wrapper shell moves itself into the cgroup before exec'ing, so the command is in
// the cgroup (and under the lab's BPF programs) from its first instruction. nsenter does
// not fork for --net, so the ChildProcess pid is the command's own pid.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';

/**
 * Factor on the hang guards of this file (run timeouts, waitForLine, eventually):
 * MESHWARP_TIME_SCALE, default 1. The kernel matrix's emulated guests run about
 * 10× slower, and a wait bound is never a speed assertion (timing belongs in
 * benchmarks).
 */
export const TIME_SCALE = Math.max(1, Number(process.env.MESHWARP_TIME_SCALE) || 1);

export interface ExecContext {
  netnsPath: string;
  cgroupPath: string;
}

export interface SpawnOptions {
  /** Run as this uid (and gid = uid unless gid is given), no supplementary groups. Default root. */
  uid?: number;
  gid?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  stdio?: StdioOptions;
  /**
   * A file to see as /etc/hosts (bind-mounted in a private mount namespace
   * of this process only), as kubelet gives each pod its own hosts file.
   */
  hostsFile?: string;
  /** A file to see as /etc/resolv.conf, the same way (kubelet writes one per pod). */
  resolvConf?: string;
}

export interface RunOptions extends SpawnOptions {
  input?: string | Buffer;
  /** SIGKILL the command after this many ms (result.timedOut is then true). */
  timeoutMs?: number;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

const WRAPPER = 'echo $$ > "$1/cgroup.procs" || exit 126; shift; exec "$@"';

/** The full argv that runs `argv` inside ctx's netns and cgroup. */
export function wrapArgv(ctx: ExecContext, argv: string[], opts: SpawnOptions = {}): string[] {
  if (argv.length === 0) throw new Error('empty command');
  const out = ['sh', '-c', WRAPPER, 'mw-lab', ctx.cgroupPath, 'nsenter', `--net=${ctx.netnsPath}`, '--'];
  const binds = [[opts.hostsFile, '/etc/hosts'], [opts.resolvConf, '/etc/resolv.conf']].filter((b): b is [string, string] => !!b[0]);
  if (binds.length > 0) {
    // Pairs FILE TARGET up to "--", then the command.
    const script = 'while [ "$1" != -- ]; do mount --bind "$1" "$2" || exit 125; shift 2; done; shift; exec "$@"';
    out.push('unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', script, 'mw-bind', ...binds.flat(), '--');
  }
  if (opts.uid !== undefined && opts.uid !== 0) {
    const gid = opts.gid ?? opts.uid;
    out.push('setpriv', `--reuid=${opts.uid}`, `--regid=${gid}`, '--clear-groups', '--');
  } else if (opts.gid !== undefined && opts.gid !== 0) {
    out.push('setpriv', `--regid=${opts.gid}`, '--clear-groups', '--');
  }
  return out.concat(argv);
}

export function spawnIn(ctx: ExecContext, argv: string[], opts: SpawnOptions = {}): ChildProcess {
  const full = wrapArgv(ctx, argv, opts);
  return spawn(full[0], full.slice(1), {
    env: opts.env ?? process.env,
    cwd: opts.cwd,
    stdio: opts.stdio ?? 'pipe',
  });
}

/** Collects a spawned child's output; never rejects on a non-zero exit. */
export function collect(child: ChildProcess, opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    child.stdout?.on('data', (b: Buffer) => out.push(b));
    child.stderr?.on('data', (b: Buffer) => err.push(b));
    const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, opts.timeoutMs * TIME_SCALE);
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        code, signal, timedOut,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    if (child.stdin) {
      child.stdin.on('error', () => { /* command exited without reading stdin */ });
      child.stdin.end(opts.input ?? '');
    }
  });
}

/**
 * Resolves with the first stdout line matching `pattern` (e.g. a server's "listening"),
 * rejects if the child exits first or the timeout passes.
 */
export function waitForLine(child: ChildProcess, pattern: RegExp, timeoutMs = 5000): Promise<string> {
  timeoutMs *= TIME_SCALE;
  return new Promise((resolve, reject) => {
    let buf = '';
    let errBuf = '';
    const done = (fn: () => void): void => {
      clearTimeout(timer);
      child.stdout?.off('data', onData);
      child.stderr?.off('data', onErr);
      child.off('exit', onExit);
      fn();
    };
    const onData = (b: Buffer): void => {
      buf += b.toString('utf8');
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      const hit = lines.find((l) => pattern.test(l));
      if (hit !== undefined) done(() => resolve(hit));
    };
    const onErr = (b: Buffer): void => { errBuf = (errBuf + b.toString('utf8')).slice(-2000); };
    const onExit = (code: number | null, sig: string | null): void =>
      done(() => reject(new Error(`process exited (${code ?? sig}) before printing ${pattern}: ${errBuf.trim()}`)));
    const timer = setTimeout(() => done(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${pattern}: ${errBuf.trim()}`))), timeoutMs);
    if (!child.stdout) throw new Error('waitForLine needs a piped stdout');
    child.stdout.on('data', onData);
    child.stderr?.on('data', onErr);
    child.on('exit', onExit);
  });
}

/** Polls `cond` every `stepMs` until it returns true (→ true) or `timeoutMs` pass (→ false). */
export async function eventually(cond: () => boolean | Promise<boolean>, timeoutMs = 3000, stepMs = 20): Promise<boolean> {
  const end = Date.now() + timeoutMs * TIME_SCALE;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/** SIGTERM, then SIGKILL if it has not exited after graceMs; resolves once it is gone (or was). */
export async function stopChild(c: ChildProcess | undefined, graceMs = 2000): Promise<void> {
  if (!c || c.exitCode !== null || c.signalCode !== null) return;
  const exited = new Promise((r) => c.once('exit', r));
  c.kill('SIGTERM');
  await Promise.race([exited, new Promise((r) => setTimeout(r, graceMs))]);
  if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
}

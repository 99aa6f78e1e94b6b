// SPDX-License-Identifier: Apache-2.0
// Running external tools (ip, tc, iptables, nsenter) with errors that say what failed.
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';

export class CommandError extends Error {
  readonly code = 'ERR_COMMAND_FAILED';
  readonly argv: string[];
  readonly status: number | null;
  readonly stderr: string;
  constructor(argv: string[], status: number | null, stderr: string) {
    super(`${argv.join(' ')} failed (exit ${status}): ${stderr.trim().split('\n').slice(-3).join(' | ')}`);
    this.argv = argv;
    this.status = status;
    this.stderr = stderr;
  }
}

/** Runs a command synchronously; throws CommandError on a non-zero exit. Returns stdout. */
export function run(argv: string[], opts: SpawnSyncOptions & { input?: string } = {}): string {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', ...opts });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new CommandError(argv, r.status, String(r.stderr ?? ''));
  return String(r.stdout ?? '');
}

/** Runs a command and reports success instead of throwing (for cleanup paths). */
export function tryRun(argv: string[], opts: SpawnSyncOptions = {}): boolean {
  const r = spawnSync(argv[0], argv.slice(1), { encoding: 'utf8', stdio: 'ignore', ...opts });
  return r.status === 0;
}

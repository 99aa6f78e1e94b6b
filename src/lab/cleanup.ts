// SPDX-License-Identifier: Apache-2.0
// Removing a lab's leftovers by prefix, and tearing live labs down when the process ends.
import fs from 'node:fs';
import { cgroup2Mount, removeCgroupTree } from '../sys/cgroup.ts';
import { deleteNetns, listNetns } from '../sys/netns.ts';
import { PREFIX_RE } from './addr.ts';

export function checkPrefix(prefix: string): void {
  if (!PREFIX_RE.test(prefix)) {
    throw new Error(`lab prefix ${JSON.stringify(prefix)} must match ${PREFIX_RE} (short, so interface names fit in 15 chars)`);
  }
}

/** Netns names that belong to a lab with this prefix. */
export function labNetns(prefix: string): string[] {
  return listNetns().filter((n) => n.startsWith(`${prefix}-`));
}

/**
 * Runs every teardown step in order, each whatever the ones before did, then throws the
 * one failure, or an AggregateError `what failed` of all of them.
 */
export async function runAll(what: string, steps: (() => unknown)[]): Promise<void> {
  const errors: unknown[] = [];
  for (const step of steps) {
    try { await step(); } catch (e) { errors.push(e); }
  }
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, `${what} failed`);
}

/**
 * Removes everything a lab with this prefix may have left: its cgroup subtree (killing its
 * processes first) and every netns named `${prefix}-…`. Synchronous and idempotent.
 */
export function cleanupPrefix(prefix: string): void {
  checkPrefix(prefix);
  const errors: unknown[] = [];
  try {
    removeCgroupTree(`${cgroup2Mount()}/${prefix}`);
  } catch (e) {
    errors.push(e);
  }
  errors.push(...removeLabDirs(prefix));
  const left = deleteNetns(...labNetns(prefix));
  if (left.length > 0) errors.push(new Error(`could not delete netns: ${left.join(' ')}`));
  if (errors.length === 1) throw errors[0];
  if (errors.length > 1) throw new AggregateError(errors, `cleanup of lab ${prefix} failed`);
}

/** True if nothing of the prefix is left (for tests and `doctor`-like checks). */
export function prefixIsClean(prefix: string): boolean {
  return labNetns(prefix).length === 0 && ![`${cgroup2Mount()}/${prefix}`, labPinRoot(prefix), labRunDir(prefix)].some((p) => fs.existsSync(p));
}

/**
 * Removes the pins and run files of agents the lab ran (src/lab/agent.ts).
 * Removing the pins releases their links, so nothing stays attached.
 * Returns the errors (cleanup goes on past them).
 */
export function removeLabDirs(prefix: string): unknown[] {
  const errors: unknown[] = [];
  for (const dir of [labPinRoot(prefix), labRunDir(prefix)]) {
    try {
      fs.rmSync(dir, { recursive: true, force: true });
    } catch (e) {
      errors.push(e);
    }
  }
  return errors;
}

/** bpffs directory under which a lab's agents pin (one subdirectory per node). */
export function labPinRoot(prefix: string): string {
  return `/sys/fs/bpf/${prefix}`;
}

/** Directory for a lab's agent sockets and state files. */
export function labRunDir(prefix: string): string {
  return `/run/meshwarp-lab/${prefix}`;
}

interface Destroyable {
  destroySync(): void;
}

const live = new Set<Destroyable>();
const SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function destroyAll(): void {
  for (const lab of [...live]) {
    try {
      lab.destroySync();
    } catch (e) {
      process.stderr.write(`meshwarp lab: cleanup failed: ${(e as Error).message}\n`);
    }
  }
}

function onExit(): void {
  destroyAll();
}

function onSignal(sig: NodeJS.Signals): void {
  destroyAll();
  uninstall();
  // Without other listeners, re-raise so the process dies of the signal as it would have.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
}

function install(): void {
  process.on('exit', onExit);
  for (const s of SIGNALS) process.on(s, onSignal);
}

function uninstall(): void {
  process.off('exit', onExit);
  for (const s of SIGNALS) process.off(s, onSignal);
}

/** Registers a live lab for teardown on exit/SIGINT/SIGTERM/SIGHUP. */
export function trackLab(lab: Destroyable): void {
  if (live.size === 0) install();
  live.add(lab);
}

export function untrackLab(lab: Destroyable): void {
  if (!live.delete(lab)) return;
  if (live.size === 0) uninstall();
}

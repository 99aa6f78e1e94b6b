// SPDX-License-Identifier: Apache-2.0
// The CLI as one JavaScript bundle (`make js`: build/js/main.js, a chunk per command). The
// image's agent runs it, and so does the control-plane bench's (what a node runs is what is
// measured): no TypeScript stripper in memory. Everything else runs src/ directly, so an edit
// is live without a build; a bundle older than a source file is refused, never run stale.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fromRoot } from './paths.ts';

export const BUNDLE = fromRoot('build/js/main.js');

function newestSource(dir: string): { path: string; mtimeMs: number } {
  let best = { path: dir, mtimeMs: 0 };
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    const c = e.isDirectory() ? newestSource(p) : e.name.endsWith('.ts') ? { path: p, mtimeMs: statSync(p).mtimeMs } : best;
    if (c.mtimeMs > best.mtimeMs) best = c;
  }
  return best;
}

/** Why the bundle cannot run (missing, or older than a source), or undefined when it is current. */
export function bundleProblem(): string | undefined {
  if (!existsSync(BUNDLE)) return `${BUNDLE} is missing: run \`make js\``;
  const src = fromRoot('src');
  if (!existsSync(src)) return undefined; // an install without sources (nothing to be stale against)
  const newest = newestSource(src);
  if (newest.mtimeMs > statSync(BUNDLE).mtimeMs) return `${BUNDLE} is older than ${newest.path}: run \`make js\``;
  return undefined;
}

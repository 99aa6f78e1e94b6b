// SPDX-License-Identifier: Apache-2.0
// Where the project's files are. Code runs from src/ (TypeScript, stripped at run time) or
// from the bundle `make js` writes to build/js/ (what the image's agent runs: no stripper in
// memory), so a path relative to one module's URL would differ between the two: every file
// the code needs is named from the project's root instead, the nearest directory above the
// running module that holds meshwarp's package.json.
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(from: string): string {
  for (let d = from; ; d = dirname(d)) {
    const pkg = join(d, 'package.json');
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'meshwarp') return d;
    if (dirname(d) === d) throw new Error(`meshwarp's package.json is in no directory above ${from}`);
  }
}

/** The project's root: the checkout, or /usr/lib/meshwarp in the image. */
export const ROOT = findRoot(dirname(fileURLToPath(import.meta.url)));

/** A path under the project's root, e.g. fromRoot('build/bpf/sidecar.bpf.o'). */
export const fromRoot = (...parts: string[]): string => join(ROOT, ...parts);

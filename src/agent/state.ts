// SPDX-License-Identifier: Apache-2.0
// The agent's record of meshed pods, written atomically so a crash at any
// moment leaves either the old or the new file, never half of one.
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../sys/fs.ts';

export interface PodRecord {
  containerId: string;
  podNamespace: string;
  podName: string;
  netns: string;
  ifName: string;
  ip4?: string;
  ip6?: string;
  hostVeth?: { name: string; ifindex: number };
  profile: string;
  annotations: Record<string, string>;
  meshedAt: string;
}

export class StateStore {
  readonly file: string;
  constructor(dir: string) {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.file = join(dir, 'pods.json');
  }

  load(): PodRecord[] {
    try {
      const v = JSON.parse(readFileSync(this.file, 'utf8'));
      if (v?.version !== 1 || !Array.isArray(v.pods)) throw new Error(`${this.file}: unknown format`);
      return v.pods;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  save(pods: PodRecord[]): void {
    writeFileAtomic(this.file, `${JSON.stringify({ version: 1, pods }, null, 2)}\n`, 0o600);
  }

  remove(): void {
    rmSync(this.file, { force: true });
  }
}

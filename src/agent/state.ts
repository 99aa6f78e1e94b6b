// SPDX-License-Identifier: Apache-2.0
// The agent's record of applied pods (PodIntents), written atomically so a
// crash at any moment leaves either the old or the new file, never half of one.
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type { PodIntent } from '../datapath/pod.ts';
import { writeFileAtomic } from '../sys/fs.ts';

/** A recorded intent, with the identity of the netns it was applied to. */
export type PodRecord = PodIntent & { netnsId?: string };

/** Version 1 (before the one pod model): keyed by container id, one IP per family. */
interface RecordV1 {
  containerId: string; podNamespace: string; podName: string; netns: string; ifName: string;
  ip4?: string; ip6?: string; hostVeth?: { name: string; ifindex: number };
  profile: string; annotations: Record<string, string>; meshedAt: string;
}

function fromV1(r: RecordV1): PodRecord {
  return {
    key: { sandboxId: r.containerId, uid: '', namespace: r.podNamespace, name: r.podName },
    netns: r.netns, ifName: r.ifName, ips: [r.ip4, r.ip6].filter((ip): ip is string => !!ip && isIP(ip) !== 0),
    hostVeth: r.hostVeth, dataplane: 'sidecar', profile: r.profile, annotations: r.annotations, meshedAt: r.meshedAt,
  };
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
      if (v?.version === 1 && Array.isArray(v.pods)) return (v.pods as RecordV1[]).map(fromV1);
      if (v?.version !== 2 || !Array.isArray(v.pods)) throw new Error(`${this.file}: unknown format`);
      return v.pods;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  save(pods: PodRecord[]): void {
    writeFileAtomic(this.file, `${JSON.stringify({ version: 2, pods }, null, 2)}\n`, 0o600);
  }

  remove(): void {
    rmSync(this.file, { force: true });
  }
}

// SPDX-License-Identifier: Apache-2.0
// The pin layout every eBPF driver shares, under one root per node (default
// /sys/fs/bpf/meshwarp; tests and labs use their own roots side by side):
//   maps/                 maps, pinned by name (libbpf LIBBPF_PIN_BY_NAME)
//   links/<program>       cgroup links of node-wide programs
//   links/tc/<sandbox>/   per-sandbox tc attachments (tc.ts)
import { join } from 'node:path';

export interface PinLayout {
  root: string;
  maps: string;
  /** The pin of a node-wide link, by program name. */
  link(program: string): string;
  /** The directory of per-sandbox tc pins. */
  tc: string;
}

export function pinLayout(root: string): PinLayout {
  return { root, maps: join(root, 'maps'), link: (p) => join(root, 'links', p), tc: join(root, 'links', 'tc') };
}

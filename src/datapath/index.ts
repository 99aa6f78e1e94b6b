// SPDX-License-Identifier: Apache-2.0
// Datapath drivers and the factory that picks one by mode (config `mode`, MESHWARP_MODE).
// The eBPF driver is imported lazily: the iptables mode must not need libbpf.
import { parseMode, type InterceptionDriver } from './driver.ts';
import type { SidecarEbpfOptions } from './sidecar/driver.ts';
import { IptablesDriver, type IptablesOptions } from './iptables/driver.ts';

export { MODES, parseMode, type InterceptionDriver, type Limitation, type Mode, type PodRef } from './driver.ts';
export { IptablesDriver, checkIptables, type IptablesInfo, type IptablesOptions } from './iptables/driver.ts';
export type { SidecarEbpfOptions } from './sidecar/driver.ts';

/**
 * Options for every mode: `nodeIps` is common; `pinRoot` and `cgroupPath` (and the other
 * SidecarEbpfOptions) are required by `ebpf` and ignored by `iptables`.
 */
export type DriverOptions = IptablesOptions & Partial<Omit<SidecarEbpfOptions, 'nodeIps'>>;

/** A driver for `mode` ('ebpf' or 'iptables'); an unknown mode is an error naming the known ones. */
export async function createDriver(mode: string, opts: DriverOptions): Promise<InterceptionDriver> {
  const m = parseMode(mode);
  if (m === 'iptables') return new IptablesDriver({ nodeIps: opts.nodeIps });
  const { pinRoot, cgroupPath } = opts;
  if (pinRoot === undefined || cgroupPath === undefined) throw new Error('mode ebpf needs options pinRoot and cgroupPath');
  const { SidecarEbpfDriver } = await import('./sidecar/driver.ts');
  return new SidecarEbpfDriver({ ...opts, pinRoot, cgroupPath });
}

// SPDX-License-Identifier: Apache-2.0
// Datapath drivers and the factory that picks one by (dataplane, engine).
// The eBPF driver is imported lazily: the iptables engine must not need libbpf.
import { parseDataplane, parseEngine, type DatapathDriver, type Dataplane, type SidecarPlan } from './driver.ts';
import type { SidecarEbpfOptions } from './sidecar/driver.ts';
import type { AmbientEbpfOptions } from './ambient/driver.ts';
import { IptablesDriver, type IptablesOptions } from './iptables/driver.ts';

export {
  DATAPLANES, ENGINES, MODES, limitations, parseDataplane, parseEngine, parseMode,
  type DatapathDriver, type Dataplane, type DriverFeatures, type Engine, type Limitation, type LimitationId, type Mode, type SidecarPlan,
} from './driver.ts';
export { firstIps, labTarget, podName, type HostVeth, type PodIntent, type PodKey, type PodTarget } from './pod.ts';
export { IptablesDriver, checkIptables, type IptablesInfo, type IptablesOptions } from './iptables/driver.ts';
export type { SidecarEbpfOptions } from './sidecar/driver.ts';
export type { AmbientEbpfOptions } from './ambient/driver.ts';
export type { AmbientIptablesOptions } from './ambient-iptables/driver.ts';

/**
 * Options for every driver: `nodeIps` is common; `pinRoot` and `cgroupPath` (and the other
 * SidecarEbpfOptions) are required by `ebpf` and ignored by `iptables`.
 */
export type DriverOptions = IptablesOptions & Partial<Omit<SidecarEbpfOptions, 'nodeIps'>> & {
  /** Settings of the ambient dataplane (failure policy, mark bits, map sizes). */
  ambient?: Partial<Omit<AmbientEbpfOptions, 'pinRoot' | 'nodeIps'>>;
};

/** The driver for (dataplane, engine); unknown words are an error naming the known ones. */
export async function createDriver(engine: string, opts: DriverOptions, dataplane: Dataplane | string = 'sidecar'): Promise<DatapathDriver<SidecarPlan>> {
  const e = parseEngine(engine);
  const d = parseDataplane(dataplane);
  if (d === 'ambient') {
    if (e === 'iptables') {
      const { AmbientIptablesDriver } = await import('./ambient-iptables/driver.ts');
      return new AmbientIptablesDriver({ nodeIps: opts.nodeIps, nodeNetnsPath: opts.nodeNetnsPath, ...opts.ambient });
    }
    if (opts.pinRoot === undefined) throw new Error('dataplane ambient needs option pinRoot');
    const { AmbientEbpfDriver } = await import('./ambient/driver.ts');
    return new AmbientEbpfDriver({ ...opts, ...opts.ambient, pinRoot: opts.pinRoot });
  }
  if (e === 'iptables') return new IptablesDriver({ nodeIps: opts.nodeIps });
  const { pinRoot, cgroupPath } = opts;
  if (pinRoot === undefined || cgroupPath === undefined) throw new Error('engine ebpf needs options pinRoot and cgroupPath');
  const { SidecarEbpfDriver } = await import('./sidecar/driver.ts');
  return new SidecarEbpfDriver({ ...opts, pinRoot, cgroupPath });
}

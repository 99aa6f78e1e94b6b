// SPDX-License-Identifier: Apache-2.0
// What `meshwarp doctor` checks besides the kernel features of
// src/bpf/features.ts (whose ids are its check ids): the system checks, the
// datapath objects and the external tools, and how each check id is formed.
import { DATAPATH_FEATURES, FEATURES } from '../bpf/features.ts';

/** eBPF objects the doctor loads (build/bpf/<name>.bpf.o); more are found from bpf/<dir>/*.bpf.c. */
export const OBJECTS = ['sidecar', 'ambient', 'selftest'];

/** External tools: probe id suffix → argv that prints a version. */
export const TOOLS: Record<string, string[]> = {
  iptables: ['iptables', '--version'],
  ip6tables: ['ip6tables', '--version'],
  ip: ['ip', '-V'],
  tc: ['tc', '-V'],
  clang: ['clang', '--version'],
};

/** Debian's containernetworking-plugins, chained by the lab's CNI config. */
export const CNI_PLUGIN_DIR = '/usr/lib/cni';
export const CNI_PLUGINS = ['bridge', 'host-local', 'loopback'];

export const progId = (name: string) => `prog.${name}`;
export const mapId = (name: string) => `map.${name}`;
export const attachId = (name: string) => `attach.${name}`;
export const helperId = (progType: string, name: string) => `helper.${progType}.${name}`;
export const objectId = (name: string) => `object.${name}`;
export const toolId = (name: string) => `tool.${name}`;

/** System checks, before the kernel features. */
const SYSTEM_IDS = ['kernel', 'privileges', 'btf', 'cgroup2', 'bpffs', 'ipv6', 'node'];

/** Every check id the doctor reports (objects discovered at run time come on top). */
export function allProbeIds(): string[] {
  return [
    ...SYSTEM_IDS,
    ...FEATURES.map((f) => f.id),
    ...OBJECTS.map(objectId),
    ...DATAPATH_FEATURES.map((f) => f.id),
    toolId('cni_plugins'),
    ...Object.keys(TOOLS).map(toolId),
  ];
}

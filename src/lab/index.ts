// SPDX-License-Identifier: Apache-2.0
// The lab: nodes and pods in network namespaces and cgroups (tests, demo, benchmarks).
export { Lab, LabNode, LabPod, Sandbox, uniquePrefix, type AddPodOptions, type LabOptions } from './lab.ts';
export { cleanupPrefix, labNetns, prefixIsClean } from './cleanup.ts';
export { waitForLine, wrapArgv, type RunOptions, type RunResult, type SpawnOptions } from './proc.ts';
export { nodeAddrs, podAddrs, TRANSIT_CIDR4, TRANSIT_CIDR6, type NodeAddrs } from './addr.ts';
export { NODE_BRIDGE, FABRIC_BRIDGE, POD_IFNAME, NODE_UPLINK, type PodNetwork } from './wire.ts';
export { LabAgent, type LabAgentOptions } from './agent.ts';
export { labPinRoot, labRunDir } from './cleanup.ts';

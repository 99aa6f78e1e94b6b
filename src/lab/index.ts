// SPDX-License-Identifier: Apache-2.0
// The lab: nodes and pods in network namespaces and cgroups (tests, demo, benchmarks).
export {
  Lab, LabNode, LabPod, Sandbox, uniquePrefix, type AddPodOptions, type AddPodCniOptions, type CniLogFn, type EnableCniOptions,
  type LabOptions, type NodeCni,
} from './lab.ts';
export {
  CniChainError, CNI_FIRST_HOST, DEBIAN_CNI_DIR, LAB_CNI_VERSION, LAB_NETWORK, LOOPBACK_CONFLIST, LAB_CNIS, execPlugin, findPlugin, labCni, labNodeConflist,
  loadConflist, runChain, type ChainContext, type CniCommand, type CniResult, type Conflist, type PluginRun, type PodCniAttachment,
} from './cni.ts';
export { cleanupPrefix, labNetns, prefixIsClean, runAll } from './cleanup.ts';
export { eventually, waitForLine, wrapArgv, type RunOptions, type RunResult, type SpawnOptions } from './proc.ts';
export { nodeAddrs, podAddrs, TRANSIT_CIDR4, TRANSIT_CIDR6, type NodeAddrs } from './addr.ts';
export { NODE_BRIDGE, FABRIC_BRIDGE, POD_IFNAME, NODE_UPLINK, type PodNetwork } from './wire.ts';
export { LabAgent, type LabAgentOptions } from './agent.ts';
export { labPinRoot, labRunDir } from './cleanup.ts';
export { LabNodeProxy, NODE_PROXY_PORTS } from './node-proxy.ts';

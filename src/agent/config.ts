// SPDX-License-Identifier: Apache-2.0
// Agent configuration: flags (and later a file), validated up front so a bad
// value is a clear error before anything on the node changes.
import { isAbsolute } from 'node:path';
import { isIP } from 'node:net';
import { parseDataplane, parseEngine, type Dataplane, type Engine } from '../datapath/driver.ts';
import type { TcMode } from '../datapath/ebpf/tc.ts';
import { getProfile } from '../profiles/index.ts';
import { cgroup2Mount } from '../sys/cgroup.ts';

export interface AgentConfig {
  /** ebpf | iptables: how the sidecar dataplane's traffic is redirected. */
  engine: Engine;
  /** Default mesh profile for pods (istio, linkerd, kuma, osm, fsm). */
  profile: string;
  /** bpffs directory for pins (maps/, links/). */
  pinRoot: string;
  /** cgroup2 directory the cgroup programs attach to (the node's pods live below it); default the cgroup2 root. */
  cgroupPath: string;
  /** Root-only unix socket serving the CNI plugin and the CLI. */
  socket: string;
  /** Where the agent keeps its record of meshed pods (survives restarts). */
  stateDir: string;
  /** Node addresses (kubelet probes come from them and are never captured). */
  nodeIps: string[];
  /** host:port for Prometheus metrics; empty = off. */
  metrics: string;
  /** The cluster DNS (kubelet's --cluster-dns): the pods' nameservers when the runtime does not pass them. */
  clusterDns: string[];
  /** tc attachment for the eBPF mode. */
  tc: TcMode;
  /** S4 sockmap acceleration (eBPF): auto = on when the behaviour gate passes (default), off, force. */
  sockmap?: 'auto' | 'off' | 'force';
  /** The dataplanes this node runs (default sidecar only); each gets its own driver. */
  dataplanes: Dataplane[];
  /** Ambient: what enrolled pods' new flows do while no node proxy is ready. */
  ambientFailPolicy: 'closed' | 'open';
  /** The node's CNI conf dir: /readyz also requires a valid meshwarp-cni entry in its conflist. */
  cniConfDir?: string;
  /** Set: pods are also watched in Kubernetes (src/k8s, sources/kube.ts). */
  kube?: KubeAgentConfig;
}

export interface KubeAgentConfig {
  /** JSON kubeconfig; absent: the in-cluster ServiceAccount. */
  kubeconfig?: string;
  /** API-server URL override for in-cluster credentials (before kube-proxy is up). */
  server?: string;
  /** From the downward API (NODE_NAME), never the hostname. */
  nodeName: string;
  excludeNamespaces: string[];
  /** The agent's own pod (POD_NAMESPACE/POD_NAME), never captured. */
  self?: { namespace: string; name: string };
  /** The agent's DaemonSet: on SIGTERM, gone or being deleted means uninstall, present means upgrade. */
  daemonSet?: { namespace: string; name: string };
  /** Repair by pod uid (sources/podns.ts): the host's /proc, and the runtime's netns dir. */
  hostProc: string;
  netnsDir: string;
}

export const DEFAULTS = {
  engine: 'ebpf',
  profile: 'osm',
  pinRoot: '/sys/fs/bpf/meshwarp',
  socket: '/run/meshwarp/agent.sock',
  stateDir: '/var/lib/meshwarp',
  metrics: '127.0.0.1:9464',
  tc: 'auto',
  dataplanes: ['sidecar'],
  ambientFailPolicy: 'closed',
} as const;

/** Validates a complete config; throws an Error naming the bad option. */
export function validateConfig(c: Partial<AgentConfig> & { /** @deprecated alias of engine */ mode?: string }): AgentConfig {
  const bad = (opt: string, why: string): never => { throw new Error(`--${opt}: ${why}`); };
  if (c.engine !== undefined && c.mode !== undefined && c.engine !== c.mode) bad('mode', `--mode is the old name of --engine; got --engine ${c.engine} and --mode ${c.mode}`);
  const engine = parseEngine(c.engine ?? c.mode ?? DEFAULTS.engine);
  const profile = c.profile ?? DEFAULTS.profile;
  getProfile(profile); // throws listing the known profiles
  for (const [k, v] of [['pin-root', c.pinRoot], ['socket', c.socket], ['state-dir', c.stateDir], ['cgroup', c.cgroupPath], ['cni-conf-dir', c.cniConfDir]] as const) {
    if (v !== undefined && !isAbsolute(v)) bad(k, `must be an absolute path, got ${JSON.stringify(v)}`);
  }
  for (const ip of c.nodeIps ?? []) if (!isIP(ip)) bad('node-ip', `${JSON.stringify(ip)} is not an IP address`);
  for (const ip of c.clusterDns ?? []) if (!isIP(ip)) bad('cluster-dns', `${JSON.stringify(ip)} is not an IP address`);
  const metrics = c.metrics ?? DEFAULTS.metrics;
  if (metrics && !/^(\[[0-9a-fA-F:.]+\]|[0-9.]+|localhost):\d{1,5}$/.test(metrics)) bad('metrics', `expected host:port, got ${JSON.stringify(metrics)}`);
  const tc = c.tc ?? DEFAULTS.tc;
  if (!['auto', 'tcx', 'legacy'].includes(tc)) bad('tc', `expected auto, tcx or legacy, got ${JSON.stringify(tc)}`);
  let dataplanes: Dataplane[];
  try {
    dataplanes = [...new Set((c.dataplanes ?? DEFAULTS.dataplanes).map((d) => parseDataplane(d)))];
  } catch (e) {
    return bad('dataplanes', (e as Error).message);
  }
  if (dataplanes.length === 0) bad('dataplanes', 'at least one of sidecar, ambient');
  const ambientFailPolicy = c.ambientFailPolicy ?? DEFAULTS.ambientFailPolicy;
  if (ambientFailPolicy !== 'closed' && ambientFailPolicy !== 'open') bad('ambient-fail-policy', `expected closed or open, got ${JSON.stringify(ambientFailPolicy)}`);
  const sockmap = c.sockmap ?? 'auto';
  if (!['auto', 'off', 'force'].includes(sockmap)) bad('sockmap', `expected auto, off or force, got ${JSON.stringify(sockmap)}`);
  return {
    engine, profile, metrics, tc: tc as TcMode, dataplanes, ambientFailPolicy, sockmap,
    pinRoot: c.pinRoot ?? DEFAULTS.pinRoot,
    // On a Kubernetes node every pod sits below the cgroup2 root (discovered, not assumed).
    cgroupPath: c.cgroupPath ?? cgroup2Mount(),
    socket: c.socket ?? DEFAULTS.socket,
    stateDir: c.stateDir ?? DEFAULTS.stateDir,
    nodeIps: c.nodeIps ?? [],
    clusterDns: c.clusterDns ?? [],
    ...(c.cniConfDir ? { cniConfDir: c.cniConfDir } : {}),
  };
}

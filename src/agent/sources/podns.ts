// SPDX-License-Identifier: Apache-2.0
// Finding a running pod's network namespace by its uid, for pods whose CNI ADD
// this agent never saw (they started before it, or the plugin let them through
// while it was down). kubelet puts every container of a pod in a cgroup whose
// path carries `pod<uid>` (cgroupfs: kubepods/<qos>/pod<uid>/<id>; systemd:
// kubepods-<qos>-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope), so
// a process of the pod is found from /proc/*/cgroup, and its netns from
// /proc/<pid>/ns/net (Istio's way: works with any CRI, needs no CRI socket).
// The oldest process wins (the sandbox's pause process, whose cgroup leaf is
// the sandbox id runtimes pass as CNI_CONTAINERID); the node's own netns is
// refused (Istio issue 55139) and the netns must hold one of the pod's IPs.
// The record is given the runtime's bind mount of that netns when the netns
// dir has one (it outlives any one process), else /proc/<pid>/ns/net.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { addresses } from '../../sys/links.ts';
import { netnsIdentity, ownNetnsIdentity } from '../../sys/netns.ts';
import type { AddRequest } from '../api.ts';

export interface LocateOptions {
  /** The host's /proc (the chart mounts it at /host/proc). */
  procRoot: string;
  /** Where the runtime bind-mounts pod netns (containerd, CRI-O: /var/run/netns). */
  netnsDir: string;
}

export interface LocatedPod {
  pid: number;
  /** The sandbox id from the oldest process's cgroup leaf (undefined when it has none). */
  sandboxId: string | undefined;
  netns: string;
  ifName: string;
  ips: string[];
}

/** Does cgroup path `p` belong to pod `uid` (cgroupfs or systemd naming)? */
export function cgroupOfPod(p: string, uid: string): boolean {
  const a = `pod${uid}`;
  const b = `pod${uid.replaceAll('-', '_')}`;
  return p.split('/').some((c) => c === a || c.endsWith(`-${b}.slice`) || c === `${b}.slice`);
}

/** The container id a runtime names a container's cgroup leaf after (cgroupfs: the id itself). */
export function containerIdOfLeaf(leaf: string): string | undefined {
  const id = leaf.replace(/^(cri-containerd|crio|docker|containerd)-/, '').replace(/\.scope$/, '');
  return /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/.test(id) && !/^pod/.test(id) && !id.endsWith('.slice') ? id : undefined;
}

/** Processes whose cgroup carries the pod uid, oldest first (start time in clock ticks, then pid). */
function podProcesses(uid: string, procRoot: string): { pid: number; cgroup: string }[] {
  const out: { pid: number; cgroup: string; start: number }[] = [];
  for (const d of readdirSync(procRoot)) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const line = readFileSync(join(procRoot, d, 'cgroup'), 'utf8').split('\n').find((l) => l.startsWith('0::'));
      if (!line || !cgroupOfPod(line.slice(3), uid)) continue;
      const stat = readFileSync(join(procRoot, d, 'stat'), 'utf8');
      const start = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]); // field 22: starttime
      out.push({ pid: Number(d), cgroup: line.slice(3), start });
    } catch { /* exited while we looked */ }
  }
  return out.sort((x, y) => x.start - y.start || x.pid - y.pid);
}

/** The runtime's bind mount of the netns with identity `id`, if the netns dir has one. */
function pinnedNetns(netnsDir: string, id: string): string | undefined {
  let names: string[];
  try { names = readdirSync(netnsDir); } catch { return undefined; }
  for (const n of names) {
    const p = join(netnsDir, n);
    const i = netnsIdentity(p);
    if ('id' in i && i.id === id) return p;
  }
  return undefined;
}

/** Finds pod `uid`'s netns and interface, or says why not. Reads only. */
export function locatePod(uid: string, podIps: readonly string[], o: LocateOptions): LocatedPod | { error: string } {
  const procs = podProcesses(uid, o.procRoot);
  if (procs.length === 0) return { error: `no process of pod uid ${uid} under ${o.procRoot} (cgroup path with pod${uid})` };
  const own = ownNetnsIdentity();
  let why = '';
  for (const { pid, cgroup } of procs) {
    const path = join(o.procRoot, String(pid), 'ns', 'net');
    const ns = netnsIdentity(path);
    if ('error' in ns) { why = ns.error; continue; }
    if (ns.id === own) { why = `process ${pid} is in the node's netns`; continue; }
    let addrs: ReturnType<typeof addresses>;
    try { addrs = addresses(path); } catch (e) { why = (e as Error).message; continue; }
    const mine = addrs.filter((a) => podIps.includes(a.local));
    if (mine.length === 0) { why = `the netns of process ${pid} holds none of the pod's IPs ${podIps.join(', ')}`; continue; }
    const ifName = mine[0].ifname;
    return {
      pid, sandboxId: containerIdOfLeaf(cgroup.split('/').pop() ?? ''),
      netns: pinnedNetns(o.netnsDir, ns.id) ?? path, ifName,
      ips: [...new Set(addrs.filter((a) => a.ifname === ifName && a.scope === 'global').map((a) => a.local))],
    };
  }
  return { error: `pod uid ${uid}: ${why}` };
}

/**
 * The CNI ADD the runtime would have sent for a located pod: the agent takes
 * it through the same path (sources/cni.ts checks every fact again).
 */
export function repairRequest(pod: { namespace: string; name: string; uid: string }, l: LocatedPod): AddRequest {
  return {
    containerId: l.sandboxId ?? `repair-${pod.uid}`, netns: l.netns, ifName: l.ifName,
    podNamespace: pod.namespace, podName: pod.name, podUid: pod.uid,
    prevResult: { interfaces: [{ name: l.ifName, sandbox: l.netns }], ips: l.ips.map((ip) => ({ address: ip, interface: 0 })) },
  };
}

/**
 * Repair for the Kubernetes source: locates a running pod the agent holds no
 * sandbox for and hands `add` (the agent's CNI ADD path) the request the
 * runtime would have sent. Resolves with why it could not, or undefined.
 */
export function podRepairer(add: (req: AddRequest) => Promise<unknown>, o: LocateOptions) {
  return async (pod: { metadata: { namespace: string; name: string; uid: string }; status?: { podIP?: string; podIPs?: { ip: string }[] } }): Promise<string | undefined> => {
    const ips = pod.status?.podIPs?.map((p) => p.ip) ?? (pod.status?.podIP ? [pod.status.podIP] : []);
    const l = locatePod(pod.metadata.uid, ips, o);
    if ('error' in l) return l.error;
    try {
      await add(repairRequest(pod.metadata, l));
    } catch (e) {
      return (e as Error).message;
    }
    return undefined;
  };
}

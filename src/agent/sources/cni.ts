// SPDX-License-Identifier: Apache-2.0
// The CNI source of pod facts: turns a CNI ADD (the AddRequest the plugin
// sends) into a PodIntent, checking everything the runtime told us against
// the kernel first. Facts only the runtime knows come from here: the sandbox's
// netns, its interface and host veth, its addresses. A bad fact is a 4xx with
// the CNI code that names it, never a 500 (which the plugin would report as
// "agent unavailable", making the runtime retry forever).
import { isIP } from 'node:net';
import { linkKind } from '../../sys/links.ts';
import { hostVethOf, NoSuchLink } from '../../sys/veth.ts';
import { netnsIdentity, ownNetnsIdentity } from '../../sys/netns.ts';
import { parseDataplane, type Dataplane } from '../../datapath/driver.ts';
import type { HostVeth, PodIntent } from '../../datapath/pod.ts';
import { AGENT_CNI_CODE, ApiError, type AddRequest } from '../api.ts';

/** What the agent assumes where the runtime says nothing: `dnsServers` is the cluster DNS (kubelet's --cluster-dns). */
export interface CniDefaults { profile: string; dataplane: Dataplane; dnsServers?: string[] }

/** Istio's per-pod/namespace dataplane switch; a pod may ask for ambient with it. */
const DATAPLANE_ANNOTATION = 'istio.io/dataplane-mode';

const invalidEnv = (msg: string): never => { throw new ApiError(400, msg, AGENT_CNI_CODE.invalidEnv); };

/** The intent for a CNI ADD, or a 4xx ApiError naming what is wrong. Changes nothing. */
export function intentFromAdd(req: AddRequest, defaults: CniDefaults): PodIntent & { netnsId: string } {
  const ns = netnsIdentity(req.netns);
  if ('error' in ns) return invalidEnv(`CNI_NETNS: ${ns.error}`);
  if (ns.id === ownNetnsIdentity()) invalidEnv(`CNI_NETNS: ${req.netns} is the node's own network namespace, not a pod's`);
  const hostVeth = hostVethIn(req.netns, req.ifName);
  const ips = podIps(req);
  const annotations = req.annotations ?? {};
  let dataplane = defaults.dataplane;
  try {
    const asked = req.dataplane ?? (annotations[DATAPLANE_ANNOTATION] === 'ambient' ? 'ambient' : undefined);
    if (asked) dataplane = parseDataplane(asked);
  } catch (e) {
    throw new ApiError(400, (e as Error).message, AGENT_CNI_CODE.invalidConfig);
  }
  // Ambient captures on the pod's host-side veth (tc); an ipvlan/macvlan pod has none. The
  // sidecar dataplane captures by cgroup and meshes such a pod (without the tc inbound DNAT).
  if (dataplane === 'ambient' && !hostVeth) {
    const kind = linkKind(req.ifName, req.netns) ?? 'a device';
    throw new ApiError(400, `ambient dataplane: the pod's interface ${req.ifName} is ${kind === 'a device' ? kind : `a ${kind}`}, not a veth — `
      + 'ambient redirects on the host-side peer of a veth, which this pod has none of; use the sidecar dataplane for it (docs/kernels.md)', AGENT_CNI_CODE.invalidConfig);
  }
  return {
    key: { sandboxId: req.containerId, uid: req.podUid ?? '', namespace: req.podNamespace, name: req.podName },
    netns: req.netns, netnsId: ns.id, ifName: req.ifName, ips, hostVeth,
    dataplane, profile: req.profile ?? defaults.profile, annotations,
    dnsServers: req.dnsServers ?? defaults.dnsServers,
    meshedAt: new Date().toISOString(),
  };
}

/**
 * The addresses of the pod's own interface. prevResult.ips[].interface indexes
 * prevResult.interfaces; an entry whose interface is in the sandbox and named
 * CNI_IFNAME is the pod's. Entries without an interface index (allowed by the
 * spec) count when no entry has one.
 */
export function podIps(req: Pick<AddRequest, 'prevResult' | 'ifName'>): string[] {
  const all = req.prevResult.ips ?? [];
  const ifs = req.prevResult.interfaces ?? [];
  const indexed = all.some((ip) => ip.interface !== undefined);
  const mine = all.filter((ip) => {
    if (!indexed) return true;
    const i = ip.interface;
    const itf = i === undefined ? undefined : ifs[i];
    return itf !== undefined && itf.name === req.ifName && !!itf.sandbox;
  });
  const ips = mine.map(({ address }) => {
    const ip = address.split('/')[0];
    if (isIP(ip) === 0) throw new ApiError(400, `prevResult.ips: ${JSON.stringify(address)} is not an address`, AGENT_CNI_CODE.invalidConfig);
    return ip;
  });
  if (ips.length === 0) {
    throw new ApiError(400, indexed
      ? `prevResult has no IP address on the pod's interface ${req.ifName} (in the sandbox)`
      : 'prevResult has no IP address for the pod: is meshwarp-cni chained after the IPAM plugin?', AGENT_CNI_CODE.invalidConfig);
  }
  return [...new Set(ips)];
}

/** The host-side peer of the pod's interface; a missing interface is the runtime's mistake (4xx). */
function hostVethIn(netns: string, ifName: string): HostVeth | undefined {
  try {
    return hostVethOf(netns, ifName);
  } catch (e) {
    if (e instanceof NoSuchLink) return invalidEnv(`CNI_IFNAME: no interface ${JSON.stringify(ifName)} in ${netns}`);
    throw e;
  }
}

// SPDX-License-Identifier: Apache-2.0
// Which pods meshwarp redirects, decided per mesh exactly as the research
// table says (docs/kubernetes.md). Sidecar meshes: from what was injected
// into the pod (labels only mattered at admission). Ambient: Istio's
// `istio.io/dataplane-mode=ambient` on the pod or its namespace, `none` on the
// pod opting out. Never: hostNetwork pods, the agent's own pod, excluded
// namespaces, terminal pods. Pure functions, unit-tested on pod shapes.
import type { KubeObject } from './informer.ts';

export type Mesh = 'istio' | 'linkerd' | 'kuma' | 'osm' | 'fsm';

export interface Container { name: string; args?: string[]; env?: { name: string; value?: string }[] }
export interface Pod extends KubeObject {
  spec?: { nodeName?: string; hostNetwork?: boolean; containers?: Container[]; initContainers?: Container[] };
  status?: { phase?: string; podIP?: string; podIPs?: { ip: string }[] };
}
export type Namespace = KubeObject;

/** The dataplane-mode label (pod or namespace) of Istio ambient. */
export const DATAPLANE_MODE = 'istio.io/dataplane-mode';
/** The status annotation meshwarp writes on pods/status. */
export const REDIRECTION = 'meshwarp.io/redirection';
export const REDIRECTION_REASON = 'meshwarp.io/redirection-reason';

export const DEFAULT_EXCLUDE_NAMESPACES = ['kube-system'];

const containers = (p: Pod): Container[] => [...(p.spec?.containers ?? []), ...(p.spec?.initContainers ?? [])];
const has = (p: Pod, ...names: string[]) => containers(p).some((c) => names.includes(c.name));
const regular = (p: Pod, ...names: string[]) => (p.spec?.containers ?? []).some((c) => names.includes(c.name));

/** The sidecar mesh injected into `pod`, or why none counts. */
export function injectedMesh(pod: Pod): Mesh | undefined {
  const a = pod.metadata.annotations ?? {};
  const l = pod.metadata.labels ?? {};
  if (a['sidecar.istio.io/status'] !== undefined) {
    const proxy = containers(pod).find((c) => c.name === 'istio-proxy');
    if (proxy) {
      const disabled = proxy.env?.some((e) => e.name === 'DISABLE_ENVOY' && e.value === 'true');
      const args = proxy.args ?? [];
      const type = args[0] === 'proxy' ? args[1] : 'sidecar';
      if (!disabled && type === 'sidecar') return 'istio';
    }
  }
  if (has(pod, 'linkerd-proxy')) return 'linkerd';
  if (a['kuma.io/sidecar-injected'] === 'true' && has(pod, 'kuma-sidecar')) return 'kuma';
  if (l['osm-proxy-uuid'] !== undefined && has(pod, 'envoy', 'sidecar')) return 'osm';
  if (l['fsm-proxy-uuid'] !== undefined && regular(pod, 'sidecar')) return 'fsm';
  return undefined;
}

export interface EnrollOptions {
  excludeNamespaces: readonly string[];
  /** The agent's own pod (POD_NAMESPACE/POD_NAME): never captured. */
  self?: { namespace: string; name: string };
}

export type Enrollment =
  | { enrolled: true; dataplane: 'sidecar' | 'ambient'; profile: Mesh }
  | { enrolled: false; reason: string };

/** Is `pod` (in namespace `ns`, when known) meshed, by which dataplane and mesh profile? */
export function enrollment(pod: Pod, ns: Namespace | undefined, opts: EnrollOptions): Enrollment {
  const m = pod.metadata;
  if (pod.spec?.hostNetwork) return { enrolled: false, reason: 'hostNetwork pod (rules would go into the node netns)' };
  if (opts.self && m.namespace === opts.self.namespace && m.name === opts.self.name) return { enrolled: false, reason: 'the agent\'s own pod' };
  if (opts.excludeNamespaces.includes(m.namespace ?? '')) return { enrolled: false, reason: `namespace ${m.namespace} is excluded` };
  const phase = pod.status?.phase;
  if (phase === 'Succeeded' || phase === 'Failed') return { enrolled: false, reason: `pod is terminal (${phase})` };
  const mesh = injectedMesh(pod);
  if (mesh) return { enrolled: true, dataplane: 'sidecar', profile: mesh };
  const podMode = m.labels?.[DATAPLANE_MODE];
  if (podMode === 'none') return { enrolled: false, reason: `pod label ${DATAPLANE_MODE}=none` };
  if (podMode === 'ambient' || ns?.metadata.labels?.[DATAPLANE_MODE] === 'ambient') return { enrolled: true, dataplane: 'ambient', profile: 'istio' };
  return { enrolled: false, reason: 'no mesh proxy injected and not ambient' };
}

/**
 * Per-pod knobs: the pod's annotations, then the namespace's for keys the pod
 * does not set (Linkerd's config.linkerd.io/* may sit on the namespace).
 */
export function podKnobs(pod: Pod, ns: Namespace | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(ns?.metadata.annotations ?? {})) if (k.startsWith('config.linkerd.io/')) out[k] = v;
  for (const [k, v] of Object.entries(pod.metadata.annotations ?? {})) {
    if (k === REDIRECTION || k === REDIRECTION_REASON || k === 'kubectl.kubernetes.io/last-applied-configuration') continue;
    out[k] = v;
  }
  return out;
}

// SPDX-License-Identifier: Apache-2.0
// What the agent writes back: the redirection status annotation, by JSON
// merge patch on the pods/status subresource (the lower privilege; `null`
// removes it), and Events. A pod that is gone (404) is not an error.
import { KubeError, type KubeClient } from './client.ts';
import { REDIRECTION, REDIRECTION_REASON, type Pod } from './enroll.ts';

export type Redirection = 'enabled' | 'pending' | 'failed';

const podPath = (ns: string, name: string) => `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`;

/** Does the pod already carry this status (so no write is needed)? */
export function statusIs(pod: Pod, state: Redirection | undefined, reason: string | undefined): boolean {
  const a = pod.metadata.annotations ?? {};
  return a[REDIRECTION] === state && a[REDIRECTION_REASON] === reason;
}

/** Sets (or with `state` undefined, removes) the status annotation. */
export async function patchRedirection(client: KubeClient, pod: Pod, state: Redirection | undefined, reason?: string): Promise<void> {
  const annotations = { [REDIRECTION]: state ?? null, [REDIRECTION_REASON]: reason ?? null };
  try {
    await client.mergePatch(`${podPath(pod.metadata.namespace!, pod.metadata.name)}/status`, { metadata: { annotations } });
  } catch (e) {
    if (e instanceof KubeError && e.status === 404) return;
    throw e;
  }
}

/** A Warning (or Normal) Event about `pod`, from the agent on `node`. */
export async function podEvent(client: KubeClient, pod: Pod, node: string, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
  const now = new Date().toISOString();
  const ns = pod.metadata.namespace!;
  await client.request('POST', `/api/v1/namespaces/${encodeURIComponent(ns)}/events`, {
    apiVersion: 'v1', kind: 'Event',
    metadata: { generateName: `${pod.metadata.name}.`, namespace: ns },
    involvedObject: { apiVersion: 'v1', kind: 'Pod', namespace: ns, name: pod.metadata.name, uid: pod.metadata.uid },
    type, reason, message: message.slice(0, 1024), count: 1, firstTimestamp: now, lastTimestamp: now,
    source: { component: 'meshwarp-agent', host: node }, reportingComponent: 'meshwarp.io/agent', reportingInstance: node,
  });
}

// SPDX-License-Identifier: Apache-2.0
// The Kubernetes source of pod facts, beside CNI (sources/cni.ts). CNI ADD is
// authoritative for what only the runtime knows (netns, veth, addresses); the
// watch is authoritative for what only the API knows: whether a pod is
// enrolled (src/k8s/enroll.ts), by which dataplane and mesh profile, and its
// per-pod knobs (annotations). This source merges the two for the same pod
// (joined by pod uid, or namespace/name when the runtime gave no uid) and
// feeds the reconciler; live annotation or namespace-label changes re-apply
// in place. It writes back the status annotation, last, and Events.
import { KubeError, type KubeClient } from '../../k8s/client.ts';
import { enrollment, podKnobs, type EnrollOptions, type Namespace, type Pod } from '../../k8s/enroll.ts';
import { Informer } from '../../k8s/informer.ts';
import { patchRedirection, podEvent, statusIs, type Redirection } from '../../k8s/status.ts';
import { podName, type PodIntent } from '../../datapath/pod.ts';
import { ApiError } from '../api.ts';
import { log } from '../log.ts';
import type { Reconciler } from '../reconcile.ts';
import type { PodRecord } from '../state.ts';

export interface KubeSourceOptions extends EnrollOptions {
  nodeName: string;
  /** Throws when the policy for (profile, annotations) is invalid; changes nothing. */
  validate(intent: Pick<PodIntent, 'profile' | 'annotations' | 'key'>): void;
  /**
   * Reconcile at start doubles as repair: meshes a running pod whose CNI ADD this
   * agent never saw (netns located by pod uid, sources/podns.ts); resolves with
   * why it could not. Absent: such pods stay `pending`.
   */
  repair?(pod: Pod): Promise<string | undefined>;
}

type Intent = PodRecord;

export interface WatchStats {
  resource: string; synced: boolean; objects: number; restarts: number; relists: number; events: number; failures: number;
  secondsSinceLastEvent: number | undefined;
}

/** How long a CNI ADD waits for the watch to show its pod before one direct GET (Istio: 10 × 10 ms). */
const CACHE_RETRIES = 10;
const CACHE_RETRY_MS = 10;

export class KubeSource {
  readonly pods: Informer<Pod>;
  readonly namespaces: Informer<Namespace>;
  readonly counters = { syncs: 0, statusWrites: 0, events: 0, failures: 0, repaired: 0 };
  readonly #client: KubeClient;
  readonly #rec: Reconciler;
  readonly #o: KubeSourceOptions;
  /** Pods whose state must be re-derived; drained one at a time. */
  readonly #dirty = new Map<string, Pod | undefined>();
  #draining: Promise<void> | undefined;
  /**
   * Sandboxes whose CNI ADD found the pod not enrolled (by pod uid): kept in
   * memory, so a later opt-in (a relabelled namespace) can mesh them.
   */
  readonly #unenrolled = new Map<string, Intent>();
  /** Last warning per pod uid, so a repeated failure makes one Event, not one per sync. */
  readonly #warned = new Map<string, string>();

  constructor(client: KubeClient, reconciler: Reconciler, opts: KubeSourceOptions) {
    this.#client = client;
    this.#rec = reconciler;
    this.#o = opts;
    this.pods = new Informer<Pod>(client, { path: '/api/v1/pods', fieldSelector: `spec.nodeName=${opts.nodeName}` }, {
      add: (p) => this.#mark(p), update: (_o, p) => this.#mark(p),
      delete: (p) => this.#mark(p, true),
      synced: () => this.#dropGone(),
    });
    this.namespaces = new Informer<Namespace>(client, { path: '/api/v1/namespaces' }, {
      add: (ns) => this.#markNamespace(ns.metadata.name),
      update: (old, ns) => {
        if (JSON.stringify([old.metadata.labels, old.metadata.annotations]) !== JSON.stringify([ns.metadata.labels, ns.metadata.annotations])) this.#markNamespace(ns.metadata.name);
      },
    });
  }

  start(): void { this.pods.start(); this.namespaces.start(); }
  async stop(): Promise<void> { await Promise.all([this.pods.stop(), this.namespaces.stop()]); await this.#draining; }
  get synced(): boolean { return this.pods.synced && this.namespaces.synced; }
  /** Per-watch counters for metrics and `meshwarp status`. */
  watchStats(): WatchStats[] {
    return ([['pods', this.pods], ['namespaces', this.namespaces]] as const).map(([resource, i]) => ({
      resource, synced: i.synced, objects: i.size, ...i.counters, secondsSinceLastEvent: i.secondsSinceLastEvent(),
    }));
  }

  /** Resolves when every queued pod has been handled (tests, shutdown). */
  async idle(): Promise<void> { while (this.#draining) await this.#draining; }

  #mark(p: Pod, deleted = false): void {
    this.#dirty.set(`${p.metadata.namespace}/${p.metadata.name}/${p.metadata.uid}`, deleted ? undefined : p);
    this.#draining ??= this.#drain().finally(() => { this.#draining = undefined; });
  }

  /** After a (re)list: sandboxes recorded for Kubernetes pods the API no longer has are removed. */
  #dropGone(): void {
    for (const r of this.#rec.list()) {
      const { uid, namespace, name } = r.key;
      if (uid && namespace && name && this.pods.get(namespace, name)?.metadata.uid !== uid) this.#mark({ metadata: { namespace, name, uid } } as Pod, true);
    }
  }

  #markNamespace(ns: string): void {
    for (const p of this.pods.list()) if (p.metadata.namespace === ns) this.#mark(p);
  }

  async #drain(): Promise<void> {
    while (this.#dirty.size > 0) {
      const [k, seen] = this.#dirty.entries().next().value!;
      this.#dirty.delete(k);
      const [ns, name, uid] = k.split('/');
      // The newest object in the cache wins over the one the event carried.
      const cur = this.pods.get(ns, name);
      const pod = seen === undefined ? undefined : (cur?.metadata.uid === uid ? cur : seen);
      try {
        await this.#sync(ns, name, uid, pod);
      } catch (e) {
        this.counters.failures++;
        log('warn', 'kubernetes sync failed', { pod: `${ns}/${name}`, error: (e as Error).message });
      }
    }
  }

  #sandboxesOf(ns: string, name: string, uid: string): PodRecord[] {
    return this.#rec.list().filter((r) => (r.key.uid ? r.key.uid === uid : r.key.namespace === ns && r.key.name === name));
  }

  /** Brings the sandboxes of one pod in line with what the API says about it. */
  async #sync(ns: string, name: string, uid: string, pod: Pod | undefined): Promise<void> {
    this.counters.syncs++;
    const sandboxes = this.#sandboxesOf(ns, name, uid);
    if (!pod) { // deleted: the CNI DEL normally came first; this covers a missed one
      for (const s of sandboxes) await this.#rec.remove(s.key.sandboxId);
      this.#warned.delete(uid);
      this.#unenrolled.delete(uid);
      return;
    }
    const e = enrollment(pod, this.namespaces.get(undefined, ns), this.#o);
    if (!e.enrolled) {
      for (const s of sandboxes) {
        await this.#rec.remove(s.key.sandboxId);
        this.#unenrolled.set(uid, s);
        log('info', 'pod unenrolled', { pod: `${ns}/${name}`, reason: e.reason });
      }
      if (pod.metadata.annotations?.['meshwarp.io/redirection'] !== undefined) await this.#status(pod, undefined, undefined);
      return;
    }
    const known = this.#unenrolled.get(uid);
    if (sandboxes.length === 0 && known) sandboxes.push(known);
    if (sandboxes.length === 0) {
      // Not through CNI ADD yet: the ADD brings netns and addresses. A running pod with an
      // IP started before this agent (or its ADD was missed): repair it, or say why not.
      if (!pod.status?.podIP) return;
      const why = pod.status.phase !== 'Running' ? `phase ${pod.status.phase ?? 'unknown'}`
        : this.#o.repair ? await this.#o.repair(pod) : 'repair is off';
      if (why === undefined) sandboxes.push(...this.#sandboxesOf(ns, name, uid));
      if (sandboxes.length === 0) {
        await this.#status(pod, 'pending', `enrolled, but this agent has not seen its CNI ADD (pod started before the agent?) and could not repair it: ${why ?? 'no sandbox'}`);
        return;
      }
      this.counters.repaired++;
      log('info', 'pod repaired: meshed without its CNI ADD', { pod: `${ns}/${name}`, sandbox: sandboxes[0].key.sandboxId, netns: sandboxes[0].netns });
    }
    const annotations = podKnobs(pod, this.namespaces.get(undefined, ns));
    let failed: string | undefined;
    for (const s of sandboxes) {
      const intent: Intent = { ...s, key: { ...s.key, uid: pod.metadata.uid }, dataplane: e.dataplane, profile: e.profile, annotations };
      try {
        this.#o.validate(intent);
      } catch (err) {
        // Invalid knob: keep the last good policy (what is applied stays), say so.
        failed = `invalid per-pod setting, keeping the last good policy: ${(err as Error).message}`;
        continue;
      }
      try {
        await this.#rec.apply(intent);
        this.#unenrolled.delete(uid);
      } catch (err) {
        failed = (err as Error).message;
      }
    }
    if (failed) {
      await this.#warn(pod, 'RedirectionFailed', failed);
      // Something is applied (the sandbox is known): redirection keeps running on the last good policy.
      await this.#status(pod, this.#rec.get(sandboxes[0].key.sandboxId) ? 'enabled' : 'failed', failed);
    } else {
      this.#warned.delete(pod.metadata.uid);
      await this.#status(pod, 'enabled', undefined);
    }
  }

  async #status(pod: Pod, state: Redirection | undefined, reason: string | undefined): Promise<void> {
    if (statusIs(pod, state, reason)) return;
    await patchRedirection(this.#client, pod, state, reason);
    this.counters.statusWrites++;
  }

  async #warn(pod: Pod, reason: string, message: string): Promise<void> {
    if (this.#warned.get(pod.metadata.uid) === message) return;
    this.#warned.set(pod.metadata.uid, message);
    log('warn', 'pod redirection problem', { pod: `${pod.metadata.namespace}/${pod.metadata.name}`, reason, message });
    try {
      await podEvent(this.#client, pod, this.#o.nodeName, 'Warning', reason, message);
      this.counters.events++;
    } catch (e) {
      log('warn', 'could not create event', { error: (e as Error).message });
    }
  }

  /** The pod of a CNI ADD: from the cache, retried briefly, then one GET with the agent's credentials. */
  async #podForAdd(ns: string, name: string): Promise<Pod> {
    for (let i = 0; i < CACHE_RETRIES; i++) {
      const p = this.pods.get(ns, name);
      if (p) return p;
      await new Promise((r) => setTimeout(r, CACHE_RETRY_MS));
    }
    try {
      return await this.#client.request<Pod>('GET', `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`);
    } catch (e) {
      const status = e instanceof KubeError && e.status === 404 ? 409 : 503;
      throw new ApiError(status, `pod ${ns}/${name}: not in the watch and the API answered: ${(e as Error).message}`);
    }
  }

  /**
   * CNI ADD: completes the runtime's facts with the API's. Returns the intent
   * to apply, or why the pod is not meshed (it then starts unredirected, as
   * a pod no mesh claims should).
   */
  async forAdd<T extends Intent>(intent: T): Promise<T | { skip: string }> {
    const { namespace: ns, name } = intent.key;
    if (!ns || !name) return intent; // not a Kubernetes pod (lab, bench): the runtime's facts are all there is
    const pod = await this.#podForAdd(ns, name);
    const nsObj = this.namespaces.get(undefined, ns);
    const e = enrollment(pod, nsObj, this.#o);
    if (!e.enrolled) {
      this.#unenrolled.set(pod.metadata.uid, { ...intent, key: { ...intent.key, uid: pod.metadata.uid } });
      return { skip: e.reason };
    }
    const out = { ...intent, key: { ...intent.key, uid: pod.metadata.uid }, dataplane: e.dataplane, profile: e.profile, annotations: podKnobs(pod, nsObj) };
    log('info', 'pod enrolled', { pod: podName(out.key), dataplane: e.dataplane, profile: e.profile });
    return out;
  }

  /**
   * Upgrade is not uninstall: is the agent's DaemonSet still there and not
   * being deleted? Unknown (API unreachable, no name given) counts as yes:
   * keeping the datapath is the safe side.
   */
  async daemonSetRemains(ref: { namespace: string; name: string } | undefined): Promise<boolean> {
    if (!ref) return true;
    try {
      const ds = await this.#client.request('GET', `/apis/apps/v1/namespaces/${encodeURIComponent(ref.namespace)}/daemonsets/${encodeURIComponent(ref.name)}`, undefined, 'application/json', 5000);
      return !ds.metadata?.deletionTimestamp;
    } catch (e) {
      if (e instanceof KubeError && e.status === 404) return false;
      log('warn', 'could not read the agent\'s DaemonSet; keeping the datapath', { error: (e as Error).message });
      return true;
    }
  }

  /** The ADD's intent is applied: write the status from the watch's view of the pod. */
  applied(intent: Intent): void {
    const p = this.pods.get(intent.key.namespace, intent.key.name);
    if (p) this.#mark(p);
  }
}

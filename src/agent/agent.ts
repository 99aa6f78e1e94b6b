// SPDX-License-Identifier: Apache-2.0
// The node's redirection control plane: one datapath driver per dataplane,
// a reconciler that owns desired vs applied (reconcile.ts), and the sources
// that feed it (sources/cni.ts now, the Kubernetes watch next). It survives
// being killed at any moment: the drivers' pins keep traffic flowing, the
// state file says which sandboxes are ours.
import type { UpgradeReport } from '../datapath/ebpf/upgrade.ts';
import { limitations, type DatapathDriver, type Dataplane, type SidecarPlan } from '../datapath/driver.ts';
import type { NodeProxy } from '../datapath/ambient/proxy.ts';
import { podName, type PodIntent } from '../datapath/pod.ts';
import type { TraceRecord } from '../datapath/trace.ts';
import { resolvePodPolicy } from '../profiles/index.ts';
import { AGENT_CNI_CODE, ApiError, type AddRequest } from './api.ts';
import type { AgentConfig } from './config.ts';
import { log } from './log.ts';
import { Reconciler } from './reconcile.ts';
import { intentFromAdd } from './sources/cni.ts';
import { entryProblem } from '../cni/install.ts';
import { StateStore, type PodRecord } from './state.ts';

export { log } from './log.ts';

export type TraceSubscriber = (r: TraceRecord) => void;
export type Driver = DatapathDriver<SidecarPlan>;

export interface Counters { cniAdd: number; cniDel: number; cniErrors: number; reconciled: number; dropped: number; swept: number }

/** How often dead sandboxes and orphaned datapath state are looked for. */
const TICK_MS = 10_000;

export class Agent {
  readonly cfg: AgentConfig;
  readonly drivers: ReadonlyMap<Dataplane, Driver>;
  readonly reconciler: Reconciler;
  readonly #cni = { cniAdd: 0, cniDel: 0, cniErrors: 0 };
  readonly startedAt = new Date();
  #tick: NodeJS.Timeout | undefined;
  /** A second source of pod facts (sources/kube.ts): completes a CNI ADD with the API's facts. */
  podSource: PodSource | undefined;

  /** `drivers`: one per dataplane this node runs (a lone driver is the sidecar dataplane's). */
  constructor(cfg: AgentConfig, drivers: Driver | ReadonlyMap<Dataplane, Driver>) {
    this.cfg = cfg;
    this.drivers = 'start' in drivers ? new Map([[drivers.dataplane, drivers as Driver]]) : drivers as ReadonlyMap<Dataplane, Driver>;
    this.reconciler = new Reconciler(this.drivers, new StateStore(cfg.stateDir), (p) => this.#plan(p));
  }

  get counters(): Counters {
    return { ...this.#cni, ...this.reconciler.counters };
  }

  /** Counts a request that failed inside the agent (5xx). */
  countError(): void { this.#cni.cniErrors++; }

  /** Throws a 4xx ApiError when the policy of (profile, annotations) is invalid. */
  validate(p: Pick<PodIntent, 'profile' | 'annotations' | 'key'>): void { this.#plan(p); }

  #plan(p: Pick<PodIntent, 'profile' | 'annotations' | 'key'>): SidecarPlan {
    try {
      return resolvePodPolicy(p.profile, p.annotations);
    } catch (e) {
      // Whatever the profile or an annotation got wrong is the pod's configuration (PolicyError, or a bad profile name).
      if (e instanceof Error) throw new ApiError(400, `pod ${podName(p.key)}: ${e.message}`, AGENT_CNI_CODE.invalidConfig);
      throw e;
    }
  }

  #started = false;

  /** Readiness (HTTP /readyz): drivers attached, with a Kubernetes source its caches synced, with --cni-conf-dir the conflist entry valid. */
  ready(): { ready: boolean; reasons: string[] } {
    const reasons: string[] = [];
    if (!this.#started) reasons.push('datapath not attached yet');
    if (this.podSource && !this.podSource.synced) reasons.push('kubernetes caches not synced');
    const cni = this.cfg.cniConfDir && entryProblem(this.cfg.cniConfDir, this.cfg.socket);
    if (cni) reasons.push(`conflist entry: ${cni}`);
    return { ready: reasons.length === 0, reasons };
  }

  /** Starts every driver (adopting pins) and reconciles the sandboxes recorded by an earlier run. */
  async start(): Promise<void> {
    for (const d of this.drivers.values()) {
      await d.start(); // pinned state of another object version is upgraded here, or refused (docs/upgrade.md)
      const up = (d as { upgradeReport?: UpgradeReport }).upgradeReport;
      if (up?.migrated.length) log('info', 'datapath upgraded over pinned state', { dataplane: d.dataplane, migrated: up.migrated, reused: up.reused.length });
    }
    await this.reconciler.start();
    this.#started = true;
    this.#tick = setInterval(() => { this.reconciler.tick().catch((e) => log('warn', 'reconcile tick failed', { error: (e as Error).message })); }, TICK_MS).unref();
  }

  async add(req: AddRequest): Promise<{ meshed: boolean; pod: string; changed: boolean }> {
    let intent = intentFromAdd(req, { profile: this.cfg.profile, dataplane: 'sidecar', dnsServers: this.cfg.clusterDns }); // 4xx before any change
    if (this.podSource) {
      const r = await this.podSource.forAdd(intent);
      if ('skip' in r) {
        this.#cni.cniAdd++;
        log('info', 'pod not enrolled', { pod: podName(intent.key), reason: r.skip });
        return { meshed: false, pod: podName(intent.key), changed: false };
      }
      this.#plan(r); // an invalid per-pod setting fails the ADD before any change
      intent = r;
    }
    const r = await this.reconciler.apply(intent);
    this.podSource?.applied(intent);
    this.#cni.cniAdd++;
    if (r === 'applied') log('info', 'pod meshed', { pod: podName(intent.key), sandbox: intent.key.sandboxId, ips: intent.ips, veth: intent.hostVeth?.name });
    return { meshed: true, pod: podName(intent.key), changed: r === 'applied' };
  }

  async del(containerId: string): Promise<{ removed: boolean }> {
    this.#cni.cniDel++;
    return { removed: await this.reconciler.remove(containerId) };
  }

  /** CNI CHECK: the datapath captures the sandbox as intended. */
  async check(containerId: string): Promise<{ ok: boolean; reason?: string }> {
    const why = await this.reconciler.check(containerId);
    return why === undefined ? { ok: true } : { ok: false, reason: why };
  }

  /** CNI GC: unmeshes every sandbox the runtime no longer knows, and sweeps orphaned state. */
  async gc(valid: Set<string>): Promise<{ removed: string[] }> {
    return { removed: await this.reconciler.gc(valid) };
  }

  pods(): PodRecord[] {
    return this.reconciler.list();
  }

  status(): AgentStatus {
    const maps: Record<string, number> = {};
    const datapath: Record<string, number> = {};
    for (const d of this.drivers.values()) {
      Object.assign(maps, d.features.mapCounts?.() ?? {});
      for (const [k, v] of Object.entries(d.features.stats?.() ?? {})) datapath[k] = (datapath[k] ?? 0) + Number(v); // the drivers share counter names
    }
    return {
      mode: this.cfg.engine, engine: this.cfg.engine, dataplanes: [...this.drivers.keys()],
      profile: this.cfg.profile, pinRoot: this.cfg.pinRoot, cgroup: this.cfg.cgroupPath, tc: this.cfg.tc,
      startedAt: this.startedAt.toISOString(), pods: this.reconciler.list().length,
      counters: this.counters, maps, datapath,
      limitations: [...this.drivers.values()].flatMap((d) => limitations(d)),
      ...(this.ambientConfig() ? { ambient: this.ambientConfig() } : {}),
      sockmap: this.sockmap(),
      ...(this.podSource ? { kubernetes: { synced: this.podSource.synced, watches: this.podSource.watchStats() } } : {}),
    };
  }

  /** A node proxy announced itself (or changed readiness): the ambient driver programs it. */
  async setNodeProxy(np: NodeProxy): Promise<{ ok: true }> {
    const d = this.drivers.get('ambient') as (Driver & { setNodeProxy?: (p: NodeProxy) => Promise<void> }) | undefined;
    if (!d?.setNodeProxy) throw new ApiError(409, 'this node runs no ambient dataplane');
    try {
      await d.setNodeProxy(np);
    } catch (e) {
      throw new ApiError(400, `node proxy ${np.id}: ${(e as Error).message}`);
    }
    log('info', 'node proxy announced', { id: np.id, ready: np.ready, redirectMode: d.engine });
    this.#logAmbientConfig();
    return { ok: true };
  }

  async removeNodeProxy(id: string): Promise<{ removed: boolean }> {
    const d = this.drivers.get('ambient') as (Driver & { removeNodeProxy?: (id: string) => Promise<boolean> }) | undefined;
    if (!d?.removeNodeProxy) throw new ApiError(409, 'this node runs no ambient dataplane');
    const removed = await d.removeNodeProxy(id);
    this.#logAmbientConfig();
    return { removed };
  }

  /** Ambient: whether a node proxy is ready, and how pods are redirected to it (the seed's istio-cni log line). */
  ambientConfig(): { ztunnelReady: boolean; redirectMode: string; failPolicy: string; nodeProxies: unknown[] } | undefined {
    const d = this.drivers.get('ambient') as (Driver & { nodeProxies?: () => { ready: boolean; active: boolean }[] }) | undefined;
    if (!d) return undefined;
    const nodeProxies = d.nodeProxies?.() ?? [];
    return { ztunnelReady: nodeProxies.some((p) => p.ready && p.active), redirectMode: d.engine, failPolicy: this.cfg.ambientFailPolicy, nodeProxies };
  }

  #logAmbientConfig(): void {
    const c = this.ambientConfig();
    if (c) log('info', `ambient config: ${JSON.stringify({ ztunnelReady: c.ztunnelReady, redirectMode: c.redirectMode })}`, { failPolicy: c.failPolicy });
  }

  /** S4 per dataplane that has it: on/off and why (the behaviour gate's verdict). */
  sockmap(): Record<string, { enabled: boolean; mode: string; reason: string; failed: string[] }> {
    const out: Record<string, { enabled: boolean; mode: string; reason: string; failed: string[] }> = {};
    for (const [dp, d] of this.drivers) {
      const s = d.features.sockmapState?.();
      if (!s) continue;
      out[dp] = { enabled: s.enabled, mode: s.mode, reason: s.reason,
        failed: (s.gate?.checks ?? []).filter((c) => !c.ok).map((c) => `IPv${c.family} ${c.check}`) };
    }
    return out;
  }

  readonly #tracers = new Set<TraceSubscriber>();
  #traceReaders: { close(): void }[] = [];

  #traceSources() {
    return [...this.drivers.values()].flatMap((d) => (d.features.trace ? [d.features.trace] : []));
  }

  /**
   * Streams datapath decisions to `fn` until the returned function is called.
   * Tracing is on in the kernel only while someone listens.
   */
  subscribeTrace(fn: TraceSubscriber): () => void {
    const sources = this.#traceSources();
    if (sources.length === 0) throw new ApiError(501, `engine ${this.cfg.engine} has no datapath trace`);
    this.#tracers.add(fn);
    if (this.#traceReaders.length === 0) {
      for (const src of sources) {
        let names = src.cookies();
        this.#traceReaders.push(src.read((r) => {
          if (!names.has(r.netnsCookie)) names = src.cookies();
          r.pod = names.get(r.netnsCookie);
          for (const t of this.#tracers) t(r);
        }));
        src.setEnabled(true);
      }
    }
    return () => {
      this.#tracers.delete(fn);
      if (this.#tracers.size === 0) this.#stopTrace();
    };
  }

  #stopTrace(): void {
    if (this.#traceReaders.length === 0) return;
    for (const src of this.#traceSources()) src.setEnabled(false);
    for (const r of this.#traceReaders) r.close();
    this.#traceReaders = [];
  }

  /** Shutdown that keeps traffic flowing: handles closed, pins and links stay. */
  async shutdown(): Promise<void> {
    clearInterval(this.#tick);
    await this.reconciler.serial(async () => {
      this.#stopTrace();
      for (const d of this.drivers.values()) await d.release();
    });
  }

  /** Removes everything meshwarp made on this node (and nothing else). */
  async uninstall(): Promise<void> {
    clearInterval(this.#tick);
    await this.reconciler.stopAll();
  }
}

export interface PodSource {
  forAdd<T extends PodRecord>(intent: T): Promise<T | { skip: string }>;
  applied(intent: PodRecord): void;
  /** Its caches match the API server. */
  readonly synced: boolean;
  watchStats(): { resource: string; restarts: number; relists: number; objects: number; secondsSinceLastEvent: number | undefined }[];
}

export interface AgentStatus {
  /** @deprecated the engine's old name. */
  mode: string;
  engine: string;
  dataplanes: Dataplane[];
  profile: string;
  pinRoot: string;
  cgroup: string;
  tc: string;
  startedAt: string;
  pods: number;
  counters: Counters;
  maps: Record<string, number>;
  datapath: Record<string, number>;
  limitations: { feature: string; reason: string }[];
  /** Present when the node runs the ambient dataplane. */
  ambient?: ReturnType<Agent['ambientConfig']>;
  /** With a Kubernetes source: its caches and watches. */
  kubernetes?: { synced: boolean; watches: ReturnType<PodSource['watchStats']> };
  /** S4 by dataplane (eBPF only). */
  sockmap?: Record<string, { enabled: boolean; mode: string; reason: string; failed: string[] }>;
}

export { podName };

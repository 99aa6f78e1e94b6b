// SPDX-License-Identifier: Apache-2.0
// The node's redirection control plane: one datapath driver per dataplane,
// a reconciler that owns desired vs applied (reconcile.ts), and the sources
// that feed it (sources/cni.ts now, the Kubernetes watch next). It survives
// being killed at any moment: the drivers' pins keep traffic flowing, the
// state file says which sandboxes are ours.
import { limitations, type DatapathDriver, type Dataplane, type SidecarPlan } from '../datapath/driver.ts';
import { podName, type PodIntent } from '../datapath/pod.ts';
import type { TraceRecord } from '../datapath/trace.ts';
import { PolicyError, resolvePodPolicy } from '../profiles/index.ts';
import { AGENT_CNI_CODE, ApiError, type AddRequest } from './api.ts';
import type { AgentConfig } from './config.ts';
import { log } from './log.ts';
import { Reconciler } from './reconcile.ts';
import { intentFromAdd } from './sources/cni.ts';
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

  /** `drivers`: one per dataplane this node runs (a lone driver is the sidecar dataplane's). */
  constructor(cfg: AgentConfig, drivers: Driver | ReadonlyMap<Dataplane, Driver>) {
    this.cfg = cfg;
    this.drivers = 'start' in drivers ? new Map([[drivers.dataplane, drivers as Driver]]) : drivers as ReadonlyMap<Dataplane, Driver>;
    this.reconciler = new Reconciler(this.drivers, new StateStore(cfg.stateDir), (p) => this.#plan(p));
  }

  /** The sidecar driver (the only dataplane so far); kept for callers that know one driver. */
  get driver(): Driver {
    return this.drivers.values().next().value!;
  }

  get counters(): Counters {
    return { ...this.#cni, ...this.reconciler.counters };
  }

  /** Counts a request that failed inside the agent (5xx). */
  countError(): void { this.#cni.cniErrors++; }

  #plan(p: Pick<PodIntent, 'profile' | 'annotations' | 'key'>): SidecarPlan {
    try {
      return resolvePodPolicy(p.profile, p.annotations);
    } catch (e) {
      if (e instanceof PolicyError || e instanceof Error) throw new ApiError(400, `pod ${podName(p.key)}: ${e.message}`, AGENT_CNI_CODE.invalidConfig);
      throw e;
    }
  }

  /** Starts every driver (adopting pins) and reconciles the sandboxes recorded by an earlier run. */
  async start(): Promise<void> {
    for (const d of this.drivers.values()) await d.start();
    await this.reconciler.start();
    this.#tick = setInterval(() => { this.reconciler.tick().catch((e) => log('warn', 'reconcile tick failed', { error: (e as Error).message })); }, TICK_MS).unref();
  }

  async add(req: AddRequest): Promise<{ meshed: boolean; pod: string; changed: boolean }> {
    const intent = intentFromAdd(req, { profile: this.cfg.profile, dataplane: 'sidecar' }); // 4xx before any change
    const r = await this.reconciler.apply(intent);
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
      for (const [k, v] of Object.entries(d.features.stats?.() ?? {})) datapath[k] = Number(v);
    }
    return {
      mode: this.cfg.engine, engine: this.cfg.engine, dataplanes: [...this.drivers.keys()],
      profile: this.cfg.profile, pinRoot: this.cfg.pinRoot, cgroup: this.cfg.cgroupPath, tc: this.cfg.tc,
      startedAt: this.startedAt.toISOString(), pods: this.reconciler.list().length,
      counters: this.counters, maps, datapath,
      limitations: [...this.drivers.values()].flatMap((d) => limitations(d)),
      sockmap: this.sockmap(),
    };
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
  /** S4 by dataplane (eBPF only). */
  sockmap?: Record<string, { enabled: boolean; mode: string; reason: string; failed: string[] }>;
}

export { podName };

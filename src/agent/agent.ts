// SPDX-License-Identifier: Apache-2.0
// The node's redirection control plane: holds the desired set of meshed pods
// (from CNI events now, from the Kubernetes watch later), reconciles it with
// the datapath driver, and survives being killed at any moment (the driver's
// pins keep traffic flowing; the state file says which pods are ours).
import { existsSync } from 'node:fs';
import { isIP } from 'node:net';
import { hostVethOf } from '../sys/links.ts';
import type { InterceptionDriver, PodRef } from '../datapath/driver.ts';
import { resolvePodPolicy, type PodPolicy } from '../profiles/index.ts';
import { ApiError, type AddRequest } from './api.ts';
import type { AgentConfig } from './config.ts';
import type { TraceRecord } from '../datapath/sidecar/trace.ts';
import { StateStore, type PodRecord } from './state.ts';

/** Optional driver extras the agent reports when present. */
export interface DriverIntrospection {
  stats?(): Record<string, bigint>;
  mapEntryCounts?(): Record<string, number>;
  /** Release handles, keep everything attached (agent shutdown). */
  close?(): Promise<void>;
  /** Datapath trace: the run-time switch and a ring buffer reader. */
  setTrace?(enabled: boolean): void;
  traceReader?(onEvent: (r: TraceRecord) => void): { close(): void };
  pods?(): { id: string; cookie: bigint }[];
}

export type TraceSubscriber = (r: TraceRecord) => void;
export type Driver = InterceptionDriver & DriverIntrospection;

export interface Counters { cniAdd: number; cniDel: number; cniErrors: number; reconciled: number; dropped: number }

export class Agent {
  readonly cfg: AgentConfig;
  readonly driver: Driver;
  readonly #state: StateStore;
  readonly #pods = new Map<string, PodRecord>();
  readonly counters: Counters = { cniAdd: 0, cniDel: 0, cniErrors: 0, reconciled: 0, dropped: 0 };
  readonly startedAt = new Date();
  /** Serializes changes: CNI calls may arrive concurrently. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(cfg: AgentConfig, driver: Driver) {
    this.cfg = cfg;
    this.driver = driver;
    this.#state = new StateStore(cfg.stateDir);
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#queue.then(fn, fn);
    this.#queue = p.catch(() => {});
    return p;
  }

  /** Starts the datapath (adopting pins) and re-meshes the pods recorded by an earlier run. */
  async start(): Promise<void> {
    await this.driver.start();
    for (const rec of this.#state.load()) {
      if (!existsSync(rec.netns)) { this.counters.dropped++; continue; } // pod went away while we were down
      try {
        await this.driver.mesh(this.#ref(rec), this.#policy(rec));
        this.#pods.set(rec.containerId, rec);
        this.counters.reconciled++;
      } catch (e) {
        this.counters.dropped++;
        log('warn', 'could not re-mesh recorded pod', { pod: podId(rec), error: (e as Error).message });
      }
    }
    this.#state.save([...this.#pods.values()]);
  }

  #policy(rec: Pick<PodRecord, 'profile' | 'annotations'>): PodPolicy {
    return resolvePodPolicy(rec.profile, rec.annotations);
  }

  #ref(rec: PodRecord): PodRef {
    return { id: podId(rec), netnsPath: rec.netns, ip4: rec.ip4, ip6: rec.ip6, hostVeth: rec.hostVeth };
  }

  add(req: AddRequest): Promise<{ meshed: boolean; pod: string }> {
    return this.#serial(async () => {
      const rec = this.#record(req); // validation: throws 400 before any change
      let policy: PodPolicy;
      try {
        policy = this.#policy(rec);
      } catch (e) {
        throw new ApiError(400, `pod ${podId(rec)}: ${(e as Error).message}`);
      }
      await this.driver.mesh(this.#ref(rec), policy);
      this.#pods.set(rec.containerId, rec);
      this.#state.save([...this.#pods.values()]);
      this.counters.cniAdd++;
      log('info', 'pod meshed', { pod: podId(rec), ip4: rec.ip4, ip6: rec.ip6, veth: rec.hostVeth?.name });
      return { meshed: true, pod: podId(rec) };
    });
  }

  del(containerId: string): Promise<{ removed: boolean }> {
    return this.#serial(async () => {
      const rec = this.#pods.get(containerId);
      this.counters.cniDel++;
      if (!rec) return { removed: false };
      await this.driver.unmesh(this.#ref(rec));
      this.#pods.delete(containerId);
      this.#state.save([...this.#pods.values()]);
      log('info', 'pod unmeshed', { pod: podId(rec) });
      return { removed: true };
    });
  }

  /** CNI CHECK: is the container meshed as the agent wants it? */
  check(containerId: string): { ok: boolean; reason?: string } {
    const rec = this.#pods.get(containerId);
    if (!rec) return { ok: false, reason: `container ${containerId} is not meshed by this agent` };
    if (!existsSync(rec.netns)) return { ok: false, reason: `container ${containerId}: netns ${rec.netns} is gone` };
    return { ok: true };
  }

  /** CNI GC: unmeshes every pod whose attachment the runtime no longer knows. */
  gc(valid: Set<string>): Promise<{ removed: string[] }> {
    return this.#serial(async () => {
      const removed: string[] = [];
      for (const rec of [...this.#pods.values()]) {
        if (valid.has(rec.containerId)) continue;
        await this.driver.unmesh(this.#ref(rec));
        this.#pods.delete(rec.containerId);
        removed.push(rec.containerId);
      }
      this.#state.save([...this.#pods.values()]);
      return { removed };
    });
  }

  pods(): PodRecord[] {
    return [...this.#pods.values()];
  }

  status(): Record<string, unknown> {
    const d = this.driver;
    return {
      mode: this.cfg.mode,
      profile: this.cfg.profile,
      pinRoot: this.cfg.pinRoot,
      cgroup: this.cfg.cgroupPath,
      startedAt: this.startedAt.toISOString(),
      pods: this.#pods.size,
      counters: this.counters,
      maps: d.mapEntryCounts?.() ?? {},
      datapath: Object.fromEntries(Object.entries(d.stats?.() ?? {}).map(([k, v]) => [k, Number(v)])),
      limitations: d.limitations(),
    };
  }

  readonly #tracers = new Set<TraceSubscriber>();
  #traceReader: { close(): void } | undefined;

  /**
   * Streams datapath decisions to `fn` until the returned function is called.
   * Tracing is on in the kernel only while someone listens.
   */
  subscribeTrace(fn: TraceSubscriber): () => void {
    const d = this.driver;
    if (!d.setTrace || !d.traceReader) throw new ApiError(501, `mode ${this.cfg.mode} has no datapath trace`);
    this.#tracers.add(fn);
    if (!this.#traceReader) {
      const names = new Map<string, string>();
      const refresh = () => { names.clear(); for (const p of d.pods?.() ?? []) names.set(String(p.cookie), p.id); };
      refresh();
      this.#traceReader = d.traceReader((r) => {
        if (!names.has(r.netnsCookie)) refresh();
        r.pod = names.get(r.netnsCookie);
        for (const t of this.#tracers) t(r);
      });
      d.setTrace(true);
    }
    return () => {
      this.#tracers.delete(fn);
      if (this.#tracers.size === 0 && this.#traceReader) {
        d.setTrace!(false);
        this.#traceReader.close();
        this.#traceReader = undefined;
      }
    };
  }

  /** Shutdown that keeps traffic flowing: handles closed, pins and links stay. */
  async shutdown(): Promise<void> {
    await this.#queue;
    if (this.#traceReader) { this.driver.setTrace?.(false); this.#traceReader.close(); this.#traceReader = undefined; }
    await this.driver.close?.();
  }

  /** Removes everything meshwarp made on this node (and nothing else). */
  async uninstall(): Promise<void> {
    await this.#serial(async () => {
      await this.driver.stop();
      this.#pods.clear();
      this.#state.remove();
    });
  }

  /** Turns a CNI ADD into a pod record: IPs from prevResult, host veth from the pod's eth0 peer. */
  #record(req: AddRequest): PodRecord {
    if (!existsSync(req.netns)) throw new ApiError(400, `netns ${req.netns} does not exist`);
    let ip4: string | undefined;
    let ip6: string | undefined;
    for (const { address } of req.prevResult.ips ?? []) {
      const ip = address.split('/')[0];
      const fam = isIP(ip);
      if (fam === 0) throw new ApiError(400, `prevResult.ips: ${JSON.stringify(address)} is not an address`);
      if (fam === 4) ip4 ??= ip;
      else ip6 ??= ip;
    }
    if (!ip4 && !ip6) throw new ApiError(400, 'prevResult has no IP address for the pod: is meshwarp-cni chained after the IPAM plugin?');
    return {
      containerId: req.containerId, podNamespace: req.podNamespace, podName: req.podName,
      netns: req.netns, ifName: req.ifName, ip4, ip6,
      hostVeth: hostVethOf(req.netns, req.ifName),
      profile: req.profile ?? this.cfg.profile,
      annotations: req.annotations ?? {},
      meshedAt: new Date().toISOString(),
    };
  }
}

/** namespace/name, or the container id when the runtime did not say (not Kubernetes). */
export function podId(r: Pick<PodRecord, 'podNamespace' | 'podName' | 'containerId'>): string {
  return r.podName ? `${r.podNamespace || 'default'}/${r.podName}` : r.containerId;
}

export function log(level: 'info' | 'warn' | 'error', msg: string, fields: Record<string, unknown> = {}): void {
  process.stderr.write(`${JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields })}\n`);
}

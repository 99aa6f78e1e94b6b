// SPDX-License-Identifier: Apache-2.0
// Desired vs applied, for every pod sandbox on the node, whatever source told
// the agent about it (CNI now, the Kubernetes watch next: a source builds a
// PodIntent and calls apply/remove; nothing here knows where facts came from).
//
// The rules it keeps:
// - one key, the sandbox id, in the state file and every driver;
// - apply is idempotent: the same intent again changes nothing, a changed one
//   is applied in place (no moment unmeshed);
// - an address belongs to one live sandbox: a second live claimant is refused
//   (409), a claimant whose netns is gone (a DEL we never got) is removed;
// - a sandbox whose netns is gone is unmeshed at start, on GC and on every
//   tick, and whatever the datapath holds for sandboxes we do not know is swept.
import type { DatapathDriver, Dataplane, SidecarPlan } from '../datapath/driver.ts';
import { podName, type PodIntent } from '../datapath/pod.ts';
import { netnsIdentity } from '../sys/netns.ts';
import { AGENT_CNI_CODE, ApiError } from './api.ts';
import { log } from './log.ts';
import type { PodRecord, StateStore } from './state.ts';

export type PlanFor = (intent: PodIntent) => SidecarPlan;

export interface ReconcileCounters { reconciled: number; dropped: number; swept: number }

/** Is the sandbox's netns still the one we meshed? */
export function alive(rec: PodRecord): boolean {
  const ns = netnsIdentity(rec.netns);
  return 'id' in ns && (rec.netnsId === undefined || rec.netnsId === ns.id);
}

const sameTarget = (a: PodRecord, b: PodRecord): boolean => JSON.stringify([a.netns, a.netnsId, a.ips, a.hostVeth, a.dataplane, a.profile, a.annotations, a.dnsServers])
  === JSON.stringify([b.netns, b.netnsId, b.ips, b.hostVeth, b.dataplane, b.profile, b.annotations, b.dnsServers]);

export class Reconciler {
  readonly drivers: ReadonlyMap<Dataplane, DatapathDriver<SidecarPlan>>;
  readonly #store: StateStore;
  readonly #planFor: PlanFor;
  readonly #applied = new Map<string, PodRecord>();
  readonly counters: ReconcileCounters = { reconciled: 0, dropped: 0, swept: 0 };
  /** Serializes changes: CNI calls arrive concurrently, ticks run beside them. */
  #queue: Promise<unknown> = Promise.resolve();

  constructor(drivers: ReadonlyMap<Dataplane, DatapathDriver<SidecarPlan>>, store: StateStore, planFor: PlanFor) {
    this.drivers = drivers;
    this.#store = store;
    this.#planFor = planFor;
  }

  serial<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.#queue.then(fn, fn);
    this.#queue = p.catch(() => {});
    return p;
  }

  #driver(dp: Dataplane): DatapathDriver<SidecarPlan> {
    const d = this.drivers.get(dp);
    if (!d) throw new ApiError(409, `dataplane ${dp} is not enabled on this node's agent (it runs: ${[...this.drivers.keys()].join(', ')})`, AGENT_CNI_CODE.dataplaneUnavailable);
    return d;
  }

  #save(): void { this.#store.save([...this.#applied.values()]); }

  list(): PodRecord[] { return [...this.#applied.values()]; }
  get(sandboxId: string): PodRecord | undefined { return this.#applied.get(sandboxId); }

  /**
   * Start of the agent: re-applies what the state file says was applied (the
   * drivers adopt their pins in place), drops sandboxes that went away while
   * we were down, and sweeps what nobody owns.
   */
  start(): Promise<void> {
    return this.serial(async () => {
      for (const rec of this.#store.load()) {
        if (!alive(rec)) { this.counters.dropped++; continue; }
        try {
          await this.#driver(rec.dataplane).mesh(rec, this.#planFor(rec));
          this.#applied.set(rec.key.sandboxId, rec);
          this.counters.reconciled++;
        } catch (e) {
          this.counters.dropped++;
          log('warn', 'could not re-mesh recorded pod', { pod: podName(rec.key), sandbox: rec.key.sandboxId, error: (e as Error).message });
        }
      }
      await this.#sweep();
      this.#save();
    });
  }

  /** Periodic: sandboxes whose netns is gone (their DEL never came) are unmeshed, orphans swept. */
  tick(): Promise<string[]> {
    return this.serial(async () => {
      const gone = [...this.#applied.values()].filter((r) => !alive(r));
      for (const rec of gone) await this.#unapply(rec, 'netns gone');
      const swept = await this.#sweep();
      if (gone.length > 0) this.#save();
      return [...gone.map((r) => r.key.sandboxId), ...swept];
    });
  }

  /** Applies `intent` (idempotent); refuses an address another live sandbox holds. */
  apply(intent: PodRecord): Promise<'applied' | 'unchanged'> {
    return this.serial(async () => {
      const key = intent.key.sandboxId;
      const driver = this.#driver(intent.dataplane);
      const plan = this.#planFor(intent);
      for (const other of [...this.#applied.values()]) {
        if (other.key.sandboxId === key) continue;
        const shared = other.ips.filter((ip) => intent.ips.includes(ip));
        if (shared.length === 0) continue;
        if (alive(other)) {
          throw new ApiError(409, `address ${shared.join(', ')} is held by sandbox ${other.key.sandboxId} (${podName(other.key)}), which is still running`,
            AGENT_CNI_CODE.ipConflict);
        }
        await this.#unapply(other, `its address ${shared.join(', ')} went to sandbox ${key}`);
      }
      const existing = this.#applied.get(key);
      if (existing && sameTarget(existing, intent) && (await driver.verify(existing)) === undefined) return 'unchanged';
      if (existing && existing.dataplane !== intent.dataplane) await this.#driver(existing.dataplane).unmesh(existing);
      await driver.mesh(intent, plan);
      this.#applied.set(key, { ...intent, meshedAt: existing?.meshedAt ?? intent.meshedAt });
      this.#save();
      return 'applied';
    });
  }

  /** Unmeshes a sandbox; one we do not know is a no-op (DEL is idempotent). */
  remove(sandboxId: string): Promise<boolean> {
    return this.serial(async () => {
      const rec = this.#applied.get(sandboxId);
      if (!rec) return false;
      await this.#unapply(rec, 'removed');
      this.#save();
      return true;
    });
  }

  /** CNI GC: unmeshes every sandbox the runtime no longer knows, then sweeps orphans. */
  gc(valid: ReadonlySet<string>): Promise<string[]> {
    return this.serial(async () => {
      const removed: string[] = [];
      for (const rec of [...this.#applied.values()]) {
        if (valid.has(rec.key.sandboxId)) continue;
        await this.#unapply(rec, 'not in the runtime\'s valid attachments');
        removed.push(rec.key.sandboxId);
      }
      for (const k of await this.#sweep()) if (!removed.includes(k)) removed.push(k);
      this.#save();
      return removed;
    });
  }

  /** CNI CHECK: is the sandbox captured by the datapath as intended (not only recorded)? */
  async check(sandboxId: string): Promise<string | undefined> {
    const rec = this.#applied.get(sandboxId);
    if (!rec) return `sandbox ${sandboxId} is not meshed by this agent`;
    if (!alive(rec)) return `sandbox ${sandboxId}: netns ${rec.netns} is gone`;
    const why = await this.#driver(rec.dataplane).verify(rec);
    return why === undefined ? undefined : `sandbox ${sandboxId} (${podName(rec.key)}): ${why}`;
  }

  setNodeIps(ips: string[]): Promise<void> {
    return this.serial(async () => { for (const d of this.drivers.values()) await d.setNodeIps(ips); });
  }

  /** Everything off: every driver removes what it made. */
  stopAll(): Promise<void> {
    return this.serial(async () => {
      for (const d of this.drivers.values()) await d.stop();
      this.#applied.clear();
      this.#store.remove();
    });
  }

  async #unapply(rec: PodRecord, why: string): Promise<void> {
    await this.#driver(rec.dataplane).unmesh(rec);
    this.#applied.delete(rec.key.sandboxId);
    log('info', 'pod unmeshed', { pod: podName(rec.key), sandbox: rec.key.sandboxId, why });
  }

  async #sweep(): Promise<string[]> {
    const out: string[] = [];
    for (const [dp, d] of this.drivers) {
      const live = new Set([...this.#applied.values()].filter((r) => r.dataplane === dp).map((r) => r.key.sandboxId));
      const swept = await d.sweepOrphans(live);
      this.counters.swept += swept.length;
      if (swept.length > 0) log('info', 'datapath state of unknown sandboxes removed', { dataplane: dp, sandboxes: swept });
      out.push(...swept);
    }
    return out;
  }
}

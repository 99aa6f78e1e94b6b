// SPDX-License-Identifier: Apache-2.0
// List-then-watch cache of one resource (what client-go calls a reflector +
// store), with the behaviour the research asks for (docs/kubernetes.md):
// - first list from the watch cache (resourceVersion=0), relist after a 410
//   with "" (a quorum read), diffing so objects that vanished fire deletes;
// - bookmarks requested, a randomised server-side timeout, an idle limit far
//   above the bookmark period (a half-open connection is noticed);
// - 410 handled both as an HTTP status and as an in-stream ERROR event;
// - it never stops: any failure retries with capped exponential backoff and jitter.
import type { KubeClient, WatchEvent } from './client.ts';
import { KubeError } from './client.ts';

export interface KubeObject {
  metadata: { name: string; namespace?: string; uid: string; resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string>; deletionTimestamp?: string };
  [k: string]: any;
}

export interface InformerHandlers<T extends KubeObject> {
  add?(obj: T): void;
  update?(old: T, obj: T): void;
  delete?(obj: T): void;
  /** After every (re)list: the cache now matches the server. */
  synced?(): void;
}

export interface InformerCounters {
  /** Watches (re)started after the first. */
  restarts: number;
  /** Lists after the first (410, or a failed list retried). */
  relists: number;
  events: number;
  failures: number;
  /** Date.now() of the last event or bookmark, 0 before any. */
  lastEventAt: number;
}

export interface InformerOptions {
  /** Collection path, e.g. /api/v1/pods. */
  path: string;
  fieldSelector?: string;
  labelSelector?: string;
  /** Backoff after a failure: base doubling up to cap (ms), each with ±50 % jitter. */
  backoffBaseMs?: number;
  backoffCapMs?: number;
  /** Server-side watch timeout is drawn in [min, 2·min) seconds (client-go: 5-10 min). */
  watchTimeoutSeconds?: number;
  /** Silence after which a watch is presumed dead (default: well above the longest server timeout). */
  idleMs?: number;
}

const keyOf = (o: KubeObject): string => (o.metadata.namespace ? `${o.metadata.namespace}/${o.metadata.name}` : o.metadata.name);

class Gone extends Error {}

export class Informer<T extends KubeObject> {
  readonly counters: InformerCounters = { restarts: 0, relists: 0, events: 0, failures: 0, lastEventAt: 0 };
  readonly #client: KubeClient;
  readonly #opts: Required<Omit<InformerOptions, 'fieldSelector' | 'labelSelector' | 'idleMs'>> & InformerOptions;
  readonly #h: InformerHandlers<T>;
  readonly #store = new Map<string, T>();
  readonly #abort = new AbortController();
  #synced = false;
  #lists = 0;
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;

  constructor(client: KubeClient, opts: InformerOptions, handlers: InformerHandlers<T>) {
    this.#client = client;
    this.#opts = { backoffBaseMs: 200, backoffCapMs: 30_000, watchTimeoutSeconds: 300, ...opts };
    this.#h = handlers;
  }

  get synced(): boolean { return this.#synced; }
  get size(): number { return this.#store.size; }
  get(namespace: string | undefined, name: string): T | undefined { return this.#store.get(namespace ? `${namespace}/${name}` : name); }
  list(): T[] { return [...this.#store.values()]; }
  secondsSinceLastEvent(): number | undefined {
    return this.counters.lastEventAt === 0 ? undefined : (Date.now() - this.counters.lastEventAt) / 1000;
  }

  start(): void { this.#loop ??= this.#run(); }

  async stop(): Promise<void> {
    this.#abort.abort();
    this.#wake?.();
    await this.#loop;
  }

  #query(extra: Record<string, string>): string {
    const q = new URLSearchParams(extra);
    if (this.#opts.fieldSelector) q.set('fieldSelector', this.#opts.fieldSelector);
    if (this.#opts.labelSelector) q.set('labelSelector', this.#opts.labelSelector);
    return `${this.#opts.path}?${q}`;
  }

  async #list(rv: '0' | ''): Promise<string> {
    const res = await this.#client.request<{ metadata: { resourceVersion: string }; items: T[] }>('GET', this.#query(rv ? { resourceVersion: rv } : {}));
    if (this.#lists++ > 0) this.counters.relists++;
    const seen = new Set<string>();
    for (const obj of res.items) {
      const k = keyOf(obj);
      seen.add(k);
      this.#upsert(k, obj);
    }
    for (const [k, old] of [...this.#store]) {
      if (seen.has(k)) continue;
      this.#store.delete(k);
      this.#h.delete?.(old);
    }
    this.#synced = true;
    this.#h.synced?.();
    return res.metadata.resourceVersion;
  }

  #upsert(k: string, obj: T): void {
    const old = this.#store.get(k);
    this.#store.set(k, obj);
    if (!old) this.#h.add?.(obj);
    else if (old.metadata.uid !== obj.metadata.uid) { this.#h.delete?.(old); this.#h.add?.(obj); } // re-created under the same name
    else if (old.metadata.resourceVersion !== obj.metadata.resourceVersion) this.#h.update?.(old, obj);
  }

  #onEvent(ev: WatchEvent<any>, setRv: (rv: string) => void): void {
    this.counters.lastEventAt = Date.now();
    if (ev.type === 'ERROR') {
      const s = ev.object ?? {};
      if (s.code === 410) throw new Gone(s.message ?? 'resource version too old');
      throw new KubeError(s.code ?? 500, s.reason ?? 'WatchError', s.message ?? JSON.stringify(s));
    }
    const obj = ev.object as T;
    if (obj?.metadata?.resourceVersion) setRv(obj.metadata.resourceVersion);
    if (ev.type === 'BOOKMARK') return;
    this.counters.events++;
    const k = keyOf(obj);
    if (ev.type === 'DELETED') {
      const old = this.#store.get(k);
      this.#store.delete(k);
      this.#h.delete?.(old ?? obj);
    } else {
      this.#upsert(k, obj);
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      this.#wake = () => { clearTimeout(t); resolve(); };
    });
  }

  async #run(): Promise<void> {
    let rv: string | undefined;
    let failures = 0;
    let first = true;
    const signal = this.#abort.signal;
    while (!signal.aborted) {
      try {
        if (rv === undefined) {
          rv = await this.#list(first ? '0' : '');
          first = false;
        }
        const t = this.#opts.watchTimeoutSeconds;
        const path = this.#query({
          watch: '1', resourceVersion: rv, allowWatchBookmarks: 'true',
          timeoutSeconds: String(t + Math.floor(Math.random() * t)),
        });
        const idleMs = this.#opts.idleMs ?? (2 * t + 60) * 1000;
        await this.#client.watch(path, (ev) => this.#onEvent(ev, (v) => { rv = v; }), signal, idleMs);
        failures = 0; // a clean end (server timeout): watch again from rv at once
      } catch (e) {
        if (signal.aborted) break;
        if (e instanceof Gone || (e instanceof KubeError && e.status === 410)) {
          rv = undefined; // relist with "" and diff
          first = false;
        } else {
          this.counters.failures++;
          failures++;
          const ms = Math.min(this.#opts.backoffCapMs, this.#opts.backoffBaseMs * 2 ** Math.min(failures - 1, 20));
          await this.#sleep(ms * (0.5 + Math.random()));
        }
      }
      if (!signal.aborted) this.counters.restarts++;
    }
  }
}

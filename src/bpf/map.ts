// SPDX-License-Identifier: Apache-2.0
// Typed access to a BPF map through its fd: a codec per key and value.
import { readFileSync } from 'node:fs';
import { fn, BpfError, check } from './libbpf.ts';
import { close } from '../sys/libc.ts';
import { ERRNO as E, MAP_TYPE, UPDATE_FLAG } from './uapi.ts';
import type { Codec } from './codec.ts';

/** Lookup of a key that is not in the map. */
export class NotFoundError extends BpfError {
  override readonly code = 'ERR_BPF_NOT_FOUND';
}
/** Update refused because the map has no room (E2BIG): distinct so callers can count and degrade. */
export class MapFullError extends BpfError {
  override readonly code = 'ERR_BPF_MAP_FULL';
}
/** Update with 'noexist' of a key that is already there. */
export class ExistsError extends BpfError {
  override readonly code = 'ERR_BPF_EXISTS';
}

export type UpdateFlag = 'any' | 'noexist' | 'exist';
const FLAG = { any: UPDATE_FLAG.ANY, noexist: UPDATE_FLAG.NOEXIST, exist: UPDATE_FLAG.EXIST } as const;

let possibleCpus: number | undefined;
/** Number of possible CPUs: the stride of per-CPU map values. */
export function nPossibleCpus(): number {
  if (possibleCpus === undefined) {
    possibleCpus = 0;
    for (const part of readFileSync('/sys/devices/system/cpu/possible', 'utf8').trim().split(',')) {
      const [a, b] = part.split('-').map(Number);
      possibleCpus += (b ?? a) - a + 1;
    }
  }
  return possibleCpus;
}

export interface MapInfo { name: string; fd: number; type: number; keySize: number; valueSize: number; maxEntries: number }

export class BpfMap<K, V> {
  readonly info: MapInfo;
  readonly key: Codec<K>;
  readonly value: Codec<V>;
  readonly perCpu: boolean;
  readonly #stride: number;

  constructor(info: MapInfo, key: Codec<K>, value: Codec<V>) {
    if (key.size !== info.keySize) throw new TypeError(`map ${info.name}: key codec ${key.cName} is ${key.size} bytes, map key is ${info.keySize}`);
    if (value.size !== info.valueSize) throw new TypeError(`map ${info.name}: value codec ${value.cName} is ${value.size} bytes, map value is ${info.valueSize}`);
    this.info = info;
    this.key = key;
    this.value = value;
    this.perCpu = info.type === MAP_TYPE.PERCPU_ARRAY || info.type === MAP_TYPE.PERCPU_HASH;
    this.#stride = Math.ceil(info.valueSize / 8) * 8;
  }

  /** Opens a pinned map by path (e.g. from a second process). */
  static openPinned<K, V>(path: string, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    const fd = check(`open pinned map ${path}`, fn.objGet(path));
    const b = Buffer.alloc(256);
    const len = [b.length];
    check(`map info ${path}`, fn.objGetInfoByFd(fd, b, len));
    const name = b.toString('utf8', 24, 40).replace(/\0.*$/s, '');
    return new BpfMap({ name, fd, type: b.readUInt32LE(0), keySize: b.readUInt32LE(8), valueSize: b.readUInt32LE(12), maxEntries: b.readUInt32LE(16) }, key, value);
  }

  /** Closes this view's fd (only for maps opened with openPinned). */
  closeFd(): void { close(this.fd); }

  get name(): string { return this.info.name; }
  get fd(): number { return this.info.fd; }

  #valueBuf(): Buffer { return Buffer.alloc(this.perCpu ? this.#stride * nPossibleCpus() : this.info.valueSize); }

  #err(op: string, ret: number): BpfError {
    const errno = -ret;
    const what = `${this.name}: ${op}`;
    if (errno === E.ENOENT) return new NotFoundError(what, errno);
    if (errno === E.E2BIG || errno === E.ENOSPC) return new MapFullError(what, errno, '', `map ${this.name} is full (${this.info.maxEntries} entries)`);
    if (errno === E.EEXIST) return new ExistsError(what, errno);
    return new BpfError(what, errno);
  }

  /** The value for `key`, or undefined when absent. Per-CPU maps: the value of CPU 0 (use lookupPerCpu). */
  lookup(key: K): V | undefined {
    const out = this.#valueBuf();
    const r = fn.mapLookupElem(this.fd, this.key.encode(key), out);
    if (r === -E.ENOENT) return undefined;
    if (r < 0) throw this.#err('lookup', r);
    return this.value.decode(out);
  }

  /** Per-CPU maps: one value per possible CPU. */
  lookupPerCpu(key: K): V[] | undefined {
    const out = this.#valueBuf();
    const r = fn.mapLookupElem(this.fd, this.key.encode(key), out);
    if (r === -E.ENOENT) return undefined;
    if (r < 0) throw this.#err('lookup', r);
    return Array.from({ length: nPossibleCpus() }, (_, i) => this.value.decode(out, i * this.#stride));
  }

  /** Like lookup, but a missing key is a NotFoundError. */
  get(key: K): V {
    const v = this.lookup(key);
    if (v === undefined) throw new NotFoundError(`${this.name}: lookup`, E.ENOENT);
    return v;
  }

  /** Inserts or replaces. Throws MapFullError / ExistsError / NotFoundError (with 'exist'). */
  update(key: K, value: V, flag: UpdateFlag = 'any'): void {
    let v: Buffer;
    if (this.perCpu) {
      v = this.#valueBuf();
      for (let i = 0; i < nPossibleCpus(); i++) this.value.encode(value, v, i * this.#stride);
    } else v = this.value.encode(value);
    const r = fn.mapUpdateElem(this.fd, this.key.encode(key), v, FLAG[flag]);
    if (r < 0) throw this.#err('update', r);
  }

  /** Removes `key`; false when it was not there. */
  delete(key: K): boolean {
    const r = fn.mapDeleteElem(this.fd, this.key.encode(key));
    if (r === -E.ENOENT) return false;
    if (r < 0) throw this.#err('delete', r);
    return true;
  }

  /** All keys (a snapshot walk with get_next_key; entries may change meanwhile). */
  *keys(): Generator<K> {
    let prev: Buffer | null = null;
    const next = Buffer.alloc(this.info.keySize);
    for (;;) {
      const r = fn.mapGetNextKey(this.fd, prev, next);
      if (r === -E.ENOENT) return;
      if (r < 0) throw this.#err('get_next_key', r);
      yield this.key.decode(next);
      prev = Buffer.from(next);
    }
  }

  *entries(): Generator<[K, V]> {
    for (const k of this.keys()) {
      const v = this.lookup(k);
      if (v !== undefined) yield [k, v];
    }
  }

  /** Number of entries (walks the keys). */
  count(): number {
    let n = 0;
    for (const _ of this.keys()) n++;
    return n;
  }

  /** Every entry in as few syscalls as possible (BPF_MAP_LOOKUP_BATCH), falling back to a walk. */
  dump(): [K, V][] {
    if (this.perCpu || !batchCapable.has(this.info.type)) return [...this.entries()];
    const out: [K, V][] = [];
    const chunk = 256;
    const keys = Buffer.alloc(this.info.keySize * chunk);
    const vals = Buffer.alloc(this.info.valueSize * chunk);
    const token = Buffer.alloc(Math.max(8, this.info.keySize));
    const count = [0];
    let first = true;
    for (;;) {
      count[0] = chunk;
      const r = fn.mapLookupBatch(this.fd, first ? null : token, token, keys, vals, count, null);
      for (let i = 0; i < count[0]; i++) {
        out.push([this.key.decode(keys, i * this.info.keySize), this.value.decode(vals, i * this.info.valueSize)]);
      }
      if (r === -E.ENOENT) return out;
      if (r === -E.EINVAL || r === -E.EOPNOTSUPP) return [...this.entries()];
      if (r < 0) throw this.#err('lookup_batch', r);
      first = false;
    }
  }

  /** Deletes every entry; returns how many. */
  clear(): number {
    let n = 0;
    for (const k of [...this.keys()]) if (this.delete(k)) n++;
    return n;
  }
}

const batchCapable = new Set<number>([MAP_TYPE.HASH, MAP_TYPE.ARRAY]);

// SPDX-License-Identifier: Apache-2.0
// A compiled eBPF object: open with a pin root, set `const volatile` config,
// load (errors carry the verifier log tail), then hand out programs and maps.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import koffi from 'koffi';
import { fn, check, checkPtr, captureLibbpfLog, ObjectOpenOpts } from './libbpf.ts';
import { Btf } from './btf.ts';
import { assertOnBpffs } from '../sys/bpffs.ts';
import { BpfMap, type MapInfo } from './map.ts';
import { withTail, type Codec } from './codec.ts';

export interface OpenOptions {
  /**
   * Pin root (e.g. /sys/fs/bpf/meshwarp): maps declared with pinning are
   * pinned/reused at `<root>/maps/<name>`. Without it nothing is pinned.
   */
  pinRoot?: string;
  /** Values for `const volatile` globals in .rodata, by C name. Unknown names are an error. */
  config?: Record<string, number | bigint | boolean>;
  /** Override max_entries per map name. */
  maxEntries?: Record<string, number>;
  /** Load only these programs (default: all). */
  programs?: string[];
  /** Runs on the opened object before load (e.g. the upgrade deciding which pins to reuse). */
  prepare?: (obj: BpfObject) => void;
}

export interface Program { name: string; section: string; fd: number; type: number; expectedAttachType: number }

export class BpfObject {
  readonly path: string;
  #ptr: unknown;
  #loaded = false;
  readonly #maps = new Map<string, unknown>();
  readonly #progs = new Map<string, unknown>();

  private constructor(path: string, ptr: unknown) {
    this.path = path;
    this.#ptr = ptr;
    for (let m = fn.objectNextMap(ptr, null); m !== null; m = fn.objectNextMap(ptr, m)) this.#maps.set(fn.mapName(m), m);
    for (let p = fn.objectNextProgram(ptr, null); p !== null; p = fn.objectNextProgram(ptr, p)) this.#progs.set(fn.programName(p), p);
  }

  /** Opens (does not load) an object file. */
  static open(path: string, opts: OpenOptions = {}): BpfObject {
    const log = captureLibbpfLog();
    let pinRoot: string | null = null;
    if (opts.pinRoot) {
      assertOnBpffs(opts.pinRoot);
      pinRoot = join(opts.pinRoot, 'maps');
      mkdirSync(pinRoot, { recursive: true });
    }
    const o = { sz: koffi.sizeof(ObjectOpenOpts), object_name: null, relaxed_maps: false, pin_root_path: pinRoot, _stub: 0,
      kconfig: null, btf_custom_path: null, kernel_log_buf: null, kernel_log_size: 0, kernel_log_level: 0 };
    const obj = new BpfObject(path, checkPtr(`open ${path}`, fn.objectOpenFile(path, o), log));
    try {
      // Without a pin root nothing is pinned: the object stays private to this process.
      if (!opts.pinRoot) for (const m of obj.#maps.values()) fn.mapSetPinPath(m, null);
      if (opts.config) obj.#setConfig(opts.config);
      for (const [name, n] of Object.entries(opts.maxEntries ?? {})) check(`set max_entries of ${name}`, fn.mapSetMaxEntries(obj.#mapPtr(name), n));
      if (opts.programs) {
        for (const want of opts.programs) obj.#progPtr(want);
        for (const [name, p] of obj.#progs) fn.programSetAutoload(p, opts.programs.includes(name));
      }
      opts.prepare?.(obj);
    } catch (e) {
      obj.close();
      throw e;
    }
    return obj;
  }

  /** open() + load(). */
  static load(path: string, opts: OpenOptions = {}): BpfObject {
    const obj = BpfObject.open(path, opts);
    try { obj.load(); } catch (e) { obj.close(); throw e; }
    return obj;
  }

  load(): void {
    const log = captureLibbpfLog();
    check(`load ${this.path}`, fn.objectLoad(this.#ptr), log);
    this.#loaded = true;
  }

  #mapPtr(name: string): unknown {
    const m = this.#maps.get(name);
    if (m === undefined) throw new Error(`${this.path}: no map "${name}" (has: ${[...this.#maps.keys()].join(', ')})`);
    return m;
  }
  #progPtr(name: string): unknown {
    const p = this.#progs.get(name);
    if (p === undefined) throw new Error(`${this.path}: no program "${name}" (has: ${[...this.#progs.keys()].join(', ')})`);
    return p;
  }

  /** Writes `const volatile` globals into .rodata before load, at offsets read from BTF. */
  #setConfig(config: Record<string, number | bigint | boolean>): void {
    const rodata = [...this.#maps.entries()].find(([n]) => n.endsWith('.rodata'));
    if (!rodata) throw new Error(`${this.path}: no .rodata section, cannot set ${Object.keys(config).join(', ')}`);
    const vars = Btf.borrowed(fn.objectBtf(this.#ptr)).datasecVars('.rodata');
    const size = [0];
    const ptr = checkPtr('bpf_map__initial_value(.rodata)', fn.mapInitialValue(rodata[1], size));
    const mem = Buffer.from(koffi.view(ptr, size[0]));
    for (const [name, value] of Object.entries(config)) {
      const v = vars.find((x) => x.name === name);
      if (!v) throw new Error(`${this.path}: unknown config variable "${name}" (known: ${vars.map((x) => x.name).join(', ')})`);
      const n = typeof value === 'bigint' ? value : BigInt(value === true ? 1 : value === false ? 0 : value);
      if (n < 0n || n >= 1n << BigInt(8 * v.size)) throw new RangeError(`config ${name}=${value} does not fit in ${v.size} bytes`);
      const tmp = Buffer.alloc(8);
      tmp.writeBigUInt64LE(n);
      tmp.copy(mem, v.offset, 0, v.size);
    }
  }

  program(name: string): Program {
    const p = this.#progPtr(name);
    if (!this.#loaded) throw new Error(`${this.path}: program ${name} requested before load`);
    return {
      name, section: fn.programSectionName(p), fd: fn.programFd(p), type: fn.programType(p),
      expectedAttachType: fn.programExpectedAttachType(p),
    };
  }

  programNames(): string[] { return [...this.#progs.keys()]; }
  mapNames(): string[] { return [...this.#maps.keys()]; }

  mapInfo(name: string): MapInfo {
    const m = this.#mapPtr(name);
    return { name, fd: fn.mapFd(m), type: fn.mapType(m), keySize: fn.mapKeySize(m), valueSize: fn.mapValueSize(m), maxEntries: fn.mapMaxEntries(m) };
  }

  /** A typed view of a loaded map; the codecs' sizes must match the map's. */
  map<K, V>(name: string, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    if (!this.#loaded) throw new Error(`${this.path}: map ${name} requested before load`);
    const info = this.mapInfo(name);
    return new BpfMap(info, key, info.valueSize > value.size && this.#grewTrailing(value) ? withTail(value, info.valueSize) : value);
  }

  /** The object's struct holds every member of `c` at the same offset and only adds members after them. */
  #grewTrailing(c: Codec<unknown>): boolean {
    if (c.fields.length === 0) return false;
    const s = this.btf().structLayout(c.cName);
    if (!s) return false;
    return c.fields.every((f) => s.members.some((m) => m.name === f.name && m.offset === f.offset))
      && s.members.every((m) => c.fields.some((f) => f.name === m.name) || m.offset >= c.size);
  }

  /** The layout the object declares for a map (after max_entries overrides). */
  declaredLayout(name: string): { type: number; keySize: number; valueSize: number; maxEntries: number; flags: number; keyBtf?: string; valueBtf?: string } {
    const m = this.#mapPtr(name);
    const k = fn.mapBtfKeyTypeId(m);
    const v = fn.mapBtfValueTypeId(m);
    return {
      type: fn.mapType(m), keySize: fn.mapKeySize(m), valueSize: fn.mapValueSize(m), maxEntries: fn.mapMaxEntries(m), flags: fn.mapFlags(m),
      ...(k ? { keyBtf: this.btf().fingerprint(k) } : {}), ...(v ? { valueBtf: this.btf().fingerprint(v) } : {}),
    };
  }

  /** Before load: create this map fresh instead of reusing its pin (the caller pins it later). */
  dontReusePin(name: string): void {
    if (this.#loaded) throw new Error(`${this.path}: dontReusePin(${name}) after load`);
    check(`clear pin path of ${name}`, fn.mapSetPinPath(this.#mapPtr(name), null));
  }

  /** Pin path of a map declared with pinning, or null. */
  mapPinPath(name: string): string | null { return fn.mapPinPath(this.#mapPtr(name)); }

  /** The object's BTF (valid while the object is open). */
  btf(): Btf { return Btf.borrowed(fn.objectBtf(this.#ptr)); }

  /** Frees the object: programs and maps close unless pinned or held by links. */
  close(): void {
    if (this.#ptr !== null) fn.objectClose(this.#ptr);
    this.#ptr = null;
  }
}

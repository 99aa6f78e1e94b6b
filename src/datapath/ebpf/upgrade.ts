// SPDX-License-Identifier: Apache-2.0
// A datapath upgrade over pinned state (docs/upgrade.md), in three steps
// around the driver's own load and attach:
//   prepare (before load)  every pinned map is compared with the new object's
//                          declaration (upgrade-plan.ts); a map to migrate is
//                          created fresh instead of reusing its pin; a refusal
//                          throws here, before anything changed.
//   migrate (after load)   entries of each old map are converted into the new one,
//                          before the driver points any link at the new programs.
//   commit (after attach)  entries the old programs wrote meanwhile are carried
//                          over, then each new map replaces its pin (temp pin +
//                          rename: atomic). A crash before commit leaves the old
//                          pins, so the next start migrates again from them.
import { existsSync, renameSync, rmSync } from 'node:fs';
import { check, fn } from '../../bpf/libbpf.ts';
import { Btf, nPossibleCpus, type BpfObject } from '../../bpf/index.ts';
import { close } from '../../sys/libc.ts';
import { ERRNO, UPDATE_FLAG } from '../../bpf/uapi.ts';
import { decide, describeLayout, isPerCpu, UpgradeRefusedError, type Converter, type MapLayout } from './upgrade-plan.ts';

interface Migration { name: string; pin: string; oldFd: number; old: MapLayout; next: MapLayout; how: string; convert: Converter; fresh: boolean }

/** What an upgrade did, for logs and status. */
export interface UpgradeReport { reused: string[]; migrated: { map: string; how: string; entries: number }[] }

/** The layout of the map pinned at `path`, and an fd to it (the caller closes it). */
export function pinnedLayout(path: string): { fd: number; layout: MapLayout } {
  const fd = check(`open pinned map ${path}`, fn.objGet(path));
  const b = Buffer.alloc(256);
  check(`map info ${path}`, fn.objGetInfoByFd(fd, b, [b.length]));
  const layout: MapLayout = { type: b.readUInt32LE(0), keySize: b.readUInt32LE(8), valueSize: b.readUInt32LE(12), maxEntries: b.readUInt32LE(16), flags: b.readUInt32LE(20) };
  // struct bpf_map_info: btf_id at 64, btf_key_type_id at 68, btf_value_type_id at 72.
  const [btfId, keyId, valueId] = [b.readUInt32LE(64), b.readUInt32LE(68), b.readUInt32LE(72)];
  if (btfId) {
    const btf = Btf.fromKernel(btfId);
    try {
      if (keyId) layout.keyBtf = btf.fingerprint(keyId);
      if (valueId) layout.valueBtf = btf.fingerprint(valueId);
    } finally { btf.close(); }
  }
  return { fd, layout };
}

export class DatapathUpgrade {
  readonly #converters: Record<string, Converter>;
  #migrations: Migration[] = [];
  readonly report: UpgradeReport = { reused: [], migrated: [] };

  constructor(converters: Record<string, Converter> = {}) { this.#converters = converters; }

  /** OpenOptions.prepare: decides every pinned map; throws UpgradeRefusedError naming the map and both layouts. */
  prepare(obj: BpfObject): void {
    this.#release();
    const refusals: string[] = [];
    const plans: Migration[] = [];
    const reused: string[] = [];
    for (const name of obj.mapNames()) {
      const pin = obj.mapPinPath(name);
      if (!pin || !existsSync(pin)) continue;
      const next = obj.declaredLayout(name);
      const { fd, layout } = pinnedLayout(pin);
      const d = decide(name, layout, next, this.#converters[name]);
      if (d.action === 'reuse') { close(fd); reused.push(name); continue; }
      if (d.action === 'refuse') { close(fd); refusals.push(d.reason); continue; }
      plans.push({ name, pin, oldFd: fd, old: layout, next, fresh: d.action === 'fresh',
        how: d.action === 'fresh' ? 'no entries to carry' : d.how, convert: d.action === 'fresh' ? (k, v) => [k, v] : d.convert });
    }
    if (refusals.length) {
      for (const m of plans) close(m.oldFd);
      throw new UpgradeRefusedError(`${obj.path}: upgrade refused, the pinned datapath keeps running: ${refusals.join('; ')}`);
    }
    for (const m of plans) obj.dontReusePin(m.name);
    this.#migrations = plans;
    this.report.reused = reused;
  }

  /** After load, before any link runs the new programs: every entry of each old map, converted. */
  migrate(obj: BpfObject): void {
    this.report.migrated = this.#migrations.map((m) => ({ map: m.name, how: m.how, entries: m.fresh ? 0 : copyEntries(m, obj.mapInfo(m.name).fd, UPDATE_FLAG.ANY) }));
  }

  /** After the new programs are attached: entries the old programs wrote meanwhile, then the pins. */
  commit(obj: BpfObject): void {
    for (const m of this.#migrations) {
      const fd = obj.mapInfo(m.name).fd;
      if (!m.fresh) copyEntries(m, fd, UPDATE_FLAG.NOEXIST);
      const tmp = `${m.pin}__upgrade`; // bpffs refuses '.' in names
      rmSync(tmp, { force: true });
      check(`pin ${m.name} at ${tmp}`, fn.objPin(fd, tmp));
      renameSync(tmp, m.pin);
    }
    this.#release();
  }

  /** Lets go of the old maps (a failed start: their pins stay as they were). */
  abort(): void { this.#release(); }

  #release(): void {
    for (const m of this.#migrations) close(m.oldFd);
    this.#migrations = [];
  }
}

/** Copies every entry of the old map into `newFd` through the converter; returns how many were written. */
function copyEntries(m: Migration, newFd: number, flag: number): number {
  const perCpu = isPerCpu(m.old.type);
  const cpus = perCpu ? nPossibleCpus() : 1;
  const oldStride = perCpu ? Math.ceil(m.old.valueSize / 8) * 8 : m.old.valueSize;
  const newStride = perCpu ? Math.ceil(m.next.valueSize / 8) * 8 : m.next.valueSize;
  const key = Buffer.alloc(m.old.keySize);
  const value = Buffer.alloc(oldStride * cpus);
  let prev: Buffer | null = null;
  let n = 0;
  for (;;) {
    const r = fn.mapGetNextKey(m.oldFd, prev, key);
    if (r === -ERRNO.ENOENT) return n;
    check(`walk ${m.name}`, r);
    prev = Buffer.from(key);
    if (fn.mapLookupElem(m.oldFd, key, value) < 0) continue; // deleted meanwhile
    let newKey: Buffer | undefined;
    const out = Buffer.alloc(newStride * cpus);
    for (let c = 0; c < cpus; c++) {
      const [k, v] = m.convert(Buffer.from(prev), value.subarray(c * oldStride, c * oldStride + m.old.valueSize));
      if (k.length !== m.next.keySize || v.length !== m.next.valueSize) {
        throw new Error(`map ${m.name}: converter returned key ${k.length} B / value ${v.length} B, new layout is ${describeLayout(m.next)}`);
      }
      newKey = k;
      v.copy(out, c * newStride);
    }
    const w = fn.mapUpdateElem(newFd, newKey!, out, flag);
    if (w === -ERRNO.EEXIST && flag === UPDATE_FLAG.NOEXIST) continue;
    check(`migrate an entry of ${m.name}`, w);
    n++;
  }
}

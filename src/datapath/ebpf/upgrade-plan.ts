// SPDX-License-Identifier: Apache-2.0
// What an upgrade does with each pinned map, decided from the pinned map's
// layout and the new object's declaration alone (pure: unit-tested). Same
// layout: reuse. A changed value size of a map userspace can walk: migrate,
// new trailing bytes zero-filled (upgrade) or dropped (downgrade). A changed
// key or type: migrate only with a converter declared for that map, else refuse.
import { MAP_TYPE } from '../../bpf/uapi.ts';

export interface MapLayout {
  type: number; keySize: number; valueSize: number; maxEntries: number; flags: number;
  /** BTF layout fingerprints of key and value (Btf.fingerprint), when the map has BTF. */
  keyBtf?: string; valueBtf?: string;
}

/** Turns one old entry into the new layout's (key and one value slot; per-CPU maps call it per CPU). */
export type Converter = (key: Buffer, value: Buffer) => [Buffer, Buffer];

export type MapDecision =
  | { action: 'reuse' }
  /** No entries to carry (a ring buffer): the new map starts empty. */
  | { action: 'fresh' }
  | { action: 'migrate'; how: string; convert: Converter }
  | { action: 'refuse'; reason: string };

const LRU_HASH = 9;
const LRU_PERCPU_HASH = 10;
/** Map types whose entries userspace can walk and write back. */
const WALKABLE = new Set<number>([MAP_TYPE.HASH, MAP_TYPE.ARRAY, MAP_TYPE.PERCPU_HASH, MAP_TYPE.PERCPU_ARRAY, MAP_TYPE.LPM_TRIE, LRU_HASH, LRU_PERCPU_HASH]);

export const describeLayout = (l: MapLayout): string =>
  `type ${l.type} key ${l.keySize} B${l.keyBtf ? ` ${l.keyBtf}` : ''} value ${l.valueSize} B${l.valueBtf ? ` ${l.valueBtf}` : ''} max_entries ${l.maxEntries} flags 0x${l.flags.toString(16)}`;

/** Fingerprints differ only when both sides have one (a map without BTF compares by shape). */
const btfDiffers = (a?: string, b?: string): boolean => a !== undefined && b !== undefined && a !== b;

function sameShape(a: MapLayout, b: MapLayout): boolean {
  return a.type === b.type && a.keySize === b.keySize && a.valueSize === b.valueSize && a.maxEntries === b.maxEntries && a.flags === b.flags;
}

export function sameLayout(a: MapLayout, b: MapLayout): boolean {
  return sameShape(a, b) && !btfDiffers(a.keyBtf, b.keyBtf) && !btfDiffers(a.valueBtf, b.valueBtf);
}

/** The members of a struct fingerprint ('s{a@0:i4u,b@4:i4u}8' -> 'a@0:i4u,b@4:i4u'), or undefined for another type. */
function members(fp: string): string | undefined {
  const m = /^s\{(.*)\}\d+$/.exec(fp);
  return m ? m[1] : undefined;
}

/** The larger struct keeps every member of the smaller at the same offset and only adds members after them. */
export function onlyTrailingMembers(smaller?: string, larger?: string): boolean {
  if (smaller === undefined || larger === undefined) return true; // no BTF: the sizes are all we know
  const s = members(smaller);
  const l = members(larger);
  return s !== undefined && l !== undefined && (s === '' || l === s || l.startsWith(`${s},`));
}

/** The declared conversion of a value whose size alone changed: zero-fill or drop the trailing bytes. */
export function resizeValue(size: number): Converter {
  return (key, value) => {
    const out = Buffer.alloc(size);
    value.copy(out, 0, 0, Math.min(size, value.length));
    return [key, out];
  };
}

export function decide(name: string, pinned: MapLayout, next: MapLayout, converter?: Converter): MapDecision {
  if (sameLayout(pinned, next)) return { action: 'reuse' };
  if (pinned.type === MAP_TYPE.RINGBUF && next.type === MAP_TYPE.RINGBUF) return { action: 'fresh' };
  const both = `pinned: ${describeLayout(pinned)}; new object: ${describeLayout(next)}`;
  if (!WALKABLE.has(pinned.type) || !WALKABLE.has(next.type)) {
    return { action: 'refuse', reason: `map ${name}: layout changed and its entries cannot be migrated from userspace (${both})` };
  }
  if (converter) return { action: 'migrate', how: 'converter declared for this map', convert: converter };
  if (pinned.keySize !== next.keySize || pinned.type !== next.type || btfDiffers(pinned.keyBtf, next.keyBtf)) {
    return { action: 'refuse', reason: `map ${name}: ${pinned.type !== next.type ? 'type' : 'key'} changed and no converter is declared for it (${both})` };
  }
  const [small, large] = next.valueSize >= pinned.valueSize ? [pinned.valueBtf, next.valueBtf] : [next.valueBtf, pinned.valueBtf];
  if (btfDiffers(pinned.valueBtf, next.valueBtf) && (pinned.valueSize === next.valueSize || !onlyTrailingMembers(small, large))) {
    return { action: 'refuse', reason: `map ${name}: value layout changed beyond trailing members and no converter is declared for it (${both})` };
  }
  if (pinned.valueSize === next.valueSize) return { action: 'migrate', how: 'entries copied (max_entries or flags changed)', convert: (k, v) => [k, v] };
  const how = next.valueSize > pinned.valueSize ? `value ${pinned.valueSize} -> ${next.valueSize} B, new trailing bytes zero-filled`
    : `value ${pinned.valueSize} -> ${next.valueSize} B, trailing bytes dropped`;
  return { action: 'migrate', how, convert: resizeValue(next.valueSize) };
}

export const isPerCpu = (type: number): boolean => type === MAP_TYPE.PERCPU_ARRAY || type === MAP_TYPE.PERCPU_HASH || type === LRU_PERCPU_HASH;

/** Refused upgrade: nothing was changed, the pinned datapath keeps running. */
export class UpgradeRefusedError extends Error {
  override readonly name = 'UpgradeRefusedError';
  readonly code = 'ERR_UPGRADE_REFUSED';
}

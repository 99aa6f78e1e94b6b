// SPDX-License-Identifier: Apache-2.0
// Reading struct layouts, enum values and global-variable offsets from BTF, through libbpf.
import koffi from 'koffi';
import { fn, checkPtr } from './libbpf.ts';

const KIND_STRUCT = 4;
const KIND_UNION = 5;
const KIND_ENUM = 6;
const KIND_ENUM64 = 19;
const KIND_DATASEC = 15;
const BTF_TYPE_SIZE = 12; // struct btf_type: name_off, info, size|type

export interface StructLayout {
  name: string;
  size: number;
  members: { name: string; offset: number; bitfieldSize: number }[];
}

export interface EnumLayout {
  name: string;
  /** Bytes of a value of this enum type. */
  size: number;
  members: { name: string; value: number }[];
}

export interface DatasecVar { name: string; offset: number; size: number }

export class Btf {
  readonly ptr: unknown;
  readonly #owned: boolean;
  private constructor(ptr: unknown, owned: boolean) { this.ptr = ptr; this.#owned = owned; }

  /** Parses the .BTF section of an ELF object file (e.g. build/bpf/sidecar.bpf.o). */
  static fromElf(path: string): Btf {
    return new Btf(checkPtr(`btf__parse_elf(${path})`, fn.btfParseElf(path, null)), true);
  }
  /** The BTF object `id` loaded in the kernel (e.g. a pinned map's, from its bpf_map_info). */
  static fromKernel(id: number): Btf {
    return new Btf(checkPtr(`btf__load_from_kernel_by_id(${id})`, fn.btfLoadFromKernelById(id)), true);
  }
  /** Borrows the BTF of an open bpf_object (freed with the object). */
  static borrowed(ptr: unknown): Btf { return new Btf(ptr, false); }

  close(): void { if (this.#owned) fn.btfFree(this.ptr); }

  #type(id: number): { ptr: unknown; nameOff: number; kind: number; vlen: number; kindFlag: boolean; size: number } {
    const ptr = fn.btfTypeById(this.ptr, id);
    const [nameOff, info, size] = koffi.decode(ptr, 'uint32_t', 3) as number[];
    return { ptr, nameOff, kind: (info >>> 24) & 0x1f, vlen: info & 0xffff, kindFlag: (info >>> 31) === 1, size };
  }

  #name(off: number): string { return fn.btfNameByOffset(this.ptr, off) ?? ''; }

  /**
   * The memory layout of type `id` as a string that two builds share exactly when
   * their bytes mean the same: member names, offsets, sizes, int signedness, array
   * lengths; typedefs and qualifiers see-through, type names ignored. Struct members
   * print in offset order, so a struct that only grew trailing members has the
   * old members' text as a prefix (upgrade-plan.ts relies on it).
   */
  fingerprint(id: number, depth = 0): string {
    if (id === 0) return 'void';
    if (depth > 16) return '…';
    const t = this.#type(id);
    const tail = (n: number) => koffi.decode(t.ptr, BTF_TYPE_SIZE, 'uint32_t', n) as number[];
    switch (t.kind) {
      case 1: { const [enc] = tail(1); return `i${t.size}${(enc >>> 24) & 1 ? 's' : 'u'}`; }
      case 2: return '*';
      case 3: { const [elem, , n] = tail(3); return `[${n}]${this.fingerprint(elem, depth + 1)}`; }
      case KIND_STRUCT: case KIND_UNION: {
        const raw = tail(t.vlen * 3);
        const ms = [];
        for (let i = 0; i < t.vlen; i++) {
          const [mName, mType, mOff] = raw.slice(i * 3, i * 3 + 3);
          ms.push(`${this.#name(mName)}@${t.kindFlag ? `${mOff & 0xffffff}:${mOff >>> 24}` : mOff}:${this.fingerprint(mType, depth + 1)}`);
        }
        return `${t.kind === KIND_UNION ? 'u' : 's'}{${ms.join(',')}}${t.size}`;
      }
      case KIND_ENUM: case KIND_ENUM64: return `e${t.size}`;
      case 8: case 9: case 10: case 11: case 18: return this.fingerprint(t.size, depth + 1); // typedef, volatile, const, restrict, type_tag: size|type is the target
      case 16: return `f${t.size}`;
      default: return `k${t.kind}`;
    }
  }

  /** The layout of `struct name` (or union), or undefined when the BTF has no such type. */
  structLayout(name: string): StructLayout | undefined {
    let id = fn.btfFindByNameKind(this.ptr, name, KIND_STRUCT);
    if (id < 0) id = fn.btfFindByNameKind(this.ptr, name, KIND_UNION);
    if (id < 0) return undefined;
    const t = this.#type(id);
    const raw = koffi.decode(t.ptr, BTF_TYPE_SIZE, 'uint32_t', t.vlen * 3) as number[];
    const members = [];
    for (let i = 0; i < t.vlen; i++) {
      const [mName, , mOff] = raw.slice(i * 3, i * 3 + 3);
      const bits = t.kindFlag ? mOff & 0xffffff : mOff;
      members.push({ name: this.#name(mName), offset: bits / 8, bitfieldSize: t.kindFlag ? mOff >>> 24 : 0 });
    }
    return { name, size: t.size, members };
  }

  /** The members of `enum name` with their values, or undefined when the BTF has no such type. */
  enumLayout(name: string): EnumLayout | undefined {
    let id = fn.btfFindByNameKind(this.ptr, name, KIND_ENUM);
    const wide = id < 0;
    if (wide) id = fn.btfFindByNameKind(this.ptr, name, KIND_ENUM64);
    if (id < 0) return undefined;
    const t = this.#type(id);
    // struct btf_enum: name_off, val (signed when kind_flag); btf_enum64: name_off, val_lo32, val_hi32.
    const words = wide ? 3 : 2;
    const raw = koffi.decode(t.ptr, BTF_TYPE_SIZE, 'uint32_t', t.vlen * words) as number[];
    const members = [];
    for (let i = 0; i < t.vlen; i++) {
      const [mName, lo, hi] = raw.slice(i * words, i * words + words);
      const v64 = (BigInt(hi ?? 0) << 32n) | BigInt(lo);
      const value = wide ? Number(t.kindFlag ? BigInt.asIntN(64, v64) : v64) : t.kindFlag ? lo | 0 : lo;
      members.push({ name: this.#name(mName), value });
    }
    return { name, size: t.size, members };
  }

  /** Variables of a data section (".rodata", ".bss", ".data") with their offsets. */
  datasecVars(section: string): DatasecVar[] {
    const id = fn.btfFindByNameKind(this.ptr, section, KIND_DATASEC);
    if (id < 0) return [];
    const t = this.#type(id);
    const raw = koffi.decode(t.ptr, BTF_TYPE_SIZE, 'uint32_t', t.vlen * 3) as number[];
    const vars: DatasecVar[] = [];
    for (let i = 0; i < t.vlen; i++) {
      const [varId, offset, size] = raw.slice(i * 3, i * 3 + 3);
      vars.push({ name: this.#name(this.#type(varId).nameOff), offset, size });
    }
    return vars;
  }
}


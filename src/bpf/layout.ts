// SPDX-License-Identifier: Apache-2.0
// Compares TS mirrors of C types with the object's BTF: struct codecs with
// the C struct's layout, and TS tables of flags/ids with the C enum's values.
import type { Codec } from './codec.ts';
import type { EnumLayout, StructLayout } from './btf.ts';

/** Every difference between codec and BTF layout, as readable lines; empty when identical. */
export function checkLayout(codec: Codec<unknown>, btf: StructLayout | undefined): string[] {
  if (!btf) return [`struct ${codec.cName}: not found in BTF`];
  const out: string[] = [];
  if (btf.size !== codec.size) out.push(`struct ${codec.cName}: size ${codec.size} in TS, ${btf.size} in C`);
  const names = new Set(codec.fields.map((f) => f.name));
  for (const m of btf.members) {
    if (m.bitfieldSize) out.push(`${codec.cName}.${m.name}: bitfields cannot cross to userspace`);
    const f = codec.fields.find((x) => x.name === m.name);
    if (!f) out.push(`${codec.cName}.${m.name}: in C (offset ${m.offset}), missing in TS`);
    else if (f.offset !== m.offset) out.push(`${codec.cName}.${m.name}: offset ${f.offset} in TS, ${m.offset} in C`);
  }
  for (const n of names) if (!btf.members.some((m) => m.name === n)) out.push(`${codec.cName}.${n}: in TS, missing in C`);
  return out;
}

/** A TS table that mirrors a C enum. */
export interface EnumMirror {
  /** The enum's C name (`enum mw_pod_flag` -> 'mw_pod_flag'). */
  readonly cName: string;
  /** The prefix every member has in C ('MW_POD_F_'). */
  readonly prefix: string;
  /** Value by member name without the prefix, as TS has it ({ HAS_INCLUDE_IN_PORTS: 1, … }). */
  readonly values: Readonly<Record<string, number>>;
}

/** The mirror of a TS list whose index is the value: ['captured_out', …] for MW_STAT_CAPTURED_OUT = 0, …. */
export function listMirror(cName: string, prefix: string, names: readonly string[]): EnumMirror {
  return { cName, prefix, values: Object.fromEntries(names.map((n, i) => [n.toUpperCase(), i])) };
}

/** The mirror of a TS value -> name table: { 1: 'connect4' } for MW_PROG_CONNECT4 = 1. */
export function namesMirror(cName: string, prefix: string, names: Readonly<Record<number, string>>): EnumMirror {
  return { cName, prefix, values: Object.fromEntries(Object.entries(names).map(([v, n]) => [n.toUpperCase(), Number(v)])) };
}

/**
 * Every difference between a TS table and the C enum in BTF, as readable
 * lines; empty when identical. C members whose name continues with `_` after
 * the prefix (MW_STAT__MAX) are bounds, not values, and are not mirrored.
 */
export function checkEnum(mirror: EnumMirror, btf: EnumLayout | undefined): string[] {
  const what = `enum ${mirror.cName}`;
  if (!btf) return [`${what}: not found in BTF`];
  const out: string[] = [];
  const inC = new Map<string, number>();
  for (const m of btf.members) {
    if (!m.name.startsWith(mirror.prefix)) out.push(`${what}: ${m.name} lacks the prefix ${mirror.prefix}`);
    else if (!m.name.startsWith('_', mirror.prefix.length)) inC.set(m.name.slice(mirror.prefix.length), m.value);
  }
  for (const [name, value] of inC) {
    const ts = mirror.values[name];
    if (ts === undefined) out.push(`${what}: ${mirror.prefix}${name} = ${value} in C, missing in TS`);
    else if (ts !== value) out.push(`${what}: ${mirror.prefix}${name} = ${ts} in TS, ${value} in C`);
  }
  for (const [name, value] of Object.entries(mirror.values)) {
    if (!inC.has(name)) out.push(`${what}: ${mirror.prefix}${name} = ${value} in TS, missing in C`);
  }
  return out;
}

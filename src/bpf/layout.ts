// SPDX-License-Identifier: Apache-2.0
// Compares a TS struct codec with the C struct's layout from BTF.
import type { Codec } from './codec.ts';
import type { StructLayout } from './btf.ts';

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

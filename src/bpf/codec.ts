// SPDX-License-Identifier: Apache-2.0
// Codecs between TS values and the bytes of C structs that cross into maps.
// Offsets follow C's natural alignment, so a codec is a faithful mirror of its
// struct; test/unit/btf-layout.test.ts checks every codec against the
// compiled object's BTF, so the two can never drift apart.

export interface Codec<T> {
  /** The C type this mirrors: a struct name, or a scalar like `__u32`. */
  readonly cName: string;
  readonly size: number;
  readonly align: number;
  /** Struct members (including named padding), in order; empty for scalars. */
  readonly fields: readonly FieldLayout[];
  encode(value: T, buf?: Buffer, offset?: number): Buffer;
  decode(buf: Buffer, offset?: number): T;
}

export interface FieldLayout { name: string; offset: number; size: number; codec: Codec<unknown> }

function scalar<T>(cName: string, size: number, write: (b: Buffer, v: T, o: number) => void, read: (b: Buffer, o: number) => T): Codec<T> {
  return {
    cName, size, align: size, fields: [],
    encode(v, buf = Buffer.alloc(size), o = 0) { write(buf, v, o); return buf; },
    decode(buf, o = 0) { return read(buf, o); },
  };
}

export const u8 = scalar<number>('__u8', 1, (b, v, o) => b.writeUInt8(v, o), (b, o) => b.readUInt8(o));
export const u16 = scalar<number>('__u16', 2, (b, v, o) => b.writeUInt16LE(v, o), (b, o) => b.readUInt16LE(o));
export const u32 = scalar<number>('__u32', 4, (b, v, o) => b.writeUInt32LE(v >>> 0, o), (b, o) => b.readUInt32LE(o));
export const u64 = scalar<bigint>('__u64', 8, (b, v, o) => b.writeBigUInt64LE(v, o), (b, o) => b.readBigUInt64LE(o));
/** A __u16 the C side keeps in network byte order (ports); a host-order number in TS. */
export const be16 = scalar<number>('__u16', 2, (b, v, o) => b.writeUInt16BE(v, o), (b, o) => b.readUInt16BE(o));

/** A fixed-size byte array (`__u8 x[n]`), as a Uint8Array. */
export function bytes(n: number): Codec<Uint8Array> {
  return {
    cName: `__u8[${n}]`, size: n, align: 1, fields: [],
    encode(v, buf = Buffer.alloc(n), o = 0) {
      if (v.length !== n) throw new RangeError(`expected ${n} bytes, got ${v.length}`);
      buf.set(v, o); return buf;
    },
    decode(buf, o = 0) { return new Uint8Array(buf.subarray(o, o + n)); },
  };
}

/** An array of another codec (`T x[n]`). */
export function array<T>(of: Codec<T>, n: number): Codec<T[]> {
  return {
    cName: `${of.cName}[${n}]`, size: of.size * n, align: of.align, fields: [],
    encode(v, buf = Buffer.alloc(of.size * n), o = 0) {
      if (v.length > n) throw new RangeError(`at most ${n} elements, got ${v.length}`);
      for (let i = 0; i < v.length; i++) of.encode(v[i], buf, o + i * of.size);
      return buf;
    },
    decode(buf, o = 0) { return Array.from({ length: n }, (_, i) => of.decode(buf, o + i * of.size)); },
  };
}

/** Explicit padding (`__u8 _padN[n]`): always written as zero, absent from decoded values. */
export function pad(n: number): Codec<undefined> {
  return {
    cName: `__u8[${n}]`, size: n, align: 1, fields: [],
    encode(_v, buf = Buffer.alloc(n), o = 0) { buf.fill(0, o, o + n); return buf; },
    decode() { return undefined; },
  };
}

const alignUp = (n: number, a: number) => Math.ceil(n / a) * a;

/**
 * A C struct: members in declaration order, each at its naturally aligned
 * offset; total size rounded to the largest alignment. Names are the C names.
 */
export function struct<T>(cName: string, members: ReadonlyArray<readonly [string, Codec<any>]>, opts: { align?: number } = {}): Codec<T> {
  let off = 0;
  let align = opts.align ?? 1; // for __attribute__((aligned(n)))
  const fields: FieldLayout[] = members.map(([name, codec]) => {
    off = alignUp(off, codec.align);
    const f = { name, offset: off, size: codec.size, codec };
    off += codec.size;
    align = Math.max(align, codec.align);
    return f;
  });
  const size = alignUp(off, align);
  const isPad = (f: FieldLayout) => f.name.startsWith('_pad');
  return {
    cName, size, align, fields,
    encode(value, buf = Buffer.alloc(size), o = 0) {
      buf.fill(0, o, o + size); // holes and padding are zero: keys must compare bytewise
      const v = value as Record<string, unknown>;
      for (const f of fields) {
        if (isPad(f)) continue;
        if (v[f.name] === undefined) throw new TypeError(`${cName}.${f.name} is missing`);
        f.codec.encode(v[f.name], buf, o + f.offset);
      }
      return buf;
    },
    decode(buf, o = 0) {
      const out: Record<string, unknown> = {};
      for (const f of fields) if (!isPad(f)) out[f.name] = f.codec.decode(buf, o + f.offset);
      return out as T;
    },
  };
}

/**
 * `of` in a struct that grew trailing members this build does not know (an
 * object newer than the agent, docs/upgrade.md): encodes them zero, as the
 * upgrade's migration does, and ignores them on decode.
 */
export function withTail<T>(of: Codec<T>, size: number): Codec<T> {
  if (size < of.size) throw new RangeError(`${of.cName}: ${size} bytes is smaller than the codec's ${of.size}`);
  return {
    cName: of.cName, size, align: of.align, fields: of.fields,
    encode(v, buf = Buffer.alloc(size), o = 0) { buf.fill(0, o, o + size); of.encode(v, buf, o); return buf; },
    decode(buf, o = 0) { return of.decode(buf, o); },
  };
}

/*
 * Frozen layout tables: the single place where byte offsets are derived.
 *
 * A Layout is declared as an ordered list of fields, each a primitive of N
 * bytes, a nested Layout, or an array of either.  Offsets are computed by
 * summing sizes in order, so a layout cannot have holes or overlaps: every
 * gap in the C structs of FORMAT.md is an explicit `pad` field, and the
 * declared total size is asserted at module load.  Unit tests then pin every
 * offset against the numbers written in FORMAT.md (test/unit/format), which
 * is how a transcription error in either place gets caught.
 *
 * Nested fields are flattened into dotted names ("ref.blkno",
 * "slots[3].port"), arrays of primitives are one field with an element size.
 * Lookups of unknown names are programmer errors and assert.
 *
 * Byte access goes through the little-endian helpers at the bottom; only
 * src/format/ touches DataView.  u64 values are bigint, never narrowed.
 */
import assert from 'node:assert/strict';

export type FieldSpec = readonly [name: string, type: number | Layout, count?: number];

export interface FieldInfo {
  readonly off: number;
  readonly size: number;
  /** Element size for arrays, else equal to size. */
  readonly elem: number;
  readonly count: number;
}

export class Layout {
  readonly name: string;
  readonly size: number;
  readonly fields: ReadonlyMap<string, FieldInfo>;
  /** Top-level fields in declaration order. */
  readonly order: readonly string[];

  constructor(name: string, size: number, spec: readonly FieldSpec[]) {
    this.name = name;
    const fields = new Map<string, FieldInfo>();
    const order: string[] = [];
    let off = 0;
    for (const [fname, type, count = 1] of spec) {
      assert(count >= 1 && Number.isInteger(count), `${name}.${fname}: bad count`);
      assert(!fields.has(fname), `${name}.${fname}: duplicate field`);
      const elem = typeof type === 'number' ? type : type.size;
      assert(elem > 0, `${name}.${fname}: empty field`);
      fields.set(fname, { off, size: elem * count, elem, count });
      order.push(fname);
      if (typeof type !== 'number') {
        for (let i = 0; i < count; i++) {
          const prefix = count === 1 ? fname : `${fname}[${i}]`;
          if (count > 1) fields.set(prefix, { off: off + i * elem, size: elem, elem, count: 1 });
          for (const [sub, info] of type.fields) {
            fields.set(`${prefix}.${sub}`, { ...info, off: off + i * elem + info.off });
          }
        }
      }
      off += elem * count;
    }
    assert.equal(off, size, `layout ${name}: fields sum to ${off}, declared size ${size}`);
    this.size = size;
    this.fields = fields;
    this.order = order;
    Object.freeze(this);
  }

  /** Offset of a (possibly dotted) field. */
  o(field: string): number {
    const f = this.fields.get(field);
    assert(f !== undefined, `layout ${this.name} has no field ${field}`);
    return f.off;
  }

  info(field: string): FieldInfo {
    const f = this.fields.get(field);
    assert(f !== undefined, `layout ${this.name} has no field ${field}`);
    return f;
  }
}

export function layout(name: string, size: number, spec: readonly FieldSpec[]): Layout {
  return new Layout(name, size, spec);
}

/* ---- little-endian byte access ----------------------------------------- */

export function view(b: Uint8Array): DataView {
  return new DataView(b.buffer, b.byteOffset, b.byteLength);
}

// Range checks build their message only when they fail: a template string
// evaluated on every call (a bigint to string!) costs more than the store.
function rangeFail(what: string, v: number | bigint): never {
  assert.fail(`${what} out of range: ${v}`);
}

export const getU8 = (b: Uint8Array, off: number): number => b[off]!;
export const setU8 = (b: Uint8Array, off: number, v: number): void => {
  if (!(v >= 0 && v <= 0xff && Number.isInteger(v))) rangeFail('u8', v);
  b[off] = v;
};
export const getU16 = (b: Uint8Array, off: number): number => b[off]! | (b[off + 1]! << 8);
export const setU16 = (b: Uint8Array, off: number, v: number): void => {
  if (!(v >= 0 && v <= 0xffff && Number.isInteger(v))) rangeFail('u16', v);
  b[off] = v & 0xff;
  b[off + 1] = v >>> 8;
};
export const getU32 = (b: Uint8Array, off: number): number =>
  (b[off]! | (b[off + 1]! << 8) | (b[off + 2]! << 16)) + b[off + 3]! * 0x1000000;
export const setU32 = (b: Uint8Array, off: number, v: number): void => {
  if (!(v >= 0 && v <= 0xffffffff && Number.isInteger(v))) rangeFail('u32', v);
  b[off] = v & 0xff;
  b[off + 1] = (v >>> 8) & 0xff;
  b[off + 2] = (v >>> 16) & 0xff;
  b[off + 3] = v >>> 24;
};

// u64s go through one module-level scratch DataView: two byte copies and a
// native BigInt conversion beat building the value from two u32 BigInts.
const scratch = new Uint8Array(8);
const scratchView = new DataView(scratch.buffer);

export const getU64 = (b: Uint8Array, off: number): bigint => {
  for (let i = 0; i < 8; i++) scratch[i] = b[off + i]!;
  return scratchView.getBigUint64(0, true);
};
export const setU64 = (b: Uint8Array, off: number, v: bigint): void => {
  if (!(v >= 0n && v <= 0xffffffffffffffffn)) rangeFail('u64', v);
  scratchView.setBigUint64(0, v, true);
  for (let i = 0; i < 8; i++) b[off + i] = scratch[i]!;
};
/** A u64 read as a number when the caller knows it is small (asserted). */
export const getU64n = (b: Uint8Array, off: number): number => {
  const hi = getU32(b, off + 4);
  if (hi >= 0x200000) rangeFail(`u64 at ${off} as a number`, hi);
  return hi * 0x100000000 + getU32(b, off);
};
export const setU64n = (b: Uint8Array, off: number, v: number): void => {
  if (!(Number.isSafeInteger(v) && v >= 0)) rangeFail('u64 number', v);
  setU32(b, off, v % 0x100000000);
  setU32(b, off + 4, Math.floor(v / 0x100000000));
};
/** s64 stored two's-complement in a u64 slot. */
export const getS64 = (b: Uint8Array, off: number): bigint => BigInt.asIntN(64, getU64(b, off));
export const setS64 = (b: Uint8Array, off: number, v: bigint): void => setU64(b, off, BigInt.asUintN(64, v));

export const U64_MAX = 0xffffffffffffffffn;

/*
 * The 32-byte scoutfs key (FORMAT.md 4.3, 8.1) and its sort order.
 *
 *   0        8        16       24  25   26   27      32
 *   +--------+--------+--------+---+----+----+-------+
 *   | first  | second | third  |fth|zone|type|pad(5) |
 *   +--------+--------+--------+---+----+----+-------+
 *
 * Keys sort by zone, first, type, second, third, fourth, as unsigned
 * integers: NOT byte order and not field order.  The pad bytes never take
 * part in comparison but are hashed (leaf hash, bloom), so they are always
 * written as zero.  Increment and decrement treat the six fields as one
 * multi-precision number in sort order (fourth least significant).
 *
 * Keys in memory are plain objects; first/second/third are bigint (u64),
 * zone/type/fourth are numbers (u8).  compareKeys is on hot paths and
 * allocates nothing; compareKeyBytes compares encoded keys in place.
 */
import assert from 'node:assert/strict';
import { layout, getU64, setU64, U64_MAX } from './layout.js';

export const KEY = layout('key', 32, [
  ['first', 8],
  ['second', 8],
  ['third', 8],
  ['fourth', 1],
  ['zone', 1],
  ['type', 1],
  ['pad', 5],
]);

export interface Key {
  zone: number;
  first: bigint;
  type: number;
  second: bigint;
  third: bigint;
  fourth: number;
}

export function key(zone: number, first: bigint, type: number, second = 0n, third = 0n, fourth = 0): Key {
  return { zone, first, type, second, third, fourth };
}

export const ZERO_KEY: Readonly<Key> = Object.freeze(key(0, 0n, 0));
export const ONES_KEY: Readonly<Key> = Object.freeze(key(0xff, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff));

export function compareKeys(a: Key, b: Key): number {
  if (a.zone !== b.zone) return a.zone < b.zone ? -1 : 1;
  if (a.first !== b.first) return a.first < b.first ? -1 : 1;
  if (a.type !== b.type) return a.type < b.type ? -1 : 1;
  if (a.second !== b.second) return a.second < b.second ? -1 : 1;
  if (a.third !== b.third) return a.third < b.third ? -1 : 1;
  if (a.fourth !== b.fourth) return a.fourth < b.fourth ? -1 : 1;
  return 0;
}

function cmpU64At(a: Uint8Array, ao: number, b: Uint8Array, bo: number): number {
  for (let i = 7; i >= 0; i--) {
    const x = a[ao + i]!;
    const y = b[bo + i]!;
    if (x !== y) return x < y ? -1 : 1;
  }
  return 0;
}

/** Compare two encoded keys in place (no decoding, no allocation). */
export function compareKeyBytes(a: Uint8Array, ao: number, b: Uint8Array, bo: number): number {
  let c = a[ao + 25]! - b[bo + 25]!;
  if (c !== 0) return c < 0 ? -1 : 1;
  if ((c = cmpU64At(a, ao, b, bo)) !== 0) return c;
  c = a[ao + 26]! - b[bo + 26]!;
  if (c !== 0) return c < 0 ? -1 : 1;
  if ((c = cmpU64At(a, ao + 8, b, bo + 8)) !== 0) return c;
  if ((c = cmpU64At(a, ao + 16, b, bo + 16)) !== 0) return c;
  c = a[ao + 24]! - b[bo + 24]!;
  return c === 0 ? 0 : c < 0 ? -1 : 1;
}

export function readKey(b: Uint8Array, off: number): Key {
  return {
    zone: b[off + 25]!,
    first: getU64(b, off),
    type: b[off + 26]!,
    second: getU64(b, off + 8),
    third: getU64(b, off + 16),
    fourth: b[off + 24]!,
  };
}

export function writeKey(b: Uint8Array, off: number, k: Key): void {
  assert(k.zone >= 0 && k.zone <= 0xff && k.type >= 0 && k.type <= 0xff && k.fourth >= 0 && k.fourth <= 0xff);
  setU64(b, off, k.first);
  setU64(b, off + 8, k.second);
  setU64(b, off + 16, k.third);
  b[off + 24] = k.fourth;
  b[off + 25] = k.zone;
  b[off + 26] = k.type;
  b.fill(0, off + 27, off + 32);
}

export function encodeKey(k: Key): Uint8Array {
  const b = new Uint8Array(32);
  writeKey(b, 0, k);
  return b;
}

export function cloneKey(k: Key): Key {
  return { ...k };
}

/** The next key in sort order; asserts k is not the greatest key. */
export function keyInc(k: Key): Key {
  const r = { ...k };
  if (r.fourth < 0xff) { r.fourth++; return r; }
  r.fourth = 0;
  if (r.third < U64_MAX) { r.third++; return r; }
  r.third = 0n;
  if (r.second < U64_MAX) { r.second++; return r; }
  r.second = 0n;
  if (r.type < 0xff) { r.type++; return r; }
  r.type = 0;
  if (r.first < U64_MAX) { r.first++; return r; }
  r.first = 0n;
  assert(r.zone < 0xff, 'keyInc past the greatest key');
  r.zone++;
  return r;
}

/** The previous key in sort order; asserts k is not the zero key. */
export function keyDec(k: Key): Key {
  const r = { ...k };
  if (r.fourth > 0) { r.fourth--; return r; }
  r.fourth = 0xff;
  if (r.third > 0n) { r.third--; return r; }
  r.third = U64_MAX;
  if (r.second > 0n) { r.second--; return r; }
  r.second = U64_MAX;
  if (r.type > 0) { r.type--; return r; }
  r.type = 0xff;
  if (r.first > 0n) { r.first--; return r; }
  r.first = U64_MAX;
  assert(r.zone > 0, 'keyDec below the zero key');
  r.zone--;
  return r;
}

/** print's format: zone.first.type.second.third.fourth */
export function formatKey(k: Key): string {
  return `${k.zone}.${k.first}.${k.type}.${k.second}.${k.third}.${k.fourth}`;
}

/*
 * Hash functions of the format (FORMAT.md 12).  All operate on raw bytes.
 *
 * - FNV-1a 32 and 64.
 * - Leaf item hash bucket: FNV1a32(32 key bytes) mod 1512.
 * - Dirent name hash: FNV1a32(name) | fingerprint(name) << 32, where the
 *   fingerprint samples 32 bits spread over the name so fingerprints sort
 *   like names.
 * - Xattr name hash: raw CRC-32C of the full name (the block crc primitive).
 * - srch hash: FNV1a64 of the full xattr name.
 * - Bloom indexes: three 19-bit-shifted slices of FNV1a64(32 key bytes),
 *   each mod 523968.
 *
 * These are on hot paths (every leaf insert hashes a key), so the 32-bit
 * variants stay in Number arithmetic with Math.imul; the 64-bit variant
 * splits the state into two 32-bit halves instead of using bigint per byte.
 */
import { crc32cRaw } from './crc.js';
import { FOREST_BLOOM_BITS, FOREST_BLOOM_FUNC_BITS, FOREST_BLOOM_NRS, LEAF_ITEM_HASH_NR } from './constants.js';
import { encodeKey, type Key } from './key.js';

export function fnv1a32(b: Uint8Array, off = 0, len = b.length - off): number {
  let h = 0x811c9dc5;
  for (let i = off; i < off + len; i++) {
    h ^= b[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** FNV-1a 64: prime 0x100000001b3 = 2^40 + 0x1b3, done on 32-bit halves. */
export function fnv1a64(b: Uint8Array, off = 0, len = b.length - off): bigint {
  let lo = 0x84222325;
  let hi = 0xcbf29ce4;
  for (let i = off; i < off + len; i++) {
    lo = (lo ^ b[i]!) >>> 0;
    // (hi:lo) * (2^40 + 0x1b3) mod 2^64
    const loMul = lo * 0x1b3; // < 2^41, exact in a double
    const carry = Math.floor(loMul / 0x100000000);
    const newLo = loMul >>> 0;
    const newHi = (Math.imul(hi, 0x1b3) + carry + ((lo << 8) >>> 0)) >>> 0;
    lo = newLo;
    hi = newHi;
  }
  return (BigInt(hi) << 32n) | BigInt(lo);
}

const utf8 = new TextEncoder();
export function bytesOf(s: string | Uint8Array): Uint8Array {
  return typeof s === 'string' ? utf8.encode(s) : s;
}

/** Home bucket of a key in a leaf's item hash table. */
export function leafHashBucket(keyBytes: Uint8Array, off = 0): number {
  return fnv1a32(keyBytes, off, 32) % LEAF_ITEM_HASH_NR;
}

export function leafHashBucketOfKey(k: Key): number {
  return leafHashBucket(encodeKey(k));
}

/** 32 name bits spread so that fingerprints sort like names. */
export function direntFingerprint(name: Uint8Array): number {
  const B = name.length * 8;
  if (B === 0) return 0;
  const step = Math.max(Math.floor(B / 32), 1);
  let fp = 0;
  let n = B - 1;
  for (let f = 31; f >= 0 && n >= 0; f--, n -= step) {
    const p = B - 1 - n; // bit position from the MSB of byte 0
    const bit = (name[p >>> 3]! >>> (7 - (p & 7))) & 1;
    if (bit) fp |= 1 << f;
  }
  return fp >>> 0;
}

export function direntNameHash(name: string | Uint8Array): bigint {
  const b = bytesOf(name);
  return (BigInt(direntFingerprint(b)) << 32n) | BigInt(fnv1a32(b));
}

export function xattrNameHash(name: string | Uint8Array): number {
  return crc32cRaw(bytesOf(name));
}

export function srchHash(name: string | Uint8Array): bigint {
  return fnv1a64(bytesOf(name));
}

/** The three bloom bit indexes of a (lock range start) key. */
export function bloomIndexes(k: Key | Uint8Array): number[] {
  let h = fnv1a64(k instanceof Uint8Array ? k : encodeKey(k));
  const out: number[] = [];
  for (let i = 0; i < FOREST_BLOOM_NRS; i++) {
    out.push(Number(h & 0xffffffffn) % FOREST_BLOOM_BITS);
    h >>= BigInt(FOREST_BLOOM_FUNC_BITS);
  }
  return out;
}

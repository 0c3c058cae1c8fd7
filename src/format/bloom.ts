/*
 * Bloom block (FORMAT.md 10.3): header, total_set, 8187 u64 words =
 * 523968 bits, little-endian bitmap (bit n is byte 40 + n/8, bit n%8).
 * Indexes come from hash.ts bloomIndexes() of a lock range start key.
 */
import { layout, getU64 } from './layout.js';
import { BLOCK_HEADER } from './block.js';
import { BLOOM_WORDS } from './constants.js';

export const BLOOM_BLOCK = layout('bloom_block', 65536, [
  ['hdr', BLOCK_HEADER],
  ['total_set', 8],
  ['bits', 8, BLOOM_WORDS],
]);
export const BLOOM_BITS_OFF = 40;

export function bloomTestBit(b: Uint8Array, n: number): boolean {
  return ((b[BLOOM_BITS_OFF + (n >>> 3)]! >>> (n & 7)) & 1) === 1;
}
/** Set a bit; returns true if it was clear (caller bumps total_set). */
export function bloomSetBit(b: Uint8Array, n: number): boolean {
  const i = BLOOM_BITS_OFF + (n >>> 3);
  const m = 1 << (n & 7);
  if (b[i]! & m) return false;
  b[i] = b[i]! | m;
  return true;
}
export function bloomTotalSet(b: Uint8Array): bigint {
  return getU64(b, 32);
}
/** Count the set bits (for fsck: must equal total_set). */
export function bloomCountBits(b: Uint8Array): number {
  let n = 0;
  for (let i = BLOOM_BITS_OFF; i < 65536; i++) {
    let v = b[i]!;
    while (v) { v &= v - 1; n++; }
  }
  return n;
}

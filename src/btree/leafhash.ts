/*
 * The leaf item hash table (FORMAT.md 7.5): 1512 u16 buckets at bytes
 * 62512..65535 of every leaf block, each 0 or the BLOCK OFFSET of one item.
 *
 *   62512                                                          65536
 *   +------+------+------+-----+------+------+-----+------+
 *   |  0   | 104  | 48   | ... |  0   | 272  | ... |  0   |   u16 x 1512
 *   +------+------+------+-----+------+------+-----+------+
 *      home(key) = FNV-1a-32(32 key bytes) % 1512, then linear probing,
 *      wrapping from bucket 1511 to bucket 0.
 *
 * Invariants (on every leaf we wrote): exactly one bucket per item, so the
 * number of non-zero buckets equals nr_items; every item is reachable from
 * its home bucket without crossing an empty bucket.  Deleting clears the
 * item's bucket and re-inserts every entry of the run that follows it up to
 * the next empty bucket, which restores the second invariant without
 * tombstones.  Moving an item in the array (delete fills the hole with the
 * last item) rewrites its one bucket in place.
 *
 * The kernel uses this table, not the AVL tree, for every exact lookup, so
 * we do too.  A block holds at most 1115 items (62464 / 56), so the table is
 * never full and probe loops terminate; lookups on committed blocks are
 * still bounded and range-check bucket values, throwing CorruptionError on a
 * value that is not an item offset.
 */
import assert from 'node:assert/strict';
import { LEAF_HASH_OFF, BTREE_ITEMS_OFF, BTREE_ITEM_SIZE, BTREE_ITEM, BTREE_BLOCK } from '../format/btree.js';
import { BLOCK_HEADER } from '../format/block.js';
import { LEAF_ITEM_HASH_NR } from '../format/constants.js';
import { CorruptionError } from '../format/errors.js';
import { compareKeyBytes } from '../format/key.js';
import { getU64 } from '../format/layout.js';

const I_KEY = BTREE_ITEM.o('key');
const NR_ITEMS = BTREE_BLOCK.o('nr_items');
const NR = LEAF_ITEM_HASH_NR;
const HDR_BLKNO = BLOCK_HEADER.o('blkno');

const bucketAt = (b: Uint8Array, i: number): number => b[LEAF_HASH_OFF + 2 * i]! | (b[LEAF_HASH_OFF + 2 * i + 1]! << 8);
const setBucket = (b: Uint8Array, i: number, v: number): void => {
  b[LEAF_HASH_OFF + 2 * i] = v & 0xff;
  b[LEAF_HASH_OFF + 2 * i + 1] = v >>> 8;
};

/** FNV-1a-32 of the 32 key bytes at kb[ko..], mod 1512 (inlined: hot path). */
export function leafHashHome(kb: Uint8Array, ko: number): number {
  let h = 0x811c9dc5;
  for (let i = ko; i < ko + 32; i++) {
    h ^= kb[i]!;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) % NR;
}

export const leafHashBucketValue = bucketAt;

function validItemOff(b: Uint8Array, v: number): boolean {
  const nr = b[NR_ITEMS]! | (b[NR_ITEMS + 1]! << 8);
  return v >= BTREE_ITEMS_OFF && v < BTREE_ITEMS_OFF + BTREE_ITEM_SIZE * nr && (v - BTREE_ITEMS_OFF) % BTREE_ITEM_SIZE === 0;
}

/** Offset of the item whose key equals kb[ko..ko+32), or 0. */
export function leafHashLookup(b: Uint8Array, kb: Uint8Array, ko: number): number {
  let i = leafHashHome(kb, ko);
  for (let probes = 0; probes < NR; probes++) {
    const v = bucketAt(b, i);
    if (v === 0) return 0;
    if (!validItemOff(b, v)) {
      throw new CorruptionError('btree', getU64(b, HDR_BLKNO), 'structure', `leaf hash bucket ${i} holds ${v}, not an item offset`);
    }
    if (compareKeyBytes(kb, ko, b, v + I_KEY) === 0) return v;
    i = i + 1 === NR ? 0 : i + 1;
  }
  throw new CorruptionError('btree', getU64(b, HDR_BLKNO), 'structure', 'leaf hash table has no empty bucket');
}

/** Add the item at `off` (its key is in place) to the table. */
export function leafHashInsert(b: Uint8Array, off: number): void {
  let i = leafHashHome(b, off + I_KEY);
  for (let probes = 0; ; probes++) {
    assert(probes < NR, 'leaf hash: table full');
    if (bucketAt(b, i) === 0) {
      setBucket(b, i, off);
      return;
    }
    i = i + 1 === NR ? 0 : i + 1;
  }
}

/** Bucket index that holds item `off`, probing from its key's home. */
function findBucket(b: Uint8Array, off: number): number {
  let i = leafHashHome(b, off + I_KEY);
  for (let probes = 0; probes < NR; probes++) {
    const v = bucketAt(b, i);
    assert(v !== 0, `leaf hash: item ${off} missing from its probe run`);
    if (v === off) return i;
    i = i + 1 === NR ? 0 : i + 1;
  }
  assert.fail(`leaf hash: item ${off} not found`);
}

/** Remove the item at `off` (its key still in place) and repair the probe run after it. */
export function leafHashDelete(b: Uint8Array, off: number): void {
  let i = findBucket(b, off);
  setBucket(b, i, 0);
  for (let probes = 0; ; probes++) {
    assert(probes < NR);
    i = i + 1 === NR ? 0 : i + 1;
    const v = bucketAt(b, i);
    if (v === 0) return;
    setBucket(b, i, 0);
    leafHashInsert(b, v);
  }
}

/** The item formerly at `from` now lives at `to` (key copied): repoint its bucket. */
export function leafHashMove(b: Uint8Array, from: number, to: number): void {
  let i = leafHashHome(b, to + I_KEY);
  for (let probes = 0; probes < NR; probes++) {
    const v = bucketAt(b, i);
    assert(v !== 0, `leaf hash: moved item ${from} missing from its probe run`);
    if (v === from) {
      setBucket(b, i, to);
      return;
    }
    i = i + 1 === NR ? 0 : i + 1;
  }
  assert.fail(`leaf hash: moved item ${from} not found`);
}

/** The cleared table, copied in with set(): fill() is slow on SharedArrayBuffer images (inblock.ts zeroBytes). */
const EMPTY_TABLE = new Uint8Array(2 * NR);

export function leafHashClear(b: Uint8Array): void {
  b.set(EMPTY_TABLE, LEAF_HASH_OFF);
}

/** Number of non-zero buckets (cheap structural sanity check on adopt). */
export function leafHashCount(b: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < NR; i++) if (bucketAt(b, i) !== 0) n++;
  return n;
}

export interface LeafHashProblem {
  bucket: number;
  detail: string;
}

/**
 * Exactness check for the checker: every item reachable from its home
 * bucket, one bucket per item, no other non-zero bucket.
 */
export function leafHashVerify(b: Uint8Array, itemOffs: readonly number[]): LeafHashProblem | null {
  const seen = new Set<number>();
  for (let i = 0; i < NR; i++) {
    const v = bucketAt(b, i);
    if (v === 0) continue;
    if (!validItemOff(b, v)) return { bucket: i, detail: `bucket holds ${v}, not an item offset` };
    if (seen.has(v)) return { bucket: i, detail: `item ${v} in two buckets` };
    seen.add(v);
  }
  if (seen.size !== itemOffs.length) return { bucket: -1, detail: `${seen.size} buckets used for ${itemOffs.length} items` };
  for (const off of itemOffs) {
    if (leafHashLookup(b, b, off + I_KEY) !== off) {
      return { bucket: leafHashHome(b, off + I_KEY), detail: `item ${off} not reachable from its home bucket` };
    }
  }
  return null;
}

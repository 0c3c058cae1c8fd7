/*
 * The log tree bloom block (FORMAT.md 10.3, PROTOCOL.md 5.3): one 64 KiB
 * block per log tree, 523968 bits, three bits per lock start key.
 *
 *   0      32         40                                            65536
 *   +------+----------+----------------------------------------------+
 *   | hdr  |total_set | bits: 8187 u64 words, bit n = byte 40+n/8,   |
 *   |      |          |       bit n%8                                 |
 *   +------+----------+----------------------------------------------+
 *
 * Writing (BloomWriter).  The first time a transaction writes an item
 * under a lock whose three bits are not all set yet, the block is made
 * writable: allocated zeroed when the lt has none (bloom_ref zero), copied
 * on write when the committed one is not dirty in this transaction (the
 * old blkno goes to the allocator's freed list), used in place when it is
 * already dirty.  Each bit that was clear is set and total_set bumped, so
 * total_set is always exactly the number of set bits.  A BloomWriter
 * lives for one transaction (the store is that transaction's allocator);
 * it remembers the lock keys it has handled so later items under the same
 * lock cost a Set lookup.  Before copying a committed block its bits are
 * counted and compared with total_set: a mismatch is a CorruptionError,
 * never silently carried into the new copy.
 *
 * Where the kernel sets bits at item-operation time (the lock remembers
 * the lt nr it last set bits for), we set them when the dirty items are
 * written into the log btree at commit.  Readers only ever read committed
 * trees, so the committed bloom is identical, and it is exact: exactly the
 * locks of items in the tree (the kernel's can also hold the bits of a
 * lock whose items were created and deleted within one transaction).
 *
 * Reading (bloomMayContain).  A reader tests the three bits of the lock it
 * holds; any clear bit means the tree holds no item under that lock.
 *
 * Threads: the writer is used by the transaction holder / commit worker on
 * the main thread; the helpers are pure.
 */
import assert from 'node:assert/strict';
import type { BlockStore } from '../btree/store.js';
import type { BlockRef } from '../format/block.js';
import { BLOOM_BITS_OFF, bloomCountBits, bloomSetBit, bloomTestBit, bloomTotalSet } from '../format/bloom.js';
import { FOREST_BLOOM_BITS } from '../format/constants.js';
import { CorruptionError } from '../format/errors.js';
import { bloomIndexes } from '../format/hash.js';
import { encodeKey, type Key } from '../format/key.js';
import { setU64 } from '../format/layout.js';

const TOTAL_SET_OFF = 32;

export const bloomCounters = {
  /** Bloom blocks allocated for an lt that had none. */
  created: 0,
  /** Committed bloom blocks copied on write. */
  cowed: 0,
  /** Bits that were clear and got set. */
  bitsSet: 0,
  /** Lock keys whose bits were all set already. */
  alreadySet: 0,
};

export function resetBloomCounters(): void {
  for (const k of Object.keys(bloomCounters) as (keyof typeof bloomCounters)[]) bloomCounters[k] = 0;
}

export function keyHex(k: Key): string {
  return Buffer.from(encodeKey(k)).toString('hex');
}

/** All three bits of the lock start key are set: the tree may hold its items. */
export function bloomMayContain(b: Uint8Array, bits: readonly number[]): boolean {
  for (const n of bits) if (!bloomTestBit(b, n)) return false;
  return true;
}

/** total_set read from bytes: beyond the bit count is corruption. */
export function checkedTotalSet(b: Uint8Array, blkno: bigint): bigint {
  const t = bloomTotalSet(b);
  if (t > BigInt(FOREST_BLOOM_BITS)) throw new CorruptionError('bloom', blkno, 'structure', `total_set ${t} > ${FOREST_BLOOM_BITS} bits`);
  return t;
}

export class BloomWriter {
  private readonly done = new Set<string>();

  /** ref is the lt's bloom_ref, mutated in place. */
  constructor(private readonly store: BlockStore, private readonly ref: BlockRef) {}

  /** Set the bits of a lock start key (no-op when this transaction already did). */
  async setLockBits(lockStart: Key): Promise<void> {
    const hex = keyHex(lockStart);
    if (this.done.has(hex)) return;
    const bits = bloomIndexes(lockStart);
    let b: Uint8Array | null = this.ref.blkno === 0n ? null : await this.store.read(this.ref, 'bloom');
    if (b !== null && bloomMayContain(b, bits)) {
      bloomCounters.alreadySet++;
      this.done.add(hex);
      return;
    }
    b = await this.writable(b);
    let total = bloomTotalSet(b);
    for (const n of bits) {
      if (bloomSetBit(b, n)) {
        total++;
        bloomCounters.bitsSet++;
      }
    }
    setU64(b, TOTAL_SET_OFF, total);
    this.done.add(hex);
  }

  /** A dirty bloom image for this lt: new, copied on write, or the dirty one. */
  private async writable(cur: Uint8Array | null): Promise<Uint8Array> {
    if (cur !== null && this.store.isDirty(this.ref.blkno)) return cur;
    const n = await this.store.alloc('bloom');
    if (cur === null) {
      // A new image is zeroed by the block layer: total_set 0, no bits.
      assert.equal(bloomTotalSet(n.b), 0n);
      bloomCounters.created++;
    } else {
      const total = checkedTotalSet(cur, this.ref.blkno);
      const counted = bloomCountBits(cur);
      if (BigInt(counted) !== total) {
        this.store.free(n.ref);
        throw new CorruptionError('bloom', this.ref.blkno, 'structure', `total_set ${total} but ${counted} bits are set`);
      }
      n.b.set(cur.subarray(TOTAL_SET_OFF), TOTAL_SET_OFF);
      this.store.free({ ...this.ref });
      bloomCounters.cowed++;
    }
    this.ref.blkno = n.ref.blkno;
    this.ref.seq = n.ref.seq;
    return n.b;
  }
}

/** For tests and checkers: the set bits of a bloom image, in order. */
export function bloomSetBits(b: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = BLOOM_BITS_OFF; i < b.length; i++) {
    const v = b[i]!;
    if (v === 0) continue;
    for (let j = 0; j < 8; j++) if ((v >> j) & 1) out.push((i - BLOOM_BITS_OFF) * 8 + j);
  }
  return out;
}

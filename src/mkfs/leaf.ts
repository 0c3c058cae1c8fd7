/*
 * Building a btree leaf the way scoutfs mkfs does (FORMAT.md 7.8, 13).
 *
 * mkfs appends items in increasing key order; each new item becomes the
 * AVL root with the previous root as its left child, and it writes heights
 * that do not follow the kernel convention (the first item 1, later items
 * 0).  We reproduce this quirk on purpose so our mkfs output is byte-identical
 * to scoutfs mkfs; the kernel and our btree layer never validate heights.
 * Only mkfs uses this builder, and only for two-item leaves, where the chain
 * is balanced anyway.  Everything else builds blocks through src/btree/.
 *
 * Values are carved from the top of the middle free region; the leaf hash
 * table gets one bucket per item (FNV-1a-32 of the key mod 1512, linear
 * probing with wrap).
 */
import assert from 'node:assert/strict';
import { setU16, setU64, getU16 } from '../format/layout.js';
import { writeHeader, sealBlock } from '../format/block.js';
import { writeKey, compareKeys, encodeKey, type Key } from '../format/key.js';
import { leafHashBucket } from '../format/hash.js';
import {
  itemOff, linkOfOff, LEAF_HASH_OFF, LEAF_EMPTY_FREE, BTREE_ITEM_SIZE,
} from '../format/btree.js';
import { MAGIC, LG_BLOCK_SIZE, LEAF_ITEM_HASH_NR } from '../format/constants.js';

export interface LeafItem {
  key: Key;
  seq: bigint;
  val: Uint8Array;
}

export function buildMkfsLeaf(fsid: bigint, blkno: bigint, seq: bigint, items: LeafItem[]): Uint8Array {
  const b = new Uint8Array(LG_BLOCK_SIZE);
  writeHeader(b, { magic: MAGIC.btree, fsid, seq, blkno });
  let midFree = LEAF_EMPTY_FREE;
  let total = 0;
  let rootLink = 0;
  items.forEach((it, k) => {
    if (k > 0) assert(compareKeys(items[k - 1]!.key, it.key) < 0, 'mkfs leaf items must be sorted');
    assert(it.val.length <= 896);
    const off = itemOff(k);
    const nr = k + 1;
    midFree -= BTREE_ITEM_SIZE;
    // avl: the new item is the root, the old root its left child.
    setU16(b, off, 0);
    setU16(b, off + 2, rootLink);
    setU16(b, off + 4, 0);
    b[off + 6] = k === 0 ? 1 : 0;
    if (rootLink !== 0) setU16(b, rootLink + 32, linkOfOff(off));
    rootLink = linkOfOff(off);
    writeKey(b, off + 8, it.key);
    setU64(b, off + 40, it.seq);
    if (it.val.length > 0) {
      const space = (it.val.length + 7) & ~7;
      const valOff = itemOff(nr) + midFree - space;
      midFree -= space;
      b.set(it.val, valOff);
      setU16(b, off + 48, valOff);
    }
    setU16(b, off + 50, it.val.length);
    total += BTREE_ITEM_SIZE + it.val.length;
    // leaf hash: linear probing with wrap.
    let bucket = leafHashBucket(encodeKey(it.key));
    for (let probes = 0; getU16(b, LEAF_HASH_OFF + 2 * bucket) !== 0; probes++) {
      assert(probes < LEAF_ITEM_HASH_NR);
      bucket = (bucket + 1) % LEAF_ITEM_HASH_NR;
    }
    setU16(b, LEAF_HASH_OFF + 2 * bucket, off);
  });
  setU16(b, 32, rootLink);
  setU16(b, 34, items.length);
  setU16(b, 36, total);
  setU16(b, 38, midFree);
  b[40] = 0;
  sealBlock(b);
  return b;
}

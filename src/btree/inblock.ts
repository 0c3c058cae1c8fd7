/*
 * Item operations inside one btree block (FORMAT.md 7.1-7.5, 7.7): pure
 * functions over a 64 KiB image, no I/O, no allocation on the hot paths.
 *
 *   48          48+56*nr                              valEnd
 *   +-----------+----------------------+-------------+--------+
 *   | items ... | middle free region   | values      | leaf   |
 *   | (dense)   | (mid_free_len bytes) | (grow down, | hash   |
 *   |           |                      |  with holes)| (leaf) |
 *   +-----------+----------------------+-------------+--------+
 *                                                    62512 leaf / 65536 parent
 *
 * Invariants every function here keeps (and verifyBlockItems checks):
 *  - items 0..nr-1 are dense at 48 + 56k; the AVL tree (avl.ts) links all of
 *    them in strictly increasing key order; in a leaf the hash table
 *    (leafhash.ts) has exactly one bucket per item.
 *  - total_item_bytes == sum(56 + round_up(val_len, 8)), exactly.
 *  - mid_free_len is the contiguous free run starting at the end of the item
 *    array; every value lies at or above its end and below valEnd; values are
 *    8-aligned and do not overlap.  Space freed by a delete or by moving a
 *    value is NOT returned to the middle region (holes); compactValues()
 *    packs values at the top again and recomputes mid_free_len.
 *  - bytes we free (a deleted item slot, an abandoned value, the free region
 *    after compaction) are zeroed, so images are deterministic.
 *
 * Callers guarantee room before inserting (hasRoom(), else compact or
 * split): these functions assert, they never fail softly.  moveItems (split
 * and join) rebuilds both blocks from their sorted runs rather than moving
 * item by item.  Item seqs move between blocks as raw bytes (the *Raw
 * variants) because decoding a u64 to a bigint and back costs more than
 * the rest of an insert.  Keys are passed as (bytes, offset) pairs so a
 * key can be taken straight from another block or a scratch buffer without
 * decoding.
 *
 * Adopting a block we did not write (adoptBlock, used on copy on write)
 * verifies its structure, turning bad bytes into CorruptionError, and
 * rebuilds the AVL tree because mkfs writes heights the kernel convention
 * does not (FORMAT.md 7.3 quirk).
 */
import assert from 'node:assert/strict';
import {
  BTREE_BLOCK, BTREE_ITEM, BTREE_ITEMS_OFF, BTREE_ITEM_SIZE, LEAF_HASH_OFF, LEAF_EMPTY_FREE,
  PARENT_EMPTY_FREE, BTREE_SPLIT_AREA, walkItems, BTREE_ITEM_FLAG_DELETION,
} from '../format/btree.js';
import { BTREE_MAX_VAL_LEN, LG_BLOCK_SIZE, BTREE_VALUE_ALIGN } from '../format/constants.js';
import { BLOCK_HEADER } from '../format/block.js';
import { CorruptionError } from '../format/errors.js';
import { compareKeyBytes } from '../format/key.js';
import { getU64, setU64, setU64n } from '../format/layout.js';
import {
  avlSearch, avlSearchCmp, avlInsert, avlDelete, avlRelocate, avlBuild, avlFind, avlInOrder, avlWalkChecked,
  avlPrev, avlNext, avlCheckHeights, avlRoot,
} from './avl.js';
import {
  leafHashInsert, leafHashDelete, leafHashMove, leafHashLookup, leafHashClear, leafHashCount, leafHashVerify,
} from './leafhash.js';

/* ---- offsets, from the frozen layouts ----------------------------------- */

export const B_ITEM_ROOT = BTREE_BLOCK.o('item_root');
export const B_NR_ITEMS = BTREE_BLOCK.o('nr_items');
export const B_TOTAL = BTREE_BLOCK.o('total_item_bytes');
export const B_MID_FREE = BTREE_BLOCK.o('mid_free_len');
export const B_LEVEL = BTREE_BLOCK.o('level');
export const B_PAD = BTREE_BLOCK.o('pad');
/** Bytes copied on copy-on-write: everything after the block header. */
export const B_PAYLOAD = B_ITEM_ROOT;

export const I_KEY = BTREE_ITEM.o('key');
export const I_SEQ = BTREE_ITEM.o('seq');
export const I_VAL_OFF = BTREE_ITEM.o('val_off');
export const I_VAL_LEN = BTREE_ITEM.o('val_len');
export const I_FLAGS = BTREE_ITEM.o('flags');
const I_PAD = BTREE_ITEM.o('pad');

/** Largest possible item: 56 + 896. */
export const MAX_ITEM_BYTES = BTREE_ITEM_SIZE + BTREE_MAX_VAL_LEN;
/** Usable bytes of a leaf (62464) and of a parent (65488). */
export const LEAF_AREA = LEAF_EMPTY_FREE;
export const PARENT_AREA = PARENT_EMPTY_FREE;
/** A parent item's value is one 16-byte block ref. */
export const PARENT_VAL_LEN = 16;
export const ITEM_FLAG_DELETION = BTREE_ITEM_FLAG_DELETION;

/* ---- raw fields --------------------------------------------------------- */

const r16 = (b: Uint8Array, o: number): number => b[o]! | (b[o + 1]! << 8);
const w16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v & 0xff;
  b[o + 1] = v >>> 8;
};

export const nrItems = (b: Uint8Array): number => r16(b, B_NR_ITEMS);
export const totalItemBytes = (b: Uint8Array): number => r16(b, B_TOTAL);
export const midFreeLen = (b: Uint8Array): number => r16(b, B_MID_FREE);
export const blockLevel = (b: Uint8Array): number => b[B_LEVEL]!;
export const blockBlkno = (b: Uint8Array): bigint => getU64(b, BLOCK_HEADER.o('blkno'));

export const itemOffAt = (k: number): number => BTREE_ITEMS_OFF + BTREE_ITEM_SIZE * k;
export const itemValOff = (b: Uint8Array, off: number): number => r16(b, off + I_VAL_OFF);
export const itemValLen = (b: Uint8Array, off: number): number => r16(b, off + I_VAL_LEN);
export const itemFlags = (b: Uint8Array, off: number): number => b[off + I_FLAGS]!;
export const itemSeq = (b: Uint8Array, off: number): bigint => getU64(b, off + I_SEQ);

export const round8 = (n: number): number => (n + (BTREE_VALUE_ALIGN - 1)) & ~(BTREE_VALUE_ALIGN - 1);
/** Bytes an item with this value length counts in total_item_bytes. */
export const itemBytes = (valLen: number): number => BTREE_ITEM_SIZE + round8(valLen);
export const valEndOf = (level: number): number => (level === 0 ? LEAF_HASH_OFF : LG_BLOCK_SIZE);
export const areaOf = (level: number): number => (level === 0 ? LEAF_AREA : PARENT_AREA);

/**
 * Copy len bytes.  Short copies (keys, seqs, small values) loop: cheaper
 * than creating the subarray view that Uint8Array.set needs.
 */
export function copyBytes(dst: Uint8Array, doff: number, src: Uint8Array, soff: number, len: number): void {
  if (len > 64) {
    dst.set(src.subarray(soff, soff + len), doff);
    return;
  }
  for (let i = 0; i < len; i++) dst[doff + i] = src[soff + i]!;
}

const ZEROS = new Uint8Array(LG_BLOCK_SIZE);

/**
 * Zero [start, end) of b.  Block images live in the cache's
 * SharedArrayBuffer, where V8's TypedArray fill() takes a slow element-wise
 * path (measured: 48 us for 64 KiB against 2.2 us on an ArrayBuffer), while
 * set() from an ordinary zero buffer is a memcpy (3.5 us).  Short ranges
 * loop, like copyBytes.
 */
export function zeroBytes(b: Uint8Array, start: number, end: number): void {
  if (end - start > 64) {
    for (let at = start; at < end; at += ZEROS.length) b.set(ZEROS.subarray(0, Math.min(ZEROS.length, end - at)), at);
    return;
  }
  for (let i = start; i < end; i++) b[i] = 0;
}

/** An all-zero item seq (parents, and most server trees). */
export const ZERO_SEQ_BYTES: Uint8Array = new Uint8Array(8);

/** Write an item seq as 8 little-endian bytes; seqs below 2^53 avoid bigint arithmetic. */
export function writeSeq(out: Uint8Array, off: number, seq: bigint): void {
  if (seq <= 0x1fffffffffffffn) setU64n(out, off, Number(seq));
  else setU64(out, off, seq);
}

/** The 8 little-endian bytes of an item seq, for the raw insert paths. */
export function seqBytes(seq: bigint): Uint8Array {
  if (seq === 0n) return ZERO_SEQ_BYTES;
  const out = new Uint8Array(8);
  writeSeq(out, 0, seq);
  return out;
}

function corrupt(b: Uint8Array, detail: string): CorruptionError {
  return new CorruptionError('btree', blockBlkno(b), 'structure', detail);
}

/* ---- whole block -------------------------------------------------------- */

/** Make b an empty block of this level (header bytes 0..31 untouched). */
export function initBlock(b: Uint8Array, level: number): void {
  assert(level >= 0 && level < 20, `btree level ${level}`);
  zeroBytes(b, B_PAYLOAD, b.length);
  w16(b, B_MID_FREE, areaOf(level));
  b[B_LEVEL] = level;
}

/** Room for one more item with a value of valLen bytes in the middle region? */
export function hasRoom(b: Uint8Array, valLen: number): boolean {
  return midFreeLen(b) >= itemBytes(valLen);
}

/** The kernel's item_full_pct: live bytes as a percentage of 65488. */
export function fullPct(b: Uint8Array): number {
  return Math.floor((totalItemBytes(b) * 100) / BTREE_SPLIT_AREA);
}

/**
 * Move every value to the top of the value area (in order of old offset,
 * highest first, so a move never overwrites a value not yet moved) and
 * recompute mid_free_len.  Item offsets do not change.
 */
export function compactValues(b: Uint8Array): void {
  const nr = nrItems(b);
  const vals: number[] = [];
  for (let k = 0; k < nr; k++) {
    const off = itemOffAt(k);
    if (itemValLen(b, off) > 0) vals.push(off);
  }
  vals.sort((x, y) => itemValOff(b, y) - itemValOff(b, x));
  let top = valEndOf(blockLevel(b));
  for (const off of vals) {
    const vo = itemValOff(b, off);
    const len = itemValLen(b, off);
    const space = round8(len);
    const to = top - space;
    assert(to >= vo, 'compact: values overlap');
    if (to !== vo) {
      b.copyWithin(to, vo, vo + len);
      w16(b, off + I_VAL_OFF, to);
    }
    zeroBytes(b, to + len, to + space);
    top = to;
  }
  const end = itemOffAt(nr);
  assert(top >= end);
  zeroBytes(b, end, top);
  w16(b, B_MID_FREE, top - end);
  assert.equal(valEndOf(blockLevel(b)) - top, totalItemBytes(b) - BTREE_ITEM_SIZE * nr, 'compact: value bytes disagree with total_item_bytes');
}

/* ---- single items ------------------------------------------------------- */

/** Carve value space for vlen bytes from the top of the middle region and copy the value. */
function carveValue(b: Uint8Array, off: number, vsrc: Uint8Array, vo: number, vlen: number): void {
  if (vlen === 0) {
    w16(b, off + I_VAL_OFF, 0);
    w16(b, off + I_VAL_LEN, 0);
    return;
  }
  const space = round8(vlen);
  const mid = midFreeLen(b);
  assert(mid >= space, 'carve: no room for the value');
  const to = itemOffAt(nrItems(b)) + mid - space;
  copyBytes(b, to, vsrc, vo, vlen);
  for (let i = to + vlen; i < to + space; i++) b[i] = 0;
  w16(b, B_MID_FREE, mid - space);
  w16(b, off + I_VAL_OFF, to);
  w16(b, off + I_VAL_LEN, vlen);
}

/** The item with this exact key, or 0: the hash table in a leaf, the AVL tree in a parent. */
export function findItem(b: Uint8Array, kb: Uint8Array, ko: number): number {
  return blockLevel(b) === 0 ? leafHashLookup(b, kb, ko) : avlFind(b, kb, ko);
}

/** Fill a new item slot at `off` (just counted in nr_items): key, seq, flags, pad, value. */
function writeNewItem(
  b: Uint8Array, off: number, kb: Uint8Array, ko: number, sb: Uint8Array, so: number, flags: number,
  vsrc: Uint8Array, vo: number, vlen: number,
): void {
  copyBytes(b, off + I_KEY, kb, ko, 32);
  copyBytes(b, off + I_SEQ, sb, so, 8);
  b[off + I_FLAGS] = flags;
  for (let i = off + I_PAD; i < off + BTREE_ITEM_SIZE; i++) b[i] = 0;
  carveValue(b, off, vsrc, vo, vlen);
}

/**
 * Insert a new item (the key must not be present; there must be room).
 * The seq is given as 8 little-endian bytes at sb[so..] so items can move
 * between blocks without decoding it.  Returns the new item's offset.
 */
export function insertItemRaw(
  b: Uint8Array, kb: Uint8Array, ko: number, sb: Uint8Array, so: number, flags: number,
  vsrc: Uint8Array, vo: number, vlen: number,
): number {
  assert(vlen >= 0 && vlen <= BTREE_MAX_VAL_LEN, `value length ${vlen}`);
  assert(hasRoom(b, vlen), 'insert: no room (caller must compact or split)');
  const parent = avlSearch(b, kb, ko);
  const cmp = avlSearchCmp;
  assert(parent === 0 || cmp !== 0, 'insert: key already present');
  const nr = nrItems(b);
  const off = itemOffAt(nr);
  w16(b, B_NR_ITEMS, nr + 1);
  w16(b, B_MID_FREE, midFreeLen(b) - BTREE_ITEM_SIZE);
  writeNewItem(b, off, kb, ko, sb, so, flags, vsrc, vo, vlen);
  avlInsert(b, parent, cmp, off);
  if (blockLevel(b) === 0) leafHashInsert(b, off);
  w16(b, B_TOTAL, totalItemBytes(b) + itemBytes(vlen));
  return off;
}

/** insertItem with the seq as a bigint. */
export function insertItem(
  b: Uint8Array, kb: Uint8Array, ko: number, seq: bigint, flags: number,
  vsrc: Uint8Array, vo: number, vlen: number,
): number {
  return insertItemRaw(b, kb, ko, seqBytes(seq), 0, flags, vsrc, vo, vlen);
}

/**
 * Delete the item at `off`.  The last array item moves into the hole; the
 * return value is the offset it moved from (0 if `off` was the last item),
 * so callers holding that offset can follow it.
 */
export function deleteItem(b: Uint8Array, off: number): number {
  const nr = nrItems(b);
  assert(nr > 0 && off >= BTREE_ITEMS_OFF && off < itemOffAt(nr));
  const vlen = itemValLen(b, off);
  if (vlen > 0) {
    const vo = itemValOff(b, off);
    zeroBytes(b, vo, vo + round8(vlen));
  }
  const leaf = blockLevel(b) === 0;
  if (leaf) leafHashDelete(b, off);
  avlDelete(b, off);
  const last = itemOffAt(nr - 1);
  let moved = 0;
  if (off !== last) {
    b.copyWithin(off, last, last + BTREE_ITEM_SIZE);
    avlRelocate(b, last, off);
    if (leaf) leafHashMove(b, last, off);
    moved = last;
  }
  zeroBytes(b, last, last + BTREE_ITEM_SIZE);
  w16(b, B_NR_ITEMS, nr - 1);
  w16(b, B_MID_FREE, midFreeLen(b) + BTREE_ITEM_SIZE);
  w16(b, B_TOTAL, totalItemBytes(b) - itemBytes(vlen));
  return moved;
}

/** Room to give item `off` a value of vlen bytes without compaction? */
export function hasValueRoom(b: Uint8Array, off: number, vlen: number): boolean {
  return round8(vlen) <= round8(itemValLen(b, off)) || midFreeLen(b) >= round8(vlen);
}

/**
 * Replace an item's value: in place when the new value fits the old value
 * space, else in new space from the middle region (the old space becomes a
 * hole).  The caller guarantees hasValueRoom().
 */
export function setItemValue(b: Uint8Array, off: number, vsrc: Uint8Array, vo: number, vlen: number): void {
  assert(vlen >= 0 && vlen <= BTREE_MAX_VAL_LEN, `value length ${vlen}`);
  const oldLen = itemValLen(b, off);
  const oldOff = itemValOff(b, off);
  const oldSpace = round8(oldLen);
  const space = round8(vlen);
  if (vlen > 0 && space <= oldSpace) {
    copyBytes(b, oldOff, vsrc, vo, vlen);
    for (let i = oldOff + vlen; i < oldOff + oldSpace; i++) b[i] = 0;
    w16(b, off + I_VAL_LEN, vlen);
  } else {
    if (oldLen > 0) zeroBytes(b, oldOff, oldOff + oldSpace);
    carveValue(b, off, vsrc, vo, vlen);
  }
  w16(b, B_TOTAL, totalItemBytes(b) + space - oldSpace);
}

export function setItemSeqFlags(b: Uint8Array, off: number, seq: bigint, flags: number): void {
  setU64(b, off + I_SEQ, seq);
  b[off + I_FLAGS] = flags;
}

/**
 * Rewrite a parent item's key in place.  Only valid in parents (a leaf
 * would need its hash bucket moved) and only when the new key keeps the
 * item strictly between its neighbours, which is asserted.
 */
export function setParentItemKey(b: Uint8Array, off: number, kb: Uint8Array, ko: number): void {
  assert(blockLevel(b) > 0, 'setParentItemKey on a leaf');
  const prev = avlPrev(b, off);
  const next = avlNext(b, off);
  assert(prev === 0 || compareKeyBytes(b, prev + I_KEY, kb, ko) < 0, 'parent key would sort before its predecessor');
  assert(next === 0 || compareKeyBytes(kb, ko, b, next + I_KEY) < 0, 'parent key would sort after its successor');
  copyBytes(b, off + I_KEY, kb, ko, 32);
}

/**
 * The value bytes of an item, as a view into the block (not a copy), after
 * range checks that turn bad bytes into CorruptionError.
 */
export function itemValue(b: Uint8Array, off: number): Uint8Array {
  const vlen = itemValLen(b, off);
  if (vlen === 0) return b.subarray(0, 0);
  const vo = itemValOff(b, off);
  if (vlen > BTREE_MAX_VAL_LEN || vo < itemOffAt(nrItems(b)) || vo + vlen > valEndOf(blockLevel(b))) {
    throw corrupt(b, `item at ${off} value [${vo},+${vlen}) outside the value area`);
  }
  return b.subarray(vo, vo + vlen);
}

/* ---- bulk moves --------------------------------------------------------- */

/**
 * Move items from src to dst, taking src's lowest keys (fromHigh false) or
 * its highest (fromHigh true), until at least toMove item bytes have moved
 * or src is empty.  Used by split (a fresh left sibling takes src's low
 * half) and join.  The moved keys must all sort on one side of dst's keys:
 * after them when taken from src's low end (src is dst's right sibling, or
 * dst is empty), before them when taken from the high end (src is dst's
 * left sibling).  Returns the bytes moved.
 *
 * Both blocks are rebuilt from their in-order item runs through a scratch
 * image (appendSorted + finishSorted), which also compacts their values:
 * O(items) copies instead of an AVL insert, an AVL delete and two hash
 * updates per moved item.  The caller guarantees dst can hold the result.
 */
export function moveItems(dst: Uint8Array, src: Uint8Array, fromHigh: boolean, toMove: number): number {
  const level = blockLevel(src);
  assert.equal(blockLevel(dst), level, 'moveItems between levels');
  const so = avlInOrder(src);
  const dof = avlInOrder(dst);
  let moved = 0;
  let lo = 0; // moved run is so[lo, hi)
  let hi = 0;
  if (fromHigh) {
    lo = so.length;
    hi = so.length;
    while (moved < toMove && lo > 0) moved += itemBytes(itemValLen(src, so[--lo]!));
  } else {
    while (moved < toMove && hi < so.length) moved += itemBytes(itemValLen(src, so[hi++]!));
  }
  const scratch = moveScratch;
  initBlock(scratch, level);
  if (fromHigh) {
    appendRun(scratch, src, so, lo, hi);
    appendRun(scratch, dst, dof, 0, dof.length);
  } else {
    appendRun(scratch, dst, dof, 0, dof.length);
    appendRun(scratch, src, so, lo, hi);
  }
  finishSorted(scratch);
  dst.set(scratch.subarray(B_PAYLOAD), B_PAYLOAD);
  initBlock(scratch, level);
  if (fromHigh) appendRun(scratch, src, so, 0, lo);
  else appendRun(scratch, src, so, hi, so.length);
  finishSorted(scratch);
  src.set(scratch.subarray(B_PAYLOAD), B_PAYLOAD);
  return moved;
}

/** Scratch image for moveItems; never held across a call. */
const moveScratch = new Uint8Array(LG_BLOCK_SIZE);

function appendRun(b: Uint8Array, src: Uint8Array, offs: readonly number[], from: number, to: number): void {
  for (let i = from; i < to; i++) {
    const off = offs[i]!;
    appendSortedRaw(b, src, off + I_KEY, src, off + I_SEQ, itemFlags(src, off), src, itemValOff(src, off), itemValLen(src, off));
  }
}

/**
 * Append an item to a block being built from a sorted stream: keys must
 * arrive strictly increasing; the AVL tree is built by finishSorted().
 * Leaf hash buckets are filled as items arrive.  Seq as raw bytes, as in
 * insertItemRaw.
 */
export function appendSortedRaw(
  b: Uint8Array, kb: Uint8Array, ko: number, sb: Uint8Array, so: number, flags: number,
  vsrc: Uint8Array, vo: number, vlen: number,
): number {
  assert(vlen >= 0 && vlen <= BTREE_MAX_VAL_LEN, `value length ${vlen}`);
  assert(hasRoom(b, vlen), 'appendSorted: block full');
  const nr = nrItems(b);
  if (nr > 0) assert(compareKeyBytes(b, itemOffAt(nr - 1) + I_KEY, kb, ko) < 0, 'appendSorted: keys not increasing');
  const off = itemOffAt(nr);
  w16(b, B_NR_ITEMS, nr + 1);
  w16(b, B_MID_FREE, midFreeLen(b) - BTREE_ITEM_SIZE);
  for (let i = off; i < off + I_KEY; i++) b[i] = 0;
  writeNewItem(b, off, kb, ko, sb, so, flags, vsrc, vo, vlen);
  if (blockLevel(b) === 0) leafHashInsert(b, off);
  w16(b, B_TOTAL, totalItemBytes(b) + itemBytes(vlen));
  return off;
}

export function appendSorted(
  b: Uint8Array, kb: Uint8Array, ko: number, seq: bigint, flags: number,
  vsrc: Uint8Array, vo: number, vlen: number,
): number {
  return appendSortedRaw(b, kb, ko, seqBytes(seq), 0, flags, vsrc, vo, vlen);
}

const sortedOffs: number[] = [];
/** Build the AVL tree of a block filled by appendSorted (array order = key order). */
export function finishSorted(b: Uint8Array): void {
  const nr = nrItems(b);
  sortedOffs.length = nr;
  for (let k = 0; k < nr; k++) sortedOffs[k] = itemOffAt(k);
  avlBuild(b, sortedOffs);
}

/* ---- adopting and verifying --------------------------------------------- */

/**
 * Verify the structure of a block image we did not write and make it ours:
 * AVL links sane and in strictly increasing key order, values in range and
 * 8-aligned, total_item_bytes exact, mid_free_len within the gap, level as
 * expected, leaf hash bucket count right.  Then rebuild the AVL tree
 * balanced with kernel-convention heights (FORMAT.md 7.3: do not trust
 * stored heights).  Throws CorruptionError on bad bytes.
 */
export function adoptBlock(b: Uint8Array, level: number): void {
  if (blockLevel(b) !== level) {
    throw new CorruptionError('btree', blockBlkno(b), 'level', `block level ${blockLevel(b)}, expected ${level}`);
  }
  const nr = nrItems(b);
  const end = itemOffAt(nr);
  if (end > valEndOf(level)) throw corrupt(b, `nr_items ${nr} overflows the block`);
  const offs = avlWalkChecked(b, nr);
  if (typeof offs === 'string') throw corrupt(b, offs);
  const valEnd = valEndOf(level);
  let total = 0;
  let lowestVal = valEnd;
  for (let i = 0; i < offs.length; i++) {
    const off = offs[i]!;
    if (i > 0 && compareKeyBytes(b, offs[i - 1]! + I_KEY, b, off + I_KEY) >= 0) {
      throw corrupt(b, `items at ${offs[i - 1]} and ${off} out of key order`);
    }
    const vlen = itemValLen(b, off);
    const vo = itemValOff(b, off);
    if (vlen > BTREE_MAX_VAL_LEN) throw corrupt(b, `item at ${off} val_len ${vlen} > ${BTREE_MAX_VAL_LEN}`);
    if (level > 0 && vlen !== PARENT_VAL_LEN) throw corrupt(b, `parent item at ${off} val_len ${vlen}, not a block ref`);
    if (vlen > 0) {
      if (vo % BTREE_VALUE_ALIGN !== 0 || vo < end || vo + vlen > valEnd) {
        throw corrupt(b, `item at ${off} value [${vo},+${vlen}) misplaced`);
      }
      if (vo < lowestVal) lowestVal = vo;
    }
    total += itemBytes(vlen);
  }
  if (total !== totalItemBytes(b)) throw corrupt(b, `total_item_bytes ${totalItemBytes(b)}, items sum to ${total}`);
  if (end + midFreeLen(b) > lowestVal) throw corrupt(b, `mid_free_len ${midFreeLen(b)} overlaps values at ${lowestVal}`);
  if (level === 0 && leafHashCount(b) !== nr) throw corrupt(b, `leaf hash has ${leafHashCount(b)} buckets for ${nr} items`);
  avlBuild(b, offs);
}

/** Rebuild a leaf's hash table from its items (for tests and repair tools). */
export function rebuildLeafHash(b: Uint8Array): void {
  assert.equal(blockLevel(b), 0);
  leafHashClear(b);
  const nr = nrItems(b);
  for (let k = 0; k < nr; k++) leafHashInsert(b, itemOffAt(k));
}

export interface VerifyOptions {
  /** Check AVL heights and balance (blocks we wrote); off for mkfs blocks. */
  avlHeights: boolean;
}

/**
 * Every in-block invariant, as a list of problems (empty = fine).  Never
 * throws on bad bytes.  Used by the checker and, behind the INVARIANTS
 * flag, after every structural change.  Returns the item offsets in key
 * order when the AVL walk succeeded.
 */
export function verifyBlockItems(b: Uint8Array, opts: VerifyOptions): { problems: string[]; offs: number[] } {
  const problems: string[] = [];
  const w = walkItems(b);
  if (!w.ok) return { problems: [`avl: ${w.problem}`], offs: [] };
  const offs = w.offs;
  const level = blockLevel(b);
  const nr = nrItems(b);
  const end = itemOffAt(nr);
  const valEnd = valEndOf(level);
  if (!b.subarray(B_PAD, B_PAD + 7).every((x) => x === 0)) problems.push('block pad not zero');
  let total = 0;
  const vals: [number, number][] = [];
  for (let i = 0; i < offs.length; i++) {
    const off = offs[i]!;
    if (i > 0 && compareKeyBytes(b, offs[i - 1]! + I_KEY, b, off + I_KEY) >= 0) {
      problems.push(`items at ${offs[i - 1]} and ${off} out of key order`);
    }
    if (!b.subarray(off + I_KEY + 27, off + I_KEY + 32).every((x) => x === 0)) problems.push(`item at ${off}: key pad not zero`);
    if (!b.subarray(off + I_PAD, off + BTREE_ITEM_SIZE).every((x) => x === 0)) problems.push(`item at ${off}: item pad not zero`);
    if ((itemFlags(b, off) & ~ITEM_FLAG_DELETION) !== 0) problems.push(`item at ${off}: unknown flags ${itemFlags(b, off)}`);
    const vlen = itemValLen(b, off);
    const vo = itemValOff(b, off);
    if (vlen > BTREE_MAX_VAL_LEN) problems.push(`item at ${off}: val_len ${vlen}`);
    if (level > 0) {
      if (vlen !== PARENT_VAL_LEN) problems.push(`parent item at ${off}: val_len ${vlen}`);
      if (itemSeq(b, off) !== 0n || itemFlags(b, off) !== 0) problems.push(`parent item at ${off}: seq/flags not zero`);
    }
    if (vlen === 0) {
      if (vo !== 0) problems.push(`item at ${off}: val_off ${vo} with val_len 0`);
    } else {
      if (vo % BTREE_VALUE_ALIGN !== 0) problems.push(`item at ${off}: val_off ${vo} not 8-aligned`);
      if (vo < end + midFreeLen(b) || vo + round8(vlen) > valEnd) problems.push(`item at ${off}: value [${vo},+${vlen}) outside values`);
      vals.push([vo, round8(vlen)]);
    }
    total += itemBytes(vlen);
  }
  if (total !== totalItemBytes(b)) problems.push(`total_item_bytes ${totalItemBytes(b)} != ${total}`);
  if (end + midFreeLen(b) > valEnd) problems.push(`mid_free_len ${midFreeLen(b)} runs past the value area`);
  vals.sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < vals.length; i++) {
    if (vals[i - 1]![0] + vals[i - 1]![1] > vals[i]![0]) problems.push(`values at ${vals[i - 1]![0]} and ${vals[i]![0]} overlap`);
  }
  if (opts.avlHeights) {
    const p = avlCheckHeights(b);
    if (p) problems.push(`avl at ${p.off}: ${p.detail}`);
  }
  if (level === 0) {
    const p = leafHashVerify(b, offs);
    if (p) problems.push(`leaf hash bucket ${p.bucket}: ${p.detail}`);
  }
  if (nr === 0 && avlRoot(b) !== 0) problems.push('empty block with an avl root');
  return { problems, offs };
}

/** Assert-level wrapper for the INVARIANTS flag: our own blocks must always verify. */
export function assertBlockOk(b: Uint8Array, what: string): void {
  const { problems } = verifyBlockItems(b, { avlHeights: true });
  assert.equal(problems.length, 0, `${what}: block ${blockBlkno(b)}: ${problems.join('; ')}`);
}

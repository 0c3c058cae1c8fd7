/*
 * Btree block layout (FORMAT.md 7): every btree (fs_root, logs_root,
 * log_merge, mounted_clients, srch_root, allocators, log item trees) uses
 * the same 64 KiB block with magic 0xe597f96d.
 *
 *   0    32        34      36          38           40     48
 *   +----+---------+-------+-----------+------------+------+----------------
 *   |hdr |item_root|nr_items|total_item|mid_free_len|level |items[56*nr] ...
 *   +----+---------+-------+-----------+------------+------+----------------
 *   ... middle free region ... values (grow down) ... | leaf hash (62512..)
 *
 * Item k lives at block offset 48 + 56k.  The array order is not key order:
 * key order is an AVL tree threaded through each item's avl node, with links
 * stored as (block offset - 32), 0 = null.  Leaves end with a 1512-bucket
 * u16 hash table of item block offsets (open addressing, linear probing with
 * wrap) used for exact lookups.
 *
 * This module owns the layout and read-only traversal with bounds and cycle
 * checks (used by print, fsck and the btree layer); building and modifying
 * blocks is src/btree/.
 */
import { layout, getU16, getU64, getU8 } from './layout.js';
import { BLOCK_HEADER } from './block.js';
import { AVL_NODE } from './common.js';
import { KEY, readKey, type Key } from './key.js';
import { LEAF_ITEM_HASH_BYTES, LEAF_ITEM_HASH_NR, LG_BLOCK_SIZE } from './constants.js';

export const BTREE_BLOCK = layout('btree_block', 48, [
  ['hdr', BLOCK_HEADER],
  ['item_root', 2],
  ['nr_items', 2],
  ['total_item_bytes', 2],
  ['mid_free_len', 2],
  ['level', 1],
  ['pad', 7],
]);

export const BTREE_ITEM = layout('btree_item', 56, [
  ['node', AVL_NODE],
  ['key', KEY],
  ['seq', 8],
  ['val_off', 2],
  ['val_len', 2],
  ['flags', 1],
  ['pad', 3],
]);

export const BTREE_ITEM_FLAG_DELETION = 1;
export const BTREE_ITEMS_OFF = 48;
export const BTREE_ITEM_SIZE = 56;
export const AVL_LINK_BASE = 32; // links are relative to the item_root field
export const LEAF_HASH_OFF = LG_BLOCK_SIZE - LEAF_ITEM_HASH_BYTES; // 62512
export const LEAF_EMPTY_FREE = LEAF_HASH_OFF - BTREE_ITEMS_OFF; // 62464
export const PARENT_EMPTY_FREE = LG_BLOCK_SIZE - BTREE_ITEMS_OFF; // 65488
export const BTREE_SPLIT_AREA = 65488;
export const BTREE_JOIN_LOW_WATER = 16372;

export const itemOff = (k: number): number => BTREE_ITEMS_OFF + BTREE_ITEM_SIZE * k;
export const linkOfOff = (off: number): number => off - AVL_LINK_BASE;
export const offOfLink = (link: number): number => link + AVL_LINK_BASE;

export const blkItemRoot = (b: Uint8Array): number => getU16(b, 32);
export const blkNrItems = (b: Uint8Array): number => getU16(b, 34);
export const blkTotalItemBytes = (b: Uint8Array): number => getU16(b, 36);
export const blkMidFreeLen = (b: Uint8Array): number => getU16(b, 38);
export const blkLevel = (b: Uint8Array): number => getU8(b, 40);

/** Decoded view of one item, for the edges (print, fsck, tests). */
export interface BtreeItemView {
  off: number;
  parent: number;
  left: number;
  right: number;
  height: number;
  key: Key;
  seq: bigint;
  val_off: number;
  val_len: number;
  flags: number;
}

export function readItem(b: Uint8Array, off: number): BtreeItemView {
  return {
    off,
    parent: getU16(b, off),
    left: getU16(b, off + 2),
    right: getU16(b, off + 4),
    height: getU8(b, off + 6),
    key: readKey(b, off + 8),
    seq: getU64(b, off + 40),
    val_off: getU16(b, off + 48),
    val_len: getU16(b, off + 50),
    flags: getU8(b, off + 52),
  };
}

export function itemValue(b: Uint8Array, it: BtreeItemView): Uint8Array {
  return b.subarray(it.val_off, it.val_off + it.val_len);
}

/** Is this link a valid item link for a block with nr items? */
function validLink(link: number, nr: number): boolean {
  if (link === 0) return true;
  const off = offOfLink(link);
  return off >= BTREE_ITEMS_OFF && off < itemOff(nr) && (off - BTREE_ITEMS_OFF) % BTREE_ITEM_SIZE === 0;
}

export type WalkResult = { ok: true; offs: number[] } | { ok: false; problem: string; offs: number[] };

/**
 * Item block offsets in key order, following the AVL links from item_root.
 * Detects links out of range, cycles, items not reached, bad parent links,
 * and values outside the value area.  Never throws on bad bytes.
 */
export function walkItems(b: Uint8Array): WalkResult {
  const nr = blkNrItems(b);
  const offs: number[] = [];
  if (itemOff(nr) > LG_BLOCK_SIZE) return { ok: false, problem: `nr_items ${nr} overflows the block`, offs };
  const root = blkItemRoot(b);
  if (!validLink(root, nr)) return { ok: false, problem: `item_root link ${root} invalid`, offs };
  if (nr === 0) return root === 0 ? { ok: true, offs } : { ok: false, problem: 'item_root set with 0 items', offs };
  if (root === 0) return { ok: false, problem: `item_root null with ${nr} items`, offs };
  const seen = new Set<number>();
  const stack: number[] = [];
  let cur = root;
  const valEnd = blkLevel(b) === 0 ? LEAF_HASH_OFF : LG_BLOCK_SIZE;
  while (stack.length > 0 || cur !== 0) {
    while (cur !== 0) {
      if (!validLink(cur, nr)) return { ok: false, problem: `link ${cur} out of range`, offs };
      if (seen.has(cur)) return { ok: false, problem: `avl cycle at link ${cur}`, offs };
      seen.add(cur);
      stack.push(cur);
      if (stack.length > 64) return { ok: false, problem: 'avl tree too deep', offs };
      cur = getU16(b, offOfLink(cur) + 2);
    }
    const link = stack.pop()!;
    const off = offOfLink(link);
    const left = getU16(b, off + 2);
    const right = getU16(b, off + 4);
    for (const child of [left, right]) {
      if (child !== 0 && validLink(child, nr) && getU16(b, offOfLink(child)) !== link) {
        return { ok: false, problem: `item at ${offOfLink(child)} has parent ${getU16(b, offOfLink(child))}, want ${link}`, offs };
      }
    }
    const vlen = getU16(b, off + 50);
    const voff = getU16(b, off + 48);
    if (vlen > 0 && (voff < itemOff(nr) || voff + vlen > valEnd)) {
      return { ok: false, problem: `item at ${off} value [${voff},+${vlen}) outside the value area`, offs };
    }
    offs.push(off);
    cur = right;
  }
  if (offs.length !== nr) return { ok: false, problem: `avl tree reaches ${offs.length} of ${nr} items`, offs };
  const rootParent = getU16(b, offOfLink(root));
  if (rootParent !== 0) return { ok: false, problem: `root item has parent ${rootParent}`, offs };
  return { ok: true, offs };
}

/** Leaf hash table bucket values (block offsets; 0 = empty). */
export function leafHashBuckets(b: Uint8Array): Uint16Array {
  const out = new Uint16Array(LEAF_ITEM_HASH_NR);
  for (let i = 0; i < LEAF_ITEM_HASH_NR; i++) out[i] = getU16(b, LEAF_HASH_OFF + 2 * i);
  return out;
}

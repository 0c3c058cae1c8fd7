/*
 * The AVL tree threaded through the items of one btree block (FORMAT.md
 * 4.5, 7.3).  Pure functions over a 64 KiB block image; no I/O.
 *
 * Every item starts with an 8-byte avl node (parent, left, right: u16 links;
 * height: u8; pad).  On disk a link is (item block offset - 32), relative to
 * the item_root field at byte 32, and 0 is null.  In this module and in
 * every caller, items are named by their BLOCK OFFSET (48 + 56k), the same
 * number the leaf hash table stores; 0 is null (no item lives at offset 0).
 * Conversion to and from links happens only in the get/set helpers below.
 *
 *   item_root --> [off 216: h3] ---------.
 *                 /          \            in-order walk = key order,
 *        [off 48: h1]    [off 104: h2]    array order is arbitrary
 *                               \
 *                           [off 160: h1]
 *
 * Heights follow the kernel convention: a node with no children has height
 * 1, null has height 0, a node is 1 + max(children).  Every insert and
 * delete rebalances bottom-up with single and double rotations so that
 * |h(right) - h(left)| <= 1 everywhere.  The rebalance walk stops at the
 * first ancestor whose subtree height did not change, which is only correct
 * if the stored heights were right to begin with.  Blocks written by mkfs
 * are not (FORMAT.md 7.3 quirk), and the kernel never validates heights on
 * read, so the btree layer calls avlBuild() to rebuild a balanced tree from
 * the in-order walk whenever it adopts a block it did not write (every copy
 * on write).  Reads (search, first/next) never look at heights, so they are
 * correct on any well-linked tree.
 *
 * Failure modes: a committed block can carry bad links.  Read-side loops are
 * bounded by AVL_MAX_DEPTH steps and throw CorruptionError when exceeded; a
 * link value is not range-checked here on the hot path (the btree layer
 * verifies a block's whole structure with walkItems before it modifies it,
 * and values read through bad links are caught by the value range checks).
 * Modifying functions assert their preconditions: they only ever run on
 * blocks we verified or built.
 *
 * Rejected: storing parent-less nodes and walking with an explicit stack
 * (the format has parent links and the kernel maintains them; we must too),
 * and a red-black tree (the format fixes AVL heights in the node).
 */
import assert from 'node:assert/strict';
import { BTREE_BLOCK, BTREE_ITEM, AVL_LINK_BASE } from '../format/btree.js';
import { BLOCK_HEADER } from '../format/block.js';
import { CorruptionError } from '../format/errors.js';
import { compareKeyBytes } from '../format/key.js';
import { getU64 } from '../format/layout.js';

const ROOT = BTREE_BLOCK.o('item_root');
const N_PARENT = BTREE_ITEM.o('node.parent');
const N_LEFT = BTREE_ITEM.o('node.left');
const N_RIGHT = BTREE_ITEM.o('node.right');
const N_HEIGHT = BTREE_ITEM.o('node.height');
const N_PAD = BTREE_ITEM.o('node.pad');
const I_KEY = BTREE_ITEM.o('key');
const BASE = AVL_LINK_BASE;
const HDR_BLKNO = BLOCK_HEADER.o('blkno');

/**
 * Deepest path a read-side loop will follow before calling the block
 * corrupt.  A balanced tree of the at most 1170 items that fit in a block is
 * at most 15 deep; 64 matches walkItems() in src/format/btree.ts.
 */
export const AVL_MAX_DEPTH = 64;

/* ---- raw link access ---------------------------------------------------- */

const r16 = (b: Uint8Array, o: number): number => b[o]! | (b[o + 1]! << 8);
const w16 = (b: Uint8Array, o: number, v: number): void => {
  b[o] = v & 0xff;
  b[o + 1] = v >>> 8;
};
const linkToOff = (l: number): number => (l === 0 ? 0 : l + BASE);
const offToLink = (o: number): number => (o === 0 ? 0 : o - BASE);

export const avlRoot = (b: Uint8Array): number => linkToOff(r16(b, ROOT));
export const avlParent = (b: Uint8Array, n: number): number => linkToOff(r16(b, n + N_PARENT));
export const avlLeft = (b: Uint8Array, n: number): number => linkToOff(r16(b, n + N_LEFT));
export const avlRight = (b: Uint8Array, n: number): number => linkToOff(r16(b, n + N_RIGHT));
/** Stored height; 0 for null. */
export const avlHeight = (b: Uint8Array, n: number): number => (n === 0 ? 0 : b[n + N_HEIGHT]!);

const setRoot = (b: Uint8Array, n: number): void => w16(b, ROOT, offToLink(n));
const setParent = (b: Uint8Array, n: number, p: number): void => w16(b, n + N_PARENT, offToLink(p));
const setLeft = (b: Uint8Array, n: number, c: number): void => w16(b, n + N_LEFT, offToLink(c));
const setRight = (b: Uint8Array, n: number, c: number): void => w16(b, n + N_RIGHT, offToLink(c));

function corrupt(b: Uint8Array, detail: string): CorruptionError {
  return new CorruptionError('btree', getU64(b, HDR_BLKNO), 'structure', detail);
}

/* ---- search ------------------------------------------------------------- */

/**
 * Result of the last avlSearch(): the comparison of the search key with the
 * returned node (0 exact, <0 the key belongs in its left subtree, >0 right).
 * A module-level scratch value keeps the hot path free of allocation; JS is
 * single threaded per isolate so no caller can observe another's value.
 */
export let avlSearchCmp = 0;

/**
 * Descend from the root comparing key bytes kb[ko..ko+32) with item keys.
 * Returns the matching item, or the last node visited (the parent a new
 * item would hang from, side given by avlSearchCmp), or 0 for an empty tree.
 */
export function avlSearch(b: Uint8Array, kb: Uint8Array, ko: number): number {
  let n = avlRoot(b);
  let last = 0;
  let cmp = 0;
  for (let steps = 0; n !== 0; steps++) {
    if (steps >= AVL_MAX_DEPTH) throw corrupt(b, 'avl search deeper than 64 (cycle?)');
    last = n;
    cmp = compareKeyBytes(kb, ko, b, n + I_KEY);
    if (cmp === 0) break;
    n = cmp < 0 ? avlLeft(b, n) : avlRight(b, n);
  }
  avlSearchCmp = cmp;
  return last;
}

/** The item whose key equals kb, or 0. */
export function avlFind(b: Uint8Array, kb: Uint8Array, ko: number): number {
  const n = avlSearch(b, kb, ko);
  return n !== 0 && avlSearchCmp === 0 ? n : 0;
}

/** The item with the smallest key >= kb, or 0. */
export function avlLowerBound(b: Uint8Array, kb: Uint8Array, ko: number): number {
  let n = avlRoot(b);
  let cand = 0;
  for (let steps = 0; n !== 0; steps++) {
    if (steps >= AVL_MAX_DEPTH) throw corrupt(b, 'avl search deeper than 64 (cycle?)');
    const cmp = compareKeyBytes(kb, ko, b, n + I_KEY);
    if (cmp === 0) return n;
    if (cmp < 0) {
      cand = n;
      n = avlLeft(b, n);
    } else {
      n = avlRight(b, n);
    }
  }
  return cand;
}

/** The item with the greatest key <= kb, or 0. */
export function avlFloor(b: Uint8Array, kb: Uint8Array, ko: number): number {
  let n = avlRoot(b);
  let cand = 0;
  for (let steps = 0; n !== 0; steps++) {
    if (steps >= AVL_MAX_DEPTH) throw corrupt(b, 'avl search deeper than 64 (cycle?)');
    const cmp = compareKeyBytes(kb, ko, b, n + I_KEY);
    if (cmp === 0) return n;
    if (cmp > 0) {
      cand = n;
      n = avlRight(b, n);
    } else {
      n = avlLeft(b, n);
    }
  }
  return cand;
}

/* ---- in-order neighbours ------------------------------------------------ */

function leftmost(b: Uint8Array, n: number): number {
  for (let steps = 0; ; steps++) {
    if (steps >= AVL_MAX_DEPTH) throw corrupt(b, 'avl left spine deeper than 64');
    const l = avlLeft(b, n);
    if (l === 0) return n;
    n = l;
  }
}

function rightmost(b: Uint8Array, n: number): number {
  for (let steps = 0; ; steps++) {
    if (steps >= AVL_MAX_DEPTH) throw corrupt(b, 'avl right spine deeper than 64');
    const r = avlRight(b, n);
    if (r === 0) return n;
    n = r;
  }
}

export function avlFirst(b: Uint8Array): number {
  const r = avlRoot(b);
  return r === 0 ? 0 : leftmost(b, r);
}

export function avlLast(b: Uint8Array): number {
  const r = avlRoot(b);
  return r === 0 ? 0 : rightmost(b, r);
}

export function avlNext(b: Uint8Array, n: number): number {
  const r = avlRight(b, n);
  if (r !== 0) return leftmost(b, r);
  let p = avlParent(b, n);
  for (let steps = 0; p !== 0 && avlRight(b, p) === n; steps++) {
    if (steps >= AVL_MAX_DEPTH) throw corrupt(b, 'avl parent chain longer than 64');
    n = p;
    p = avlParent(b, p);
  }
  return p;
}

export function avlPrev(b: Uint8Array, n: number): number {
  const l = avlLeft(b, n);
  if (l !== 0) return rightmost(b, l);
  let p = avlParent(b, n);
  for (let steps = 0; p !== 0 && avlLeft(b, p) === n; steps++) {
    if (steps >= AVL_MAX_DEPTH) throw corrupt(b, 'avl parent chain longer than 64');
    n = p;
    p = avlParent(b, p);
  }
  return p;
}

/* ---- modification ------------------------------------------------------- */

function fixHeight(b: Uint8Array, n: number): void {
  const hl = avlHeight(b, avlLeft(b, n));
  const hr = avlHeight(b, avlRight(b, n));
  b[n + N_HEIGHT] = (hl > hr ? hl : hr) + 1;
}

/** Point whatever referenced `old` (its parent's child slot, or the root) at `neu`. */
function replaceChild(b: Uint8Array, parent: number, old: number, neu: number): void {
  if (parent === 0) {
    assert.equal(avlRoot(b), old, 'avl: parentless node is not the root');
    setRoot(b, neu);
  } else if (avlLeft(b, parent) === old) {
    setLeft(b, parent, neu);
  } else {
    assert.equal(avlRight(b, parent), old, 'avl: node is not a child of its parent');
    setRight(b, parent, neu);
  }
}

/** x's right child becomes the root of this subtree; returns it. */
function rotateLeft(b: Uint8Array, x: number): number {
  const y = avlRight(b, x);
  const yl = avlLeft(b, y);
  const p = avlParent(b, x);
  setRight(b, x, yl);
  if (yl !== 0) setParent(b, yl, x);
  setLeft(b, y, x);
  setParent(b, x, y);
  setParent(b, y, p);
  replaceChild(b, p, x, y);
  fixHeight(b, x);
  fixHeight(b, y);
  return y;
}

/** x's left child becomes the root of this subtree; returns it. */
function rotateRight(b: Uint8Array, x: number): number {
  const y = avlLeft(b, x);
  const yr = avlRight(b, y);
  const p = avlParent(b, x);
  setLeft(b, x, yr);
  if (yr !== 0) setParent(b, yr, x);
  setRight(b, y, x);
  setParent(b, x, y);
  setParent(b, y, p);
  replaceChild(b, p, x, y);
  fixHeight(b, x);
  fixHeight(b, y);
  return y;
}

/**
 * Restore heights and balance from n up towards the root.  Stored heights
 * above the change are the pre-change subtree heights, so the walk can stop
 * at the first position whose subtree height came out unchanged.
 */
function rebalanceFrom(b: Uint8Array, n: number): void {
  for (let steps = 0; n !== 0; steps++) {
    assert(steps < AVL_MAX_DEPTH, 'avl: rebalance walked too far');
    const old = b[n + N_HEIGHT]!;
    const l = avlLeft(b, n);
    const r = avlRight(b, n);
    const hl = avlHeight(b, l);
    const hr = avlHeight(b, r);
    let top = n;
    if (hr > hl + 1) {
      if (avlHeight(b, avlLeft(b, r)) > avlHeight(b, avlRight(b, r))) rotateRight(b, r);
      top = rotateLeft(b, n);
    } else if (hl > hr + 1) {
      if (avlHeight(b, avlRight(b, l)) > avlHeight(b, avlLeft(b, l))) rotateLeft(b, l);
      top = rotateRight(b, n);
    } else {
      fixHeight(b, n);
    }
    if (b[top + N_HEIGHT] === old) return;
    n = avlParent(b, top);
  }
}

/**
 * Link item n into the tree below `parent` (from avlSearch) on the side given
 * by cmp (<0 left, >0 right).  parent 0 means the tree is empty.
 */
export function avlInsert(b: Uint8Array, parent: number, cmp: number, n: number): void {
  setParent(b, n, parent);
  setLeft(b, n, 0);
  setRight(b, n, 0);
  b[n + N_HEIGHT] = 1;
  b[n + N_PAD] = 0;
  if (parent === 0) {
    assert.equal(avlRoot(b), 0, 'avl: insert without a parent into a non-empty tree');
    setRoot(b, n);
    return;
  }
  assert(cmp !== 0, 'avl: duplicate key');
  if (cmp < 0) {
    assert.equal(avlLeft(b, parent), 0, 'avl: insert into an occupied left slot');
    setLeft(b, parent, n);
  } else {
    assert.equal(avlRight(b, parent), 0, 'avl: insert into an occupied right slot');
    setRight(b, parent, n);
  }
  rebalanceFrom(b, parent);
}

/** Unlink item n from the tree and rebalance.  n's own node bytes are left as they were. */
export function avlDelete(b: Uint8Array, n: number): void {
  const l = avlLeft(b, n);
  const r = avlRight(b, n);
  const p = avlParent(b, n);
  let from: number;
  if (l === 0 || r === 0) {
    const c = l !== 0 ? l : r;
    if (c !== 0) setParent(b, c, p);
    replaceChild(b, p, n, c);
    from = p;
  } else {
    // Two children: the in-order successor s takes n's place in the tree.
    const s = leftmost(b, r);
    if (s === r) {
      setLeft(b, s, l);
      setParent(b, l, s);
      from = s;
    } else {
      const sp = avlParent(b, s);
      const sr = avlRight(b, s);
      setLeft(b, sp, sr);
      if (sr !== 0) setParent(b, sr, sp);
      setLeft(b, s, l);
      setParent(b, l, s);
      setRight(b, s, r);
      setParent(b, r, s);
      from = sp;
    }
    setParent(b, s, p);
    replaceChild(b, p, n, s);
    // s now stands where n stood: inherit n's (pre-delete) height so the
    // early stop in rebalanceFrom compares like with like.
    b[s + N_HEIGHT] = b[n + N_HEIGHT]!;
  }
  rebalanceFrom(b, from);
}

/**
 * An item's 56 bytes were copied from block offset `from` to `to` (delete
 * keeps the item array dense by moving the last item into the hole): point
 * its parent (or the root) and its children at the new offset.
 */
export function avlRelocate(b: Uint8Array, from: number, to: number): void {
  assert(from !== to && from !== 0 && to !== 0);
  const p = avlParent(b, to);
  if (p === 0) {
    assert.equal(avlRoot(b), from, 'avl: relocated parentless node is not the root');
    setRoot(b, to);
  } else if (avlLeft(b, p) === from) {
    setLeft(b, p, to);
  } else {
    assert.equal(avlRight(b, p), from, 'avl: relocated node is not a child of its parent');
    setRight(b, p, to);
  }
  const l = avlLeft(b, to);
  const r = avlRight(b, to);
  if (l !== 0) setParent(b, l, to);
  if (r !== 0) setParent(b, r, to);
}

/**
 * Rebuild the whole tree, perfectly balanced, from item offsets given in key
 * order.  Used when adopting a block we did not write (heights untrusted)
 * and after building a block from a sorted stream.
 */
export function avlBuild(b: Uint8Array, offs: ArrayLike<number>): void {
  setRoot(b, build(b, offs, 0, offs.length, 0));
}

function build(b: Uint8Array, offs: ArrayLike<number>, lo: number, hi: number, parent: number): number {
  if (lo >= hi) return 0;
  const mid = (lo + hi) >>> 1;
  const n = offs[mid]!;
  setParent(b, n, parent);
  const l = build(b, offs, lo, mid, n);
  const r = build(b, offs, mid + 1, hi, n);
  setLeft(b, n, l);
  setRight(b, n, r);
  const hl = avlHeight(b, l);
  const hr = avlHeight(b, r);
  b[n + N_HEIGHT] = (hl > hr ? hl : hr) + 1;
  b[n + N_PAD] = 0;
  return n;
}

/**
 * Item offsets in link order from a block we did not write, validating as
 * it goes: every link an item offset below nr_items, no item reached twice,
 * children pointing back at their parent, depth bounded, every item
 * reached, a parentless root.  Returns the offsets, or a string naming the
 * first problem.  Same checks as walkItems() in src/format/btree.ts (which
 * the checker and print use) on typed arrays instead of a Set: this runs on
 * every copy on write.
 */
export function avlWalkChecked(b: Uint8Array, nr: number): number[] | string {
  const end = 48 + 56 * nr;
  const valid = (n: number): boolean => n >= 48 && n < end && (n - 48) % 56 === 0;
  const root = avlRoot(b);
  if (nr === 0) return root === 0 ? [] : 'item_root set with 0 items';
  if (!valid(root)) return `item_root ${root} is not an item`;
  if (avlParent(b, root) !== 0) return 'root item has a parent';
  const seen = new Uint8Array(nr);
  const stack = walkStack;
  const out: number[] = [];
  let sp = 0;
  let n = root;
  while (sp > 0 || n !== 0) {
    while (n !== 0) {
      if (!valid(n)) return `link to ${n} is not an item`;
      const k = (n - 48) / 56;
      if (seen[k] !== 0) return `avl cycle at ${n}`;
      seen[k] = 1;
      if (sp >= AVL_MAX_DEPTH) return 'avl tree deeper than 64';
      stack[sp++] = n;
      const l = avlLeft(b, n);
      if (l !== 0 && avlParent(b, l) !== n) return `item at ${l} does not point back at its parent ${n}`;
      n = l;
    }
    n = stack[--sp]!;
    out.push(n);
    const r = avlRight(b, n);
    if (r !== 0 && avlParent(b, r) !== n) return `item at ${r} does not point back at its parent ${n}`;
    n = r;
  }
  if (out.length !== nr) return `avl tree reaches ${out.length} of ${nr} items`;
  return out;
}

const walkStack = new Int32Array(AVL_MAX_DEPTH);

/** Item offsets in key order (read-side, bounded). */
export function avlInOrder(b: Uint8Array, out: number[] = []): number[] {
  for (let n = avlFirst(b), steps = 0; n !== 0; n = avlNext(b, n), steps++) {
    if (steps > 2048) throw corrupt(b, 'avl in-order walk longer than any block can hold');
    out.push(n);
  }
  return out;
}

export interface AvlProblem {
  off: number;
  detail: string;
}

/**
 * Verify kernel-convention heights and balance of every node (the checker
 * uses this on blocks we wrote).  Returns the first problem or null.
 */
export function avlCheckHeights(b: Uint8Array): AvlProblem | null {
  let problem: AvlProblem | null = null;
  const visit = (n: number, depth: number): number => {
    if (n === 0 || problem !== null) return 0;
    if (depth > AVL_MAX_DEPTH) {
      problem = { off: n, detail: 'tree deeper than 64' };
      return 0;
    }
    const hl = visit(avlLeft(b, n), depth + 1);
    const hr = visit(avlRight(b, n), depth + 1);
    const h = (hl > hr ? hl : hr) + 1;
    if (problem !== null) return 0;
    if (Math.abs(hl - hr) > 1) problem = { off: n, detail: `unbalanced: left height ${hl}, right ${hr}` };
    else if (b[n + N_HEIGHT] !== h) problem = { off: n, detail: `stored height ${b[n + N_HEIGHT]}, actual ${h}` };
    return h;
  };
  visit(avlRoot(b), 0);
  return problem;
}

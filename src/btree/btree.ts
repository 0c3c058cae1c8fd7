/*
 * The copy-on-write btree (FORMAT.md 7): every scoutfs btree (fs_root, log
 * item trees, logs_root, allocators, srch, log_merge, mounted_clients) is
 * one of these, over a BlockStore (store.ts).
 *
 *   root {ref, height=3} --> [parent, level 2]   keys: ... K1  K2  ONES
 *                              |         |           |
 *                  [parent, level 1] ... [parent, level 1: ..., ONES]
 *                     |      |                           |
 *                  [leaf] [leaf]  ...                 [leaf]
 *
 * A parent item's key is the greatest key its child subtree may hold
 * (inclusive upper bound); the child covering key K is the parent item with
 * the smallest key >= K.  The right spine ends in the all-ones key, so keys
 * beyond everything never require a parent key update.
 *
 * Writers walk down from the root with dirtyWalk(), copying every block on
 * the path that is not already dirty in this transaction (cow(): alloc a
 * new block, copy the payload, adopt it, free the old ref, write the new ref
 * into the parent item or the root).  On the way down they restructure, as
 * the kernel does, and restart from the root after each change:
 *  - inserting walks make room first (trySplit): a block without room for
 *    the item (a parent: for one more 16-byte ref) is compacted if under 80%
 *    full, else split: a new LEFT sibling takes the lowest half of the item
 *    bytes and gets a parent item keyed by its last key; a split of the top
 *    block first grows a new root holding the old top under the ones key.
 *  - deleting walks join (tryJoin): a non-root block under the low water
 *    mark (16372 item bytes) pulls items from a sibling, the left one if it
 *    exists: the whole sibling if it holds <= 32744 bytes (the sibling is
 *    freed and its parent item removed), else 16372 bytes' worth, fixing
 *    parent keys.  A root parent left with one item is collapsed.
 * Because parents are made roomy (or joined) before their children, a split
 * or join one level down never overflows or empties the parent.
 *
 * ENOSPC: every store.alloc() happens before the change that needs it (cow
 * allocates before copying, a split allocates the sibling and any new root
 * before moving items), so an allocation failure leaves the dirty tree
 * consistent and the operation not applied.  The caller still aborts its
 * transaction; this just keeps the in-memory state sane until it does.
 *
 * Cost: a store that implements readCached() (a cache hit answered without
 * a promise) lets read walks and walks over already-dirty blocks run with
 * no await per level; cheap room/low-water checks run before the async
 * split/join paths for the same reason.  Random lookups in a large cached
 * tree are then bound by memory latency (an AVL descent per parent level).
 *
 * Readers (lookup, next, prev, iteration) never modify anything.  A reader
 * following refs from a root that has since been committed over may read a
 * block that was freed and reused: the store reports ESTALE (seq mismatch),
 * and withStaleRetry() re-reads the root and tries again, calling a second
 * ESTALE with an unchanged root corruption (FORMAT.md 3.3).
 *
 * Ownership: one writer per root at a time (the transaction holder); the
 * caller owns the BtreeRoot object and this module mutates it in place.
 * Values handed out are copies; nothing returned aliases a block.
 *
 * Left out on purpose: the kernel's per-item "seq" filtering of reads and
 * its walk of log trees (that is src/forest/); tree height is bounded by
 * BTREE_MAX_HEIGHT (20) by assertion, which 64 KiB blocks cannot reach.
 */
import assert from 'node:assert/strict';
import { readRef, writeRef, ZERO_REF, type BlockRef } from '../format/block.js';
import { BTREE_JOIN_LOW_WATER } from '../format/btree.js';
import { BTREE_MAX_HEIGHT, BTREE_MAX_VAL_LEN } from '../format/constants.js';
import { CorruptionError, FsError } from '../format/errors.js';
import { encodeKey, readKey, keyInc, ONES_KEY, compareKeyBytes, type Key } from '../format/key.js';
import { avlLowerBound, avlFloor, avlPrev, avlNext, avlLast } from './avl.js';
import {
  adoptBlock, initBlock, hasRoom, fullPct, compactValues, insertItemRaw, seqBytes, ZERO_SEQ_BYTES, deleteItem,
  setItemValue, setItemSeqFlags, setParentItemKey, moveItems, itemValue, itemValOff, itemSeq, itemFlags,
  itemOffAt, nrItems, totalItemBytes, areaOf, blockLevel, blockBlkno, assertBlockOk, I_KEY, B_PAYLOAD,
  PARENT_VAL_LEN, MAX_ITEM_BYTES,
} from './inblock.js';
import { leafHashLookup } from './leafhash.js';
import { sameRoot, type BlockStore, type BtreeRoot } from './store.js';

export interface BtreeValue {
  val: Uint8Array;
  seq: bigint;
  flags: number;
}

export interface BtreeItem extends BtreeValue {
  key: Key;
}

export interface ItemOpts {
  /** Item seq (FORMAT.md 7.2); default 0. */
  seq?: bigint;
  /** Item flags, bit 0 DELETION; default 0. */
  flags?: number;
}

/** Counters that prove a path ran (STYLE.md 7); tests read and reset them. */
export const btreeCounters = {
  cowCopies: 0,
  splits: 0,
  rootSplits: 0,
  compactions: 0,
  joins: 0,
  joinsWhole: 0,
  collapses: 0,
  restarts: 0,
  staleRetries: 0,
  /** Merge emissions unlinked again after an allocation failure (merge.ts). */
  mergeRollbacks: 0,
};

export function resetBtreeCounters(): void {
  for (const k of Object.keys(btreeCounters) as (keyof typeof btreeCounters)[]) btreeCounters[k] = 0;
}

/** Expensive invariant checks (re-verify every block a split/join/write touched); tests turn this on. */
export const btreeInvariants = { enabled: false };

const LOW_WATER = BTREE_JOIN_LOW_WATER;
export const ONES_KEY_BYTES: Uint8Array = encodeKey(ONES_KEY);

const isOnes = (kb: Uint8Array): boolean => compareKeyBytes(kb, 0, ONES_KEY_BYTES, 0) === 0;

function refBytes(ref: BlockRef): Uint8Array {
  const b = new Uint8Array(PARENT_VAL_LEN);
  writeRef(b, 0, ref);
  return b;
}

function corrupt(b: Uint8Array, check: 'structure' | 'level', detail: string): CorruptionError {
  return new CorruptionError('btree', blockBlkno(b), check, detail);
}

export function checkRoot(root: BtreeRoot): void {
  if (root.height > BTREE_MAX_HEIGHT || root.height < 0) {
    throw new CorruptionError('btree root', root.ref.blkno, 'structure', `height ${root.height}`);
  }
  if ((root.height === 0) !== (root.ref.blkno === 0n)) {
    throw new CorruptionError('btree root', root.ref.blkno, 'structure', `height ${root.height} with blkno ${root.ref.blkno}`);
  }
}

/* ---- reading ------------------------------------------------------------ */

export async function readBlock(store: BlockStore, ref: BlockRef, level: number): Promise<Uint8Array> {
  const b = store.readCached?.(ref, 'btree') ?? (await store.read(ref, 'btree'));
  if (blockLevel(b) !== level) throw corrupt(b, 'level', `block level ${blockLevel(b)}, expected ${level}`);
  return b;
}

/** The child ref stored in parent item `off`, range-checked. */
export function parentItemRef(b: Uint8Array, off: number): BlockRef {
  const v = itemValue(b, off);
  if (v.length !== PARENT_VAL_LEN) throw corrupt(b, 'structure', `parent item at ${off} has a ${v.length}-byte value`);
  return readRef(v, 0);
}

/** Bounds of the leaf a read walk reached: keys in it are in (lo, hi]; null = unbounded. */
interface Bounds {
  lo: Uint8Array | null;
  hi: Uint8Array | null;
}

/**
 * One step of a read walk in block b at `level`: check the level, choose
 * the child covering kb, note its bounds, and return its ref (null at a leaf).
 */
function stepDown(b: Uint8Array, level: number, kb: Uint8Array, bounds: Bounds | null): BlockRef | null {
  if (blockLevel(b) !== level) throw corrupt(b, 'level', `block level ${blockLevel(b)}, expected ${level}`);
  if (level === 0) return null;
  const c = avlLowerBound(b, kb, 0);
  if (c === 0) throw corrupt(b, 'structure', 'key beyond the last parent item');
  if (bounds !== null) {
    bounds.hi = b.slice(c + I_KEY, c + I_KEY + 32);
    const p = avlPrev(b, c);
    if (p !== 0) bounds.lo = b.slice(p + I_KEY, p + I_KEY + 32);
  }
  return parentItemRef(b, c);
}

/**
 * The leaf covering kb without a single promise when every block on the
 * way is cached (store.readCached); undefined as soon as one is not.
 */
function readToLeafCached(store: BlockStore, root: BtreeRoot, kb: Uint8Array, bounds: Bounds | null): Uint8Array | null | undefined {
  if (store.readCached === undefined) return undefined;
  checkRoot(root);
  if (root.height === 0) return null;
  let ref: BlockRef | null = root.ref;
  for (let level = root.height - 1; ; level--) {
    const b = store.readCached(ref, 'btree');
    if (b === undefined) return undefined;
    ref = stepDown(b, level, kb, bounds);
    if (ref === null) return b;
  }
}

async function readToLeaf(store: BlockStore, root: BtreeRoot, kb: Uint8Array, bounds: Bounds | null): Promise<Uint8Array | null> {
  const cached = readToLeafCached(store, root, kb, bounds);
  if (cached !== undefined) return cached;
  if (bounds !== null) bounds.lo = bounds.hi = null;
  checkRoot(root);
  if (root.height === 0) return null;
  let ref: BlockRef | null = root.ref;
  for (let level = root.height - 1; ; level--) {
    const b = await store.read(ref, 'btree');
    ref = stepDown(b, level, kb, bounds);
    if (ref === null) return b;
  }
}

function decodeItem(b: Uint8Array, off: number): BtreeItem {
  return { key: readKey(b, off + I_KEY), val: itemValue(b, off).slice(), seq: itemSeq(b, off), flags: itemFlags(b, off) };
}

export async function btreeLookup(store: BlockStore, root: BtreeRoot, key: Key): Promise<BtreeValue | null> {
  const kb = encodeKey(key);
  let leaf = readToLeafCached(store, root, kb, null);
  if (leaf === undefined) leaf = await readToLeaf(store, root, kb, null);
  if (leaf === null) return null;
  const off = leafHashLookup(leaf, kb, 0);
  if (off === 0) return null;
  return { val: itemValue(leaf, off).slice(), seq: itemSeq(leaf, off), flags: itemFlags(leaf, off) };
}

/** The first item with key >= key, or null. */
export async function btreeNext(store: BlockStore, root: BtreeRoot, key: Key): Promise<BtreeItem | null> {
  let kb = encodeKey(key);
  for (;;) {
    const bounds: Bounds = { lo: null, hi: null };
    const leaf = await readToLeaf(store, root, kb, bounds);
    if (leaf === null) return null;
    const off = avlLowerBound(leaf, kb, 0);
    if (off !== 0) return decodeItem(leaf, off);
    if (bounds.hi === null || isOnes(bounds.hi)) return null;
    kb = encodeKey(keyInc(readKey(bounds.hi, 0)));
  }
}

/** The last item with key <= key, or null. */
export async function btreePrev(store: BlockStore, root: BtreeRoot, key: Key): Promise<BtreeItem | null> {
  let kb = encodeKey(key);
  for (;;) {
    const bounds: Bounds = { lo: null, hi: null };
    const leaf = await readToLeaf(store, root, kb, bounds);
    if (leaf === null) return null;
    const off = avlFloor(leaf, kb, 0);
    if (off !== 0) return decodeItem(leaf, off);
    if (bounds.lo === null) return null;
    kb = bounds.lo;
  }
}

/**
 * Items with start <= key <= end, in key order, one leaf at a time: each
 * leaf's matching items are copied out before any is handed to the caller,
 * so the caller may modify the tree between items (later leaves are found
 * again from the root).  Returns when cb returns false or the range ends.
 */
export async function btreeIterate(
  store: BlockStore, root: BtreeRoot, start: Key, end: Key, cb: (item: BtreeItem) => boolean | void,
): Promise<number> {
  let n = 0;
  for await (const batch of leafBatches(store, root, start, end)) {
    for (const it of batch) {
      n++;
      if (cb(it) === false) return n;
    }
  }
  return n;
}

/** Async generator form of btreeIterate. */
export async function* btreeRange(store: BlockStore, root: BtreeRoot, start: Key, end: Key): AsyncGenerator<BtreeItem> {
  for await (const batch of leafBatches(store, root, start, end)) yield* batch;
}

async function* leafBatches(store: BlockStore, root: BtreeRoot, start: Key, end: Key): AsyncGenerator<BtreeItem[]> {
  const eb = encodeKey(end);
  let kb = encodeKey(start);
  if (compareKeyBytes(kb, 0, eb, 0) > 0) return;
  for (;;) {
    const bounds: Bounds = { lo: null, hi: null };
    const leaf = await readToLeaf(store, root, kb, bounds);
    if (leaf === null) return;
    const items: BtreeItem[] = [];
    let done = false;
    for (let off = avlLowerBound(leaf, kb, 0), steps = 0; off !== 0; off = avlNext(leaf, off), steps++) {
      if (steps > nrItems(leaf)) throw corrupt(leaf, 'structure', 'avl walk longer than nr_items');
      if (compareKeyBytes(leaf, off + I_KEY, eb, 0) > 0) {
        done = true;
        break;
      }
      items.push(decodeItem(leaf, off));
    }
    if (items.length > 0) yield items;
    if (done || bounds.hi === null || isOnes(bounds.hi) || compareKeyBytes(bounds.hi, 0, eb, 0) >= 0) return;
    kb = encodeKey(keyInc(readKey(bounds.hi, 0)));
  }
}

/**
 * Run a reader against a root that another writer may commit over.  An
 * ESTALE from the store means a block was freed and reused since the root
 * was read: re-read the root and retry.  ESTALE again with the same root is
 * corruption (FORMAT.md 3.3).
 */
export async function withStaleRetry<T, R = BtreeRoot>(
  getRoot: () => R | Promise<R>,
  fn: (root: R) => Promise<T>,
  same: (a: R, b: R) => boolean = sameRoot as unknown as (a: R, b: R) => boolean,
): Promise<T> {
  let root = await getRoot();
  for (;;) {
    try {
      return await fn(root);
    } catch (e) {
      if (!(e instanceof FsError) || e.code !== 'ESTALE') throw e;
      const next = await getRoot();
      if (same(next, root)) {
        throw new CorruptionError('btree', null, 'seq', `stale block read with an unchanged root: ${e.message}`);
      }
      btreeCounters.staleRetries++;
      root = next;
    }
  }
}

/* ---- copy on write and restructuring ------------------------------------ */

interface Cowed {
  b: Uint8Array;
  ref: BlockRef;
  copied: boolean;
}

/**
 * Make the block a ref names writable: dirty blocks are returned as they
 * are; committed ones are copied into a new block (new blkno, new random
 * seq), adopted (verified, AVL rebuilt) and the old ref freed.  The caller
 * stores the returned ref where the old one was.
 */
export async function cow(store: BlockStore, ref: BlockRef, level: number): Promise<Cowed> {
  const src = await readBlock(store, ref, level);
  if (store.isDirty(ref.blkno)) return { b: src, ref, copied: false };
  const { ref: nref, b } = await store.alloc('btree');
  b.set(src.subarray(B_PAYLOAD), B_PAYLOAD);
  try {
    adoptBlock(b, level);
  } catch (e) {
    store.free(nref);
    throw e;
  }
  store.free(ref);
  btreeCounters.cowCopies++;
  return { b, ref: nref, copied: true };
}

/** cow() without a promise for a block that is cached and already dirty; else undefined. */
function dirtyCached(store: BlockStore, ref: BlockRef, level: number): Cowed | undefined {
  if (store.readCached === undefined || !store.isDirty(ref.blkno)) return undefined;
  const b = store.readCached(ref, 'btree');
  if (b === undefined) return undefined;
  if (blockLevel(b) !== level) throw corrupt(b, 'level', `block level ${blockLevel(b)}, expected ${level}`);
  return { b, ref, copied: false };
}

/**
 * Make room in b for an item with a valLen value (parents: for a child
 * ref).  Returns true when the tree changed shape (restart the walk).
 */
async function trySplit(
  store: BlockStore, root: BtreeRoot, parent: Uint8Array | null, b: Uint8Array, ref: BlockRef, valLen: number,
): Promise<boolean> {
  const level = blockLevel(b);
  const vlen = level > 0 ? PARENT_VAL_LEN : valLen;
  if (hasRoom(b, vlen)) return false;
  if (fullPct(b) < 80) {
    compactValues(b);
    btreeCounters.compactions++;
    assert(hasRoom(b, vlen), 'btree: compaction below 80% full left no room');
    return false;
  }
  // Allocate everything first: an ENOSPC must leave the tree untouched.
  const left = await store.alloc('btree');
  let par = parent;
  if (par === null) {
    assert(root.height < BTREE_MAX_HEIGHT, 'btree: tree would exceed the maximum height');
    let top: { ref: BlockRef; b: Uint8Array };
    try {
      top = await store.alloc('btree');
    } catch (e) {
      store.free(left.ref);
      throw e;
    }
    initBlock(top.b, level + 1);
    insertItemRaw(top.b, ONES_KEY_BYTES, 0, ZERO_SEQ_BYTES, 0, 0, refBytes(ref), 0, PARENT_VAL_LEN);
    root.ref = top.ref;
    root.height++;
    par = top.b;
    btreeCounters.rootSplits++;
  }
  initBlock(left.b, level);
  moveItems(left.b, b, false, totalItemBytes(b) >>> 1);
  assert(nrItems(left.b) > 0 && nrItems(b) > 0, 'btree: split left an empty block');
  insertItemRaw(par, left.b, avlLast(left.b) + I_KEY, ZERO_SEQ_BYTES, 0, 0, refBytes(left.ref), 0, PARENT_VAL_LEN);
  btreeCounters.splits++;
  if (btreeInvariants.enabled) {
    assertBlockOk(left.b, 'split left');
    assertBlockOk(b, 'split right');
    assertBlockOk(par, 'split parent');
  }
  return true;
}

/**
 * Refill b (a non-root block, item pOff in parent) from a sibling if it is
 * below the low water mark.  Returns true when the tree changed (restart).
 */
async function tryJoin(store: BlockStore, parent: Uint8Array, pOff: number, b: Uint8Array, bRef: BlockRef): Promise<boolean> {
  if (totalItemBytes(b) >= LOW_WATER) return false;
  assert(nrItems(parent) >= 2, 'btree: join below a parent with a single item');
  let sibOff = avlPrev(parent, pOff);
  const sibIsLeft = sibOff !== 0;
  if (!sibIsLeft) sibOff = avlNext(parent, pOff);
  assert(sibOff !== 0);
  const level = blockLevel(b);
  const sibRef = parentItemRef(parent, sibOff);
  const sib = await cow(store, sibRef, level);
  if (sib.copied) writeRef(parent, itemValOff(parent, sibOff), sib.ref);
  const sibTotal = totalItemBytes(sib.b);
  const whole = sibTotal <= 2 * LOW_WATER;
  const toMove = whole ? sibTotal : LOW_WATER;
  // moveItems rebuilds b compactly, so only the live bytes must fit.
  const need = whole ? toMove : toMove + MAX_ITEM_BYTES;
  assert(totalItemBytes(b) + need <= areaOf(level), 'btree: no room to join');
  moveItems(b, sib.b, sibIsLeft, toMove);
  if (nrItems(sib.b) === 0) {
    if (sibIsLeft) {
      deleteItem(parent, sibOff);
    } else {
      // b takes over the right sibling's parent item (and so its key).
      writeRef(parent, itemValOff(parent, sibOff), bRef);
      deleteItem(parent, pOff);
    }
    store.free(sib.ref);
    btreeCounters.joinsWhole++;
  } else if (sibIsLeft) {
    setParentItemKey(parent, sibOff, sib.b, avlLast(sib.b) + I_KEY);
  } else {
    setParentItemKey(parent, pOff, b, avlLast(b) + I_KEY);
  }
  btreeCounters.joins++;
  if (btreeInvariants.enabled) {
    assertBlockOk(b, 'join');
    if (nrItems(sib.b) > 0) assertBlockOk(sib.b, 'join sibling');
    assertBlockOk(parent, 'join parent');
  }
  return true;
}

/** Replace a root parent holding a single item by its child, repeatedly. */
async function collapseRoot(store: BlockStore, root: BtreeRoot): Promise<boolean> {
  let did = false;
  while (root.height > 1) {
    const b = await readBlock(store, root.ref, root.height - 1);
    const nr = nrItems(b);
    if (nr === 0) throw corrupt(b, 'structure', 'empty parent block');
    if (nr !== 1) break;
    const child = parentItemRef(b, itemOffAt(0));
    store.free(root.ref);
    root.ref = child;
    root.height--;
    btreeCounters.collapses++;
    did = true;
  }
  return did;
}

/** Where a dirtying walk ended: a dirty leaf and what bounds it. */
export interface DirtyPath {
  leaf: Uint8Array;
  leafRef: BlockRef;
  /** Inclusive upper bound of the leaf's keys (its parent item key); null for a root leaf. */
  hi: Uint8Array | null;
  /** The leaf's parent (dirty) and the leaf's item in it; null for a root leaf. */
  parent: Uint8Array | null;
  parentOff: number;
}

export const NO_SPLIT = -1;

/**
 * Walk from the root to the leaf covering kb, making every block on the way
 * dirty.  splitValLen >= 0 makes room for an item with that value length
 * (trySplit on every level); join refills under-full blocks (tryJoin) and
 * collapses a single-item root.  create makes an empty tree a one-leaf tree.
 * Returns null for an empty tree when !create.
 */
export async function dirtyWalk(
  store: BlockStore, root: BtreeRoot, kb: Uint8Array, splitValLen: number, join: boolean, create: boolean,
): Promise<DirtyPath | null> {
  restart: for (let restarts = 0; ; restarts++) {
    assert(restarts < 100, 'btree: walk restarted 100 times');
    if (restarts > 0) btreeCounters.restarts++;
    checkRoot(root);
    if (root.height === 0) {
      if (!create) return null;
      const { ref, b } = await store.alloc('btree');
      initBlock(b, 0);
      root.ref = ref;
      root.height = 1;
    }
    if (join && root.height > 1 && (await collapseRoot(store, root))) continue restart;
    let level = root.height - 1;
    const top = dirtyCached(store, root.ref, level) ?? (await cow(store, root.ref, level));
    root.ref = top.ref;
    let b = top.b;
    let ref = top.ref;
    let parent: Uint8Array | null = null;
    let pOff = 0;
    let hi: Uint8Array | null = null;
    for (;;) {
      // Cheap checks first: the common case takes no promise.
      if (splitValLen >= 0 && !hasRoom(b, level > 0 ? PARENT_VAL_LEN : splitValLen)) {
        if (await trySplit(store, root, parent, b, ref, splitValLen)) continue restart;
      }
      if (join && parent !== null && totalItemBytes(b) < LOW_WATER) {
        if (await tryJoin(store, parent, pOff, b, ref)) continue restart;
      }
      if (level === 0) return { leaf: b, leafRef: ref, hi, parent, parentOff: pOff };
      const c = avlLowerBound(b, kb, 0);
      if (c === 0) throw corrupt(b, 'structure', 'key beyond the last parent item');
      hi = b.slice(c + I_KEY, c + I_KEY + 32);
      const childRef = parentItemRef(b, c);
      level--;
      const child = dirtyCached(store, childRef, level) ?? (await cow(store, childRef, level));
      if (child.copied) writeRef(b, itemValOff(b, c), child.ref);
      parent = b;
      pOff = c;
      b = child.b;
      ref = child.ref;
    }
  }
}

/* ---- writing ------------------------------------------------------------ */

type WriteMode = 'insert' | 'update' | 'force';

async function writeItem(
  store: BlockStore, root: BtreeRoot, key: Key, val: Uint8Array, opts: ItemOpts | undefined, mode: WriteMode,
): Promise<boolean> {
  assert(val.length <= BTREE_MAX_VAL_LEN, `btree value of ${val.length} bytes > ${BTREE_MAX_VAL_LEN}`);
  const seq = opts?.seq ?? 0n;
  const flags = opts?.flags ?? 0;
  const kb = encodeKey(key);
  const path = await dirtyWalk(store, root, kb, val.length, false, mode !== 'update');
  if (path === null) throw new FsError('ENOENT');
  const leaf = path.leaf;
  const off = leafHashLookup(leaf, kb, 0);
  let created: boolean;
  if (off !== 0) {
    if (mode === 'insert') throw new FsError('EEXIST');
    setItemValue(leaf, off, val, 0, val.length);
    setItemSeqFlags(leaf, off, seq, flags);
    created = false;
  } else {
    if (mode === 'update') throw new FsError('ENOENT');
    insertItemRaw(leaf, kb, 0, seqBytes(seq), 0, flags, val, 0, val.length);
    created = true;
  }
  if (btreeInvariants.enabled) assertBlockOk(leaf, `btree ${mode}`);
  return created;
}

/** Insert a new item; FsError('EEXIST') if the key is present. */
export async function btreeInsert(store: BlockStore, root: BtreeRoot, key: Key, val: Uint8Array, opts?: ItemOpts): Promise<void> {
  await writeItem(store, root, key, val, opts, 'insert');
}

/** Replace an existing item's value, seq and flags; FsError('ENOENT') if absent. */
export async function btreeUpdate(store: BlockStore, root: BtreeRoot, key: Key, val: Uint8Array, opts?: ItemOpts): Promise<void> {
  await writeItem(store, root, key, val, opts, 'update');
}

/** Insert or replace; returns true when the item was created. */
export async function btreeForce(store: BlockStore, root: BtreeRoot, key: Key, val: Uint8Array, opts?: ItemOpts): Promise<boolean> {
  return writeItem(store, root, key, val, opts, 'force');
}

/** Delete the item with key bytes kb if present; returns whether it was. */
export async function deleteKeyBytes(store: BlockStore, root: BtreeRoot, kb: Uint8Array): Promise<boolean> {
  const path = await dirtyWalk(store, root, kb, NO_SPLIT, true, false);
  if (path === null) return false;
  const off = leafHashLookup(path.leaf, kb, 0);
  if (off === 0) return false;
  deleteItem(path.leaf, off);
  if (nrItems(path.leaf) === 0) {
    assert.equal(root.height, 1, 'btree: a non-root leaf was emptied');
    store.free(path.leafRef);
    root.ref = { ...ZERO_REF };
    root.height = 0;
  } else if (btreeInvariants.enabled) {
    assertBlockOk(path.leaf, 'btree delete');
  }
  return true;
}

/** Delete an item; FsError('ENOENT') if absent. */
export async function btreeDelete(store: BlockStore, root: BtreeRoot, key: Key): Promise<void> {
  if (!(await deleteKeyBytes(store, root, encodeKey(key)))) throw new FsError('ENOENT');
}

/*
 * Bulk merge of a sorted item stream into a btree (log tree merge into
 * fs_root, a transaction's dirty items into its log tree, bulk loads).
 *
 * The input is strictly increasing by key.  Each item either sets its key
 * (insert or replace: value, seq, flags) or, with the DELETION flag and
 * deletions 'apply' (the default), removes the key if present.  With
 * deletions 'store' deletion items are stored like any other item (log
 * trees keep them).  The result is exactly what one btreeForce /
 * delete-if-present per item, in order, would give; only the shape differs.
 *
 * The merge works one leaf at a time.  A dirtying walk (split and join
 * enabled, so the leaf has room for one maximal item and is not under-full)
 * reaches the leaf covering the next input key; its parent item key bounds
 * which input items belong to it.  Then, by how many input items go there:
 *
 *  - few (< 1/4 of the leaf's items): incremental, item by item with the
 *    in-block insert/update/delete, compacting when needed and stopping at
 *    the first item that does not fit (the next walk splits the leaf).
 *  - many: rebuild.  The leaf's items and the input are merged into a fresh
 *    image built directly from the sorted stream (appendSorted: values
 *    packed, hash filled in order, AVL built balanced at the end), and when
 *    the merged content would exceed the fill target (7/8 of a leaf) new
 *    LEFT siblings are emitted whole, each with a parent item keyed by its
 *    last key, as long as the parent has room.  Old items always fit: input
 *    is only consumed while (built + input item + old items left) fits one
 *    leaf.  The original leaf is overwritten last, with the final part.
 *
 *      old leaf:   a c e g            input: b d f h i j k (all <= hi)
 *      emitted:   [a b c d e]  [f g h i]      original leaf: [j k]
 *
 * A leaf may not become empty unless it is the root leaf (then the tree
 * becomes empty): when deletions would empty a non-root leaf, its last
 * deleted item is kept and that one deletion is pushed back into the input;
 * the next walk for it joins the one-item leaf with a sibling.  A leaf that
 * deletions left under the low water mark is walked to once more with
 * joining on, so mass deletions do not leave a trail of tiny leaves (a
 * delete walk joins before deleting; the merge deletes first).
 *
 * ENOSPC: allocations are cow/split/join in the walk (which leave the tree
 * consistent, see btree.ts) and the emitted siblings; if an emission fails,
 * the siblings emitted for this leaf are unlinked and freed and the original
 * leaf was not yet written, so the tree holds a prefix of the merge.
 *
 * Rejected: building all new leaves bottom-up and splicing whole subtrees
 * (what a log merge into an empty range could do): it needs a second code
 * path for parents and does not help the common case of merging a small log
 * into a large fs_root, which this does leaf by leaf.
 */
import assert from 'node:assert/strict';
import type { BlockRef } from '../format/block.js';
import { BTREE_JOIN_LOW_WATER } from '../format/btree.js';
import { writeRef } from '../format/block.js';
import { BTREE_MAX_VAL_LEN, LG_BLOCK_SIZE } from '../format/constants.js';
import { compareKeyBytes, writeKey, type Key } from '../format/key.js';
import { avlInOrder, avlFind, avlFirst } from './avl.js';
import { dirtyWalk, deleteKeyBytes, btreeInvariants, btreeCounters, NO_SPLIT, type DirtyPath } from './btree.js';
import {
  initBlock, appendSortedRaw, finishSorted, insertItemRaw, deleteItem, setItemValue, setItemSeqFlags, hasRoom,
  hasValueRoom, fullPct, compactValues, itemBytes, itemValLen, itemValOff, itemFlags, itemOffAt, writeSeq, copyBytes,
  nrItems, totalItemBytes, assertBlockOk, I_KEY, I_SEQ, B_PAYLOAD, LEAF_AREA, PARENT_VAL_LEN, ITEM_FLAG_DELETION,
  ZERO_SEQ_BYTES,
} from './inblock.js';
import { leafHashLookup } from './leafhash.js';
import { ZERO_REF } from '../format/block.js';
import type { BlockStore, BtreeRoot } from './store.js';

export interface MergeItem {
  key: Key;
  val: Uint8Array;
  seq?: bigint;
  flags?: number;
}

export interface MergeOptions {
  /** 'apply' (default): a DELETION item removes its key.  'store': stored like any item. */
  deletions?: 'apply' | 'store';
}

export interface MergeStats {
  items: number;
  inserted: number;
  replaced: number;
  deleted: number;
  leavesRebuilt: number;
  leavesIncremental: number;
  leavesEmitted: number;
  pushbacks: number;
  /** Leaves left under the low water mark and joined right away. */
  rejoins: number;
}

/** Emitted siblings are filled to 7/8 of a leaf, leaving room for later inserts. */
export const MERGE_EMIT_FILL = Math.floor((LEAF_AREA * 7) / 8);
/** Never emit a sibling smaller than this (it would be joined right back). */
const MERGE_MIN_EMIT = LEAF_AREA >>> 2;
const CHUNK = 4096;

/**
 * One buffered input item.  Keys and seqs live encoded in the input's chunk
 * buffers (kb[ko..ko+32), sb[so..so+8)): no allocation per item.  Entries
 * and buffers are reused on the next fill(), so an entry is only valid
 * until the buffer is refilled (the merge never holds one across a fill).
 */
interface Entry {
  kb: Uint8Array;
  ko: number;
  sb: Uint8Array;
  so: number;
  val: Uint8Array;
  seq: bigint;
  flags: number;
  del: boolean;
}

/** Sorted input with a buffered look-ahead, over a sync or async iterable. */
class MergeInput {
  private readonly keys = new Uint8Array(CHUNK * 32);
  private readonly seqs = new Uint8Array(CHUNK * 8);
  private readonly pool: Entry[] = [];
  private buf: Entry[] = [];
  private pos = 0;
  private done = false;
  private readonly last = new Uint8Array(32);
  private haveLast = false;
  private readonly syncIt: Iterator<MergeItem> | null;
  private readonly asyncIt: AsyncIterator<MergeItem> | null;

  constructor(src: Iterable<MergeItem> | AsyncIterable<MergeItem>, private readonly applyDeletions: boolean) {
    if (Symbol.asyncIterator in src) {
      this.asyncIt = (src as AsyncIterable<MergeItem>)[Symbol.asyncIterator]();
      this.syncIt = null;
    } else {
      this.syncIt = (src as Iterable<MergeItem>)[Symbol.iterator]();
      this.asyncIt = null;
    }
    for (let i = 0; i < CHUNK; i++) {
      this.pool.push({ kb: this.keys, ko: i * 32, sb: this.seqs, so: i * 8, val: this.seqs, seq: 0n, flags: 0, del: false });
    }
  }

  private load(i: number, it: MergeItem): Entry {
    assert(it.val.length <= BTREE_MAX_VAL_LEN, `merge value of ${it.val.length} bytes`);
    const e = this.pool[i]!;
    writeKey(this.keys, e.ko, it.key);
    if (this.haveLast) assert(compareKeyBytes(this.last, 0, this.keys, e.ko) < 0, 'merge input keys must be strictly increasing');
    copyBytes(this.last, 0, this.keys, e.ko, 32);
    this.haveLast = true;
    e.seq = it.seq ?? 0n;
    writeSeq(this.seqs, e.so, e.seq);
    e.val = it.val;
    e.flags = it.flags ?? 0;
    e.del = this.applyDeletions && (e.flags & ITEM_FLAG_DELETION) !== 0;
    return e;
  }

  /** Refill the buffer if it is exhausted. */
  async fill(): Promise<void> {
    if (this.pos < this.buf.length || this.done) return;
    this.buf.length = 0;
    this.pos = 0;
    while (this.buf.length < CHUNK) {
      const r = this.syncIt !== null ? this.syncIt.next() : await this.asyncIt!.next();
      if (r.done) {
        this.done = true;
        break;
      }
      this.buf.push(this.load(this.buf.length, r.value));
    }
  }

  /** Next buffered entry, or null when the buffer is exhausted (call fill()). */
  peek(): Entry | null {
    return this.pos < this.buf.length ? this.buf[this.pos]! : null;
  }

  take(): Entry {
    assert(this.pos < this.buf.length);
    return this.buf[this.pos++]!;
  }

  /** Put an entry taken from the current buffer back in front (its key precedes everything left). */
  unshift(e: Entry): void {
    assert(this.pos > 0, 'merge: unshift without a taken entry');
    this.buf[--this.pos] = e;
  }

  /** Buffered entries with key <= hi (null: unbounded), counting up to limit. */
  countUpTo(hi: Uint8Array | null, limit: number): number {
    let n = 0;
    for (let i = this.pos; i < this.buf.length && n < limit; i++, n++) {
      const e = this.buf[i]!;
      if (hi !== null && compareKeyBytes(e.kb, e.ko, hi, 0) > 0) break;
    }
    return n;
  }
}

const inBound = (e: Entry, hi: Uint8Array | null): boolean => hi === null || compareKeyBytes(e.kb, e.ko, hi, 0) <= 0;

function emptyTree(store: BlockStore, root: BtreeRoot, leafRef: BlockRef): void {
  assert.equal(root.height, 1);
  store.free(leafRef);
  root.ref = { ...ZERO_REF };
  root.height = 0;
}

/**
 * Merge a sorted stream into the tree; see the top of this file.  Returns
 * counts of what happened.
 */
export async function btreeMerge(
  store: BlockStore, root: BtreeRoot, src: Iterable<MergeItem> | AsyncIterable<MergeItem>, opts: MergeOptions = {},
): Promise<MergeStats> {
  const input = new MergeInput(src, (opts.deletions ?? 'apply') === 'apply');
  const stats: MergeStats = {
    items: 0, inserted: 0, replaced: 0, deleted: 0, leavesRebuilt: 0, leavesIncremental: 0, leavesEmitted: 0, pushbacks: 0, rejoins: 0,
  };
  const scratch = new Uint8Array(LG_BLOCK_SIZE);
  for (;;) {
    await input.fill();
    const first = input.peek();
    if (first === null) break;
    if (root.height === 0 && first.del) {
      input.take();
      stats.items++;
      continue;
    }
    const path = await dirtyWalk(store, root, first.kb.slice(first.ko, first.ko + 32), BTREE_MAX_VAL_LEN, true, true);
    assert(path !== null);
    const nr = nrItems(path.leaf);
    const limit = Math.max(8, nr >>> 2);
    const alive =
      nr === 0 || input.countUpTo(path.hi, limit) >= limit
        ? await rebuildLeaf(store, root, path, input, stats, scratch)
        : await incrementalLeaf(store, root, path, input, stats);
    // Deletions drained the leaf: walk to it again so it joins a neighbour
    // now (a plain delete walk would have joined it before deleting).
    if (alive && root.height > 1 && nrItems(path.leaf) > 0 && totalItemBytes(path.leaf) < BTREE_JOIN_LOW_WATER) {
      const first = avlFirst(path.leaf);
      await dirtyWalk(store, root, path.leaf.slice(first + I_KEY, first + I_KEY + 32), NO_SPLIT, true, false);
      stats.rejoins++;
    }
  }
  return stats;
}

/**
 * Apply the buffered input that belongs to this leaf item by item.  Returns
 * false if the leaf may no longer be in the tree.
 */
async function incrementalLeaf(store: BlockStore, root: BtreeRoot, path: DirtyPath, input: MergeInput, stats: MergeStats): Promise<boolean> {
  const leaf = path.leaf;
  stats.leavesIncremental++;
  for (let e = input.peek(); e !== null && inBound(e, path.hi); e = input.peek()) {
    const off = leafHashLookup(leaf, e.kb, e.ko);
    if (e.del) {
      if (off !== 0) {
        if (nrItems(leaf) === 1 && root.height > 1) {
          // Emptying a non-root leaf: a delete walk joins it first.
          input.take();
          stats.items++;
          assert(await deleteKeyBytes(store, root, e.kb.slice(e.ko, e.ko + 32)));
          stats.deleted++;
          return false;
        }
        deleteItem(leaf, off);
        stats.deleted++;
        if (nrItems(leaf) === 0) {
          input.take();
          stats.items++;
          emptyTree(store, root, path.leafRef);
          return false;
        }
      }
      input.take();
      stats.items++;
      continue;
    }
    const vlen = e.val.length;
    const fits = (): boolean => (off !== 0 ? hasValueRoom(leaf, off, vlen) : hasRoom(leaf, vlen));
    if (!fits() && fullPct(leaf) < 80) compactValues(leaf);
    if (!fits()) break;
    if (off !== 0) {
      setItemValue(leaf, off, e.val, 0, vlen);
      setItemSeqFlags(leaf, off, e.seq, e.flags);
      stats.replaced++;
    } else {
      insertItemRaw(leaf, e.kb, e.ko, e.sb, e.so, e.flags, e.val, 0, vlen);
      stats.inserted++;
    }
    input.take();
    stats.items++;
  }
  if (btreeInvariants.enabled) assertBlockOk(leaf, 'merge incremental');
  return true;
}

/**
 * Rebuild this leaf (and emit left siblings) from its items merged with the
 * input.  Returns false if the tree became empty.
 */
async function rebuildLeaf(
  store: BlockStore, root: BtreeRoot, path: DirtyPath, input: MergeInput, stats: MergeStats, cur: Uint8Array,
): Promise<boolean> {
  const { leaf, parent, hi } = path;
  const olds = avlInOrder(leaf);
  let oi = 0;
  let oldRem = totalItemBytes(leaf);
  initBlock(cur, 0);
  const emitted: { ref: BlockRef; lastKey: Uint8Array }[] = [];
  const local = { items: 0, inserted: 0, replaced: 0, deleted: 0 };
  let lastDeleted: { off: number; e: Entry } | null = null;
  let inputStopped = false;

  const appendOld = (o: number): void => {
    const vlen = itemValLen(leaf, o);
    appendSortedRaw(cur, leaf, o + I_KEY, leaf, o + I_SEQ, itemFlags(leaf, o), leaf, itemValOff(leaf, o), vlen);
    oldRem -= itemBytes(vlen);
  };

  const parentHasRoom = (): boolean => {
    if (parent === null) return false;
    if (hasRoom(parent, PARENT_VAL_LEN)) return true;
    if (fullPct(parent) < 80) compactValues(parent);
    return hasRoom(parent, PARENT_VAL_LEN);
  };

  /** Write the built image as a new left sibling of the leaf. */
  const emit = async (): Promise<void> => {
    assert(parent !== null);
    const nb = await store.alloc('btree');
    finishSorted(cur);
    nb.b.set(cur.subarray(B_PAYLOAD), B_PAYLOAD);
    const last = itemOffAt(nrItems(nb.b) - 1);
    const lastKey = nb.b.slice(last + I_KEY, last + I_KEY + 32);
    const refVal = new Uint8Array(PARENT_VAL_LEN);
    writeRef(refVal, 0, nb.ref);
    insertItemRaw(parent, lastKey, 0, ZERO_SEQ_BYTES, 0, 0, refVal, 0, PARENT_VAL_LEN);
    emitted.push({ ref: nb.ref, lastKey });
    if (btreeInvariants.enabled) assertBlockOk(nb.b, 'merge emitted leaf');
    initBlock(cur, 0);
  };

  try {
    for (;;) {
      const o = oi < olds.length ? olds[oi]! : 0;
      let e = inputStopped ? null : input.peek();
      if (e !== null && !inBound(e, hi)) e = null;
      if (o === 0 && e === null) break;
      const c = o === 0 ? 1 : e === null ? -1 : compareKeyBytes(leaf, o + I_KEY, e.kb, e.ko);
      if (c < 0) {
        appendOld(o);
        oi++;
        continue;
      }
      const ent = e!;
      const oldBytes = c === 0 ? itemBytes(itemValLen(leaf, o)) : 0;
      if (ent.del) {
        if (c === 0) {
          oldRem -= oldBytes;
          oi++;
          local.deleted++;
          lastDeleted = { off: o, e: ent };
        }
        input.take();
        local.items++;
        continue;
      }
      const need = itemBytes(ent.val.length);
      const built = totalItemBytes(cur);
      if (built + need + oldRem - oldBytes > MERGE_EMIT_FILL && built >= MERGE_MIN_EMIT && parentHasRoom()) {
        await emit();
      }
      if (totalItemBytes(cur) + need + oldRem - oldBytes > LEAF_AREA) {
        inputStopped = true;
        continue;
      }
      appendSortedRaw(cur, ent.kb, ent.ko, ent.sb, ent.so, ent.flags, ent.val, 0, ent.val.length);
      if (c === 0) {
        oldRem -= oldBytes;
        oi++;
        local.replaced++;
      } else {
        local.inserted++;
      }
      input.take();
      local.items++;
    }
  } catch (err) {
    // Only emit() allocates: unlink what this leaf emitted; the leaf itself is untouched.
    assert(parent !== null || emitted.length === 0);
    for (const em of emitted.reverse()) {
      const off = avlFind(parent!, em.lastKey, 0);
      assert(off !== 0);
      deleteItem(parent!, off);
      store.free(em.ref);
      btreeCounters.mergeRollbacks++;
    }
    throw err;
  }
  assert.equal(oldRem, 0, 'merge: old items left over');

  let alive = true;
  if (nrItems(cur) === 0) {
    assert.equal(emitted.length, 0);
    if (root.height === 1) {
      emptyTree(store, root, path.leafRef);
      alive = false;
    } else {
      // Keep the last deleted item and hand its deletion back to the input.
      assert(lastDeleted !== null);
      const o = lastDeleted.off;
      appendSortedRaw(cur, leaf, o + I_KEY, leaf, o + I_SEQ, itemFlags(leaf, o), leaf, itemValOff(leaf, o), itemValLen(leaf, o));
      input.unshift(lastDeleted.e);
      local.deleted--;
      local.items--;
      stats.pushbacks++;
    }
  }
  if (nrItems(cur) > 0) {
    finishSorted(cur);
    leaf.set(cur.subarray(B_PAYLOAD), B_PAYLOAD);
    if (btreeInvariants.enabled) {
      assertBlockOk(leaf, 'merge rebuilt leaf');
      if (parent !== null) assertBlockOk(parent, 'merge parent');
    }
  }
  stats.items += local.items;
  stats.inserted += local.inserted;
  stats.replaced += local.replaced;
  stats.deleted += local.deleted;
  stats.leavesRebuilt++;
  stats.leavesEmitted += emitted.length;
  return alive;
}

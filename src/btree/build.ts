/*
 * Bulk build: a new btree from a sorted item stream, with the leaves filled
 * by worker threads (issue 3 s4).
 *
 *   main thread                               workers (piscina)
 *   -----------                               -----------------
 *   pack the items into a SharedArrayBuffer
 *   partition them into leaves (exact, by
 *     item bytes, 7/8 fill like merge.ts)
 *   reserve one dirty block per leaf from
 *     the store (allocator state stays here)
 *   dispatch contiguous runs of leaves  --->  fillLeaves(): initBlock +
 *                                             appendSortedRaw per item +
 *                                             finishSorted, writing straight
 *                                             into the reserved cache slots
 *   build the parent levels (few blocks) <--- done
 *   return the root
 *
 * The worker allocates nothing and decides nothing: the partition and the
 * blknos are fixed before dispatch, so the result is the same whether the
 * jobs run on threads, inline, or in any interleaving.  Blocks reach the
 * worker through the block cache's SharedArrayBuffer (a reserved dirty
 * slot is pinned until written, so it cannot move); stores whose images are
 * not shared memory (MemBlockStore) run the same function on the calling
 * thread.
 *
 * The result has exactly the items given (deletion items are stored as
 * items: this builds log trees and fresh trees, merging into an existing
 * tree is btreeMerge()).  ENOSPC while reserving frees what was reserved
 * and leaves nothing behind.
 */
import assert from 'node:assert/strict';
import type { BlockRef } from '../format/block.js';
import { writeRef } from '../format/block.js';
import { BTREE_MAX_VAL_LEN, LG_BLOCK_SIZE } from '../format/constants.js';
import { compareKeyBytes, writeKey, type Key } from '../format/key.js';
import type { WorkerPool } from '../runtime/workerpool.js';
import type { BlockStore, BtreeRoot } from './store.js';
import { initBlock, appendSortedRaw, finishSorted, itemBytes, LEAF_AREA, PARENT_AREA, PARENT_VAL_LEN } from './inblock.js';
import { ONES_KEY_BYTES } from './btree.js';

/** Leaves are filled to this many item bytes, like the merge's emitted leaves. */
export const BUILD_FILL = Math.floor((LEAF_AREA * 7) / 8);

export interface BuildItem {
  key: Key;
  seq: bigint;
  flags?: number;
  val: Uint8Array;
}

/*
 * Packed item records, 8-aligned:  key 32 | seq 8 | flags 1 | pad 1 | val_len 2 | pad 4 | value
 */
const R_KEY = 0;
const R_SEQ = 32;
const R_FLAGS = 40;
const R_VLEN = 42;
const R_VAL = 48;

export interface PackedItems {
  buf: SharedArrayBuffer;
  /** Byte offset of each record. */
  offs: Int32Array;
  /** Item bytes (56 + round8(val_len)) of each record. */
  sizes: Int32Array;
}

export function packItems(items: readonly BuildItem[]): PackedItems {
  let total = 0;
  for (const it of items) {
    assert(it.val.length <= BTREE_MAX_VAL_LEN, `value of ${it.val.length} bytes`);
    total += R_VAL + ((it.val.length + 7) & ~7);
  }
  const buf = new SharedArrayBuffer(Math.max(total, 8));
  const b = new Uint8Array(buf);
  const offsSab = new SharedArrayBuffer(Math.max(items.length, 1) * 4);
  const offs = new Int32Array(offsSab, 0, items.length);
  const sizes = new Int32Array(items.length);
  let p = 0;
  items.forEach((it, i) => {
    writeKey(b, p + R_KEY, it.key);
    if (i > 0) assert(compareKeyBytes(b, offs[i - 1]! + R_KEY, b, p + R_KEY) < 0, 'build items must be strictly increasing');
    new DataView(buf, p + R_SEQ, 8).setBigUint64(0, it.seq, true);
    b[p + R_FLAGS] = it.flags ?? 0;
    b[p + R_VLEN] = it.val.length & 0xff;
    b[p + R_VLEN + 1] = it.val.length >>> 8;
    b.set(it.val, p + R_VAL);
    offs[i] = p;
    sizes[i] = itemBytes(it.val.length);
    p += R_VAL + ((it.val.length + 7) & ~7);
  });
  return { buf, offs, sizes };
}

/** One leaf to fill: the block image's place in shared memory and its item range. */
export interface LeafJob {
  byteOffset: number;
  start: number;
  end: number;
}

export interface FillLeavesPayload {
  /** The memory holding the reserved block images (the block cache's SAB). */
  blocks: SharedArrayBuffer;
  items: SharedArrayBuffer;
  offs: Int32Array;
  leaves: LeafJob[];
}

/** The worker job: fill each reserved leaf with its items.  Pure. */
export function fillLeaves(p: FillLeavesPayload): number {
  const items = new Uint8Array(p.items);
  for (const leaf of p.leaves) {
    const b = new Uint8Array(p.blocks, leaf.byteOffset, LG_BLOCK_SIZE);
    initBlock(b, 0);
    for (let i = leaf.start; i < leaf.end; i++) {
      const o = p.offs[i]!;
      const vlen = items[o + R_VLEN]! | (items[o + R_VLEN + 1]! << 8);
      appendSortedRaw(b, items, o + R_KEY, items, o + R_SEQ, items[o + R_FLAGS]!, items, o + R_VAL, vlen);
    }
    finishSorted(b);
  }
  return p.leaves.length;
}

/** Partition items into leaves by item bytes. */
export function partitionLeaves(sizes: Int32Array, fill = BUILD_FILL): [number, number][] {
  const out: [number, number][] = [];
  let start = 0;
  let bytes = 0;
  for (let i = 0; i < sizes.length; i++) {
    if (bytes > 0 && bytes + sizes[i]! > fill) {
      out.push([start, i]);
      start = i;
      bytes = 0;
    }
    bytes += sizes[i]!;
  }
  if (sizes.length > 0) out.push([start, sizes.length]);
  return out;
}

export interface BuildOptions {
  /** Where leaves are filled; null/undefined fills them on this thread. */
  pool?: WorkerPool | null;
  /** Leaves per job (default: spread over 4 jobs per call, at least 16 leaves each). */
  leavesPerJob?: number;
}

export interface BuildStats {
  leaves: number;
  parents: number;
  jobs: number;
}

/**
 * Build a tree holding exactly `items` (strictly increasing keys).  Returns
 * its root; the blocks are dirty in `store`'s transaction.
 */
export async function btreeBuild(store: BlockStore, items: readonly BuildItem[], opts: BuildOptions = {}): Promise<{ root: BtreeRoot; stats: BuildStats }> {
  const stats: BuildStats = { leaves: 0, parents: 0, jobs: 0 };
  if (items.length === 0) return { root: { ref: { blkno: 0n, seq: 0n }, height: 0 }, stats };
  const packed = packItems(items);
  const parts = partitionLeaves(packed.sizes);

  // Reserve every leaf before dispatch: the allocator is ours alone.
  const leaves: { ref: BlockRef; b: Uint8Array }[] = [];
  try {
    for (let i = 0; i < parts.length; i++) leaves.push(await store.alloc('btree'));
  } catch (e) {
    for (const l of leaves) store.free(l.ref);
    throw e;
  }
  stats.leaves = leaves.length;

  const shared = leaves.every((l) => l.b.buffer instanceof SharedArrayBuffer && l.b.buffer === leaves[0]!.b.buffer);
  if (opts.pool && shared) {
    const per = opts.leavesPerJob ?? Math.max(16, Math.ceil(leaves.length / 4));
    const jobs: Promise<number>[] = [];
    for (let i = 0; i < leaves.length; i += per) {
      const chunk: LeafJob[] = [];
      for (let j = i; j < Math.min(i + per, leaves.length); j++) {
        chunk.push({ byteOffset: leaves[j]!.b.byteOffset, start: parts[j]![0], end: parts[j]![1] });
      }
      jobs.push(opts.pool.run<number>('buildLeaves', {
        blocks: leaves[0]!.b.buffer as SharedArrayBuffer, items: packed.buf, offs: packed.offs, leaves: chunk,
      }));
    }
    stats.jobs = jobs.length;
    await Promise.all(jobs);
  } else {
    // Not shared memory: the same pure function, one leaf image at a time.
    leaves.forEach((l, j) => {
      const tmp = new SharedArrayBuffer(LG_BLOCK_SIZE);
      const view = new Uint8Array(tmp);
      view.set(l.b);
      fillLeaves({ blocks: tmp, items: packed.buf, offs: packed.offs, leaves: [{ byteOffset: 0, start: parts[j]![0], end: parts[j]![1] }] });
      l.b.set(view);
    });
  }

  // Parent levels on this thread: each parent item is keyed by its child's
  // greatest key, the right spine by the all-ones key.
  const itemBytesBuf = new Uint8Array(packed.buf);
  let level = 0;
  let children: { ref: BlockRef; lastKey: Uint8Array }[] = leaves.map((l, j) => ({ ref: l.ref, lastKey: itemBytesBuf.subarray(packed.offs[parts[j]![1] - 1]!, packed.offs[parts[j]![1] - 1]! + 32) }));
  while (children.length > 1) {
    level++;
    const perParent = Math.max(2, Math.floor((PARENT_AREA * 7) / 8 / itemBytes(PARENT_VAL_LEN)));
    const next: typeof children = [];
    for (let i = 0; i < children.length; i += perParent) {
      const group = children.slice(i, i + perParent);
      const { ref, b } = await store.alloc('btree');
      stats.parents++;
      initBlock(b, level);
      const val = new Uint8Array(PARENT_VAL_LEN);
      const zeroSeq = new Uint8Array(8);
      group.forEach((c, gi) => {
        const last = i + gi === children.length - 1;
        writeRef(val, 0, c.ref);
        const k = last ? ONES_KEY_BYTES : c.lastKey;
        appendSortedRaw(b, k, 0, zeroSeq, 0, 0, val, 0, PARENT_VAL_LEN);
      });
      finishSorted(b);
      const lastChild = group[group.length - 1]!;
      next.push({ ref, lastKey: i + group.length === children.length ? ONES_KEY_BYTES : lastChild.lastKey });
    }
    children = next;
  }
  return { root: { ref: children[0]!.ref, height: level + 1 }, stats };
}

/*
 * The mount's log tree writer (PROTOCOL.md 4.2, 4.5 steps 2-5, 5.3, 8.2;
 * FORMAT.md 10): one ForestWriter per client transaction, from the lt a
 * GET_LOG_TREES returned to the COMMIT_LOG_TREES that carries it back.
 *
 *   GET lt --clone--> working lt --+--> MetaAllocator(meta_avail, meta_freed)
 *                                  +--> item_root   <- writeItem() at commit
 *                                  +--> bloom_ref   <- BloomWriter
 *                                  +--> srch_file   <- SrchLogWriter (holds)
 *                                  +--> max_item_seq, inode_count_delta
 *                     close() ---> commitLt(): the overlay sent in COMMIT
 *
 * What it owns.  The working copy of the lt: every head and root in it is
 * mutated in place by the allocator, the btree, the bloom and the srch
 * writers, so the copy IS the overlay of PROTOCOL.md 4.5 step 7 (allocator
 * heads, item_root, bloom_ref, srch_file, max_item_seq, inode_count_delta,
 * and data_avail and data_freed, which the filesystem's data allocations
 * and frees (src/fs) change through this writer's allocator and block
 * store).  get_trans_seq stays the one the GET returned.  The
 * allocator is opened over the working heads, so every block the
 * transaction allocates comes from the lt's meta_avail and every committed
 * block it replaces goes to its meta_freed (two-phase).
 *
 * Items (writeItem, at commit, in key order): a DELETION item is written
 * as a DELETION-flag item with an empty value; an xattr totl delta is
 * added to any non-deletion item of the same key already in this log tree
 * (FORMAT.md 8.5, a (0, 0) sum may remain); everything else replaces what
 * the log tree holds for the key.  The item's seq is kept and
 * max_item_seq raised to it, and the bloom bits of the item's lock start
 * key are set (first: then a failed item write leaves only bits that the
 * retry needs anyway).  The item write itself applies completely or not
 * at all (the btree allocates before it modifies), which lets the commit
 * worker retry a failed build without writing an item twice (a delta
 * would be counted twice).
 *
 * Batches (writeItems, what the commit worker uses).  A transaction's
 * dirty items arrive sorted, so they are merged into the log btree leaf by
 * leaf (src/btree/merge.ts, deletions stored) instead of one root-to-leaf
 * walk each: the result is what writeItem on each item, in order, gives.
 * Bloom bits go first for the whole batch.  A delta's sum with what the
 * log tree holds is computed once per item and remembered, so a batch
 * that failed part way (the tree then holds a prefix of it, each leaf
 * whole) can be written again as a whole: every item is then a replace by
 * the same key, value, seq and flags, and no delta counts twice.
 *
 * Life cycle.  open() reads the allocator's list blocks; the writer takes
 * items and srch entries until close(), after which the commit worker
 * writes the dirty blocks; any later use asserts.  A writer whose
 * transaction is abandoned (forced unmount) is closed and its dirty
 * blocks discarded by the owner of the block images.
 *
 * Threads: main thread.  Holders append srch entries and adjust the inode
 * count while they hold the transaction; the commit worker writes the
 * items after the holders drained.  Never both at once (the WRITER bit).
 */
import assert from 'node:assert/strict';
import { btreeForce, btreeLookup } from '../btree/btree.js';
import { btreeMerge, type MergeItem } from '../btree/merge.js';
import { MetaAllocator, type BlockImages } from '../alloc/meta.js';
import type { BlknoBounds } from '../alloc/extent.js';
import { BTREE_ITEM_FLAG_DELETION } from '../format/btree.js';
import { BTREE_MAX_VAL_LEN } from '../format/constants.js';
import type { BtreeRoot } from '../format/common.js';
import { CorruptionError } from '../format/errors.js';
import { ZONE } from '../format/items.js';
import { compareKeys, type Key } from '../format/key.js';
import { getU64, setU64 } from '../format/layout.js';
import { LOG_TREES_FLAG_FINALIZED, type LogTrees } from '../format/logtrees.js';
import type { SrchEntry } from '../format/srch.js';
import { BloomWriter } from './bloom.js';
import { isForestZone, lockStartKey } from '../format/lock.js';
import { SrchLogWriter } from '../srch/file.js';

export interface ForestWriteItem {
  key: Key;
  /** Ignored for deletions. */
  val: Uint8Array;
  seq: bigint;
  deletion: boolean;
  /** An xattr totl delta (zone 3, 16-byte value). */
  delta: boolean;
}

export interface ForestWriterOptions {
  bounds?: BlknoBounds;
}

export interface ForestWriterCounters {
  items: number;
  deletions: number;
  deltasCombined: number;
  srchEntries: number;
}

export function cloneLogTrees(lt: LogTrees): LogTrees {
  return structuredClone(lt);
}

export class ForestWriter {
  readonly counters: ForestWriterCounters = { items: 0, deletions: 0, deltasCombined: 0, srchEntries: 0 };
  private readonly bloom: BloomWriter;
  private readonly srch: SrchLogWriter;
  private closed = false;
  /** A delta item's value as written: its sum with the log tree's item (writeItems). */
  private readonly deltaSums = new WeakMap<ForestWriteItem, Uint8Array>();

  private constructor(readonly lt: LogTrees, readonly alloc: MetaAllocator) {
    this.bloom = new BloomWriter(alloc, lt.bloom_ref);
    this.srch = new SrchLogWriter(alloc, lt.srch_file);
  }

  /** Start a transaction's writer over (a copy of) the lt a GET returned. */
  static async open(images: BlockImages, got: LogTrees, opts: ForestWriterOptions = {}): Promise<ForestWriter> {
    assert(got.get_trans_seq > got.commit_trans_seq, 'a writer needs an open transaction (get > commit)');
    assert((got.flags & LOG_TREES_FLAG_FINALIZED) === 0n, 'a finalized lt is never written');
    const lt = cloneLogTrees(got);
    const alloc = await MetaAllocator.open(images, lt.meta_avail, lt.meta_freed, {
      bounds: opts.bounds, source: `lt ${lt.rid}.${lt.nr} meta`,
    });
    return new ForestWriter(lt, alloc);
  }

  get transSeq(): bigint {
    return this.lt.get_trans_seq;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Write one dirty item into the log btree (commit time, key order). */
  async writeItem(it: ForestWriteItem): Promise<void> {
    this.assertOpen();
    assert(isForestZone(it.key.zone), `zone ${it.key.zone} items do not go into log trees`);
    assert(it.seq >= this.lt.get_trans_seq, `item seq ${it.seq} older than the transaction ${this.lt.get_trans_seq} (4.13 (8))`);
    // The bloom first: if setting its bits fails, nothing of the item was
    // written; if the item write fails, the retry finds the bits set.
    await this.bloom.setLockBits(lockStartKey(it.key));
    const root = this.lt.item_root;
    if (it.deletion) {
      await btreeForce(this.alloc, root, it.key, new Uint8Array(0), { seq: it.seq, flags: BTREE_ITEM_FLAG_DELETION });
      this.counters.deletions++;
    } else {
      assert(it.val.length <= BTREE_MAX_VAL_LEN, `item value of ${it.val.length} bytes`);
      const val = it.delta ? await this.sumDelta(root, it) : it.val;
      await btreeForce(this.alloc, root, it.key, val, { seq: it.seq, flags: 0 });
    }
    if (it.seq > this.lt.max_item_seq) this.lt.max_item_seq = it.seq;
    this.counters.items++;
  }

  /** A totl delta summed onto the lt's existing item of its key, if any (FORMAT.md 8.5). */
  private async sumDelta(root: BtreeRoot, it: ForestWriteItem): Promise<Uint8Array> {
    assert(it.key.zone === ZONE.XATTR_TOTL && it.val.length === 16, 'deltas are 16-byte xattr totl items');
    const old = await btreeLookup(this.alloc, root, it.key);
    if (old === null || (old.flags & BTREE_ITEM_FLAG_DELETION) !== 0) return it.val;
    if (old.val.length !== 16) throw new CorruptionError('log tree', null, 'structure', `xattr totl item of ${old.val.length} bytes`);
    const val = new Uint8Array(16);
    setU64(val, 0, BigInt.asUintN(64, getU64(old.val, 0) + getU64(it.val, 0)));
    setU64(val, 8, BigInt.asUintN(64, getU64(old.val, 8) + getU64(it.val, 8)));
    this.counters.deltasCombined++;
    return val;
  }

  /**
   * Write a batch of dirty items (commit time, keys strictly increasing):
   * the same result as writeItem on each in order, merged leaf by leaf.
   * After a failure the batch may be written again as a whole (see the
   * header).
   */
  async writeItems(items: readonly ForestWriteItem[]): Promise<void> {
    this.assertOpen();
    if (items.length === 0) return;
    let maxSeq = this.lt.max_item_seq;
    let prevLock: Key | null = null;
    for (let i = 0; i < items.length; i++) {
      const it = items[i]!;
      assert(isForestZone(it.key.zone), `zone ${it.key.zone} items do not go into log trees`);
      assert(it.seq >= this.lt.get_trans_seq, `item seq ${it.seq} older than the transaction ${this.lt.get_trans_seq} (4.13 (8))`);
      assert(i === 0 || compareKeys(items[i - 1]!.key, it.key) < 0, 'a batch of items in strictly increasing key order');
      assert(it.deletion || it.val.length <= BTREE_MAX_VAL_LEN, `item value of ${it.val.length} bytes`);
      if (it.seq > maxSeq) maxSeq = it.seq;
      // Sorted items share lock ranges in runs: set each run's bits once.
      const lock = lockStartKey(it.key);
      if (prevLock === null || compareKeys(prevLock, lock) !== 0) await this.bloom.setLockBits(lock);
      prevLock = lock;
    }
    const root = this.lt.item_root;
    for (const it of items) {
      if (!it.delta || it.deletion || this.deltaSums.has(it)) continue;
      this.deltaSums.set(it, await this.sumDelta(root, it));
    }
    const empty = new Uint8Array(0);
    const merged: MergeItem[] = items.map((it) => it.deletion
      ? { key: it.key, val: empty, seq: it.seq, flags: BTREE_ITEM_FLAG_DELETION }
      : { key: it.key, val: it.delta ? this.deltaSums.get(it)! : it.val, seq: it.seq, flags: 0 });
    await btreeMerge(this.alloc, root, merged, { deletions: 'store' });
    if (maxSeq > this.lt.max_item_seq) this.lt.max_item_seq = maxSeq;
    for (const it of items) {
      if (it.deletion) this.counters.deletions++;
      this.counters.items++;
    }
  }

  /** Log a .srch. xattr creation or deletion (under a transaction hold). */
  async srchAdd(e: SrchEntry): Promise<void> {
    this.assertOpen();
    await this.srch.append(e);
    this.counters.srchEntries++;
  }

  /** Add to the lt's inode count delta (under a transaction hold). */
  addInodeCount(delta: bigint): void {
    this.assertOpen();
    this.lt.inode_count_delta += delta;
  }

  /**
   * End of the transaction's changes: no more allocation.  Returns the lt
   * to send in COMMIT_LOG_TREES (a copy; the caller may resend it as is).
   */
  close(): LogTrees {
    this.assertOpen();
    this.alloc.assertConsistent();
    this.srch.close();
    this.alloc.close();
    this.closed = true;
    return cloneLogTrees(this.lt);
  }

  private assertOpen(): void {
    assert(!this.closed, 'forest writer used after its transaction closed');
  }
}

/*
 * Single-node log merge: the server folds every FINALIZED log tree into
 * fs_root and frees it (the effect of PROTOCOL.md 5.7, FORMAT.md 8.2, 10),
 * run by the in-process server when a mount opens, after stale lts were
 * reclaimed and before the mount's first transaction.
 *
 *   fs_root ----------------------------+
 *   logs_root: lt(a,1) FINALIZED item_root +--> resolve by seq --> btreeMerge into fs_root
 *              lt(b,4) FINALIZED item_root +
 *   then, in one commit: zone 3 (totl) changes, every input tree's blocks
 *   and bloom block freed, their lt items deleted, inode_count_delta added
 *   into super.inode_count.
 *
 * What it owns.  Nothing persistent: no log_merge items, no progress key.
 * It reads the committed input trees through a read-only store and changes
 * fs_root, logs_root, super.inode_count and the server allocator through
 * the server's commit queue (commitq.ts), one commit hold per step, under
 * the logs and alloc mutexes (the lock order of mutex.ts).
 *
 * Resolution is the forest reader's (src/forest/reader.ts), key by key over
 * fs_root and the input lts in logs_root key order: the version with the
 * greatest item seq wins, fs_root first and the first seen kept on equal
 * seqs; a winning DELETION removes the key from fs_root; xattr totl items
 * (zone 3) are fs_root's value plus the sum of every non-deletion delta,
 * at the greatest of their seqs, and a (0, 0) sum removes the item.  A
 * written item keeps its seq and its flags other than DELETION; fs_root
 * never holds a deletion item.  Only changes are written: a key whose
 * fs_root version already wins is not touched.
 *
 * Crash atomicity.  Every step is one server commit (volume.ts: the super
 * is the single commit point), and every committed state reads the same:
 *   - the non-totl steps (keys below and above zone 3, in key order, as
 *     many per commit as the server allocator's budget allows) write the
 *     resolved winners into fs_root and leave every input lt untouched.
 *     A reader then sees the same winner in fs_root and, with the same
 *     seq, in an lt, and fs_root comes first: the same result.  A
 *     deletion winner removes the key from fs_root while the lt keeps the
 *     winning deletion: still hidden.  A later merge resolves the same
 *     winners again (idempotent), so a crash between steps only costs the
 *     redone work;
 *   - totl deltas are not idempotent (fs_root + deltas would count a delta
 *     twice while its lt remains), so every zone 3 change goes into the
 *     final commit together with the deletion of every input lt item and
 *     the freeing of their blocks.  That commit is all or nothing.
 * Freed blocks go onto the server's active freed list and reach meta_freed
 * only after this commit is durable, never to be reused before it (the
 * two-phase rule of src/alloc/server.ts).
 *
 * Budget.  The server allocator's active list is refilled only at commit,
 * so a step merges batches while a worst case bound of the next batch's
 * allocations (every item cowing a leaf and its path, plus the emitted
 * leaves for its bytes) stays below what is left, keeping `margin` for the
 * commit's own work; then it commits and the next step starts on a fresh
 * list.  An ENOSPC in the middle of a step would fail the volume, so the
 * bound is deliberately pessimistic.  Free space: a dry run resolves the
 * inputs without fs_root and sums the bytes the merge could add; when
 * meta_avail could not hold them above the reserve, the merge is skipped
 * (a full volume mounts as it did; the next mount, after deletions, tries
 * again), and a step is not started while meta_avail is below two list
 * refills.  The final commit is skipped when its bound does not fit a
 * fresh allocator (an enormous zone 3): the inputs stay and later mounts
 * try again.  Skips are reported in the result, never as errors.
 *
 * What it refuses: any lt that is not FINALIZED (on a single node, after
 * reclaim, there is none; merging around an open tree would need 5.6's
 * seq discontinuity), and a finalized lt that still owns lists, data
 * extents or a srch file (reclaim gives those back; freeing such an lt
 * would leak them).  Either skips the whole merge.  Corrupt input (bad
 * totl value, broken blocks) is a CorruptionError; any error after the
 * first change fails the volume (commitq.fail) like any handler's.
 *
 * Why single node.  Nothing else can read the input trees: the mount
 * calling this is the only one, and its reader starts after the merge.
 * The server does the merge itself instead of handing ranges to clients.
 *
 * Not done, of PROTOCOL.md 5.7: the log_merge btree (status, range,
 * request, complete and freeing items), GET/COMMIT_LOG_MERGE, subtree
 * requests and splicing, finalization inside GET (5.6), merging while
 * other mounts are active, and freeing input trees in later batches (they
 * are freed in the final commit; its size is bounded by one free-list
 * link per LIST_MAX freed blocks).
 */
import assert from 'node:assert/strict';
import { btreeDelete, btreeLookup, btreeRange, checkRoot, parentItemRef, readBlock, type BtreeItem, type BtreeValue } from '../btree/btree.js';
import { avlFirst, avlNext } from '../btree/avl.js';
import { nrItems, LEAF_AREA } from '../btree/inblock.js';
import { btreeMerge, type MergeItem } from '../btree/merge.js';
import type { BlockStore, BtreeRoot } from '../btree/store.js';
import type { BlockRef } from '../format/block.js';
import { BTREE_ITEM_FLAG_DELETION } from '../format/btree.js';
import { CorruptionError } from '../format/errors.js';
import { logTreesKey, ZONE } from '../format/items.js';
import { compareKeys, key, type Key } from '../format/key.js';
import { getU64, setU64, U64_MAX } from '../format/layout.js';
import { decodeLogTreesItem, LOG_TREES, LOG_TREES_FLAG_FINALIZED, type LogTrees } from '../format/logtrees.js';
import { LIST_MAX } from '../alloc/list.js';
import { CommittedStore, type ForestReaderCounters } from '../forest/reader.js';
import type { CommitQueue } from './commitq.js';
import type { ServerMutexes } from './mutex.js';
import type { ServerVolume } from './volume.js';

export interface LogMergeOptions {
  /** meta_avail must keep this many blocks (the mount's reserve) after what the merge may add. */
  reserveBlocks: bigint;
  /** Allocations left to the commit itself after a step (default 128; the allocator's low margin is 64). */
  margin?: number;
  /** At most this many changes per commit (tests: forces the multi-commit path). */
  maxChangesPerCommit?: number;
}

export interface LogMergeResult {
  /** Input lts merged and deleted (0 when skipped or left unfinished). */
  trees: number;
  /** Changes written into fs_root (sets and deletions). */
  items: number;
  /** Blocks of the input trees and blooms freed. */
  blocksFreed: number;
  /** Commits the merge made. */
  commits: number;
  /** Why the merge did not run or did not finish; null when it did (or had nothing to do). */
  skipped: string | null;
}

const TOTL_LEN = 16;
/** Bytes an item takes in a leaf beyond key and value: header, hash slot, slack. */
const ITEM_OVERHEAD = 48;

const LOGS_FIRST = key(ZONE.LOG_TREES, 0n, 0);
const LOGS_LAST = key(ZONE.LOG_TREES, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff);
const FIRST = key(0, 0n, 0);
const LAST = key(0xff, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff);
const TOTL_FIRST = key(ZONE.XATTR_TOTL, 0n, 0);
const TOTL_LAST = key(ZONE.XATTR_TOTL, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff);
const BELOW_TOTL_LAST = key(ZONE.XATTR_TOTL - 1, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff);
const ABOVE_TOTL_FIRST = key(ZONE.XATTR_TOTL + 1, 0n, 0);

const isFinalized = (lt: LogTrees): boolean => (lt.flags & LOG_TREES_FLAG_FINALIZED) !== 0n;
const isDel = (flags: number): boolean => (flags & BTREE_ITEM_FLAG_DELETION) !== 0;
const itemSize = (c: MergeItem): number => 32 + c.val.length + ITEM_OVERHEAD;

function zeroCounters(): ForestReaderCounters {
  return { segments: 0, lookups: 0, treesRead: 0, bloomSkips: 0, bloomPasses: 0, bloomMemoHits: 0, deletionsHidden: 0, staleDirty: 0, ltListReads: 0 };
}

/** Why an lt cannot be freed as a whole, or null. */
function stillOwns(lt: LogTrees): string | null {
  if (lt.meta_avail.ref.blkno !== 0n || lt.meta_freed.ref.blkno !== 0n) return 'metadata lists';
  if (lt.data_avail.total_len !== 0n || lt.data_avail.root.height !== 0 || lt.data_freed.total_len !== 0n || lt.data_freed.root.height !== 0) {
    return 'data extents';
  }
  if (lt.srch_file.ref.blkno !== 0n) return 'a srch file';
  return null;
}

function totlValue(v: Uint8Array, src: string): Uint8Array {
  if (v.length !== TOTL_LEN) throw new CorruptionError(src, null, 'structure', `xattr totl value of ${v.length} bytes`);
  return v;
}

/**
 * The resolved changes to fs_root over [start, end], in key order, from a
 * k-way walk of the input trees.  With `fsLookup` null (the dry run) every
 * lt winner is reported as if fs_root held nothing.
 */
class ChangeStream {
  private readonly its: AsyncGenerator<BtreeItem>[];
  private readonly heads: (BtreeItem | null)[];
  private started = false;
  private pending: MergeItem | null = null;
  /** Keys resolved (changes or not). */
  keys = 0;

  constructor(
    store: BlockStore, lts: readonly LogTrees[], start: Key, end: Key,
    private readonly fsLookup: ((k: Key) => Promise<BtreeValue | null>) | null,
  ) {
    this.its = lts.map((lt) => btreeRange(store, lt.item_root, start, end));
    this.heads = lts.map(() => null);
  }

  /** Give back the change last returned by next(); it comes again first. */
  pushBack(c: MergeItem): void {
    assert(this.pending === null);
    this.pending = c;
  }

  async peek(): Promise<MergeItem | null> {
    const c = await this.next();
    if (c !== null) this.pushBack(c);
    return c;
  }

  async next(): Promise<MergeItem | null> {
    if (this.pending !== null) {
      const c = this.pending;
      this.pending = null;
      return c;
    }
    if (!this.started) {
      this.started = true;
      for (let i = 0; i < this.its.length; i++) await this.advance(i);
    }
    for (;;) {
      let min: Key | null = null;
      for (const h of this.heads) if (h !== null && (min === null || compareKeys(h.key, min) < 0)) min = h.key;
      if (min === null) return null;
      // Every version of the key, in logs_root order.
      const versions: BtreeItem[] = [];
      for (let i = 0; i < this.heads.length; i++) {
        const h = this.heads[i]!;
        if (h !== null && compareKeys(h.key, min) === 0) {
          versions.push(h);
          await this.advance(i);
        }
      }
      this.keys++;
      const c = await this.resolve(min, versions);
      if (c !== null) return c;
    }
  }

  private async advance(i: number): Promise<void> {
    const r = await this.its[i]!.next();
    const h = r.done === true ? null : r.value;
    const prev = this.heads[i];
    if (h !== null && prev !== null && prev !== undefined && compareKeys(h.key, prev.key) <= 0) {
      throw new CorruptionError('log tree', null, 'structure', 'item keys out of order');
    }
    this.heads[i] = h;
  }

  private async resolve(k: Key, versions: BtreeItem[]): Promise<MergeItem | null> {
    const fs = this.fsLookup === null ? null : await this.fsLookup(k);
    if (k.zone === ZONE.XATTR_TOTL) {
      const acc = new Uint8Array(TOTL_LEN);
      // The flags of the newest version that is summed, like its seq.
      let seq = 0n;
      let flags = 0;
      let have = false;
      let deltas = 0;
      if (fs !== null && !isDel(fs.flags)) {
        acc.set(totlValue(fs.val, 'fs_root'));
        seq = fs.seq;
        flags = fs.flags;
        have = true;
      }
      for (const v of versions) {
        if (isDel(v.flags)) continue;
        totlValue(v.val, 'log tree');
        setU64(acc, 0, BigInt.asUintN(64, getU64(acc, 0) + getU64(v.val, 0)));
        setU64(acc, 8, BigInt.asUintN(64, getU64(acc, 8) + getU64(v.val, 8)));
        if (!have || v.seq > seq) {
          seq = v.seq;
          flags = v.flags;
          have = true;
        }
        deltas++;
      }
      if (deltas === 0) return null;
      if (getU64(acc, 0) === 0n && getU64(acc, 8) === 0n) {
        return fs === null && this.fsLookup !== null ? null : { key: k, val: new Uint8Array(0), seq, flags: BTREE_ITEM_FLAG_DELETION };
      }
      return { key: k, val: acc, seq, flags: flags & ~BTREE_ITEM_FLAG_DELETION };
    }
    let win = versions[0]!;
    for (const v of versions) if (v.seq > win.seq) win = v;
    if (fs !== null && fs.seq >= win.seq) return null;
    if (isDel(win.flags)) {
      if (fs === null && this.fsLookup !== null) return null;
      return { key: k, val: new Uint8Array(0), seq: win.seq, flags: BTREE_ITEM_FLAG_DELETION };
    }
    return { key: k, val: win.val, seq: win.seq, flags: win.flags & ~BTREE_ITEM_FLAG_DELETION };
  }
}

/** Every block of a tree (parents read, leaves only referenced), each once. */
async function treeBlocks(store: BlockStore, root: BtreeRoot, what: string): Promise<BlockRef[]> {
  checkRoot(root);
  const out: BlockRef[] = [];
  if (root.height === 0) return out;
  const seen = new Set<bigint>();
  const walk = async (ref: BlockRef, level: number): Promise<void> => {
    if (seen.has(ref.blkno)) throw new CorruptionError(what, ref.blkno, 'structure', 'block referenced twice in one tree');
    seen.add(ref.blkno);
    out.push(ref);
    if (level === 0) return;
    const b = await readBlock(store, ref, level);
    const max = nrItems(b);
    let steps = 0;
    for (let off = avlFirst(b); off !== 0; off = avlNext(b, off)) {
      if (++steps > max) throw new CorruptionError(what, ref.blkno, 'structure', 'avl walk longer than nr_items');
      await walk(parentItemRef(b, off), level - 1);
    }
  };
  await walk(root.ref, root.height - 1);
  return out;
}

/**
 * Merge every finalized lt into fs_root and free it (see the top of this
 * file).  Resolves when every step is durable.
 */
export async function mergeFinalizedLogTrees(
  vol: ServerVolume, commitq: CommitQueue, mutexes: ServerMutexes, opts: LogMergeOptions,
): Promise<LogMergeResult> {
  assert(commitq.vol === vol, 'log merge and commit queue over different volumes');
  const margin = opts.margin ?? 128;
  const maxPerCommit = opts.maxChangesPerCommit ?? Infinity;
  assert(margin >= 64 && maxPerCommit >= 1);
  const result: LogMergeResult = { trees: 0, items: 0, blocksFreed: 0, commits: 0, skipped: null };
  const rstore = new CommittedStore(vol.images, zeroCounters());
  const commitsBefore = vol.counters.commits;
  const done = (skipped: string | null): LogMergeResult => {
    result.skipped = skipped;
    result.commits = vol.counters.commits - commitsBefore;
    return result;
  };

  // The inputs, from the committed logs_root (nothing else changes it now).
  const lts: LogTrees[] = [];
  for await (const it of btreeRange(rstore, vol.sb.logs_root, LOGS_FIRST, LOGS_LAST)) {
    lts.push(decodeLogTreesItem(it.key, it.val));
  }
  if (lts.length === 0) return done(null);
  for (const lt of lts) {
    const w = `rid ${lt.rid.toString(16)} nr ${lt.nr}`;
    if (!isFinalized(lt)) return done(`log trees ${w} are open`);
    const owns = stillOwns(lt);
    if (owns !== null) return done(`finalized log trees ${w} still own ${owns}`);
  }

  // Dry run: how much could the merge add to fs_root?
  let addBytes = 0;
  const dry = new ChangeStream(rstore, lts, FIRST, LAST, null);
  for (let c = await dry.next(); c !== null; c = await dry.next()) if (!isDel(c.flags ?? 0)) addBytes += itemSize(c);
  const fillTarget = BigInt(vol.alloc.fillTarget);
  const addBlocks = BigInt(Math.ceil((2 * addBytes) / LEAF_AREA));
  if (addBlocks > 0n && vol.alloc.metaAvail.total_len < opts.reserveBlocks + addBlocks) {
    return done(`meta_avail holds ${vol.alloc.metaAvail.total_len} blocks, the merge may need ${addBlocks} above the reserve of ${opts.reserveBlocks}`);
  }

  const fsLookup = (k: Key): Promise<BtreeValue | null> => btreeLookup(vol.store, vol.sb.fs_root, k);
  /** Worst case allocations of merging n items of `bytes` into fs_root. */
  const worst = (n: number, bytes: number): number => {
    const h = vol.sb.fs_root.height + 1;
    const allocs = n * (h + 1) + Math.ceil((bytes * 4) / LEAF_AREA) + 2 * (h + 1) + 8;
    return allocs + Math.ceil(allocs / LIST_MAX) + 1;
  };
  const step = <T>(fn: () => Promise<T>): Promise<T> => commitq.run(() => mutexes.logs.run(() => mutexes.alloc.run(async () => {
    try {
      return await fn();
    } catch (e) {
      commitq.fail(e);
      throw e;
    }
  })));

  // Non-totl keys: as many commits as the budget needs; lts untouched.
  for (const [start, end] of [[FIRST, BELOW_TOTL_LAST], [ABOVE_TOTL_FIRST, LAST]] as const) {
    const stream = new ChangeStream(rstore, lts, start, end, fsLookup);
    for (;;) {
      if (await stream.peek() === null) break;
      if (vol.alloc.metaAvail.total_len < 2n * fillTarget) {
        return done(`meta_avail ran low (${vol.alloc.metaAvail.total_len} blocks) after ${result.items} changes`);
      }
      const merged = await step(async () => {
        let n = 0;
        for (;;) {
          const left = vol.alloc.alloc.allocsLeft() - margin;
          const batch: MergeItem[] = [];
          let bytes = 0;
          while (n + batch.length < maxPerCommit) {
            const c = await stream.next();
            if (c === null) break;
            if (worst(batch.length + 1, bytes + itemSize(c)) > left) {
              stream.pushBack(c);
              break;
            }
            batch.push(c);
            bytes += itemSize(c);
          }
          if (batch.length === 0) return n;
          await btreeMerge(vol.store, vol.sb.fs_root, batch);
          n += batch.length;
        }
      });
      if (merged === 0) return done(`the server allocator cannot hold one more change (${vol.alloc.alloc.allocsLeft()} allocations left)`);
      result.items += merged;
    }
  }

  // The final commit: totl, frees, lt items, inode_count.
  await commitq.commitNow();
  const finished = await step(async () => {
    const totl: MergeItem[] = [];
    let totlBytes = 0;
    const stream = new ChangeStream(rstore, lts, TOTL_FIRST, TOTL_LAST, fsLookup);
    for (let c = await stream.next(); c !== null; c = await stream.next()) {
      totl.push(c);
      totlBytes += itemSize(c);
    }
    const frees: BlockRef[] = [];
    for (const lt of lts) {
      frees.push(...await treeBlocks(rstore, lt.item_root, `log tree rid ${lt.rid.toString(16)} nr ${lt.nr}`));
      if (lt.bloom_ref.blkno !== 0n) frees.push(lt.bloom_ref);
    }
    const need = worst(totl.length, totlBytes) + Math.ceil(frees.length / (LIST_MAX >>> 1)) + 2
      + lts.length * (vol.sb.logs_root.height + 2);
    if (need > vol.alloc.alloc.allocsLeft() - margin) return `the final commit needs up to ${need} allocations, the server allocator has ${vol.alloc.alloc.allocsLeft()}`;
    // Nothing changed yet: everything above only read.
    if (totl.length > 0) await btreeMerge(vol.store, vol.sb.fs_root, totl);
    result.items += totl.length;
    const seen = new Set<bigint>();
    for (const ref of frees) {
      if (seen.has(ref.blkno)) throw new CorruptionError('logs_root', ref.blkno, 'structure', 'block owned by two log trees');
      seen.add(ref.blkno);
      vol.store.free(ref);
    }
    result.blocksFreed = frees.length;
    for (const lt of lts) {
      await btreeDelete(vol.store, vol.sb.logs_root, logTreesKey(lt.rid, lt.nr));
      vol.sb.inode_count = BigInt.asUintN(64, vol.sb.inode_count + lt.inode_count_delta);
    }
    result.trees = lts.length;
    return null;
  });
  return done(finished);
}

/*
 * The forest reader (PROTOCOL.md 5.2-5.4, FORMAT.md 10): what a mount sees
 * when it reads items it does not have cached, the union of fs_root and
 * every log tree listed in logs_root, resolved by item seq.
 *
 *   roots (GET_ROOTS) --> fs_root ----------------------------+
 *                    \--> logs_root: lt(rid a, nr 1) item_root +--> merge
 *                                    lt(rid b, nr 3) item_root +    by seq
 *                                    ...  (skipped unless the lt's bloom
 *                                          holds the 3 bits of the lock)
 *
 * readSegment(key, start, end) is the item cache's miss path: for fs_root
 * and each bloom-passing log tree it reads the one leaf covering `key` and
 * keeps that leaf's items inside the lock range [start, end]; a leaf
 * covers keys (lo, hi] where lo/hi are the parent keys around it.  The
 * result covers the intersection of every consulted leaf's range with the
 * lock range (it always contains `key`), and within it every key is
 * resolved: the version with the greatest seq wins, fs_root being read
 * first and the log trees in logs_root order, the first seen kept on equal
 * seqs; a winning DELETION item hides the key.  Xattr totl items (zone 3)
 * are deltas in log trees (FORMAT.md 8.5): their versions are summed onto
 * the fs_root value, and a (0, 0) sum is no item.  The segment is
 * therefore complete for its range and may be cached as such.
 *
 * Roots come from a callback (the mount's GET_ROOTS).  Readers only read
 * committed trees.  A block freed and reused since the roots were fetched
 * shows up as ESTALE: the roots are fetched again and the read retried,
 * and ESTALE again with unchanged roots is corruption (withStaleRetry).
 * One more way to be stale exists on a mount: a blkno of an old committed
 * tree may by now be dirty in this mount's own transaction; committed
 * trees never reference a dirty block, so the read store reports that as
 * ESTALE too instead of handing out the dirty image.
 *
 * Bloom results are immutable per bloom block ref (blocks are copy on
 * write with a fresh seq), so they are memoized by (blkno, seq, lock key)
 * in a small bounded map; the list of lts is memoized per logs_root ref.
 * Bad bytes (an lt item of the wrong size, a bloom total_set beyond the
 * bit count, a totl value that is not 16 bytes, a broken block) are
 * CorruptionErrors.
 *
 * Threads: main thread; reads may run concurrently with each other and
 * with the transaction (they touch only committed blocks and the memo
 * maps).
 */
import assert from 'node:assert/strict';
import { checkRoot, readBlock, parentItemRef, withStaleRetry, type BtreeItem } from '../btree/btree.js';
import { avlLowerBound, avlNext, avlPrev } from '../btree/avl.js';
import { I_KEY, itemFlags, itemSeq, itemValue, nrItems } from '../btree/inblock.js';
import type { BlockStore, BtreeRoot } from '../btree/store.js';
import { sameRoot } from '../btree/store.js';
import { btreeRange } from '../btree/btree.js';
import type { BlockRef } from '../format/block.js';
import { BTREE_ITEM_FLAG_DELETION } from '../format/btree.js';
import type { BlockKind } from '../format/constants.js';
import { CorruptionError, FsError } from '../format/errors.js';
import { bloomIndexes } from '../format/hash.js';
import { ZONE } from '../format/items.js';
import { compareKeys, compareKeyBytes, encodeKey, keyInc, key as mkKey, readKey, type Key } from '../format/key.js';
import { getU64, setU64, U64_MAX } from '../format/layout.js';
import { LOG_TREES, decodeLogTreesItem, type LogTrees } from '../format/logtrees.js';
import { bloomMayContain, checkedTotalSet, keyHex } from './bloom.js';
import { lockRangeOf, maxKey, minKey } from '../format/lock.js';

export interface ForestRoots {
  fs_root: BtreeRoot;
  logs_root: BtreeRoot;
}

export type GetRoots = () => Promise<ForestRoots>;

export interface ForestItem {
  key: Key;
  val: Uint8Array;
  seq: bigint;
}

/** A fully resolved key range: every item in [start, end] is in items (sorted). */
export interface ForestSegment {
  start: Key;
  end: Key;
  items: ForestItem[];
}

/** What the reader needs of the block layer (CacheImages has this shape). */
export interface ReadImages {
  readonly fsid: bigint;
  read(ref: BlockRef, kind: BlockKind): Promise<Uint8Array>;
  isDirty(blkno: bigint): boolean;
}

export interface ForestReaderCounters {
  segments: number;
  lookups: number;
  treesRead: number;
  bloomSkips: number;
  bloomPasses: number;
  bloomMemoHits: number;
  deletionsHidden: number;
  staleDirty: number;
  ltListReads: number;
}

export const BLOOM_MEMO_MAX = 4096;

const LOGS_FIRST = mkKey(ZONE.LOG_TREES, 0n, 0);
const LOGS_LAST = mkKey(ZONE.LOG_TREES, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff);

const sameRoots = (a: ForestRoots, b: ForestRoots): boolean => sameRoot(a.fs_root, b.fs_root) && sameRoot(a.logs_root, b.logs_root);

/** A read-only BlockStore over committed blocks. */
export class CommittedStore implements BlockStore {
  readonly fsid: bigint;
  constructor(private readonly images: ReadImages, private readonly counters: ForestReaderCounters) {
    this.fsid = images.fsid;
  }
  read(ref: BlockRef, kind: BlockKind): Promise<Uint8Array> {
    if (this.images.isDirty(ref.blkno)) {
      this.counters.staleDirty++;
      return Promise.reject(new FsError('ESTALE', `blkno ${ref.blkno} of a committed tree is dirty in this transaction`));
    }
    return this.images.read(ref, kind);
  }
  isDirty(): boolean {
    return false;
  }
  alloc(): Promise<{ ref: BlockRef; b: Uint8Array }> {
    assert.fail('the forest reader never allocates');
  }
  free(): void {
    assert.fail('the forest reader never frees');
  }
}

interface LeafRead {
  items: BtreeItem[];
  /** Keys covered by the leaf intersected with the range asked for. */
  start: Key;
  end: Key;
}

/** The leaf of `root` covering `k`: its items within [start, end] and what it covers. */
async function readLeafRange(store: BlockStore, root: BtreeRoot, k: Key, start: Key, end: Key): Promise<LeafRead> {
  checkRoot(root);
  if (root.height === 0) return { items: [], start, end };
  const kb = encodeKey(k);
  let lo: Uint8Array | null = null;
  let hi: Uint8Array | null = null;
  let ref = root.ref;
  let level = root.height - 1;
  let leaf: Uint8Array;
  for (;;) {
    const b = await readBlock(store, ref, level);
    if (level === 0) {
      leaf = b;
      break;
    }
    const c = avlLowerBound(b, kb, 0);
    if (c === 0) throw new CorruptionError('forest', ref.blkno, 'structure', 'key beyond the last parent item');
    hi = b.slice(c + I_KEY, c + I_KEY + 32);
    const p = avlPrev(b, c);
    if (p !== 0) lo = b.slice(p + I_KEY, p + I_KEY + 32);
    ref = parentItemRef(b, c);
    level--;
  }
  let cs = start;
  let ce = end;
  if (lo !== null) cs = maxKey(cs, keyInc(readKey(lo, 0)));
  if (hi !== null) ce = minKey(ce, readKey(hi, 0));
  const items: BtreeItem[] = [];
  const sb = encodeKey(cs);
  const eb = encodeKey(ce);
  const max = nrItems(leaf);
  for (let off = avlLowerBound(leaf, sb, 0), steps = 0; off !== 0; off = avlNext(leaf, off), steps++) {
    if (steps > max) throw new CorruptionError('forest', ref.blkno, 'structure', 'avl walk longer than nr_items');
    if (compareKeyBytes(leaf, off + I_KEY, eb, 0) > 0) break;
    items.push({ key: readKey(leaf, off + I_KEY), val: itemValue(leaf, off).slice(), seq: itemSeq(leaf, off), flags: itemFlags(leaf, off) });
  }
  return { items, start: cs, end: ce };
}

const TOTL_LEN = 16;

function addTotl(acc: Uint8Array, v: Uint8Array, src: string): void {
  if (v.length !== TOTL_LEN) throw new CorruptionError(src, null, 'structure', `xattr totl value of ${v.length} bytes`);
  setU64(acc, 0, BigInt.asUintN(64, getU64(acc, 0) + getU64(v, 0)));
  setU64(acc, 8, BigInt.asUintN(64, getU64(acc, 8) + getU64(v, 8)));
}

export class ForestReader {
  readonly counters: ForestReaderCounters = {
    segments: 0, lookups: 0, treesRead: 0, bloomSkips: 0, bloomPasses: 0, bloomMemoHits: 0, deletionsHidden: 0, staleDirty: 0, ltListReads: 0,
  };
  private readonly store: CommittedStore;
  private readonly bloomMemo = new Map<string, boolean>();
  private ltMemo: { root: BtreeRoot; lts: LogTrees[] } | null = null;

  constructor(images: ReadImages, private readonly getRoots: GetRoots) {
    this.store = new CommittedStore(images, this.counters);
  }

  /**
   * The resolved items of the leaf-sized neighbourhood of `k` inside the
   * lock range [start, end].  bloomKey is the lock's start key.
   */
  async readSegment(k: Key, start: Key, end: Key, bloomKey: Key = start): Promise<ForestSegment> {
    assert(compareKeys(start, k) <= 0 && compareKeys(k, end) <= 0, 'read key outside its lock range');
    this.counters.segments++;
    return withStaleRetry(this.getRoots, (roots) => this.readSegmentRoots(roots, k, start, end, bloomKey), sameRoots);
  }

  /** One key, under its own lock range; null when absent or deleted. */
  async lookup(k: Key): Promise<ForestItem | null> {
    this.counters.lookups++;
    const r = lockRangeOf(k);
    const seg = await this.readSegment(k, r.start, r.end, r.start);
    return seg.items.find((it) => compareKeys(it.key, k) === 0) ?? null;
  }

  /** Every lt in logs_root, in key (rid, nr) order. */
  async logTrees(logsRoot: BtreeRoot): Promise<LogTrees[]> {
    if (this.ltMemo !== null && sameRoot(this.ltMemo.root, logsRoot)) return this.ltMemo.lts;
    this.counters.ltListReads++;
    const lts: LogTrees[] = [];
    for await (const it of btreeRange(this.store, logsRoot, LOGS_FIRST, LOGS_LAST)) {
      lts.push(decodeLogTreesItem(it.key, it.val));
    }
    this.ltMemo = { root: { ref: { ...logsRoot.ref }, height: logsRoot.height }, lts };
    return lts;
  }

  private async bloomPasses(lt: LogTrees, bloomKey: Key): Promise<boolean> {
    if (lt.item_root.height === 0 || lt.bloom_ref.blkno === 0n) return false;
    const memoKey = `${lt.bloom_ref.blkno}:${lt.bloom_ref.seq}:${keyHex(bloomKey)}`;
    const memo = this.bloomMemo.get(memoKey);
    if (memo !== undefined) {
      this.counters.bloomMemoHits++;
      return memo;
    }
    const b = await this.store.read(lt.bloom_ref, 'bloom');
    checkedTotalSet(b, lt.bloom_ref.blkno);
    const pass = bloomMayContain(b, bloomIndexes(bloomKey));
    if (this.bloomMemo.size >= BLOOM_MEMO_MAX) this.bloomMemo.delete(this.bloomMemo.keys().next().value!);
    this.bloomMemo.set(memoKey, pass);
    return pass;
  }

  private async readSegmentRoots(roots: ForestRoots, k: Key, start: Key, end: Key, bloomKey: Key): Promise<ForestSegment> {
    const trees: { root: BtreeRoot; isLog: boolean }[] = [{ root: roots.fs_root, isLog: false }];
    for (const lt of await this.logTrees(roots.logs_root)) {
      if (await this.bloomPasses(lt, bloomKey)) {
        this.counters.bloomPasses++;
        trees.push({ root: lt.item_root, isLog: true });
      } else if (lt.item_root.height !== 0) {
        this.counters.bloomSkips++;
      }
    }
    const reads: LeafRead[] = [];
    let cs = start;
    let ce = end;
    for (const t of trees) {
      const r = await readLeafRange(this.store, t.root, k, start, end);
      this.counters.treesRead++;
      reads.push(r);
      cs = maxKey(cs, r.start);
      ce = minKey(ce, r.end);
    }
    assert(compareKeys(cs, k) <= 0 && compareKeys(k, ce) <= 0, 'every leaf read covers the key');
    return { start: cs, end: ce, items: this.merge(reads, trees.map((t) => t.isLog), cs, ce) };
  }

  /** Resolve every key of [cs, ce] over the trees' items (fs_root first). */
  private merge(reads: LeafRead[], isLog: boolean[], cs: Key, ce: Key): ForestItem[] {
    interface Cand { it: BtreeItem; tree: number }
    const cands: Cand[] = [];
    reads.forEach((r, tree) => {
      for (const it of r.items) {
        if (compareKeys(it.key, cs) >= 0 && compareKeys(it.key, ce) <= 0) cands.push({ it, tree });
      }
    });
    // Stable: equal keys stay in tree order (fs_root, then logs_root order).
    cands.sort((a, b) => compareKeys(a.it.key, b.it.key));
    const out: ForestItem[] = [];
    for (let i = 0; i < cands.length;) {
      let j = i;
      while (j < cands.length && compareKeys(cands[j]!.it.key, cands[i]!.it.key) === 0) j++;
      const group = cands.slice(i, j);
      i = j;
      const k0 = group[0]!.it.key;
      if (k0.zone === ZONE.XATTR_TOTL) {
        const acc = new Uint8Array(TOTL_LEN);
        let seq = 0n;
        for (const c of group) {
          if ((c.it.flags & BTREE_ITEM_FLAG_DELETION) !== 0) continue;
          addTotl(acc, c.it.val, isLog[c.tree] ? 'log tree' : 'fs_root');
          if (c.it.seq > seq) seq = c.it.seq;
        }
        if (getU64(acc, 0) !== 0n || getU64(acc, 8) !== 0n) out.push({ key: k0, val: acc, seq });
        continue;
      }
      let win = group[0]!.it;
      for (const c of group) if (c.it.seq > win.seq) win = c.it;
      if ((win.flags & BTREE_ITEM_FLAG_DELETION) !== 0) {
        this.counters.deletionsHidden++;
        continue;
      }
      out.push({ key: win.key, val: win.val, seq: win.seq });
    }
    return out;
  }
}

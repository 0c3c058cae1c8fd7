/*
 * The item cache (PROTOCOL.md 5.1, 5.4): every fs item a mount reads or
 * changes goes through here; dirty items wait here until the commit
 * worker writes them into the mount's log btree.
 *
 *   pages (sorted by start, disjoint):
 *     [start .. end] items: sorted array of CachedItem   <- a page claims
 *     [start .. end] ...                                    every item of
 *                                                           its range
 *   dirty:  Set<CachedItem>     lru: Map<Page>  (oldest first)
 *
 * A page covers a key range completely: a key inside a page's range that
 * has no item there does not exist (for this mount, under its lock).  A
 * miss (no page covers the key) reads, through the forest reader, the
 * leaf-sized neighbourhood of the key clipped to the lock range, and
 * inserts pages only for the parts of that range no page covers yet: a
 * cached item (dirty ones above all) always beats one read later.  Pages
 * never cross a lock range (reads are clipped to it), so invalidating a
 * lock drops whole pages.  Pages are split when they hold more than
 * maxPageItems items.  Under a WRITE_ONLY lock nothing is read: a miss
 * inserts an empty page over the lock range (create_force, delete_force
 * and delta never need to know what exists).
 *
 * Items.  A CachedItem is (key, value, seq, dirty, deletion, delta,
 * persistent).  persistent = some committed tree may hold the key (it was
 * read, or it was committed from here, or it was force-written): deleting
 * a persistent item leaves a dirty DELETION item (a tombstone), deleting a
 * non-persistent one just removes it.  Every change gives the item seq =
 * max(transaction seq, lock write seq) (PROTOCOL.md 4.10, 5.2).  Deltas
 * (xattr totl, zone 3, 16-byte values of two u64 deltas) are added to a
 * dirty delta of the same key; a (0, 0) sum drops the item.
 *
 * Commit (the transaction owns the sequence): dirtySnapshot() lists the
 * dirty items in key order for the log btree; markClean(snapshot) after
 * COMMIT_LOG_TREES succeeded drops tombstones and deltas and makes the
 * others clean and persistent.  Nothing may change dirty items between
 * the two (the transaction's WRITER bit keeps holders out; markClean
 * asserts every snapshot item is still the cached, dirty one).
 *
 * Memory bound.  `bytes` counts every cached item (ITEM_COST + value) and
 * page (PAGE_COST).  After each operation pages are evicted, least
 * recently used first, until bytes <= maxBytes; a page holding any dirty
 * item is never evicted, so dirty items survive any pressure (the
 * transaction commits when dirtyBytes passes its limit).  Eviction runs
 * only at the end of an operation, synchronously, so an operation never
 * loses the page it is working on; an operation re-looks its page up after
 * every await.
 *
 * Rules checked on every operation (a violation is a warning and
 * FsError('EINVAL'), as in the reference): the key lies in the lock's
 * range; the lock mode allows the operation (lookup/next/prev: READ or
 * WRITE; create, update, dirty, delete: WRITE, where the reference accepts
 * READ for create, PROTOCOL.md 13.12, which we do not; create_force,
 * delete_force, delta: WRITE_ONLY exactly); writes need a held
 * transaction.
 *
 * Reads racing invalidation or commit: invalidate() and markClean() bump a
 * generation; a miss whose read started before either does not insert what
 * it read (the lock it read under may be gone; the roots it read may
 * predate the commit of items that are now clean and evictable) and reads
 * again.
 *
 * Threads: main thread only.  Operations may interleave at their awaits
 * (concurrent lookups, a commit in flight); every mutation of the page
 * structure happens synchronously between awaits.
 *
 * Left out: the kernel's per-page read seq bookkeeping (4.10 last bullet),
 * replaced by the generation above.  The cache knows no lock objects: the
 * caller passes an ItemLock description (src/lock/ hands one out with every
 * held lock), and the lock client calls invalidate(start, end) when a lock
 * is given up (PROTOCOL.md 6.3).
 */
import assert from 'node:assert/strict';
import { BTREE_MAX_VAL_LEN } from '../format/constants.js';
import { FsError } from '../format/errors.js';
import { ZONE } from '../format/items.js';
import { compareKeys, keyDec, keyInc, ONES_KEY, type Key } from '../format/key.js';
import { getU64, setU64 } from '../format/layout.js';
import { maxKey, minKey, type HeldLockMode } from '../format/lock.js';
import type { ForestSegment } from '../forest/reader.js';
import type { ForestWriteItem } from '../forest/writer.js';

/** The mode the operation's caller holds (format/lock.ts). */
export type LockMode = HeldLockMode;

/** What the cache needs to know of the cluster lock covering an operation. */
export interface ItemLock {
  start: Key;
  end: Key;
  mode: LockMode;
  /** The seq the server issued with the lock's write grant (0 for READ). */
  writeSeq: bigint;
}

/** The miss path (ForestReader has it). */
export interface ItemReader {
  readSegment(key: Key, start: Key, end: Key, bloomKey?: Key): Promise<ForestSegment>;
}

export interface ItemCacheOptions {
  reader: ItemReader;
  /** The open transaction's seq (0 before the first). */
  transSeq: () => bigint;
  /** Is a transaction held by the caller? */
  held: () => boolean;
  /** Memory bound for clean items. */
  maxBytes: number;
  maxPageItems?: number;
  warn?: (msg: string) => void;
}

export class CachedItem implements ForestWriteItem {
  constructor(
    readonly key: Key,
    public val: Uint8Array,
    public seq: bigint,
    public dirty: boolean,
    public deletion: boolean,
    public delta: boolean,
    public persistent: boolean,
  ) {}

  get cost(): number {
    return ITEM_COST + this.val.length;
  }
}

interface Page {
  start: Key;
  end: Key;
  items: CachedItem[];
  bytes: number;
  dirty: number;
}

export const ITEM_COST = 96;
export const PAGE_COST = 128;
export const DEFAULT_PAGE_ITEMS = 256;
/** Bytes per kernel item-cache page, for the dirty page estimate. */
const DIRTY_PAGE_BYTES = 4096;

export interface ItemCacheCounters {
  lookups: number;
  hits: number;
  misses: number;
  reads: number;
  readRaces: number;
  pagesInserted: number;
  pageSplits: number;
  evictedPages: number;
  evictedItems: number;
  invalidatedPages: number;
  creates: number;
  updates: number;
  deletes: number;
  tombstones: number;
  deltas: number;
  markedClean: number;
  einval: number;
}

const EMPTY = new Uint8Array(0);

function lowerBound(items: CachedItem[], k: Key): number {
  let lo = 0;
  let hi = items.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (compareKeys(items[mid]!.key, k) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const isOnes = (k: Key): boolean => compareKeys(k, ONES_KEY) === 0;

export class ItemCache {
  readonly counters: ItemCacheCounters = {
    lookups: 0, hits: 0, misses: 0, reads: 0, readRaces: 0, pagesInserted: 0, pageSplits: 0, evictedPages: 0, evictedItems: 0,
    invalidatedPages: 0, creates: 0, updates: 0, deletes: 0, tombstones: 0, deltas: 0, markedClean: 0, einval: 0,
  };
  private readonly pages: Page[] = [];
  private readonly lru = new Map<Page, true>();
  /**
   * Hints, never trusted for more than they say: the page pageOf() last
   * returned (checked against k before use; cleared when it leaves the
   * page list) and the page at the tail of the lru (a touch of it is a
   * no-op).  Most operations hit the page the previous one did.
   */
  private lastPage: Page | null = null;
  private lruTail: Page | null = null;
  private readonly dirtySet = new Set<CachedItem>();
  private totalBytes = 0;
  private dirtyBytesNow = 0;
  /** Pages holding at least one dirty item. */
  private dirtyPageCount = 0;
  private gen = 0;
  private readonly maxPageItems: number;

  constructor(private readonly opts: ItemCacheOptions) {
    assert(opts.maxBytes > 0);
    this.maxPageItems = opts.maxPageItems ?? DEFAULT_PAGE_ITEMS;
    assert(this.maxPageItems >= 2);
  }

  /* ---- accounting ----------------------------------------------------------- */

  get bytes(): number {
    return this.totalBytes;
  }
  get dirtyBytes(): number {
    return this.dirtyBytesNow;
  }
  get dirtyCount(): number {
    return this.dirtySet.size;
  }
  get pageCount(): number {
    return this.pages.length;
  }
  get itemCount(): number {
    return this.pages.reduce((n, p) => n + p.items.length, 0);
  }

  /** The kernel's "dirty item-cache pages", estimated: pages with dirty items plus 4 KiB units of dirty bytes. */
  dirtyPages(): number {
    return this.dirtyPageCount + Math.floor(this.dirtyBytesNow / DIRTY_PAGE_BYTES);
  }

  /* ---- reading ---------------------------------------------------------------- */

  async lookup(k: Key, lock: ItemLock): Promise<Uint8Array | null> {
    this.check(k, lock, 'READ', false);
    this.counters.lookups++;
    const p = await this.ensurePage(k, lock);
    const it = this.find(p, k);
    const out = it === null || it.deletion || it.delta ? null : it.val.slice();
    this.shrink();
    return out;
  }

  /** The first item with key in [k, min(last, lock.end)], or null. */
  async next(k: Key, last: Key, lock: ItemLock): Promise<{ key: Key; val: Uint8Array } | null> {
    this.check(k, lock, 'READ', false);
    const end = minKey(last, lock.end);
    let cur = k;
    try {
      while (compareKeys(cur, end) <= 0) {
        const p = await this.ensurePage(cur, lock);
        for (let i = lowerBound(p.items, cur); i < p.items.length; i++) {
          const it = p.items[i]!;
          if (compareKeys(it.key, end) > 0) return null;
          if (!it.deletion && !it.delta) return { key: { ...it.key }, val: it.val.slice() };
        }
        if (compareKeys(p.end, end) >= 0) return null;
        cur = keyInc(p.end);
      }
      return null;
    } finally {
      this.shrink();
    }
  }

  /**
   * Up to `max` items with keys in [k, min(last, lock.end)], in key order:
   * next() repeated, without a page search per item (readdir).
   */
  async nextN(k: Key, last: Key, lock: ItemLock, max: number): Promise<{ key: Key; val: Uint8Array }[]> {
    this.check(k, lock, 'READ', false);
    const end = minKey(last, lock.end);
    const out: { key: Key; val: Uint8Array }[] = [];
    let cur = k;
    try {
      while (out.length < max && compareKeys(cur, end) <= 0) {
        const p = await this.ensurePage(cur, lock);
        for (let i = lowerBound(p.items, cur); i < p.items.length && out.length < max; i++) {
          const it = p.items[i]!;
          if (compareKeys(it.key, end) > 0) return out;
          if (!it.deletion && !it.delta) out.push({ key: { ...it.key }, val: it.val.slice() });
        }
        if (out.length >= max || compareKeys(p.end, end) >= 0) return out;
        cur = keyInc(p.end);
      }
      return out;
    } finally {
      this.shrink();
    }
  }

  /** The last item with key in [max(first, lock.start), k], or null. */
  async prev(k: Key, first: Key, lock: ItemLock): Promise<{ key: Key; val: Uint8Array } | null> {
    this.check(k, lock, 'READ', false);
    const start = maxKey(first, lock.start);
    let cur = k;
    try {
      while (compareKeys(cur, start) >= 0) {
        const p = await this.ensurePage(cur, lock);
        let i = lowerBound(p.items, cur);
        if (i < p.items.length && compareKeys(p.items[i]!.key, cur) === 0) i++;
        for (i--; i >= 0; i--) {
          const it = p.items[i]!;
          if (compareKeys(it.key, start) < 0) return null;
          if (!it.deletion && !it.delta) return { key: { ...it.key }, val: it.val.slice() };
        }
        if (compareKeys(p.start, start) <= 0) return null;
        cur = keyDec(p.start);
      }
      return null;
    } finally {
      this.shrink();
    }
  }

  /* ---- writing ---------------------------------------------------------------- */

  async create(k: Key, val: Uint8Array, lock: ItemLock): Promise<void> {
    this.check(k, lock, 'WRITE', true, val);
    const p = await this.ensurePage(k, lock);
    const it = this.find(p, k);
    if (it !== null && !it.deletion) {
      this.shrink();
      throw new FsError('EEXIST');
    }
    if (it !== null) this.change(p, it, val, false, this.seqFor(lock));
    else this.insert(p, new CachedItem({ ...k }, val.slice(), this.seqFor(lock), true, false, false, false));
    this.counters.creates++;
    this.shrink();
  }

  async update(k: Key, val: Uint8Array, lock: ItemLock): Promise<void> {
    this.check(k, lock, 'WRITE', true, val);
    const { p, it } = await this.existing(k, lock);
    this.change(p, it, val, false, this.seqFor(lock));
    this.counters.updates++;
    this.shrink();
  }

  /** The page and live item of k for update, dirty and delete; ENOENT when there is none. */
  private async existing(k: Key, lock: ItemLock): Promise<{ p: Page; it: CachedItem }> {
    const p = await this.ensurePage(k, lock);
    const it = this.find(p, k);
    if (it === null || it.deletion) {
      this.shrink();
      throw new FsError('ENOENT');
    }
    return { p, it };
  }

  /** Make an existing item dirty (it is written at commit with a new seq). */
  async dirty(k: Key, lock: ItemLock): Promise<void> {
    this.check(k, lock, 'WRITE', true);
    const { p, it } = await this.existing(k, lock);
    this.change(p, it, it.val, false, this.seqFor(lock));
    this.shrink();
  }

  async delete(k: Key, lock: ItemLock): Promise<void> {
    this.check(k, lock, 'WRITE', true);
    const { p, it } = await this.existing(k, lock);
    this.deleteLocked(p, it, this.seqFor(lock));
    this.shrink();
  }

  /** Create or replace without knowing what exists (WRITE_ONLY). */
  async createForce(k: Key, val: Uint8Array, lock: ItemLock): Promise<void> {
    this.check(k, lock, 'WRITE_ONLY', true, val);
    const p = await this.ensurePage(k, lock);
    const it = this.find(p, k);
    assert(it === null || !it.delta, 'create_force over a delta item');
    if (it !== null) this.change(p, it, val, false, this.seqFor(lock));
    else this.insert(p, new CachedItem({ ...k }, val.slice(), this.seqFor(lock), true, false, false, true));
    this.counters.creates++;
    this.shrink();
  }

  /** Always leave a tombstone (WRITE_ONLY). */
  async deleteForce(k: Key, lock: ItemLock): Promise<void> {
    this.check(k, lock, 'WRITE_ONLY', true);
    const p = await this.ensurePage(k, lock);
    const it = this.find(p, k);
    assert(it === null || !it.delta, 'delete_force over a delta item');
    const seq = this.seqFor(lock);
    if (it !== null) {
      it.persistent = true;
      this.change(p, it, EMPTY, true, seq);
    } else {
      this.insert(p, new CachedItem({ ...k }, EMPTY, seq, true, true, false, true));
    }
    this.counters.tombstones++;
    this.counters.deletes++;
    this.shrink();
  }

  /** Add an xattr totl delta (total, count as wrapping u64s) (WRITE_ONLY). */
  async delta(k: Key, val: Uint8Array, lock: ItemLock): Promise<void> {
    this.check(k, lock, 'WRITE_ONLY', true, val);
    assert(k.zone === ZONE.XATTR_TOTL && val.length === 16, 'deltas are 16-byte xattr totl items');
    const p = await this.ensurePage(k, lock);
    const it = this.find(p, k);
    const seq = this.seqFor(lock);
    this.counters.deltas++;
    if (it === null) {
      this.insert(p, new CachedItem({ ...k }, val.slice(), seq, true, false, true, true));
    } else {
      assert(it.delta && it.dirty, 'delta over a non-delta item');
      const sum = new Uint8Array(16);
      setU64(sum, 0, BigInt.asUintN(64, getU64(it.val, 0) + getU64(val, 0)));
      setU64(sum, 8, BigInt.asUintN(64, getU64(it.val, 8) + getU64(val, 8)));
      if (getU64(sum, 0) === 0n && getU64(sum, 8) === 0n) this.remove(p, it);
      else this.change(p, it, sum, false, seq);
    }
    this.shrink();
  }

  /* ---- commit ------------------------------------------------------------------- */

  /** The dirty items in key order (the commit writes them into the log btree). */
  dirtySnapshot(): CachedItem[] {
    return [...this.dirtySet].sort((a, b) => compareKeys(a.key, b.key));
  }

  /** After COMMIT succeeded: tombstones and deltas go, the rest become clean and persistent. */
  markClean(items: readonly CachedItem[]): void {
    // A read in flight may have fetched roots from before this commit: once
    // these items are clean their pages may be evicted, and such a read must
    // not then fill the gap with what it saw.  It reads again.
    this.gen++;
    for (const it of items) {
      assert(it.dirty && this.dirtySet.has(it), 'a committed item changed between snapshot and markClean');
      const p = this.pageOf(it.key);
      assert(p !== null && p.items[lowerBound(p.items, it.key)] === it, 'a dirty item is not in its page');
      if (it.deletion || it.delta) {
        this.remove(p, it);
      } else {
        this.setDirty(p, it, false);
        it.persistent = true;
      }
      this.counters.markedClean++;
    }
    this.shrink();
  }

  /* ---- locks -------------------------------------------------------------------- */

  /** Are there dirty items in [start, end]? */
  hasDirty(start: Key, end: Key): boolean {
    for (const it of this.dirtySet) if (compareKeys(it.key, start) >= 0 && compareKeys(it.key, end) <= 0) return true;
    return false;
  }

  /**
   * Drop everything cached in [start, end] (a lock is invalidated; its
   * transaction was synced first, so nothing there is dirty).
   */
  invalidate(start: Key, end: Key): number {
    this.gen++;
    let dropped = 0;
    for (let i = this.pages.length - 1; i >= 0; i--) {
      const p = this.pages[i]!;
      if (compareKeys(p.end, start) < 0 || compareKeys(p.start, end) > 0) continue;
      assert.equal(p.dirty, 0, 'invalidating a lock range that holds dirty items');
      this.dropPage(i);
      dropped++;
    }
    this.counters.invalidatedPages += dropped;
    return dropped;
  }

  /**
   * Drop everything, dirty items included: after the last commit at
   * unmount, or after a forced unmount abandoned the transaction.  Safe to
   * call at any time and more than once.
   */
  destroy(): void {
    this.gen++;
    this.pages.length = 0;
    this.lru.clear();
    this.lastPage = null;
    this.lruTail = null;
    this.dirtySet.clear();
    this.totalBytes = 0;
    this.dirtyBytesNow = 0;
    this.dirtyPageCount = 0;
  }

  /** Expensive consistency check (tests). */
  checkInvariants(): void {
    let bytes = 0;
    let dirtyBytes = 0;
    let dirty = 0;
    let dirtyPages = 0;
    for (let i = 0; i < this.pages.length; i++) {
      const p = this.pages[i]!;
      assert(compareKeys(p.start, p.end) <= 0, 'page start > end');
      if (i > 0) assert(compareKeys(this.pages[i - 1]!.end, p.start) < 0, 'pages overlap or are out of order');
      let pb = PAGE_COST;
      let pd = 0;
      p.items.forEach((it, j) => {
        assert(compareKeys(it.key, p.start) >= 0 && compareKeys(it.key, p.end) <= 0, 'item outside its page');
        if (j > 0) assert(compareKeys(p.items[j - 1]!.key, it.key) < 0, 'page items out of order');
        pb += it.cost;
        if (it.dirty) {
          pd++;
          dirtyBytes += it.cost;
          assert(this.dirtySet.has(it));
        }
        assert(!it.deletion || it.dirty, 'a clean tombstone');
        assert(!it.delta || it.dirty, 'a clean delta');
      });
      assert.equal(p.bytes, pb, 'page bytes');
      assert.equal(p.dirty, pd, 'page dirty count');
      assert(this.lru.has(p), 'page missing from the lru');
      bytes += pb;
      dirty += pd;
      if (pd > 0) dirtyPages++;
    }
    assert.equal(this.lru.size, this.pages.length);
    assert(this.lastPage === null || this.pages.includes(this.lastPage), 'the last page hint is not a cached page');
    assert(this.lruTail === null || [...this.lru.keys()].pop() === this.lruTail, 'the lru tail hint is not the lru tail');
    assert.equal(this.totalBytes, bytes, 'total bytes');
    assert.equal(this.dirtyBytesNow, dirtyBytes, 'dirty bytes');
    assert.equal(this.dirtySet.size, dirty, 'dirty set');
    assert.equal(this.dirtyPageCount, dirtyPages, 'dirty page count');
  }

  /* ---- internals ---------------------------------------------------------------- */

  private check(k: Key, lock: ItemLock, need: LockMode, write: boolean, val?: Uint8Array): void {
    const fail = (why: string): never => {
      this.counters.einval++;
      this.opts.warn?.(`item operation refused: ${why}`);
      throw new FsError('EINVAL', why);
    };
    if (compareKeys(k, lock.start) < 0 || compareKeys(k, lock.end) > 0) fail('key outside the lock range');
    const ok = need === 'READ' ? lock.mode === 'READ' || lock.mode === 'WRITE' : lock.mode === need;
    if (!ok) fail(`a ${lock.mode} lock does not allow a ${need} operation`);
    if (write) {
      if (!this.opts.held()) fail('item write without a held transaction');
      assert(this.opts.transSeq() > 0n, 'a held transaction has a seq');
    }
    if (val !== undefined) assert(val.length <= BTREE_MAX_VAL_LEN, `item value of ${val.length} bytes`);
  }

  private seqFor(lock: ItemLock): bigint {
    const t = this.opts.transSeq();
    return lock.writeSeq > t ? lock.writeSeq : t;
  }

  /** The index of the page containing k, or -1. */
  private pageIndex(k: Key): number {
    let lo = 0;
    let hi = this.pages.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (compareKeys(this.pages[mid]!.start, k) <= 0) lo = mid + 1;
      else hi = mid;
    }
    const i = lo - 1;
    return i >= 0 && compareKeys(k, this.pages[i]!.end) <= 0 ? i : -1;
  }

  private pageOf(k: Key): Page | null {
    const last = this.lastPage;
    if (last !== null && compareKeys(k, last.start) >= 0 && compareKeys(k, last.end) <= 0) return last;
    const i = this.pageIndex(k);
    if (i < 0) return null;
    this.lastPage = this.pages[i]!;
    return this.lastPage;
  }

  private find(p: Page, k: Key): CachedItem | null {
    const i = lowerBound(p.items, k);
    const it = p.items[i];
    return it !== undefined && compareKeys(it.key, k) === 0 ? it : null;
  }

  private touch(p: Page): void {
    if (this.lruTail === p) return;
    this.lru.delete(p);
    this.lru.set(p, true);
    this.lruTail = p;
  }

  /** The page containing k, reading (or, WRITE_ONLY, assuming) its range on a miss. */
  private async ensurePage(k: Key, lock: ItemLock): Promise<Page> {
    for (let tries = 0; ; tries++) {
      assert(tries < 1000, 'item cache miss looped 1000 times');
      const p = this.pageOf(k);
      if (p !== null) {
        if (tries === 0) this.counters.hits++;
        this.touch(p);
        return p;
      }
      if (tries === 0) this.counters.misses++;
      if (lock.mode === 'WRITE_ONLY') {
        this.insertSegment({ start: lock.start, end: lock.end, items: [] });
        continue;
      }
      const gen = this.gen;
      this.counters.reads++;
      const seg = await this.opts.reader.readSegment(k, lock.start, lock.end, lock.start);
      assert(compareKeys(seg.start, k) <= 0 && compareKeys(k, seg.end) <= 0, 'a read segment covers its key');
      assert(compareKeys(seg.start, lock.start) >= 0 && compareKeys(seg.end, lock.end) <= 0, 'a read segment stays in its lock range');
      if (gen !== this.gen) {
        this.counters.readRaces++;
        continue;
      }
      this.insertSegment(seg);
    }
  }

  /** Insert pages for the parts of seg's range that no page covers. */
  private insertSegment(seg: ForestSegment): void {
    let cur: Key | null = seg.start;
    let idx = 0;
    const take = (from: Key, to: Key): void => {
      const items = seg.items
        .filter((it) => compareKeys(it.key, from) >= 0 && compareKeys(it.key, to) <= 0)
        .map((it) => new CachedItem({ ...it.key }, it.val.slice(), it.seq, false, false, false, true));
      this.addPage({ start: { ...from }, end: { ...to }, items, bytes: 0, dirty: 0 });
    };
    // The first page that may overlap: the one containing seg.start, or the next.
    idx = this.pageIndex(seg.start);
    if (idx < 0) {
      idx = 0;
      while (idx < this.pages.length && compareKeys(this.pages[idx]!.start, seg.start) < 0) idx++;
    }
    while (cur !== null && compareKeys(cur, seg.end) <= 0) {
      const p = this.pages[idx];
      if (p === undefined || compareKeys(p.start, seg.end) > 0) {
        take(cur, seg.end);
        break;
      }
      if (compareKeys(cur, p.start) < 0) {
        take(cur, keyDec(p.start));
        idx++; // the new page sits before p
      }
      cur = isOnes(p.end) ? null : keyInc(p.end);
      idx++;
    }
  }

  private addPage(p: Page): void {
    p.bytes = PAGE_COST + p.items.reduce((n, it) => n + it.cost, 0);
    p.dirty = 0;
    this.setPageDirty(p, p.items.filter((it) => it.dirty).length);
    let i = 0;
    let hi = this.pages.length;
    while (i < hi) {
      const mid = (i + hi) >>> 1;
      if (compareKeys(this.pages[mid]!.start, p.start) < 0) i = mid + 1;
      else hi = mid;
    }
    assert(i === 0 || compareKeys(this.pages[i - 1]!.end, p.start) < 0, 'new page overlaps its predecessor');
    assert(i === this.pages.length || compareKeys(p.end, this.pages[i]!.start) < 0, 'new page overlaps its successor');
    this.pages.splice(i, 0, p);
    this.lru.set(p, true);
    this.lruTail = p;
    this.totalBytes += p.bytes;
    this.counters.pagesInserted++;
    if (p.items.length > this.maxPageItems) this.split(p);
  }

  private split(p: Page): void {
    const i = this.pageIndex(p.start);
    assert(i >= 0 && this.pages[i] === p, 'splitting a page that is not in the list');
    const mid = p.items.length >>> 1;
    const rightItems = p.items.splice(mid);
    const right: Page = { start: { ...rightItems[0]!.key }, end: p.end, items: rightItems, bytes: 0, dirty: 0 };
    p.end = keyDec(right.start);
    right.bytes = PAGE_COST + rightItems.reduce((n, it) => n + it.cost, 0);
    const rightDirty = rightItems.filter((it) => it.dirty).length;
    p.bytes -= right.bytes - PAGE_COST;
    this.setPageDirty(p, p.dirty - rightDirty);
    this.setPageDirty(right, rightDirty);
    this.totalBytes += PAGE_COST;
    this.pages.splice(i + 1, 0, right);
    this.lru.set(right, true);
    this.lruTail = right;
    this.counters.pageSplits++;
    if (p.items.length > this.maxPageItems) this.split(p);
    if (right.items.length > this.maxPageItems) this.split(right);
  }

  private insert(p: Page, it: CachedItem): void {
    const i = lowerBound(p.items, it.key);
    assert(i === p.items.length || compareKeys(p.items[i]!.key, it.key) !== 0, 'inserting a key twice');
    p.items.splice(i, 0, it);
    p.bytes += it.cost;
    this.totalBytes += it.cost;
    if (it.dirty) {
      this.setPageDirty(p, p.dirty + 1);
      this.dirtySet.add(it);
      this.dirtyBytesNow += it.cost;
    }
    if (p.items.length > this.maxPageItems) this.split(p);
  }

  private remove(p: Page, it: CachedItem): void {
    const i = lowerBound(p.items, it.key);
    assert(p.items[i] === it, 'removing an item that is not in its page');
    p.items.splice(i, 1);
    p.bytes -= it.cost;
    this.totalBytes -= it.cost;
    if (it.dirty) {
      this.setPageDirty(p, p.dirty - 1);
      this.dirtySet.delete(it);
      this.dirtyBytesNow -= it.cost;
    }
  }

  /** Set a page's dirty item count, keeping the count of dirty pages. */
  private setPageDirty(p: Page, n: number): void {
    assert(n >= 0, 'negative dirty count');
    if (p.dirty === 0 && n > 0) this.dirtyPageCount++;
    else if (p.dirty > 0 && n === 0) this.dirtyPageCount--;
    p.dirty = n;
  }

  private setDirty(p: Page, it: CachedItem, dirty: boolean): void {
    if (it.dirty === dirty) return;
    it.dirty = dirty;
    if (dirty) {
      this.setPageDirty(p, p.dirty + 1);
      this.dirtySet.add(it);
      this.dirtyBytesNow += it.cost;
    } else {
      this.setPageDirty(p, p.dirty - 1);
      this.dirtySet.delete(it);
      this.dirtyBytesNow -= it.cost;
    }
  }

  /** New value / deletion state and seq; the item becomes dirty. */
  private change(p: Page, it: CachedItem, val: Uint8Array, deletion: boolean, seq: bigint): void {
    const before = it.cost;
    const wasDirty = it.dirty;
    it.val = val === it.val ? val : val.slice();
    it.deletion = deletion;
    it.seq = seq;
    const delta = it.cost - before;
    p.bytes += delta;
    this.totalBytes += delta;
    if (wasDirty) this.dirtyBytesNow += delta;
    else this.setDirty(p, it, true);
  }

  private deleteLocked(p: Page, it: CachedItem, seq: bigint): void {
    this.counters.deletes++;
    if (it.persistent) {
      this.change(p, it, EMPTY, true, seq);
      this.counters.tombstones++;
    } else {
      this.remove(p, it);
    }
  }

  private dropPage(i: number): void {
    const p = this.pages[i]!;
    assert.equal(p.dirty, 0, 'dropping a page with dirty items');
    this.pages.splice(i, 1);
    this.lru.delete(p);
    if (this.lastPage === p) this.lastPage = null;
    if (this.lruTail === p) this.lruTail = null;
    this.totalBytes -= p.bytes;
  }

  /** Evict least recently used clean pages until under the bound. */
  private shrink(): void {
    if (this.totalBytes <= this.opts.maxBytes) return;
    for (const p of this.lru.keys()) {
      if (this.totalBytes <= this.opts.maxBytes) break;
      if (p.dirty > 0) continue;
      const i = this.pageIndex(p.start);
      assert(i >= 0 && this.pages[i] === p, 'lru page not in the page list');
      this.counters.evictedItems += p.items.length;
      this.dropPage(i);
      this.counters.evictedPages++;
    }
  }
}

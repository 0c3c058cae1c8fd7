/*
 * The transaction metadata allocator (PROTOCOL.md 7.1, 7.3; FORMAT.md 9.3):
 * a pair of alloc lists, avail and freed, that hands out and takes back 64
 * KiB metadata blknos for one transaction, and the BlockStore the btree and
 * the list code write through.
 *
 *   avail head --> [dirty avail block: sorted blknos to hand out] --> ...
 *   freed head --> [dirty freed block: blknos freed this transaction] --> ...
 *
 * What it owns.  The allocation side of a BlockStore: alloc(kind) pops the
 * front blkno of the first avail block and asks the block layer for a new
 * dirty image there; free(ref) takes a block back; isDirty/read delegate to
 * the block layer (BlockImages, below), which owns the images.  The two
 * heads belong to the holder (the super's server_meta_avail[x] /
 * server_meta_freed[x] for the server, a log_trees' meta_avail /
 * meta_freed for a client, the lists in a srch or log-merge request) and
 * are mutated in place, always exact: first_nr = nr of the first block,
 * total_nr = sum over the chain.  One instance lives for one transaction and
 * is used by one writer (the transaction holder, main thread); close() ends
 * it after the dirty blocks were written.
 *
 * First use in a transaction (the first alloc, or the first free of a
 * committed block) dirties both list blocks with the first two entries of
 * the avail block itself: entry 0 becomes the new avail block, entry 1 the
 * new freed block.  The avail block must hold >= 2 entries then, else
 * FsError('ENOSPC').  The avail copy drops those two entries and is sorted,
 * so blocks come out in ascending runs.  The freed block is copied too,
 * unless it has less than a quarter of its capacity free (or there is no
 * freed list yet): then a new empty block is linked in front of it and the
 * full one is left as it is.  The old avail block and (when copied) the old
 * freed block are committed blocks, so they go onto the new freed block.
 * Only the first avail block is ever used; running it dry is
 * FsError('ENOSPC'): callers commit before that (PROTOCOL.md 4.3), using
 * allocsLeft()/freesLeft()/isLow().
 *
 * Freeing, two-phase.  A block allocated by this allocator in this
 * transaction is referenced by nothing durable: its image is forgotten and
 * its blkno goes straight back to the dirty avail block (there is always
 * room: it was popped from there).  Any other block belongs to the last
 * committed state, which must stay readable until the transaction that
 * replaces it is durable: it is pushed onto the freed list and is not
 * allocatable again until, after this commit, the server splices the list
 * into its idle freed list and a later commit moves it into the meta_freed
 * extents (server.ts).  If the dirty freed block fills up mid-transaction a
 * new one, taken from avail, is linked in front (the kernel returns ENOSPC
 * here; the rule costs an avail entry per 8185 frees and lets a server
 * commit that frees a lot finish; isLow() still reports the kernel's
 * notion of "low" so callers commit at the same points).
 *
 * Failure modes.  Bytes read (list blocks, entries) are validated: an entry
 * outside the bounds, a duplicate, an entry that is already dirty, or a
 * committed block freed twice is a CorruptionError (the state on disk lists
 * a block twice or two refs name one block).  ENOSPC from alloc() leaves
 * everything as it was; ENOSPC from free() (first use with first_nr < 2,
 * or linking a freed block with avail empty) leaves the lists as they were
 * but the caller's operation half done, and the transaction is discarded.
 * Discarding means dropping the dirty images and restoring the heads from
 * the last committed copy: the heads are mutated in place.
 *
 * Why the first list blocks are read in open(): BlockStore.free() is
 * synchronous (the btree frees old blocks without awaiting, and a join may
 * free before it allocates), but dirtying the pair needs the images of the
 * first avail and freed blocks.  open() reads and validates them (two 64
 * KiB copies) so that alloc and free never wait; a transaction that never
 * allocates or frees never dirties them and consumes nothing.
 */
import assert from 'node:assert/strict';
import type { BlockStore } from '../btree/store.js';
import type { BlockRef } from '../format/block.js';
import type { AllocListHead } from '../format/common.js';
import type { BlockKind } from '../format/constants.js';
import { CorruptionError, FsError } from '../format/errors.js';
import type { BlknoBounds } from './extent.js';
import {
  LIST_MAX, LIST_PAYLOAD_OFF, listBlockAdd, listBlockDrop, listBlockEntry, listBlockInit, listBlockNr, listBlockSort,
  listBlockSpace, readFirstListBlock, setListBlockNext, type ListOpts,
} from './list.js';

/**
 * What the allocator needs from the block layer: verified reads, dirty
 * state, and new dirty images at the blknos it chooses.  The block cache
 * (src/block/) provides it through an adapter; tests use an in-memory one.
 */
export interface BlockImages {
  readonly fsid: bigint;
  /** Verified image of the block a ref names (as BlockStore.read). */
  read(ref: BlockRef, kind: BlockKind): Promise<Uint8Array>;
  isDirty(blkno: bigint): boolean;
  /** A new zeroed dirty image at blkno, header written with a fresh random seq. */
  dirty(blkno: bigint, kind: BlockKind): { ref: BlockRef; b: Uint8Array };
  /** Drop a dirty image freed in the transaction that dirtied it; it is never written. */
  forget(blkno: bigint): void;
}

export interface MetaAllocOpts {
  /** Valid metadata blknos: [2, total_meta_blocks - 1]. */
  bounds?: BlknoBounds;
  /** Names the allocator in errors. */
  source?: string;
}

/** Re-check the heads against the dirty blocks after every alloc and free; tests turn this on (STYLE.md 5). */
export const allocInvariants = { enabled: false };

/** A freed first block with less free space than this gets a new block linked in front. */
export const FREED_LINK_SPACE = Math.floor(LIST_MAX / 4);

export interface MetaAllocCounters {
  allocs: number;
  /** Blocks allocated and freed in this transaction, back on avail. */
  freesDirty: number;
  /** Committed blocks pushed onto the freed list. */
  freesCommitted: number;
  pairDirtied: number;
  /** New freed blocks linked in front: at first use (full-ish block) and when full mid-transaction. */
  freedLinks: number;
  enospc: number;
}

export class MetaAllocator implements BlockStore {
  readonly fsid: bigint;
  readonly counters: MetaAllocCounters = { allocs: 0, freesDirty: 0, freesCommitted: 0, pairDirtied: 0, freedLinks: 0, enospc: 0 };

  private availSrc: Uint8Array | null;
  private freedSrc: Uint8Array | null;
  private availB: Uint8Array | null = null;
  private freedB: Uint8Array | null = null;
  /** Blocks handed out by alloc() in this transaction and not freed since. */
  private readonly mine = new Set<bigint>();
  /** The dirty list blocks this allocator made for its own lists. */
  private readonly listBlocks = new Set<bigint>();
  /** Committed blocks freed in this transaction. */
  private readonly freedCommitted = new Set<bigint>();
  private closed = false;

  private constructor(
    private readonly images: BlockImages,
    readonly avail: AllocListHead,
    readonly freed: AllocListHead,
    private readonly opts: MetaAllocOpts,
    availSrc: Uint8Array | null,
    freedSrc: Uint8Array | null,
  ) {
    this.fsid = images.fsid;
    this.availSrc = availSrc;
    this.freedSrc = freedSrc;
  }

  /**
   * Start a transaction's allocator over two committed list heads (mutated
   * in place from now on).  Reads and validates their first blocks.
   */
  static async open(images: BlockImages, avail: AllocListHead, freed: AllocListHead, opts: MetaAllocOpts = {}): Promise<MetaAllocator> {
    assert(avail !== freed, 'avail and freed are the same head');
    const lopts: ListOpts = { bounds: opts.bounds, source: opts.source ?? 'meta alloc' };
    for (const h of [avail, freed]) {
      assert(h.ref.blkno === 0n || !images.isDirty(h.ref.blkno), `list block ${h.ref.blkno} is dirty at transaction start`);
    }
    const a = await readFirstListBlock(images, avail, { ...lopts, source: `${lopts.source} avail` });
    let f: Uint8Array | null = null;
    if (freed.ref.blkno !== 0n) {
      // The freed block is only copied when it has room; read it for that case (and validate it always).
      const fb = await readFirstListBlock(images, freed, { ...lopts, source: `${lopts.source} freed` });
      if (listBlockSpace(freed.first_nr) >= FREED_LINK_SPACE) f = fb;
    }
    return new MetaAllocator(images, avail, freed, opts, a === null ? null : a.slice(), f === null ? null : f.slice());
  }

  /* ---- BlockStore ----------------------------------------------------------- */

  read(ref: BlockRef, kind: BlockKind): Promise<Uint8Array> {
    return this.images.read(ref, kind);
  }

  isDirty(blkno: bigint): boolean {
    return this.images.isDirty(blkno);
  }

  async alloc(kind: BlockKind): Promise<{ ref: BlockRef; b: Uint8Array }> {
    return this.allocSync(kind);
  }

  allocSync(kind: BlockKind): { ref: BlockRef; b: Uint8Array } {
    this.assertOpen();
    this.dirtyPair();
    const blkno = this.takeAvail();
    this.mine.add(blkno);
    this.counters.allocs++;
    if (allocInvariants.enabled) this.assertConsistent();
    return this.images.dirty(blkno, kind);
  }

  free(ref: BlockRef): void {
    this.assertOpen();
    const n = ref.blkno;
    assert(n !== 0n, 'freeing blkno 0');
    assert(!this.listBlocks.has(n), `freeing the allocator's own list block ${n}`);
    if (this.mine.has(n)) {
      assert(this.images.isDirty(n), `block ${n} allocated in this transaction is not dirty`);
      this.images.forget(n);
      this.mine.delete(n);
      const b = this.availB;
      assert(b !== null && listBlockNr(b) < LIST_MAX, 'no room on avail for a block it gave out');
      listBlockAdd(b, n);
      this.avail.first_nr++;
      this.avail.total_nr++;
      this.counters.freesDirty++;
      if (allocInvariants.enabled) this.assertConsistent();
      return;
    }
    assert(!this.images.isDirty(n), `free of dirty block ${n} that this allocator did not allocate`);
    this.checkBlkno(n, 'freed block');
    if (this.freedCommitted.has(n)) throw this.corrupt(n, 'committed block freed twice in one transaction');
    this.dirtyPair();
    this.pushFreed(n);
    this.counters.freesCommitted++;
    if (allocInvariants.enabled) this.assertConsistent();
  }

  /* ---- accounting ------------------------------------------------------------ */

  /** Allocations that will still succeed in this transaction. */
  allocsLeft(): number {
    if (this.availB !== null) return listBlockNr(this.availB);
    return Math.max(0, this.avail.first_nr - 2);
  }

  /** Frees of committed blocks that fit in the current freed block (without linking another). */
  freesLeft(): number {
    if (this.freedB !== null) return listBlockSpace(listBlockNr(this.freedB));
    const cow = this.freed.ref.blkno !== 0n && listBlockSpace(this.freed.first_nr) >= FREED_LINK_SPACE;
    // The pair's dirtying pushes the old avail (and the old freed) block.
    return cow ? listBlockSpace(this.freed.first_nr) - 2 : LIST_MAX - 1;
  }

  /** The kernel's "low": fewer than n allocations or frees left; commit soon. */
  isLow(n: number): boolean {
    return this.allocsLeft() < n || this.freesLeft() < n;
  }

  /** Has this transaction dirtied the list blocks yet? */
  get dirtied(): boolean {
    return this.availB !== null;
  }

  /** Blocks handed out in this transaction and still in use (dirty). */
  get allocated(): ReadonlySet<bigint> {
    return this.mine;
  }

  /** Check the heads against the dirty blocks (cheap; tests call it often). */
  assertConsistent(): void {
    if (this.availB !== null) assert.equal(listBlockNr(this.availB), this.avail.first_nr, 'avail first_nr');
    if (this.freedB !== null) assert.equal(listBlockNr(this.freedB), this.freed.first_nr, 'freed first_nr');
    assert(this.avail.total_nr >= BigInt(this.avail.first_nr) && this.freed.total_nr >= BigInt(this.freed.first_nr));
  }

  /** End of the transaction (its dirty blocks were written or dropped); any later use asserts. */
  close(): void {
    this.closed = true;
    this.availSrc = null;
    this.freedSrc = null;
    this.availB = null;
    this.freedB = null;
  }

  /* ---- internals ------------------------------------------------------------- */

  private assertOpen(): void {
    assert(!this.closed, 'meta allocator used after its transaction closed');
  }

  private corrupt(blkno: bigint, detail: string): CorruptionError {
    return new CorruptionError(this.opts.source ?? 'meta alloc', blkno, 'structure', detail);
  }

  private checkBlkno(n: bigint, what: string): void {
    const b = this.opts.bounds;
    if (n === 0n || (b !== undefined && (n < b.first || n > b.last))) throw this.corrupt(n, `${what} ${n} out of bounds`);
  }

  /** Validate an avail entry about to be used (it came from disk). */
  private checkAvailEntry(n: bigint): void {
    this.checkBlkno(n, 'avail entry');
    if (this.images.isDirty(n) || this.freedCommitted.has(n) || n === this.avail.ref.blkno || n === this.freed.ref.blkno) throw this.corrupt(n, `avail entry ${n} is already in use`);
  }

  /** Pop the front of the dirty avail block (validated before it is removed). */
  private takeAvail(): bigint {
    const b = this.availB;
    assert(b !== null);
    if (listBlockNr(b) === 0) {
      this.counters.enospc++;
      throw new FsError('ENOSPC', `${this.opts.source ?? 'meta alloc'}: first avail block is empty`);
    }
    const n = listBlockEntry(b, 0);
    this.checkAvailEntry(n);
    listBlockDrop(b, 1);
    this.avail.first_nr--;
    this.avail.total_nr--;
    return n;
  }

  private pushFreed(n: bigint): void {
    if (listBlockNr(this.freedB!) === LIST_MAX) this.linkFreed();
    listBlockAdd(this.freedB!, n);
    this.freed.first_nr++;
    this.freed.total_nr++;
    this.freedCommitted.add(n);
  }

  /** A new empty freed block, taken from avail, in front of the full one. */
  private linkFreed(): void {
    const n = this.takeAvail();
    const nb = this.images.dirty(n, 'allocList');
    listBlockInit(nb.b);
    setListBlockNext(nb.b, this.freed.ref);
    this.freed.ref = nb.ref;
    this.freed.first_nr = 0;
    this.freedB = nb.b;
    this.listBlocks.add(n);
    this.counters.freedLinks++;
  }

  /** First use in this transaction: COW the first avail and freed blocks with avail's first two entries. */
  private dirtyPair(): void {
    if (this.availB !== null) return;
    if (this.avail.first_nr < 2) {
      this.counters.enospc++;
      throw new FsError('ENOSPC', `${this.opts.source ?? 'meta alloc'}: avail list first block holds ${this.avail.first_nr} < 2`);
    }
    const src = this.availSrc;
    assert(src !== null);
    const e0 = listBlockEntry(src, 0);
    const e1 = listBlockEntry(src, 1);
    this.checkAvailEntry(e0);
    this.checkAvailEntry(e1);
    if (e0 === e1) throw this.corrupt(e0, 'avail list holds a blkno twice');

    const link = this.freed.ref.blkno === 0n || listBlockSpace(this.freed.first_nr) < FREED_LINK_SPACE;
    const fr = this.images.dirty(e1, 'allocList');
    let oldFreed: BlockRef | null = null;
    if (link) {
      listBlockInit(fr.b);
      setListBlockNext(fr.b, this.freed.ref);
      this.freed.first_nr = 0;
      this.counters.freedLinks++;
    } else {
      assert(this.freedSrc !== null);
      fr.b.set(this.freedSrc.subarray(LIST_PAYLOAD_OFF), LIST_PAYLOAD_OFF);
      oldFreed = this.freed.ref;
    }
    this.freed.ref = fr.ref;

    const av = this.images.dirty(e0, 'allocList');
    av.b.set(src.subarray(LIST_PAYLOAD_OFF), LIST_PAYLOAD_OFF);
    listBlockDrop(av.b, 2);
    listBlockSort(av.b);
    const oldAvail = this.avail.ref;
    this.avail.ref = av.ref;
    this.avail.first_nr -= 2;
    this.avail.total_nr -= 2n;

    this.availB = av.b;
    this.freedB = fr.b;
    this.listBlocks.add(e0);
    this.listBlocks.add(e1);
    this.availSrc = null;
    this.freedSrc = null;
    this.pushFreed(oldAvail.blkno);
    if (oldFreed !== null) this.pushFreed(oldFreed.blkno);
    this.counters.pairDirtied++;
    this.assertConsistent();
  }
}

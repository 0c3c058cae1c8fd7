/*
 * The server's metadata allocator state over the super's fields
 * (PROTOCOL.md 4.11, 7.2; FORMAT.md 9.1, 9.3).
 *
 *   super.meta_alloc[2]          two extent roots, roles:
 *       [availIdx]   "meta_avail": refills every list (server and clients)
 *       [availIdx^1] "meta_freed": receives every freed metadata block
 *   super.server_meta_avail[2] / server_meta_freed[2]   two list pairs:
 *       [activeIdx]   this server transaction's MetaAllocator (meta.ts)
 *       [activeIdx^1] idle: refilled / emptied at commit
 *
 * What it owns.  The role indexes, the active MetaAllocator, and the rules
 * that move blocks between these structures.  The structures themselves
 * are the super's (mutated in place, the lead's commit code writes them
 * with the super); everything is changed through the btree and list code,
 * with the active allocator as the BlockStore, so the copy-on-write this
 * causes is allocated from the active avail list and its old blocks freed
 * onto the active freed list.  Main thread only, under the server commit
 * lock: handlers hold it shared, the commit takes it exclusively.
 *
 * Start: the meta_alloc with the larger total_len is meta_avail (index 0 on
 * a tie); the pair whose avail list has the larger total_nr is active (pair
 * 0 on a tie).  mkfs fills pair 0 and splits the extents over both roots.
 *
 * A commit (PROTOCOL.md 4.11):
 *   1. prepareCommit(): refill the idle avail list from meta_avail (toward
 *      8185 when its first block holds fewer than 4092) and empty the idle
 *      freed list into meta_freed.  Both stop early, leaving the rest for a
 *      later commit, when the active allocator gets low (fewer than
 *      lowMargin allocations or frees left) or meta_avail runs dry.
 *   2. the caller writes every dirty block, then the super;
 *   3. afterCommit(): if meta_avail has fewer than 2 x reserved blocks and
 *      meta_freed has more than meta_avail, the roles swap; the pairs swap
 *      always; a new MetaAllocator opens over the new active pair.
 *
 * Why blocks are never reused too early (the two-phase rule).  A block
 * freed in server transaction N is referenced by commit N-1: it goes onto
 * pair A's freed list (A active in N).  After commit N, A is idle; in
 * transaction N+1 its freed list is emptied into meta_freed, whose extents
 * are only allocated from after a role swap, i.e. after at least commit
 * N+1.  Blocks a client freed in its transaction are spliced onto the idle
 * freed list at its next GET, after its commit was made durable; they too
 * only reach meta_freed.  Lists refilled from meta_avail are idle (server)
 * or sent to a client after the commit (GET), so no block is handed out in
 * the transaction that took it from the extents.
 *
 * Failure modes.  ENOSPC from the active allocator in the middle of a step
 * (a handler's, or prepareCommit's despite the margin) leaves dirty state
 * that must not be committed as is: the lead's commit code treats it as a
 * failed commit.  Corruption found in lists or extents is a
 * CorruptionError from the code below, before the step modifies anything.
 */
import assert from 'node:assert/strict';
import type { AllocListHead, AllocRoot } from '../format/common.js';
import { FsError } from '../format/errors.js';
import { extentMoveAll, type BlknoBounds } from './extent.js';
import { emptyList, fillList, LIST_FILL_LO, LIST_FILL_TARGET, LIST_MAX, setListLow, spliceList } from './list.js';
import { MetaAllocator, type BlockImages } from './meta.js';

/** The super fields this module works on (format/super.ts Super has them all). */
export interface ServerAllocFields {
  meta_alloc: [AllocRoot, AllocRoot];
  server_meta_avail: [AllocListHead, AllocListHead];
  server_meta_freed: [AllocListHead, AllocListHead];
}

/** Merge request lists are filled to this many blocks (PROTOCOL.md 7.3). */
export const MERGE_FILL = 1028;

/**
 * Reserved metadata blocks (PROTOCOL.md 7.4): 2 x 8185 for the server's
 * lists plus, per connected client (at least one), two full lists, a merge
 * fill and 913 = 3 + 65536 div (56 + 16).
 */
export function reservedMetaBlocks(connectedClients: number): bigint {
  const per = BigInt(LIST_MAX + LIST_MAX + MERGE_FILL + 3 + Math.floor(65536 / (56 + 16)));
  return 2n * BigInt(LIST_MAX) + BigInt(Math.max(1, connectedClients)) * per;
}

export interface ServerAllocOpts {
  /** Valid metadata blknos, [2, total_meta_blocks - 1]. */
  bounds: BlknoBounds;
  /** Refill lists whose first block holds fewer (default 4092)... */
  fillLo?: number;
  /** ...up to this many (default 8185).  Small test devices lower both. */
  fillTarget?: number;
  /** Reserved metadata blocks, asked at each commit (default reservedMetaBlocks(1)). */
  reserved?: () => bigint;
  /** prepareCommit stops refilling/emptying when the active allocator has fewer allocs or frees left (default 64). */
  lowMargin?: number;
}

export interface ServerAllocCounters {
  commits: number;
  roleSwaps: number;
  idleFilled: number;
  idleEmptied: number;
  /** prepareCommit steps cut short (low active allocator or meta_avail dry). */
  stoppedEarly: number;
  reclaimed: number;
  clientFills: number;
}

export class ServerAlloc {
  readonly counters: ServerAllocCounters = { commits: 0, roleSwaps: 0, idleFilled: 0, idleEmptied: 0, stoppedEarly: 0, reclaimed: 0, clientFills: 0 };
  readonly fillLo: number;
  readonly fillTarget: number;
  private readonly reserved: () => bigint;
  private readonly lowMargin: number;
  private prepared = false;

  private constructor(
    private readonly images: BlockImages,
    readonly sup: ServerAllocFields,
    readonly opts: ServerAllocOpts,
    private availIdx: number,
    private activeIdx: number,
    private active: MetaAllocator,
  ) {
    this.fillLo = opts.fillLo ?? LIST_FILL_LO;
    this.fillTarget = opts.fillTarget ?? LIST_FILL_TARGET;
    assert(this.fillLo >= 0 && this.fillLo <= this.fillTarget && this.fillTarget <= LIST_MAX);
    this.reserved = opts.reserved ?? (() => reservedMetaBlocks(1));
    this.lowMargin = opts.lowMargin ?? 64;
  }

  /**
   * The metadata device grew (resize-devices, src/server/resize.ts):
   * blknos up to `last` are valid from now on.  The bounds object is shared
   * with the active pair's allocator, so both see it.
   */
  growBounds(last: bigint): void {
    assert(last >= this.opts.bounds.last, 'metadata bounds only grow');
    this.opts.bounds.last = last;
  }

  /** Server start: choose roles and the active pair from the committed super. */
  static async open(images: BlockImages, sup: ServerAllocFields, opts: ServerAllocOpts): Promise<ServerAlloc> {
    const availIdx = sup.meta_alloc[0].total_len >= sup.meta_alloc[1].total_len ? 0 : 1;
    const activeIdx = sup.server_meta_avail[0].total_nr >= sup.server_meta_avail[1].total_nr ? 0 : 1;
    const active = await ServerAlloc.openPair(images, sup, activeIdx, opts);
    return new ServerAlloc(images, sup, opts, availIdx, activeIdx, active);
  }

  private static openPair(images: BlockImages, sup: ServerAllocFields, idx: number, opts: ServerAllocOpts): Promise<MetaAllocator> {
    return MetaAllocator.open(images, sup.server_meta_avail[idx]!, sup.server_meta_freed[idx]!, {
      bounds: opts.bounds, source: `server_meta[${idx}]`,
    });
  }

  /** This transaction's allocator: the BlockStore for every server btree and list change. */
  get alloc(): MetaAllocator {
    return this.active;
  }

  get metaAvail(): AllocRoot {
    return this.sup.meta_alloc[this.availIdx]!;
  }

  get metaFreed(): AllocRoot {
    return this.sup.meta_alloc[this.availIdx ^ 1]!;
  }

  get metaAvailIndex(): number {
    return this.availIdx;
  }

  get activePair(): number {
    return this.activeIdx;
  }

  get idleAvail(): AllocListHead {
    return this.sup.server_meta_avail[this.activeIdx ^ 1]!;
  }

  get idleFreed(): AllocListHead {
    return this.sup.server_meta_freed[this.activeIdx ^ 1]!;
  }

  private src(idx: number): string {
    return `meta_alloc[${idx}]`;
  }

  /* ---- handler helpers ------------------------------------------------------ */

  /**
   * Splice a reclaimed list (a client's meta_freed at GET, a departed
   * client's avail and freed, a finished request's lists) onto the idle
   * freed list; src is zeroed.
   */
  async reclaimList(src: AllocListHead): Promise<void> {
    this.assertNotPrepared();
    assert(src !== this.idleFreed && src !== this.active.avail && src !== this.active.freed);
    await spliceList(this.active, this.idleFreed, src, { bounds: this.opts.bounds, source: 'reclaimed list' });
    this.counters.reclaimed++;
  }

  /**
   * Refill a list from meta_avail (a client's meta_avail at GET: lo/target
   * default to the server's; srch requests 4092/8185; merge requests
   * MERGE_FILL/MERGE_FILL) and set its LOW flag when meta_avail has no more
   * than the reserved blocks left.  FsError('ENOSPC') if meta_avail runs dry
   * first (the flag is then left as it was, as the kernel does).
   */
  async fillList(head: AllocListHead, lo = this.fillLo, target = this.fillTarget): Promise<number> {
    this.assertNotPrepared();
    const n = await fillList(this.active, head, this.metaAvail, lo, target, { bounds: this.opts.bounds, source: this.src(this.availIdx) });
    setListLow(head, this.metaAvail.total_len <= this.reserved());
    this.counters.clientFills++;
    return n;
  }

  /** Move every extent of a data root into another (a client's data_freed into data_alloc). */
  async moveAllExtents(dst: AllocRoot, src: AllocRoot, dataBounds?: BlknoBounds): Promise<bigint> {
    this.assertNotPrepared();
    return extentMoveAll(this.active, dst, src, {
      src: { bounds: dataBounds, source: 'data extents' }, dst: { bounds: dataBounds, source: 'data_alloc' },
    });
  }

  /** Free metadata blocks in all the server's allocators (statfs counts avail and freed alike). */
  freeMetaBlocks(): bigint {
    const s = this.sup;
    return s.meta_alloc[0].total_len + s.meta_alloc[1].total_len
      + s.server_meta_avail[0].total_nr + s.server_meta_avail[1].total_nr
      + s.server_meta_freed[0].total_nr + s.server_meta_freed[1].total_nr;
  }

  /* ---- the commit ----------------------------------------------------------- */

  /**
   * Last changes before the dirty blocks are written: refill the idle avail
   * list, empty the idle freed list.  Nothing may change the allocators
   * between this and afterCommit().
   */
  async prepareCommit(): Promise<{ filled: number; emptied: boolean }> {
    const low = (): boolean => this.active.isLow(this.lowMargin);
    const bounds = this.opts.bounds;
    let filled = 0;
    const before = this.idleAvail.first_nr;
    const needFill = before < this.fillLo;
    try {
      filled = await fillList(this.active, this.idleAvail, this.metaAvail, this.fillLo, this.fillTarget, {
        bounds, stop: low, source: this.src(this.availIdx),
      });
    } catch (e) {
      // meta_avail ran dry: keep what was added (the swap may bring more next time).
      if (!(e instanceof FsError && e.code === 'ENOSPC' && this.metaAvail.total_len === 0n)) throw e;
      filled = this.idleAvail.first_nr - before;
      this.counters.stoppedEarly++;
    }
    if (filled > 0) this.counters.idleFilled++;
    if (needFill && this.idleAvail.first_nr < this.fillTarget && this.metaAvail.total_len > 0n) this.counters.stoppedEarly++;
    let emptied = true;
    if (this.idleFreed.ref.blkno !== 0n) {
      emptied = await emptyList(this.active, this.idleFreed, this.metaFreed, { bounds, stop: low, source: this.src(this.availIdx ^ 1) });
      if (emptied) this.counters.idleEmptied++;
      else this.counters.stoppedEarly++;
    }
    this.active.assertConsistent();
    this.prepared = true;
    return { filled, emptied };
  }

  /**
   * After the super is durable: maybe swap the meta_alloc roles, swap the
   * list pairs, and open the next transaction's allocator (which reads the
   * new active pair's first blocks, just written).
   */
  async afterCommit(): Promise<{ rolesSwapped: boolean }> {
    assert(this.prepared, 'afterCommit without prepareCommit');
    this.active.close();
    const avail = this.metaAvail.total_len;
    const freed = this.metaFreed.total_len;
    const rolesSwapped = avail < 2n * this.reserved() && freed > avail;
    if (rolesSwapped) {
      this.availIdx ^= 1;
      this.counters.roleSwaps++;
    }
    this.activeIdx ^= 1;
    this.active = await ServerAlloc.openPair(this.images, this.sup, this.activeIdx, this.opts);
    this.prepared = false;
    this.counters.commits++;
    return { rolesSwapped };
  }

  private assertNotPrepared(): void {
    assert(!this.prepared, 'allocator changed between prepareCommit and afterCommit');
  }
}

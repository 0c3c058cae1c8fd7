/*
 * Block images for one device: the adapter between the block cache and the
 * layers that build blocks (the btree's BlockStore and the allocator's
 * BlockImages in src/alloc/meta.ts have this shape).
 *
 *   read(ref, kind)   verified image of a ref.  A clean block is COPIED out
 *                     of its slot and the pin released at once: callers keep
 *                     images across awaits, and an unpinned slot may be
 *                     evicted and reused under them.  A dirty block returns
 *                     the slot's own view, which is pinned until written and
 *                     is the one the transaction modifies in place.
 *   isDirty(blkno)    dirty in the current transaction (not yet written).
 *   dirty(blkno, kind) a new zeroed dirty image there with a fresh random seq.
 *   forget(blkno)     drop a dirty image freed in the transaction that made it.
 *   writeDirty()      write every dirty image (crc sealed last); the caller
 *                     flushes.  Afterwards nothing is dirty.
 *   discard()         drop every dirty image (an aborted transaction).
 *
 * One owner: the transaction holder on the main thread.  The copy on clean
 * reads costs ~2 us per 64 KiB block; a later optimisation can pin for the
 * length of one btree operation instead.
 */
import assert from 'node:assert/strict';
import type { BlockRef } from '../format/block.js';
import { FsError } from '../format/errors.js';
import type { BlockKind } from '../format/constants.js';
import type { BlockDevice } from '../runtime/device.js';
import type { Random } from '../runtime/random.js';
import type { BlockCache } from './cache.js';
import { readBlock } from './reader.js';
import { dirtyBlock, forgetDirty, writeDirty, type DirtyBlock } from './dirty.js';
import { SlotState } from './slots.js';

export class CacheImages {
  private readonly dirtyMap = new Map<bigint, DirtyBlock>();

  constructor(
    readonly cache: BlockCache,
    readonly dev: BlockDevice,
    readonly fsid: bigint,
    private readonly random: Random,
  ) {}

  async read(ref: BlockRef, kind: BlockKind): Promise<Uint8Array> {
    const d = this.dirtyMap.get(ref.blkno);
    if (d !== undefined) {
      // A committed tree's ref to a blkno this transaction freed and reused:
      // the ref is stale, exactly as a reread from disk would find.
      if (d.seq !== ref.seq || d.kind !== kind) {
        throw new FsError('ESTALE', `${this.dev.path} blkno ${ref.blkno}: ref seq ${ref.seq} names a block reused by this transaction`);
      }
      return d.data;
    }
    const h = await readBlock(this.cache, this.dev, ref, kind, this.fsid);
    try {
      return h.data.slice();
    } finally {
      h.release();
    }
  }

  isDirty(blkno: bigint): boolean {
    return this.dirtyMap.has(blkno);
  }

  dirty(blkno: bigint, kind: BlockKind): { ref: BlockRef; b: Uint8Array } {
    assert(!this.dirtyMap.has(blkno), `blkno ${blkno} dirtied twice`);
    let seq = this.random.u64();
    if (seq === 0n) seq = 1n;
    const d = dirtyBlock(this.cache, this.dev, blkno, kind, seq, this.fsid);
    this.dirtyMap.set(blkno, d);
    return { ref: { blkno, seq }, b: d.data };
  }

  forget(blkno: bigint): void {
    const d = this.dirtyMap.get(blkno);
    assert(d !== undefined, `forget of blkno ${blkno} that is not dirty`);
    forgetDirty(this.cache, d);
    this.dirtyMap.delete(blkno);
  }

  get dirtyCount(): number {
    return this.dirtyMap.size;
  }

  async writeDirty(): Promise<number> {
    const n = await writeDirty(this.cache, this.dev);
    this.dirtyMap.clear();
    return n;
  }

  /**
   * Drop the transaction's images.  After a failed writeDirty() some of
   * them were written and are clean cache copies now: those stay cached
   * (their blknos are free in the durable state and a reader's seq check
   * rejects them); only the still-dirty ones are forgotten.
   */
  discard(): void {
    for (const d of this.dirtyMap.values()) {
      if (this.cache.table.state(d.slot) === SlotState.DIRTY && this.cache.owner(d.slot).gen === d.gen) forgetDirty(this.cache, d);
    }
    this.dirtyMap.clear();
  }
}

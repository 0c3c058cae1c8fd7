/*
 * Dirty blocks: new block images built by a transaction, then written.
 *
 * scoutfs never overwrites a live LG block (FORMAT.md 15): a change
 * allocates a new blkno, copies the old block there, gives it a fresh random
 * seq and points the parent at {blkno, seq}.  dirtyBlock() provides the
 * cache side of that: a slot for (device, blkno) in state DIRTY, zero-filled
 * or copied from a source image, with the header's magic, fsid, seq and
 * blkno already written.  The caller fills in the payload through `data`.
 * Only the super and quorum blocks are rewritten in place; they use the
 * same call with their fixed SM blkno.
 *
 * A dirty slot is pinned by the cache's dirty list from dirtyBlock() until
 * it is written or forgotten, so it is never evicted.  Any cached clean copy
 * of the same blkno is dropped first (it was a freed block's old contents);
 * a reader that still holds it keeps its view until it releases it.
 * Dirtying a blkno that is already dirty is a bug and asserts.
 *
 * writeDirty(cache, dev) writes every dirty block of the device: for each,
 * it asserts the header still says what dirtyBlock() wrote (magic, fsid,
 * seq, blkno: the pair check of STYLE.md 3, since the payload code writes
 * right next to it), moves it DIRTY -> WRITING, seals it (crc last, via
 * sealBlock), and hands the slot's bytes to the device.  At most
 * WRITE_CONCURRENCY writes are in flight; they are issued in dirtying order.
 * A written block becomes CLEAN and stays cached (its crc is known good).
 * A failed write puts its block back to DIRTY, so a later writeDirty()
 * retries just the blocks that did not make it, and the first error is
 * thrown after every write settled.  The caller flushes the device
 * afterwards: nothing here is durable before that, and the commit order
 * (blocks, flush, super, flush) belongs to the transaction layer.
 *
 * forgetDirty() drops a dirty block freed within the same transaction; its
 * bytes are never written.
 *
 * Out-of-range blknos assert: the allocator hands out blknos and must have
 * validated the extents it read from disk.
 */
import assert from 'node:assert/strict';
import { readHeader, sealBlock, writeHeader } from '../format/block.js';
import { BLOCK_SIZE_OF, MAGIC, type BlockKind } from '../format/constants.js';
import type { BlockDevice } from '../runtime/device.js';
import { blockOffset, type BlockCache } from './cache.js';
import { SlotState, stateName } from './slots.js';

/** Writes in flight at once per writeDirty() call. */
export const WRITE_CONCURRENCY = 32;

export interface DirtyBlock {
  readonly slot: number;
  readonly gen: number;
  readonly blkno: bigint;
  readonly kind: BlockKind;
  readonly seq: bigint;
  /** The block image; header filled in, crc not yet. */
  readonly data: Uint8Array;
}

export function dirtyBlock(
  cache: BlockCache, dev: BlockDevice, blkno: bigint, kind: BlockKind, seq: bigint, fsid: bigint,
  copyFrom?: Uint8Array,
): DirtyBlock {
  const size = BLOCK_SIZE_OF[kind];
  assert(blkno > 0n, 'cannot dirty blkno 0');
  assert(blockOffset(blkno, kind) + BigInt(size) <= dev.sizeBytes, `blkno ${blkno} is past the end of ${dev.path}`);
  assert(copyFrom === undefined || copyFrom.length === size, `copy source must be ${size} bytes`);
  const existing = cache.lookup(dev, blkno, kind);
  if (existing !== null) {
    const st = cache.table.state(existing);
    assert(st === SlotState.CLEAN || st === SlotState.READING, `blkno ${blkno} is already ${stateName(st)}`);
    cache.unmap(existing);
  }
  const k = cache.allocSlot();
  cache.beginDirty(k, dev, blkno, kind, seq, fsid, copyFrom === undefined);
  const data = cache.view(k);
  if (copyFrom !== undefined) data.set(copyFrom);
  writeHeader(data, { magic: MAGIC[kind], fsid, seq, blkno });
  return { slot: k, gen: cache.owner(k).gen, blkno, kind, seq, data };
}

/** Drop a dirty block that was freed in the same transaction. */
export function forgetDirty(cache: BlockCache, d: DirtyBlock): void {
  cache.assertLive();
  assert.equal(cache.owner(d.slot).gen, d.gen, `dirty block ${d.blkno}: handle outlived its slot`);
  cache.forget(d.slot);
}

/** Seal and write every dirty block of dev; returns how many were written. */
export async function writeDirty(cache: BlockCache, dev: BlockDevice): Promise<number> {
  const slots = cache.dirtySlots(dev);
  for (const k of slots) {
    const o = cache.owner(k);
    const st = cache.table.state(k);
    assert.equal(st, SlotState.DIRTY, `slot ${k}: ${stateName(st)} during writeDirty (concurrent writeDirty?)`);
    const h = readHeader(cache.view(k));
    const what = `dirty ${o.kind} block ${o.blkno} (slot ${k})`;
    assert.equal(h.magic, MAGIC[o.kind], `${what}: header magic overwritten`);
    assert.equal(h.fsid, o.fsid, `${what}: header fsid overwritten`);
    assert.equal(h.seq, o.seq, `${what}: header seq overwritten`);
    assert.equal(h.blkno, o.blkno, `${what}: header blkno overwritten`);
    cache.table.transition(k, SlotState.DIRTY, SlotState.WRITING);
    sealBlock(cache.view(k));
  }
  const results = await bounded(slots, WRITE_CONCURRENCY, (k) => {
    const o = cache.owner(k);
    return dev.write(blockOffset(o.blkno, o.kind), cache.view(k));
  });
  cache.assertLive();
  let failed: PromiseRejectedResult | null = null;
  slots.forEach((k, i) => {
    const r = results[i]!;
    if (r.status === 'fulfilled') {
      cache.endWrite(k);
    } else {
      cache.table.transition(k, SlotState.WRITING, SlotState.DIRTY);
      failed ??= r;
    }
  });
  if (failed !== null) throw (failed as PromiseRejectedResult).reason;
  return slots.length;
}

/** Run fn over items with at most `limit` in flight, starting them in order. */
async function bounded<T>(items: T[], limit: number, fn: (t: T) => Promise<void>): Promise<PromiseSettledResult<void>[]> {
  const out: PromiseSettledResult<void>[] = new Array(items.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      try {
        await fn(items[i]!);
        out[i] = { status: 'fulfilled', value: undefined };
      } catch (e) {
        out[i] = { status: 'rejected', reason: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}

/*
 * The block read path: follow a reference {blkno, seq} to a verified,
 * pinned block in the cache (FORMAT.md 3.3).
 *
 * readBlock(cache, dev, ref, kind, fsid) returns a BlockHandle whose bytes
 * passed, in the kernel's order: crc, magic (from `kind`, the role of the
 * ref), fsid (from the super), seq == ref.seq, blkno == ref.blkno.  The crc
 * is computed once per load from disk and remembered on the slot; the
 * header checks run on every read, since two refs to the same blkno may
 * carry different seqs or roles.  SM blocks (super, quorum) may pass
 * seq: null, their header seq not being a reference seq.
 *
 * Failure handling, as the kernel does it:
 *   1. Any failed check drops the cached copy (if no one else is reading it
 *      it is freed; otherwise it becomes DROPPED and is freed at their last
 *      release) and the block is read from disk once more.  A transient
 *      read corruption, or a cached copy outdated by another node's write,
 *      is cured here.  counters.retries counts these.
 *   2. If the second copy fails too: when crc, magic, fsid and blkno are all
 *      fine and only seq differs, the ref is stale, the block having been
 *      freed and rewritten since the ref was read: FsError('ESTALE').
 *      Callers re-read their roots and retry, and turn it into corruption if
 *      the roots did not change.  Every other failure is a CorruptionError
 *      naming the device, the blkno and the check.
 * A ref pointing past the end of the device is a CorruptionError with check
 * 'io' (the number came from disk); a device I/O error propagates as is
 * (FsError EIO) without a retry.  A block that is dirty in this cache is
 * trusted without a crc (it is our own image, not yet sealed), and is never
 * dropped: a stale ref to it fails the second time and is ESTALE.
 *
 * Concurrent readers of one block share a single device read: the second
 * finds the slot READING, waits for its loading promise and looks again.
 * It does not inherit the first reader's result (their seqs may differ),
 * and if the read failed it starts its own.
 *
 * readBlocks() reads a batch: it starts every missing block's device read at
 * once, has the pool crc-check all the fresh blocks in one 'verify' job
 * (workers/index.ts) while they are READING and pinned, then runs the
 * ordinary per-ref path, which finds them cached with the crc known and
 * only checks headers.  Failures take the single-block path above.  Without
 * a pool it is just concurrent readBlock()s.  Single reads check the crc on
 * the main thread: a 64 KiB crc (native backend) costs less than a worker
 * round trip.  It is all or nothing: on any failure the handles already
 * obtained are released and the first error (in item order) is thrown.
 */
import assert from 'node:assert/strict';
import { checkBlock, type BlockCheckFailure, type BlockExpect } from '../format/block.js';
import { BLOCK_SIZE_OF, SM_BLOCK_SIZE, type BlockKind } from '../format/constants.js';
import { CorruptionError, FsError } from '../format/errors.js';
import type { BlockDevice } from '../runtime/device.js';
import { blockOffset, type BlockCache, type BlockHandle } from './cache.js';
import { SlotState } from './slots.js';
import { checkHeader, type VerifyItem, type VerifyResult } from './verify.js';

export interface ReadRef {
  blkno: bigint;
  /** null only for SM blocks, whose header seq is not checked. */
  seq: bigint | null;
}

export interface ReadItem {
  ref: ReadRef;
  kind: BlockKind;
}

export async function readBlock(
  cache: BlockCache, dev: BlockDevice, ref: ReadRef, kind: BlockKind, fsid: bigint,
): Promise<BlockHandle> {
  return readOne(cache, dev, ref, kind, fsid, null);
}

async function readOne(
  cache: BlockCache, dev: BlockDevice, ref: ReadRef, kind: BlockKind, fsid: bigint,
  prefetched: ReadonlySet<number> | null,
): Promise<BlockHandle> {
  assert(ref.blkno > 0n, 'blkno 0 means "no block" and is never read');
  assert(ref.seq !== null || BLOCK_SIZE_OF[kind] === SM_BLOCK_SIZE, `${kind} refs must carry a seq`);
  checkInDevice(cache, dev, ref.blkno, kind);
  const want: BlockExpect = { kind, fsid, blkno: ref.blkno, seq: ref.seq };
  for (let attempt = 0; ; attempt++) {
    const k = await load(cache, dev, ref.blkno, kind, prefetched);
    const view = cache.table.view(k, BLOCK_SIZE_OF[kind]);
    const fail = verifySlot(cache, k, view, want);
    if (fail === null) return cache.handle(k, kind);
    const stale = fail.check === 'seq' && checkHeader(view, { ...want, seq: null }) === null;
    if (cache.table.state(k) === SlotState.CLEAN) cache.unmap(k);
    cache.release(k);
    if (attempt === 0) {
      cache.counters.retries++;
      continue;
    }
    if (stale) {
      cache.counters.stale++;
      throw new FsError('ESTALE', `${dev.path} blkno ${ref.blkno}: ${fail.detail}`);
    }
    cache.counters.corrupt++;
    throw new CorruptionError(dev.path, ref.blkno, fail.check, fail.detail);
  }
}

/** Full check the first time a loaded copy is looked at, headers after. */
function verifySlot(cache: BlockCache, k: number, view: Uint8Array, want: BlockExpect): BlockCheckFailure | null {
  const o = cache.owner(k);
  if (o.crcOk) return checkHeader(view, want);
  const f = checkBlock(view, want);
  if (f === null || (f.check !== 'crc' && f.check !== 'size')) o.crcOk = true;
  return f;
}

function checkInDevice(cache: BlockCache, dev: BlockDevice, blkno: bigint, kind: BlockKind): void {
  const off = blockOffset(blkno, kind);
  const size = BLOCK_SIZE_OF[kind];
  if (off + BigInt(size) > dev.sizeBytes) {
    cache.counters.corrupt++;
    throw new CorruptionError(dev.path, blkno, 'io',
      `${kind} block at byte ${off} (+${size}) is past the end of the device (${dev.sizeBytes} bytes)`);
  }
}

/**
 * A pinned slot holding the block's bytes: cached, or read now.  A slot
 * readBlocks() just loaded is not counted as a hit (it was a miss).
 */
async function load(
  cache: BlockCache, dev: BlockDevice, blkno: bigint, kind: BlockKind, prefetched: ReadonlySet<number> | null,
): Promise<number> {
  for (;;) {
    const k = cache.lookup(dev, blkno, kind);
    if (k !== null) {
      const loading = cache.owner(k).loading;
      if (loading !== null) {
        await loading;
        continue;
      }
      cache.pin(k);
      if (prefetched === null || !prefetched.has(k)) cache.counters.hits++;
      return k;
    }
    const s = cache.allocSlot();
    cache.beginRead(s, dev, blkno, kind);
    cache.counters.misses++;
    await fill(cache, s, dev, blkno, kind);
    cache.endRead(s);
    return s;
  }
}

/** Device read into a READING slot; on failure the slot is freed. */
async function fill(cache: BlockCache, k: number, dev: BlockDevice, blkno: bigint, kind: BlockKind): Promise<void> {
  const size = BLOCK_SIZE_OF[kind];
  try {
    const bytes = await dev.read(blockOffset(blkno, kind), size);
    assert.equal(bytes.length, size, 'the device returned the length asked for');
    cache.assertLive();
    cache.table.view(k, size).set(bytes);
  } catch (e) {
    cache.failRead(k);
    throw e;
  }
}

export async function readBlocks(
  cache: BlockCache, dev: BlockDevice, items: ReadItem[], fsid: bigint,
): Promise<BlockHandle[]> {
  const prefetched = cache.pool !== null ? await prefetch(cache, dev, items, fsid) : [];
  let settled: PromiseSettledResult<BlockHandle>[];
  try {
    const mine = new Set(prefetched);
    settled = await Promise.allSettled(items.map((it) => readOne(cache, dev, it.ref, it.kind, fsid, mine)));
  } finally {
    for (const k of prefetched) cache.release(k);
  }
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed !== undefined) {
    for (const s of settled) if (s.status === 'fulfilled') s.value.release();
    throw failed.reason;
  }
  return settled.map((s) => (s as PromiseFulfilledResult<BlockHandle>).value);
}

/**
 * Load the blocks of a batch that are not cached and crc-check them in one
 * pool job.  Returns their slots, CLEAN and still pinned by us, so they
 * cannot be evicted before readOne() pins them for the caller.
 */
async function prefetch(cache: BlockCache, dev: BlockDevice, items: ReadItem[], fsid: bigint): Promise<number[]> {
  assert(cache.pool !== null);
  const started: { k: number; it: ReadItem }[] = [];
  try {
    for (const it of items) {
      const off = blockOffset(it.ref.blkno, it.kind);
      if (it.ref.blkno <= 0n || off + BigInt(BLOCK_SIZE_OF[it.kind]) > dev.sizeBytes) continue; // readOne reports it
      if (cache.lookup(dev, it.ref.blkno, it.kind) !== null) continue; // cached, in flight, or a duplicate
      const k = cache.allocSlot();
      cache.beginRead(k, dev, it.ref.blkno, it.kind);
      cache.counters.misses++;
      started.push({ k, it });
    }
  } catch (e) {
    for (const s of started) cache.failRead(s.k);
    throw e;
  }
  // Read them all; a failed read frees its slot and readOne() retries it.
  const reads = await Promise.allSettled(started.map((s) => fill(cache, s.k, dev, s.it.ref.blkno, s.it.kind)));
  const loaded = started.filter((_, i) => reads[i]!.status === 'fulfilled');
  if (loaded.length > 0) {
    const vitems: VerifyItem[] = loaded.map((s) => ({
      slot: s.k, kind: s.it.kind, blkno: s.it.ref.blkno, seq: s.it.ref.seq, fsid,
    }));
    let results: VerifyResult[];
    try {
      results = await cache.pool.run<VerifyResult[]>('verify', { sab: cache.sab, items: vitems });
    } catch (e) {
      for (const s of loaded) {
        cache.endRead(s.k);
        cache.release(s.k);
      }
      throw e;
    }
    assert.equal(results.length, loaded.length, 'one verify result per block');
    loaded.forEach((s, i) => {
      const r = results[i]!;
      if (r === null || (r.check !== 'crc' && r.check !== 'size')) cache.owner(s.k).crcOk = true;
    });
    cache.counters.poolVerified += loaded.length;
  }
  for (const s of loaded) cache.endRead(s.k);
  return loaded.map((s) => s.k);
}

/*
 * Goal: the block cache hits, misses and evicts least recently released
 * clean blocks; never evicts pinned or dirty ones and fails with ENOMEM
 * instead of growing; shares one device read among concurrent readers; hands
 * out views straight into the SharedArrayBuffer; and keeps its lists
 * consistent (invariants checked after every state change).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FsError, LifecycleError } from '../../../src/format/errors.js';
import { BlockCache } from '../../../src/block/cache.js';
import { readBlock } from '../../../src/block/reader.js';
import { dirtyBlock, writeDirty } from '../../../src/block/dirty.js';
import { SLOT_BYTES, SlotState } from '../../../src/block/slots.js';
import { FSID, makeBlock, newDev, pinnedSlots, putBlock } from './util.js';

const ref = (blkno: bigint, seq = 1n) => ({ blkno, seq });

test('miss, then hit, one device read; the view is the slot', async () => {
  const dev = newDev();
  const img = putBlock(dev, { blkno: 5n, seq: 1n });
  const cache = new BlockCache({ slots: 4, invariants: true });
  const a = await readBlock(cache, dev, ref(5n), 'btree', FSID);
  assert.deepEqual(a.data, img);
  const b = await readBlock(cache, dev, ref(5n), 'btree', FSID);
  assert.equal(b.slot, a.slot);
  assert.deepEqual(cache.counters, { ...cache.counters, hits: 1, misses: 1, evictions: 0 });
  assert.equal(dev.reads, 1);
  // A worker's zero-copy view of the slot sees the same bytes.
  assert.equal(a.data.buffer, cache.sab);
  assert.deepEqual(new Uint8Array(cache.sab, a.slot * SLOT_BYTES, SLOT_BYTES), img);
  assert.equal(cache.table.pins(a.slot), 2);
  a.release();
  b.release();
  assert.equal(cache.table.pins(a.slot), 0);
  assert.throws(() => a.release(), /released twice/);
});

test('eviction takes the least recently released clean block', async () => {
  const dev = newDev();
  for (const n of [2n, 3n, 4n]) putBlock(dev, { blkno: n, seq: 1n });
  const cache = new BlockCache({ slots: 2, invariants: true });
  (await readBlock(cache, dev, ref(2n), 'btree', FSID)).release();
  (await readBlock(cache, dev, ref(3n), 'btree', FSID)).release();
  (await readBlock(cache, dev, ref(2n), 'btree', FSID)).release(); // 2 is now most recent
  (await readBlock(cache, dev, ref(4n), 'btree', FSID)).release();
  assert.equal(cache.counters.evictions, 1);
  assert.notEqual(cache.lookup(dev, 2n, 'btree'), null);
  assert.equal(cache.lookup(dev, 3n, 'btree'), null, 'block 3 was evicted');
  assert.notEqual(cache.lookup(dev, 4n, 'btree'), null);
});

test('pinned blocks are never evicted: ENOMEM instead of growing', async () => {
  const dev = newDev();
  for (const n of [2n, 3n, 4n]) putBlock(dev, { blkno: n, seq: 1n });
  const cache = new BlockCache({ slots: 2, invariants: true });
  const a = await readBlock(cache, dev, ref(2n), 'btree', FSID);
  const b = await readBlock(cache, dev, ref(3n), 'btree', FSID);
  await assert.rejects(readBlock(cache, dev, ref(4n), 'btree', FSID), (e: unknown) => {
    assert.ok(e instanceof FsError);
    assert.equal(e.code, 'ENOMEM');
    assert.match(e.message, /all 2 slots are pinned, dirty or in flight/);
    return true;
  });
  assert.deepEqual(a.data, makeBlock({ blkno: 2n, seq: 1n }), 'the pinned view is intact');
  a.release();
  const c = await readBlock(cache, dev, ref(4n), 'btree', FSID);
  assert.equal(c.slot, a.slot, 'the released block made room');
  b.release();
  c.release();
});

test('dirty blocks are never evicted until written', async () => {
  const dev = newDev();
  for (const n of [2n, 3n, 4n]) putBlock(dev, { blkno: n, seq: 1n });
  const cache = new BlockCache({ slots: 2, invariants: true });
  const d = dirtyBlock(cache, dev, 10n, 'btree', 99n, FSID);
  (await readBlock(cache, dev, ref(2n), 'btree', FSID)).release();
  (await readBlock(cache, dev, ref(3n), 'btree', FSID)).release(); // evicts 2, not the dirty block
  assert.equal(cache.table.state(d.slot), SlotState.DIRTY);
  const held = await readBlock(cache, dev, ref(3n), 'btree', FSID);
  await assert.rejects(readBlock(cache, dev, ref(4n), 'btree', FSID), /ENOMEM/);
  assert.equal(await writeDirty(cache, dev), 1);
  assert.equal(cache.table.state(d.slot), SlotState.CLEAN);
  (await readBlock(cache, dev, ref(4n), 'btree', FSID)).release(); // the written block is evictable now
  assert.equal(cache.lookup(dev, 10n, 'btree'), null);
  held.release();
  assert.deepEqual(pinnedSlots(cache.table), []);
});

test('concurrent readers of one block share a single device read', async () => {
  const dev = newDev();
  putBlock(dev, { blkno: 7n, seq: 3n });
  const cache = new BlockCache({ slots: 4, invariants: true });
  const hs = await Promise.all(Array.from({ length: 5 }, () => readBlock(cache, dev, ref(7n, 3n), 'btree', FSID)));
  assert.equal(dev.reads, 1);
  assert.equal(cache.counters.misses, 1);
  assert.equal(cache.counters.hits, 4);
  assert.ok(hs.every((h) => h.slot === hs[0]!.slot));
  assert.equal(cache.table.pins(hs[0]!.slot), 5);
  for (const h of hs) h.release();
});

test('SM and LG blocks are cached apart; SM reads may skip seq', async () => {
  const dev = newDev();
  const sup = putBlock(dev, { kind: 'super', blkno: 16n, seq: 42n });
  putBlock(dev, { blkno: 2n, seq: 1n });
  const cache = new BlockCache({ slots: 4, invariants: true });
  const s = await readBlock(cache, dev, { blkno: 16n, seq: null }, 'super', FSID);
  assert.equal(s.data.length, 4096);
  assert.deepEqual(s.data, sup);
  assert.equal(cache.lookup(dev, 16n, 'btree'), null, 'LG 16 is another block');
  assert.equal(cache.lookup(dev, 16n, 'quorum'), s.slot, 'SM blocks share a size class');
  s.release();
  assert.ok(cache.invalidate(dev, 16n, 'super'));
  assert.equal(cache.lookup(dev, 16n, 'super'), null);
  await assert.rejects(readBlock(cache, dev, { blkno: 2n, seq: null }, 'btree', FSID), /must carry a seq/);
});

test('a failed device read frees its slot and reaches the caller', async () => {
  const dev = newDev();
  const broken = {
    path: 'broken', sizeBytes: dev.sizeBytes,
    read: async () => { throw new FsError('EIO', 'broken: media error'); },
    write: async () => {}, flush: async () => {}, close: async () => {},
  };
  const cache = new BlockCache({ slots: 2, invariants: true });
  await assert.rejects(readBlock(cache, broken, ref(2n), 'btree', FSID), (e: unknown) => e instanceof FsError && e.code === 'EIO');
  assert.equal(cache.freeSlots, 2);
  assert.equal(cache.counters.retries, 0, 'I/O errors are not retried');
});

test('destroy: later use fails with LifecycleError; safe twice', async () => {
  const dev = newDev();
  putBlock(dev, { blkno: 2n, seq: 1n });
  const cache = new BlockCache({ slots: 2 });
  const h = await readBlock(cache, dev, ref(2n), 'btree', FSID);
  dirtyBlock(cache, dev, 3n, 'btree', 5n, FSID);
  cache.destroy();
  cache.destroy();
  h.release(); // harmless after destroy
  await assert.rejects(readBlock(cache, dev, ref(2n), 'btree', FSID), LifecycleError);
  assert.throws(() => cache.allocSlot(), LifecycleError);
});

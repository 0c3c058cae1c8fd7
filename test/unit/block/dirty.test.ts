/*
 * Goal: a dirty block is created with its header, stays pinned and cached
 * until written, is sealed (crc last) and written by writeDirty, and is then
 * a valid block on disk and a clean cached one; it replaces a cached copy of
 * its blkno; a forgotten one is never written; a failed write leaves exactly
 * the unwritten blocks dirty for a retry; a scribbled header is caught
 * before the write; unflushed dirty writes vanish in a crash.  Also on a
 * real file, so a SharedArrayBuffer view goes through fs.write.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkBlock } from '../../../src/format/block.js';
import { CorruptionError, FsError } from '../../../src/format/errors.js';
import { BlockCache, blockOffset } from '../../../src/block/cache.js';
import { readBlock } from '../../../src/block/reader.js';
import { dirtyBlock, forgetDirty, writeDirty } from '../../../src/block/dirty.js';
import { SlotState } from '../../../src/block/slots.js';
import { FileBlockDevice, type BlockDevice } from '../../../src/runtime/device.js';
import { FaultDevice } from '../../../src/runtime/faultdevice.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { FSID, makeBlock, newDev, pinnedSlots, putBlock } from './util.js';

async function onDisk(dev: BlockDevice, blkno: bigint, seq: bigint): Promise<Uint8Array> {
  const b = await dev.read(blockOffset(blkno, 'btree'), 65536);
  assert.equal(checkBlock(b, { kind: 'btree', fsid: FSID, blkno, seq }), null, `block ${blkno} is valid on disk`);
  return b;
}

test('dirty, write, flush: a valid block on disk and a clean cached one', async () => {
  const dev = newDev();
  const cache = new BlockCache({ slots: 4, invariants: true });
  const d = dirtyBlock(cache, dev, 5n, 'btree', 0xabcdn, FSID);
  assert.equal(cache.table.state(d.slot), SlotState.DIRTY);
  assert.equal(cache.table.pins(d.slot), 1, 'pinned by the dirty list');
  d.data.fill(0x77, 32);
  assert.equal(cache.dirtyCount, 1);
  assert.equal(await writeDirty(cache, dev), 1);
  await dev.flush();
  assert.equal(cache.dirtyCount, 0);
  assert.equal(cache.counters.dirtyWritten, 1);
  const b = await onDisk(dev, 5n, 0xabcdn);
  assert.ok(b.subarray(32).every((x) => x === 0x77));
  // Cached and clean: reading it does not touch the device.
  const reads = dev.reads;
  const h = await readBlock(cache, dev, { blkno: 5n, seq: 0xabcdn }, 'btree', FSID);
  assert.equal(dev.reads, reads);
  assert.equal(h.slot, d.slot);
  h.release();
  assert.equal(await writeDirty(cache, dev), 0, 'nothing left to write');
});

test('dirtying replaces a cached copy; readers see the dirty image; old refs are stale', async () => {
  const dev = newDev();
  const old = putBlock(dev, { blkno: 6n, seq: 1n });
  const cache = new BlockCache({ slots: 4, invariants: true });
  const held = await readBlock(cache, dev, { blkno: 6n, seq: 1n }, 'btree', FSID);
  const d = dirtyBlock(cache, dev, 6n, 'btree', 2n, FSID, old);
  assert.equal(cache.table.state(held.slot), SlotState.DROPPED, 'the old copy lives on for its reader');
  assert.deepEqual(held.data, old);
  assert.deepEqual(d.data.subarray(32), old.subarray(32), 'copied payload');
  const reads = dev.reads;
  const h = await readBlock(cache, dev, { blkno: 6n, seq: 2n }, 'btree', FSID);
  assert.equal(h.slot, d.slot);
  await assert.rejects(readBlock(cache, dev, { blkno: 6n, seq: 1n }, 'btree', FSID), /ESTALE/);
  assert.equal(dev.reads, reads, 'dirty blocks are never re-read from disk');
  assert.equal(cache.table.state(d.slot), SlotState.DIRTY, 'and never dropped');
  assert.throws(() => dirtyBlock(cache, dev, 6n, 'btree', 3n, FSID), /already DIRTY/);
  h.release();
  held.release();
});

test('a forgotten dirty block is never written and frees its slot', async () => {
  const dev = newDev();
  const cache = new BlockCache({ slots: 2, invariants: true });
  const d = dirtyBlock(cache, dev, 7n, 'btree', 1n, FSID);
  const keep = dirtyBlock(cache, dev, 8n, 'btree', 1n, FSID);
  forgetDirty(cache, d);
  assert.equal(cache.freeSlots, 1);
  assert.equal(cache.lookup(dev, 7n, 'btree'), null);
  assert.equal(await writeDirty(cache, dev), 1);
  assert.equal(dev.writes, 1);
  await onDisk(dev, 8n, 1n);
  assert.equal(cache.owner(keep.slot).blkno, 8n);
  assert.throws(() => forgetDirty(cache, d), /DROPPED|outlived/);
});

test('a failed write leaves just the unwritten blocks dirty; a retry finishes', async () => {
  const mem = newDev();
  const dev = new FaultDevice(mem, new SeededRandom(1n));
  dev.failWriteAt(2, 'EIO');
  const cache = new BlockCache({ slots: 8, invariants: true });
  for (const n of [2n, 3n, 4n]) dirtyBlock(cache, dev, n, 'btree', n * 10n, FSID).data.fill(Number(n), 32);
  await assert.rejects(writeDirty(cache, dev), (e: unknown) => e instanceof FsError && e.code === 'EIO');
  assert.equal(cache.dirtyCount, 1);
  assert.equal(cache.table.state(cache.lookup(dev, 3n, 'btree')!), SlotState.DIRTY);
  assert.equal(await writeDirty(cache, dev), 1);
  await dev.flush();
  for (const n of [2n, 3n, 4n]) await onDisk(mem, n, n * 10n);
  assert.deepEqual(pinnedSlots(cache.table), []);
});

test('a scribbled header is caught before the write', async () => {
  for (const [field, off] of [['magic', 4], ['fsid', 8], ['seq', 16], ['blkno', 24]] as const) {
    const dev = newDev();
    const cache = new BlockCache({ slots: 2 });
    const d = dirtyBlock(cache, dev, 3n, 'btree', 5n, FSID);
    d.data[off]! ^= 1;
    await assert.rejects(writeDirty(cache, dev), (e: unknown) => {
      assert.equal((e as Error).name, 'AssertionError');
      assert.match((e as Error).message, new RegExp(`header ${field} overwritten`));
      return true;
    });
    assert.equal(dev.writes, 0);
  }
});

test('unflushed dirty writes vanish in a crash; flushed ones survive', async () => {
  const mem = newDev();
  const dev = new FaultDevice(mem, new SeededRandom(2n));
  const cache = new BlockCache({ slots: 8, invariants: true });
  dirtyBlock(cache, dev, 2n, 'btree', 1n, FSID);
  await writeDirty(cache, dev);
  await dev.flush();
  dirtyBlock(cache, dev, 3n, 'btree', 1n, FSID);
  await writeDirty(cache, dev);
  await dev.crash();
  cache.destroy();
  const after = new BlockCache({ slots: 8, invariants: true });
  (await readBlock(after, dev, { blkno: 2n, seq: 1n }, 'btree', FSID)).release();
  await assert.rejects(readBlock(after, dev, { blkno: 3n, seq: 1n }, 'btree', FSID),
    (e: unknown) => e instanceof CorruptionError && e.check === 'crc' && e.blkno === 3n);
});

test('SM blocks are dirtied and written in 4 KiB units', async () => {
  const dev = newDev();
  const cache = new BlockCache({ slots: 2, invariants: true });
  const d = dirtyBlock(cache, dev, 16n, 'super', 9n, FSID);
  assert.equal(d.data.length, 4096);
  await writeDirty(cache, dev);
  const b = await dev.read(65536n, 4096);
  assert.equal(checkBlock(b, { kind: 'super', fsid: FSID, blkno: 16n, seq: 9n }), null);
  assert.ok((await dev.read(65536n + 4096n, 4096)).every((x) => x === 0), 'nothing past the 4 KiB');
});

test('on a real file: SharedArrayBuffer views are written and read back', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'scoutfs-dirty-'));
  try {
    const path = join(dir, 'meta.img');
    writeFileSync(path, '');
    truncateSync(path, 64 * 65536);
    const dev = await FileBlockDevice.open(path);
    try {
      const cache = new BlockCache({ slots: 4, invariants: true });
      dirtyBlock(cache, dev, 9n, 'btree', 77n, FSID, makeBlock({ blkno: 1n, seq: 1n })).data[100] = 1;
      await writeDirty(cache, dev);
      await dev.flush();
      const b = await onDisk(dev, 9n, 77n);
      assert.equal(b[100], 1);
      const fresh = new BlockCache({ slots: 4, invariants: true });
      const h = await readBlock(fresh, dev, { blkno: 9n, seq: 77n }, 'btree', FSID);
      assert.deepEqual(h.data, b);
      h.release();
    } finally {
      await dev.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

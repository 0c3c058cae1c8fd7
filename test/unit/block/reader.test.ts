/*
 * Goal: following a ref verifies crc, magic, fsid, seq and blkno, in the
 * kernel's order (FORMAT.md 3.3).  Each damaged field gives the right error:
 * a CorruptionError naming the device, the blkno and the failed check, or
 * FsError ESTALE when only the seq differs.  Every failure is retried once
 * from disk first, which cures transient read corruption and a cached copy
 * outdated on disk.  Refs past the end of the device are corruption ('io').
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CorruptionError, FsError, type CorruptCheck } from '../../../src/format/errors.js';
import { MAGIC } from '../../../src/format/constants.js';
import { BlockCache, blockOffset } from '../../../src/block/cache.js';
import { readBlock } from '../../../src/block/reader.js';
import { SlotState } from '../../../src/block/slots.js';
import { FaultDevice } from '../../../src/runtime/faultdevice.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { FSID, makeBlock, newDev, pinnedSlots, putBlock } from './util.js';

const BLKNO = 9n;
const SEQ = 0x5eed_0000_0001n;

function expectCorruption(path: string, blkno: bigint, check: CorruptCheck) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof CorruptionError, `expected CorruptionError, got ${String(e)}`);
    assert.equal(e.source, path);
    assert.equal(e.blkno, blkno);
    assert.equal(e.check, check);
    assert.ok(e.message.includes(`${path} blkno ${blkno}`), e.message);
    assert.ok(e.message.includes(`${check} check failed`), e.message);
    return true;
  };
}

/** Flip one byte of a good block on disk (not resealed). */
function flipOnDisk(off: number): ReturnType<typeof newDev> {
  const dev = newDev();
  const img = makeBlock({ blkno: BLKNO, seq: SEQ });
  img[off]! ^= 0x40;
  putBlock(dev, { blkno: BLKNO, seq: SEQ }, img);
  return dev;
}

for (const [field, off] of [['crc', 1], ['magic', 5], ['fsid', 9], ['seq', 17], ['blkno', 25], ['payload', 40000]] as const) {
  test(`a byte flipped in the ${field} field fails the crc check`, async () => {
    const dev = flipOnDisk(off);
    const cache = new BlockCache({ slots: 4, invariants: true });
    await assert.rejects(readBlock(cache, dev, { blkno: BLKNO, seq: SEQ }, 'btree', FSID), expectCorruption(dev.path, BLKNO, 'crc'));
    assert.equal(dev.reads, 2, 'read, then re-read once from disk');
    assert.equal(cache.counters.retries, 1);
    assert.equal(cache.counters.corrupt, 1);
    assert.equal(cache.lookup(dev, BLKNO, 'btree'), null, 'the bad copy is not kept');
    assert.deepEqual(pinnedSlots(cache.table), []);
  });
}

// With a valid crc over the damaged header, each later check is reached.
const resealed: [string, Parameters<typeof makeBlock>[0], CorruptCheck][] = [
  ['magic', { blkno: BLKNO, seq: SEQ, magic: MAGIC.allocList }, 'magic'],
  ['fsid', { blkno: BLKNO, seq: SEQ, fsid: FSID ^ 1n }, 'fsid'],
  ['blkno', { blkno: BLKNO, seq: SEQ, headerBlkno: BLKNO + 1n }, 'blkno'],
];
for (const [name, spec, check] of resealed) {
  test(`a resealed block with a wrong ${name} fails the ${check} check`, async () => {
    const dev = newDev();
    putBlock(dev, { blkno: BLKNO, seq: SEQ }, makeBlock(spec));
    const cache = new BlockCache({ slots: 4, invariants: true });
    await assert.rejects(readBlock(cache, dev, { blkno: BLKNO, seq: SEQ }, 'btree', FSID), expectCorruption(dev.path, BLKNO, check));
    assert.equal(cache.counters.retries, 1);
  });
}

test('a wrong header seq AND blkno is corruption, not stale', async () => {
  const dev = newDev();
  putBlock(dev, { blkno: BLKNO, seq: SEQ }, makeBlock({ blkno: BLKNO, seq: SEQ + 1n, headerBlkno: 3n }));
  const cache = new BlockCache({ slots: 4 });
  await assert.rejects(readBlock(cache, dev, { blkno: BLKNO, seq: SEQ }, 'btree', FSID), expectCorruption(dev.path, BLKNO, 'seq'));
});

test('a ref whose role expects another magic fails the magic check', async () => {
  const dev = newDev();
  putBlock(dev, { blkno: BLKNO, seq: SEQ });
  const cache = new BlockCache({ slots: 4 });
  await assert.rejects(readBlock(cache, dev, { blkno: BLKNO, seq: SEQ }, 'bloom', FSID), expectCorruption(dev.path, BLKNO, 'magic'));
});

test('only the seq differs: ESTALE, after one re-read', async () => {
  const dev = newDev();
  putBlock(dev, { blkno: BLKNO, seq: SEQ + 7n }); // freed and rewritten since the ref was read
  const cache = new BlockCache({ slots: 4, invariants: true });
  await assert.rejects(readBlock(cache, dev, { blkno: BLKNO, seq: SEQ }, 'btree', FSID), (e: unknown) => {
    assert.ok(e instanceof FsError);
    assert.equal(e.code, 'ESTALE');
    assert.ok(e.message.includes(`blkno ${BLKNO}`), e.message);
    return true;
  });
  assert.equal(dev.reads, 2);
  assert.equal(cache.counters.stale, 1);
  assert.equal(cache.counters.corrupt, 0);
});

test('a cached copy outdated on disk is dropped and re-read, not an error', async () => {
  const dev = newDev();
  putBlock(dev, { blkno: BLKNO, seq: 1n });
  const cache = new BlockCache({ slots: 4, invariants: true });
  const old = await readBlock(cache, dev, { blkno: BLKNO, seq: 1n }, 'btree', FSID);
  const img2 = putBlock(dev, { blkno: BLKNO, seq: 2n }); // another node rewrote it
  const cur = await readBlock(cache, dev, { blkno: BLKNO, seq: 2n }, 'btree', FSID);
  assert.deepEqual(cur.data, img2);
  assert.equal(cache.counters.retries, 1);
  // The old reader still holds its view of the old bytes, now DROPPED.
  assert.notEqual(old.slot, cur.slot);
  assert.equal(cache.table.state(old.slot), SlotState.DROPPED);
  assert.deepEqual(old.data, makeBlock({ blkno: BLKNO, seq: 1n }));
  old.release();
  assert.equal(cache.table.state(old.slot), SlotState.FREE);
  cur.release();
});

test('transient read corruption is cured by the re-read', async () => {
  const mem = newDev();
  const img = putBlock(mem, { blkno: BLKNO, seq: SEQ });
  const dev = new FaultDevice(mem, new SeededRandom(11n));
  dev.corruptNextRead(blockOffset(BLKNO, 'btree') + 1234n);
  const cache = new BlockCache({ slots: 4, invariants: true });
  const h = await readBlock(cache, dev, { blkno: BLKNO, seq: SEQ }, 'btree', FSID);
  assert.deepEqual(h.data, img);
  assert.equal(dev.counters.readsCorrupted, 1, 'the fault fired');
  assert.equal(cache.counters.retries, 1);
  h.release();
});

test('the crc is checked once per load; later reads check only the header', async () => {
  const dev = newDev();
  putBlock(dev, { blkno: BLKNO, seq: SEQ });
  const cache = new BlockCache({ slots: 4 });
  const a = await readBlock(cache, dev, { blkno: BLKNO, seq: SEQ }, 'btree', FSID);
  // Scribble on the cached payload: a header-only check does not notice.
  a.data[40000]! ^= 1;
  const b = await readBlock(cache, dev, { blkno: BLKNO, seq: SEQ }, 'btree', FSID);
  assert.equal(b.slot, a.slot);
  a.release();
  b.release();
});

test('a ref past the end of the device is corruption, checked before reading', async () => {
  const dev = newDev(16);
  const cache = new BlockCache({ slots: 4 });
  await assert.rejects(readBlock(cache, dev, { blkno: 16n, seq: 1n }, 'btree', FSID), (e: unknown) => {
    expectCorruption(dev.path, 16n, 'io')(e);
    assert.match((e as Error).message, /past the end of the device/);
    return true;
  });
  assert.equal(dev.reads, 0);
  assert.ok((await readBlock(cache, dev, { blkno: 15n, seq: 1n }, 'btree', FSID).catch((e: unknown) => e)) instanceof CorruptionError,
    'the last block is inside (and empty, so its crc fails)');
});

test('a block read through a stale ref does not poison the next reader', async () => {
  const dev = newDev();
  const img = putBlock(dev, { blkno: BLKNO, seq: SEQ });
  const cache = new BlockCache({ slots: 4, invariants: true });
  const stale = readBlock(cache, dev, { blkno: BLKNO, seq: SEQ - 1n }, 'btree', FSID);
  const good = readBlock(cache, dev, { blkno: BLKNO, seq: SEQ }, 'btree', FSID);
  await assert.rejects(stale, /ESTALE/);
  const h = await good;
  assert.deepEqual(h.data, img);
  h.release();
  assert.deepEqual(pinnedSlots(cache.table), []);
});

/*
 * Goal: the 'verify' worker job computes exactly what checkBlock() computes
 * on the main thread, for good blocks and for every kind of damage, reading
 * the cache slots in place through the SharedArrayBuffer, on the piscina
 * pool (dist/workers/index.js) and the inline pool alike; it refuses slots
 * that are not pinned.  readBlocks() batches fresh blocks through the pool
 * and is all or nothing.  checkHeader() agrees with checkBlock() whenever
 * the crc is good.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { checkBlock, type BlockExpect } from '../../../src/format/block.js';
import { BLOCK_SIZE_OF, MAGIC } from '../../../src/format/constants.js';
import { CorruptionError } from '../../../src/format/errors.js';
import { BlockCache, blockOffset } from '../../../src/block/cache.js';
import { readBlocks, type ReadItem } from '../../../src/block/reader.js';
import { checkHeader, type VerifyItem, type VerifyResult } from '../../../src/block/verify.js';
import { InlinePool, PiscinaPool, type WorkerPool } from '../../../src/runtime/workerpool.js';
import { JOBS } from '../../../workers/jobs.js';
import { FSID, makeBlock, newDev, pinnedSlots, putBlock, type BlockSpec } from './util.js';

const piscina = new PiscinaPool({ maxThreads: 2 });
after(() => piscina.destroy());

interface Case {
  name: string;
  spec: BlockSpec;
  want: BlockExpect;
  flip?: number;
}

const lg = (blkno: bigint, seq: bigint): BlockExpect => ({ kind: 'btree', fsid: FSID, blkno, seq });
const CASES: Case[] = [
  { name: 'good', spec: { blkno: 2n, seq: 5n }, want: lg(2n, 5n) },
  { name: 'crc field', spec: { blkno: 3n, seq: 5n }, want: lg(3n, 5n), flip: 2 },
  { name: 'payload', spec: { blkno: 4n, seq: 5n }, want: lg(4n, 5n), flip: 65535 },
  { name: 'magic', spec: { blkno: 5n, seq: 5n, magic: MAGIC.srchBlock }, want: lg(5n, 5n) },
  { name: 'fsid', spec: { blkno: 6n, seq: 5n, fsid: 1n }, want: lg(6n, 5n) },
  { name: 'seq', spec: { blkno: 7n, seq: 6n }, want: lg(7n, 5n) },
  { name: 'blkno', spec: { blkno: 8n, seq: 5n, headerBlkno: 80n }, want: lg(8n, 5n) },
  { name: 'role', spec: { blkno: 9n, seq: 5n }, want: { ...lg(9n, 5n), kind: 'allocList' } },
  { name: 'super', spec: { kind: 'super', blkno: 16n, seq: 99n }, want: { kind: 'super', fsid: FSID, blkno: 16n, seq: null } },
  { name: 'super crc', spec: { kind: 'super', blkno: 17n, seq: 1n }, want: { kind: 'quorum', fsid: FSID, blkno: 17n, seq: null }, flip: 4095 },
];

/** Load every case into a pinned READING slot, as readBlocks does. */
async function loadCases(cache: BlockCache): Promise<VerifyItem[]> {
  const dev = newDev();
  const items: VerifyItem[] = [];
  for (const c of CASES) {
    const img = makeBlock(c.spec);
    if (c.flip !== undefined) img[c.flip]! ^= 0x10;
    putBlock(dev, c.spec, img);
    const k = cache.allocSlot();
    cache.beginRead(k, dev, c.spec.blkno, c.want.kind);
    cache.table.view(k, img.length).set(await dev.read(blockOffset(c.spec.blkno, c.want.kind), img.length));
    items.push({ slot: k, ...c.want });
  }
  return items;
}

for (const [name, pool] of [['piscina', piscina], ['inline', new InlinePool(JOBS)]] as [string, WorkerPool][]) {
  test(`${name}: worker verify equals main-thread checkBlock, damage included`, async () => {
    const cache = new BlockCache({ slots: 16, invariants: true });
    const items = await loadCases(cache);
    const got = await pool.run<VerifyResult[]>('verify', { sab: cache.sab, items });
    const local = items.map((it) => checkBlock(cache.table.view(it.slot, BLOCK_SIZE_OF[it.kind]), it));
    assert.deepEqual(got, local);
    // And the cases really cover each check.
    assert.deepEqual(got.map((r) => r?.check ?? null),
      [null, 'crc', 'crc', 'magic', 'fsid', 'seq', 'blkno', 'magic', null, 'crc']);
    for (const it of items) {
      cache.endRead(it.slot);
      cache.release(it.slot);
    }
  });

  test(`${name}: verify refuses a slot the caller did not pin`, async () => {
    const cache = new BlockCache({ slots: 2 });
    await assert.rejects(
      pool.run('verify', { sab: cache.sab, items: [{ slot: 1, kind: 'btree', blkno: 2n, seq: 1n, fsid: FSID }] }),
      (e: unknown) => e instanceof Error && e.name === 'AssertionError' && /slot 1 is FREE with 0 pins/.test(e.message));
  });
}

test('checkHeader agrees with checkBlock whenever the crc is good', () => {
  for (const c of CASES.filter((x) => x.flip === undefined)) {
    const img = makeBlock(c.spec);
    assert.deepEqual(checkHeader(img, c.want), checkBlock(img, c.want), c.name);
  }
});

test('readBlocks: one pool job for the fresh blocks, hits after', async () => {
  const dev = newDev();
  const items: ReadItem[] = [];
  for (let n = 2n; n < 12n; n++) {
    putBlock(dev, { blkno: n, seq: n });
    items.push({ ref: { blkno: n, seq: n }, kind: 'btree' });
  }
  const cache = new BlockCache({ slots: 16, pool: piscina, invariants: true });
  const hs = await readBlocks(cache, dev, [...items, items[0]!], FSID);
  assert.equal(hs.length, 11);
  hs.forEach((h, i) => assert.deepEqual(h.data, makeBlock({ blkno: h.blkno, seq: h.blkno }), `item ${i}`));
  assert.equal(cache.counters.poolVerified, 10);
  assert.equal(cache.counters.misses, 10);
  assert.equal(dev.reads, 10);
  for (const h of hs) h.release();
  const again = await readBlocks(cache, dev, items, FSID);
  assert.equal(cache.counters.hits, 10);
  assert.equal(dev.reads, 10);
  for (const h of again) h.release();
  assert.deepEqual(pinnedSlots(cache.table), []);
});

test('readBlocks: all or nothing, the first failure is thrown', async () => {
  const dev = newDev();
  const items: ReadItem[] = [];
  for (let n = 2n; n < 8n; n++) {
    const img = putBlock(dev, { blkno: n, seq: 1n });
    if (n === 5n) {
      img[1000]! ^= 1;
      putBlock(dev, { blkno: n, seq: 1n }, img);
    }
    items.push({ ref: { blkno: n, seq: 1n }, kind: 'btree' });
  }
  const cache = new BlockCache({ slots: 16, pool: piscina, invariants: true });
  await assert.rejects(readBlocks(cache, dev, items, FSID),
    (e: unknown) => e instanceof CorruptionError && e.blkno === 5n && e.check === 'crc');
  assert.deepEqual(pinnedSlots(cache.table), [], 'every handle was released');
  assert.equal(cache.counters.retries, 1, 'the bad block took the single-block retry path');
  assert.notEqual(cache.lookup(dev, 2n, 'btree'), null, 'good blocks stay cached');
});

test('readBlocks without a pool is concurrent readBlock', async () => {
  const dev = newDev();
  for (const n of [2n, 3n]) putBlock(dev, { blkno: n, seq: 1n });
  const cache = new BlockCache({ slots: 4, invariants: true });
  const hs = await readBlocks(cache, dev, [2n, 3n].map((n) => ({ ref: { blkno: n, seq: 1n }, kind: 'btree' as const })), FSID);
  assert.equal(cache.counters.poolVerified, 0);
  for (const h of hs) h.release();
});

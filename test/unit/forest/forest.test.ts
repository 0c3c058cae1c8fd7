/*
 * Goal: the forest (src/forest/) writes and reads what FORMAT.md 10-11 and
 * PROTOCOL.md 5.2-5.3, 8.1-8.2 say, end to end through real mounts on an
 * in-memory mkfs'd volume:
 *   - reads merge fs_root and every log tree by item seq, the greatest
 *     wins, a winning DELETION hides the key, equal seqs keep the first
 *     seen (fs_root, then logs_root order), and log trees whose bloom lacks
 *     the lock's bits are not read at all;
 *   - the bloom block holds exactly the bits of the lock start keys of the
 *     items in the tree (inode groups, index groups, orphans, totl), with
 *     total_set exact, copied on write once per transaction that adds bits
 *     and untouched by one that adds none;
 *   - the srch log file encodes entries as FORMAT.md 11.4 (test vectors),
 *     keeps first/last/blocks/entries/height exact, grows a parent past
 *     one block, starts a new leaf per transaction, decodes back, and bad
 *     bytes are CorruptionErrors.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { btreeForce } from '../../../src/btree/btree.js';
import { bloomCountBits, bloomTotalSet } from '../../../src/format/bloom.js';
import { CorruptionError } from '../../../src/format/errors.js';
import { bloomIndexes } from '../../../src/format/hash.js';
import { indexKey, orphanKey, ZONE, INDEX_TYPE } from '../../../src/format/items.js';
import { key, compareKeys, type Key } from '../../../src/format/key.js';
import { setU16, setU32, getU32 } from '../../../src/format/layout.js';
import { compareSrchEntries, SRCH_BLOCK, type SrchEntry } from '../../../src/format/srch.js';
import { bloomSetBits, bloomCounters, resetBloomCounters } from '../../../src/forest/bloom.js';
import { lockRangeOf, lockStartKey } from '../../../src/format/lock.js';
import { decodeSrchBlock, readSrchLogEntries, srchCounters, resetSrchCounters, srchDigit, srchHeightFor } from '../../../src/srch/file.js';
import { makeEnv, lockFor, type Mount } from '../trans/env.js';

const fk = (ino: bigint, n: number): Key => key(ZONE.FS, ino, 6, BigInt(n)); // symlink items: any value
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const str = (b: Uint8Array | null): string | null => (b === null ? null : new TextDecoder().decode(b));

async function inTrans(m: Mount, fn: () => Promise<void>): Promise<void> {
  const h = await m.trans.hold();
  try {
    await fn();
  } finally {
    m.trans.release(h);
  }
}

test('lock start keys follow the FORMAT.md 10.3 table', () => {
  assert.deepEqual(lockStartKey(fk(5000n, 3)), key(ZONE.FS, 4096n, 0));
  assert.deepEqual(lockStartKey(key(ZONE.FS, 1023n, 3, 99n, 5n)), key(ZONE.FS, 0n, 0));
  assert.deepEqual(lockStartKey(indexKey(INDEX_TYPE.DATA_SEQ, 3000n, 77n)), key(ZONE.INODE_INDEX, 0n, INDEX_TYPE.DATA_SEQ, 2048n));
  assert.deepEqual(lockStartKey(orphanKey(12345n)), key(ZONE.ORPHAN, 0n, 1));
  assert.deepEqual(lockStartKey(key(ZONE.XATTR_TOTL, 1n, 0, 2n, 3n)), key(ZONE.XATTR_TOTL, 0n, 0));
  const r = lockRangeOf(fk(5000n, 3));
  assert.ok(compareKeys(r.end, key(ZONE.FS, 5119n, 0xff)) > 0 && compareKeys(r.end, key(ZONE.FS, 5120n, 0)) < 0);
  assert.throws(() => lockStartKey(key(ZONE.LOG_TREES, 1n, 0)));
});

test('forest reads merge fs_root and log trees by seq; deletions hide; blooms skip trees', async () => {
  const env = await makeEnv(11n);
  try {
    const ino = 1024n;
    // fs_root items at seq 1 (<= super.seq, FORMAT.md 10.2).
    for (const [n, v] of [[1, 'fsA'], [2, 'fsB'], [3, 'fsC'], [5, 'fsE']] as const) {
      await btreeForce(env.server.vol.store, env.server.vol.sb.fs_root, fk(ino, n), text(v), { seq: 1n });
    }
    await env.server.commitVolume();
    const m1 = env.mount(1n);
    const m2 = env.mount(2n);
    await m1.trans.openFirst();
    await m2.trans.openFirst();
    const L1 = lockFor(fk(ino, 0), 'WRITE', 50n);
    await inTrans(m1, async () => {
      await m1.items.delete(fk(ino, 2), L1); // a persistent item: a tombstone at seq 50
      await m1.items.create(fk(ino, 4), text('D1'), L1);
      await m1.items.update(fk(ino, 5), text('E1'), L1);
    });
    await m1.trans.sync();
    const L2 = lockFor(fk(ino, 0), 'WRITE', 40n);
    await inTrans(m2, async () => {
      assert.equal(await m2.items.lookup(fk(ino, 2), L2), null, 'm2 sees m1 deletion');
      await m2.items.create(fk(ino, 2), text('B2'), L2); // seq 40 < the deletion's 50
      await m2.items.update(fk(ino, 1), text('A2'), { ...L2, writeSeq: 70n });
      await m2.items.update(fk(ino, 5), text('E2'), { ...L2, writeSeq: 50n }); // ties with m1's E1
    });
    await m2.trans.sync();

    // What the log trees hold, raw.
    const lt1 = env.server.lts.get(1n)!;
    assert.equal(lt1.max_item_seq, 50n);
    const m3 = env.mount(3n);
    const seg = await m3.reader.readSegment(fk(ino, 0), lockRangeOf(fk(ino, 0)).start, lockRangeOf(fk(ino, 0)).end);
    const got = seg.items.map((it) => [Number(it.key.second), str(it.val), it.seq]);
    assert.deepEqual(got, [[1, 'A2', 70n], [3, 'fsC', 1n], [4, 'D1', 50n], [5, 'E1', 50n]],
      'A from m2 (70), B hidden by the deletion (50 > 40), C from fs_root, D from m1, E: tie, first lt seen');
    assert.ok(m3.reader.counters.deletionsHidden >= 1);
    assert.deepEqual((await m3.reader.lookup(fk(ino, 1)))?.val, text('A2'));
    assert.equal(await m3.reader.lookup(fk(ino, 2)), null);
    // The deletion item is in m1's log tree with the DELETION flag.
    const raw = await m3.reader.logTrees((await env.server.getRoots()).logs_root);
    assert.deepEqual(raw.map((lt) => lt.rid), [1n, 2n]);
    // The item caches of other mounts read the same thing.
    assert.equal(str(await m3.items.lookup(fk(ino, 5), lockFor(fk(ino, 0), 'READ'))), 'E1');
    assert.equal(await m3.items.lookup(fk(ino, 2), lockFor(fk(ino, 0), 'READ')), null);

    // A key under a lock neither log tree touched: only fs_root is read.
    const before = { ...m3.reader.counters };
    assert.equal(await m3.reader.lookup(fk(9000n, 1)), null);
    assert.equal(m3.reader.counters.bloomSkips - before.bloomSkips, 2);
    assert.equal(m3.reader.counters.treesRead - before.treesRead, 1);
    await env.assertClean('after two mounts committed');
  } finally {
    env.close();
  }
});

test('bloom bits are exactly those of the lock start keys; total_set exact; cow once per transaction', async () => {
  const env = await makeEnv(12n);
  try {
    resetBloomCounters();
    const m = env.mount(1n);
    await m.trans.openFirst();
    const totl = key(ZONE.XATTR_TOTL, 1n, 0, 2n, 3n);
    const delta = new Uint8Array(16);
    delta[0] = 5;
    delta[8] = 1;
    const keys1 = [fk(1024n, 1), fk(1500n, 1), fk(5000n, 2), indexKey(INDEX_TYPE.META_SEQ, 3000n, 1500n), orphanKey(1500n)];
    await inTrans(m, async () => {
      for (const k of keys1) await m.items.create(k, text('x'), lockFor(k));
      await m.items.delta(totl, delta, lockFor(totl, 'WRITE_ONLY'));
    });
    await m.trans.sync();
    const expectBits = (keys: Key[]): number[] => [...new Set(keys.flatMap((k) => bloomIndexes(lockStartKey(k))))].sort((a, b) => a - b);
    const check = async (keys: Key[]): Promise<bigint> => {
      const lt = env.server.lts.get(1n)!;
      const b = await m.images.read(lt.bloom_ref, 'bloom');
      const want = expectBits(keys);
      assert.deepEqual(bloomSetBits(b), want);
      assert.equal(bloomTotalSet(b), BigInt(want.length));
      assert.equal(bloomCountBits(b), want.length);
      return lt.bloom_ref.blkno;
    };
    const b1 = await check([...keys1, totl]);
    assert.equal(bloomCounters.created, 1);
    // A transaction adding a new lock copies the bloom on write and keeps the old bits.
    await inTrans(m, async () => {
      await m.items.create(fk(9000n, 1), text('y'), lockFor(fk(9000n, 1)));
      await m.items.create(fk(1025n, 1), text('y'), lockFor(fk(1025n, 1)));
    });
    await m.trans.sync();
    const b2 = await check([...keys1, totl, fk(9000n, 1)]);
    assert.notEqual(b2, b1);
    assert.equal(bloomCounters.cowed, 1);
    // Only known locks: no copy.
    await inTrans(m, async () => {
      await m.items.update(fk(1024n, 1), text('z'), lockFor(fk(1024n, 1)));
    });
    await m.trans.sync();
    assert.equal(await check([...keys1, totl, fk(9000n, 1)]), b2);
    assert.equal(bloomCounters.cowed, 1);
    // An idle commit leaves the bloom alone too.
    await m.trans.sync();
    assert.equal(env.server.lts.get(1n)!.bloom_ref.blkno, b2);
    await env.assertClean('after bloom transactions');
  } finally {
    env.close();
  }
});

test('srch log file: FORMAT.md 11.4 encoding, exact counts, a parent past one block, decode, corruption', async () => {
  assert.deepEqual([0n, 1n, 2n, 4094n, 4095n, 4094n * 4094n, 4094n * 4094n + 1n].map(srchHeightFor), [0, 1, 2, 2, 3, 3, 4]);
  assert.deepEqual([srchDigit(4095n, 1), srchDigit(4095n, 2), srchDigit(4093n, 1), srchDigit(4093n, 2)], [1, 1, 4093, 0]);
  const env = await makeEnv(13n);
  try {
    resetSrchCounters();
    const m = env.mount(1n);
    await m.trans.openFirst();
    const v1: SrchEntry = { hash: 0x1234n, ino: 1025n, id: 0n };
    const v2: SrchEntry = { hash: 0x1234n, ino: 1024n, id: 3n };
    const h = await m.trans.hold();
    await m.trans.srchAdd(h, v1);
    await m.trans.srchAdd(h, v2);
    m.trans.release(h);
    await m.trans.sync();
    let sfl = env.server.lts.get(1n)!.srch_file;
    assert.equal(sfl.height, 1);
    const leaf = await m.images.read(sfl.ref, 'srchBlock');
    assert.deepEqual([...leaf.subarray(112, 122)], [0x22, 0x00, 0x68, 0x24, 0x02, 0x08, 0x10, 0x01, 0x01, 0x06]);
    assert.equal(getU32(leaf, SRCH_BLOCK.o('entry_bytes')), 10);

    // Many entries in one transaction: more than one leaf, a parent.
    const rnd = env.rnd.fork('srch');
    const all: SrchEntry[] = [v1, v2];
    const h2 = await m.trans.hold();
    for (let i = 0; i < 12_000; i++) {
      const e = { hash: rnd.u64(), ino: BigInt(1024 + rnd.int(1 << 20)), id: BigInt(rnd.int(1000)) };
      all.push(e);
      await m.trans.srchAdd(h2, e);
    }
    m.trans.release(h2);
    await m.trans.sync();
    sfl = env.server.lts.get(1n)!.srch_file;
    assert.ok(sfl.blocks >= 3n, `${sfl.blocks} blocks`);
    assert.equal(sfl.height, 2);
    assert.equal(sfl.entries, BigInt(all.length));
    const sorted = [...all].sort(compareSrchEntries);
    assert.deepEqual(sfl.first, sorted[0]);
    assert.deepEqual(sfl.last, sorted[sorted.length - 1]);
    assert.deepEqual(await readSrchLogEntries(m.images, sfl), all);
    const blocksAfter2 = sfl.blocks;
    // The next transaction starts a new leaf and copies the parent.
    const h3 = await m.trans.hold();
    const e3 = { hash: 1n, ino: 2n, id: 3n };
    await m.trans.srchAdd(h3, e3);
    all.push(e3);
    m.trans.release(h3);
    await m.trans.sync();
    sfl = env.server.lts.get(1n)!.srch_file;
    assert.equal(sfl.blocks, blocksAfter2 + 1n);
    assert.deepEqual(sfl.first, e3);
    assert.ok(srchCounters.parentsCowed >= 1 && srchCounters.grown === 1);
    assert.deepEqual(await readSrchLogEntries(m.images, sfl), all);
    await env.assertClean('after srch transactions');

    // Bad bytes are corruption.
    const copy = leaf.slice();
    setU16(copy, 112, 0x0f22); // a 15-byte hash length
    assert.throws(() => decodeSrchBlock(copy, sfl.ref.blkno), CorruptionError);
    const copy2 = leaf.slice();
    setU32(copy2, SRCH_BLOCK.o('entry_nr'), 3);
    assert.throws(() => decodeSrchBlock(copy2, sfl.ref.blkno), CorruptionError);
    await assert.rejects(readSrchLogEntries(m.images, { ...sfl, entries: sfl.entries + 1n }), CorruptionError);
    await assert.rejects(readSrchLogEntries(m.images, { ...sfl, blocks: sfl.blocks - 1n }), CorruptionError);
  } finally {
    env.close();
  }
});

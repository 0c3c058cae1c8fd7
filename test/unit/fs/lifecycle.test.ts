/*
 * Goal: orphans, the seq indexes and the mount itself: an unlinked open
 * file stays readable until its last release (and a crash-like close with
 * it open leaves an orphan the next mount finishes); walkInodes shows an
 * inode at a higher meta_seq after it was touched and synced, and writes
 * move data_seq; nothing above the stable seq is shown; statfs; the mount
 * refuses swapped and foreign devices and tears down after a failed open.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkfsPair, mountPair, fsckClean, rejectsCode, CTX, b } from './env.js';
import { openMount } from '../../../src/mount/mount.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { FakeClock } from '../../../src/runtime/clock.js';
import { U64_MAX } from '../../../src/format/layout.js';
import type { Fs, IndexEntry } from '../../../src/fs/api.js';

const ALL_FIRST: IndexEntry = { major: 0n, ino: 0n };
const ALL_LAST: IndexEntry = { major: U64_MAX, ino: U64_MAX };

async function walk(fs: Fs, index: 'meta_seq' | 'data_seq'): Promise<Map<bigint, bigint>> {
  const out = new Map<bigint, bigint>();
  let first = ALL_FIRST;
  for (;;) {
    const ents = await fs.walkInodes(index, first, ALL_LAST, 7);
    if (ents.length === 0) break;
    for (const e of ents) {
      assert(!out.has(e.ino), `inode ${e.ino} twice in ${index}`);
      out.set(e.ino, e.major);
    }
    const l = ents[ents.length - 1]!;
    first = { major: l.major, ino: l.ino + 1n };
  }
  return out;
}

test('an unlinked open file is readable until its last release', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const f = await fs.create(1n, b('tmp'), 0o644, CTX);
  await fs.write(f.ino, 0n, b('still here'));
  await fs.open(f.ino);
  await fs.open(f.ino);
  await fs.unlink(1n, b('tmp'));
  await rejectsCode(fs.lookup(1n, b('tmp')), 'ENOENT');
  assert.equal((await fs.getattr(f.ino)).nlink, 0);
  assert.deepEqual(await fs.read(f.ino, 0n, 100), b('still here'));
  await fs.sync();
  await fs.release(f.ino);
  assert.deepEqual(await fs.read(f.ino, 0n, 100), b('still here'));
  await fs.release(f.ino);
  await rejectsCode(fs.getattr(f.ino), 'ENOENT');
  await rejectsCode(fs.release(f.ino), 'EBADF');
  await fs.sync();
  await m.close();
  await fsckClean(p, 'orphan released');
});

test('an orphan left by a mount is deleted by the next one', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const f = await m.fs.create(1n, b('tmp'), 0o644, CTX);
  await m.fs.write(f.ino, 0n, new Uint8Array(100000).fill(1));
  await m.fs.open(f.ino);
  await m.fs.unlink(1n, b('tmp'));
  await m.fs.sync();
  await m.close(); // never released
  const m2 = await mountPair(p, 2n);
  await rejectsCode(m2.fs.getattr(f.ino), 'ENOENT');
  assert.equal((m2.status() as { fs: { counters: { orphansRecovered: number } } }).fs.counters.orphansRecovered, 1);
  await m2.close();
  await fsckClean(p, 'orphan recovered');
});

test('walkInodes follows meta_seq and data_seq, clamped to the stable seq', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  assert.deepEqual([...(await walk(fs, 'meta_seq')).entries()], [[1n, 0n]], 'mkfs root item at seq 0');
  const f = await fs.create(1n, b('f'), 0o644, CTX);
  const d = await fs.mkdir(1n, b('d'), 0o755, CTX);
  // The walk commits a transaction that changed the index, so nothing vanishes.
  const seq0 = await fs.committedSeq();
  const before = await walk(fs, 'meta_seq');
  assert(before.has(f.ino) && before.has(d.ino) && before.has(1n));
  const stable = await fs.committedSeq();
  assert(stable > seq0);
  const m1 = await walk(fs, 'meta_seq');
  const s1 = m1.get(f.ino)!;
  assert(s1 > 0n && s1 <= stable);
  assert.equal(m1.get(d.ino), s1);
  assert(m1.get(1n)! >= s1, 'the root was written by the creates');
  const d1 = await walk(fs, 'data_seq');
  assert.equal(d1.get(f.ino), s1);
  assert(!d1.has(d.ino), 'directories have no data_seq item');

  // Touch: meta_seq moves, data_seq does not.
  await fs.setattr(f.ino, { mode: 0o600 });
  await fs.sync();
  const m2 = await walk(fs, 'meta_seq');
  assert(m2.get(f.ino)! > s1);
  assert.equal(m2.get(d.ino), s1);
  assert.equal((await walk(fs, 'data_seq')).get(f.ino), s1);
  assert.equal((await fs.getattr(f.ino)).meta_seq, m2.get(f.ino));

  // Write: both move.
  await fs.write(f.ino, 0n, b('data'));
  await fs.sync();
  const a = await fs.getattr(f.ino);
  assert(a.data_seq > s1);
  assert.equal((await walk(fs, 'data_seq')).get(f.ino), a.data_seq);
  assert.equal((await walk(fs, 'meta_seq')).get(f.ino), a.meta_seq);
  // A bounded walk.
  const one = await fs.walkInodes('meta_seq', { major: a.meta_seq, ino: f.ino }, { major: a.meta_seq, ino: f.ino }, 10);
  assert.deepEqual(one, [{ major: a.meta_seq, ino: f.ino }]);
  await rejectsCode(fs.walkInodes('bogus' as 'meta_seq', ALL_FIRST, ALL_LAST, 1), 'EINVAL');

  // Deleted inodes leave the indexes.
  await fs.unlink(1n, b('f'));
  await fs.sync();
  assert(!(await walk(fs, 'meta_seq')).has(f.ino));
  assert(!(await walk(fs, 'data_seq')).has(f.ino));
  await m.close();
  await fsckClean(p, 'walk');
});

test('statfs counts inodes and blocks', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const st = await m.fs.statfs();
  assert.equal(st.blockSize, 4096);
  assert.equal(st.nameMax, 255);
  assert.equal(st.totalDataBlocks, (64n << 20n) / 4096n - 64n);
  assert.equal(st.totalBlocks, st.totalDataBlocks);
  assert(st.freeDataBlocks > 0n && st.freeDataBlocks <= st.totalDataBlocks);
  assert.equal(st.freeBlocks, st.freeDataBlocks);
  assert.equal(st.totalMetaBlocks, (1024n << 20n) / 65536n);
  assert(st.freeMetaBlocks > 0n && st.freeMetaBlocks < st.totalMetaBlocks);
  // Inodes: the root only after mkfs.
  assert.equal(st.totalInodes, U64_MAX);
  assert.equal(st.freeInodes, U64_MAX - 1n);
  // Blocks: 1 MiB written takes 256 data blocks.
  const f = await m.fs.create(1n, b('f'), 0o644, CTX);
  await m.fs.write(f.ino, 0n, new Uint8Array(1 << 20).fill(1));
  await m.fs.sync();
  assert.equal((await m.fs.statfs()).freeDataBlocks, st.freeDataBlocks - 256n);
  await m.close();
  // The inodes are counted once the next mount merged the log trees into
  // super.inode_count.
  const m2 = await mountPair(p, 2n);
  assert.equal((await m2.fs.statfs()).freeInodes, U64_MAX - 2n, 'the root and f');
  await m2.close();
});

// PROTOCOL.md 7.4 (STATFS): inode count = super.inode_count + the
// inode_count_delta of every lt, so inodes created since the last log
// merge count as soon as their transaction commits.
test('statfs counts the inodes of committed log trees, not only the merged ones', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  await fs.create(1n, b('f'), 0o644, CTX);
  await fs.mkdir(1n, b('d'), 0o755, CTX);
  await fs.symlink(1n, b('l'), b('f'), CTX);
  await fs.sync();
  try {
    assert.equal((await fs.statfs()).freeInodes, U64_MAX - 4n, 'root, file, directory and symlink');
  } finally {
    await m.close();
  }
});

test('the mount refuses swapped and foreign devices, and closes after a failed open', async () => {
  const p = mkfsPair();
  const other = mkfsPair(1024n << 20n, 64n << 20n, 9);
  const open = (metaDev: typeof p.meta, dataDev: typeof p.meta) =>
    openMount({ metaDev, dataDev, random: new SeededRandom(1n), clock: new FakeClock() });
  await assert.rejects(open(p.data, p.meta), /data device \(META_BDEV flag clear\)/);
  await assert.rejects(open(p.meta, p.meta), /metadata device \(META_BDEV flag set\) given as the data device/);
  await assert.rejects(open(p.meta, other.data), /foreign data device/);
  const { MemoryBlockDevice } = await import('../../../src/runtime/memdevice.js');
  await assert.rejects(open(p.meta, new MemoryBlockDevice(64n << 20n, 'blank')), /not a scoutfs data device/);
  // The volume still mounts, twice in a row, and closes idempotently.
  const m = await mountPair(p);
  await m.close();
  await m.close();
  await rejectsCode(m.fs.getattr(1n), 'ESHUTDOWN');
  const m2 = await mountPair(p, 3n);
  assert.equal((await m2.fs.getattr(1n)).ino, 1n);
  await m2.close();
  await fsckClean(p, 'after refusals');
});

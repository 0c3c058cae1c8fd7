/*
 * Goal: every namespace operation of the Fs (create, mknod, mkdir,
 * symlink, link, unlink, rmdir, rename, readdir, lookup, setattr) and its
 * error cases, on a single-node mount over in-memory devices, ending with
 * a remount that reads everything back and a clean fsck.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkfsPair, mountPair, fsckClean, rejectsCode, CTX, b, s } from './env.js';
import { DT } from '../../../src/format/items.js';

test('create, lookup, mknod, mkdir, symlink and their errors', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const f = await fs.create(1n, b('f'), 0o640, CTX);
  assert.equal(f.mode, 0o100640);
  assert.equal(f.uid, CTX.uid);
  assert.equal(f.gid, CTX.gid);
  assert.equal(f.nlink, 1);
  assert.equal((await fs.lookup(1n, b('f'))).ino, f.ino);
  await rejectsCode(fs.create(1n, b('f'), 0o644, CTX), 'EEXIST');
  await rejectsCode(fs.lookup(1n, b('nope')), 'ENOENT');
  await rejectsCode(fs.lookup(1n, new Uint8Array(256).fill(0x61)), 'ENAMETOOLONG');
  await rejectsCode(fs.create(1n, new Uint8Array(256).fill(0x61), 0o644, CTX), 'ENAMETOOLONG');
  const long = await fs.create(1n, new Uint8Array(255).fill(0x62), 0o644, CTX);
  assert.equal((await fs.lookup(1n, new Uint8Array(255).fill(0x62))).ino, long.ino);
  await rejectsCode(fs.create(f.ino, b('x'), 0o644, CTX), 'ENOTDIR');
  await rejectsCode(fs.lookup(f.ino, b('x')), 'ENOTDIR');
  await rejectsCode(fs.create(999999n, b('x'), 0o644, CTX), 'ENOENT');

  const root0 = await fs.getattr(1n);
  const d = await fs.mkdir(1n, b('d'), 0o755, CTX);
  assert.equal(d.mode, 0o040755);
  assert.equal(d.nlink, 2);
  assert.equal((await fs.getattr(1n)).nlink, root0.nlink + 1);
  await rejectsCode(fs.mkdir(1n, b('d'), 0o755, CTX), 'EEXIST');

  const fifo = await fs.mknod(d.ino, b('fifo'), 0o010644, 0, CTX);
  assert.equal(fifo.mode, 0o010644);
  const chr = await fs.mknod(d.ino, b('chr'), 0o020600, (4 << 20) | 5, CTX);
  assert.equal(chr.rdev, (4 << 20) | 5);

  const target = new Uint8Array(2000).fill(0x74);
  const l = await fs.symlink(d.ino, b('ln'), target, CTX);
  assert.equal(l.size, 2001n);
  assert.deepEqual(await fs.readlink(l.ino), target);
  assert.deepEqual(await fs.readlink((await fs.symlink(d.ino, b('short'), b('/a/b'), CTX)).ino), b('/a/b'));
  await rejectsCode(fs.symlink(d.ino, b('toolong'), new Uint8Array(4096).fill(0x74), CTX), 'ENAMETOOLONG');
  await fs.symlink(d.ino, b('max'), new Uint8Array(4095).fill(0x75), CTX);
  await rejectsCode(fs.readlink(f.ino), 'EINVAL');

  const ents = await fs.readdir(d.ino, 0n, 100);
  assert.deepEqual(ents.map((e) => s(e.name)), ['fifo', 'chr', 'ln', 'short', 'max']);
  assert.deepEqual(ents.map((e) => e.pos), [2n, 3n, 4n, 5n, 6n]);
  assert.deepEqual(ents.map((e) => e.type), [DT.FIFO, DT.CHR, DT.LNK, DT.LNK, DT.LNK]);
  assert.deepEqual((await fs.readdir(d.ino, 4n, 2)).map((e) => s(e.name)), ['ln', 'short']);
  // Directory size: the sum of entry name lengths.
  assert.equal((await fs.getattr(d.ino)).size, BigInt('fifochrlnshortmax'.length));
  await rejectsCode(fs.readdir(f.ino, 0n, 10), 'ENOTDIR');

  await fs.sync();
  await m.close();
  await fsckClean(p, 'namespace');
  const m2 = await mountPair(p, 9n);
  assert.deepEqual((await m2.fs.readdir(d.ino, 0n, 100)).map((e) => s(e.name)), ['fifo', 'chr', 'ln', 'short', 'max']);
  assert.deepEqual(await m2.fs.readlink(l.ino), target);
  assert.equal((await m2.fs.lookup(d.ino, b('chr'))).rdev, (4 << 20) | 5);
  await m2.close();
});

test('link, unlink, rmdir and nlink', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const d = await fs.mkdir(1n, b('d'), 0o755, CTX);
  const f = await fs.create(d.ino, b('f'), 0o644, CTX);
  const l = await fs.link(f.ino, 1n, b('hard'));
  assert.equal(l.nlink, 2);
  assert.equal((await fs.lookup(1n, b('hard'))).ino, f.ino);
  await rejectsCode(fs.link(f.ino, 1n, b('hard')), 'EEXIST');
  await rejectsCode(fs.link(d.ino, 1n, b('dirlink')), 'EPERM');
  await fs.write(f.ino, 0n, b('shared'));
  assert.deepEqual(await fs.read((await fs.lookup(1n, b('hard'))).ino, 0n, 10), b('shared'));

  await rejectsCode(fs.rmdir(1n, b('d')), 'ENOTEMPTY');
  await rejectsCode(fs.rmdir(1n, b('hard')), 'ENOTDIR');
  await rejectsCode(fs.unlink(1n, b('d')), 'EISDIR');
  await rejectsCode(fs.unlink(1n, b('nope')), 'ENOENT');
  await rejectsCode(fs.rmdir(1n, b('nope')), 'ENOENT');

  await fs.unlink(d.ino, b('f'));
  assert.equal((await fs.getattr(f.ino)).nlink, 1);
  await rejectsCode(fs.lookup(d.ino, b('f')), 'ENOENT');
  const rootNlink = (await fs.getattr(1n)).nlink;
  await fs.rmdir(1n, b('d'));
  assert.equal((await fs.getattr(1n)).nlink, rootNlink - 1);
  await rejectsCode(fs.getattr(d.ino), 'ENOENT');
  await fs.unlink(1n, b('hard'));
  await rejectsCode(fs.getattr(f.ino), 'ENOENT');
  assert.deepEqual(await fs.readdir(1n, 0n, 10), []);
  assert.equal((await fs.getattr(1n)).size, 0n);
  await fs.sync();
  await m.close();
  await fsckClean(p, 'links');
});

test('rename: same dir, across dirs, replacing, and the refusals', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const a = await fs.mkdir(1n, b('a'), 0o755, CTX);
  const bd = await fs.mkdir(1n, b('b'), 0o755, CTX);
  const sub = await fs.mkdir(a.ino, b('sub'), 0o755, CTX);
  const f = await fs.create(a.ino, b('f'), 0o644, CTX);
  const g = await fs.create(bd.ino, b('g'), 0o644, CTX);

  await fs.rename(a.ino, b('f'), a.ino, b('f2'));
  assert.equal((await fs.lookup(a.ino, b('f2'))).ino, f.ino);
  await rejectsCode(fs.lookup(a.ino, b('f')), 'ENOENT');
  await rejectsCode(fs.rename(a.ino, b('f'), a.ino, b('x')), 'ENOENT');

  // Replace a file in another dir: g's inode goes away.
  await fs.rename(a.ino, b('f2'), bd.ino, b('g'));
  assert.equal((await fs.lookup(bd.ino, b('g'))).ino, f.ino);
  await rejectsCode(fs.getattr(g.ino), 'ENOENT');
  assert.deepEqual((await fs.readdir(a.ino, 0n, 10)).map((e) => s(e.name)), ['sub']);

  // A dir can not go under itself, not even deeper down.
  const deep = await fs.mkdir(sub.ino, b('deep'), 0o755, CTX);
  await rejectsCode(fs.rename(1n, b('a'), sub.ino, b('a')), 'EINVAL');
  await rejectsCode(fs.rename(1n, b('a'), deep.ino, b('a')), 'EINVAL');

  // Type mismatches and non-empty targets.
  await rejectsCode(fs.rename(bd.ino, b('g'), a.ino, b('sub')), 'EISDIR');
  await rejectsCode(fs.rename(a.ino, b('sub'), bd.ino, b('g')), 'ENOTDIR');
  const empty = await fs.mkdir(bd.ino, b('empty'), 0o755, CTX);
  await rejectsCode(fs.rename(bd.ino, b('empty'), a.ino, b('sub')), 'ENOTEMPTY');

  // Move a dir across, replacing an empty dir: parents' nlink follow.
  const aN = (await fs.getattr(a.ino)).nlink;
  const bN = (await fs.getattr(bd.ino)).nlink;
  await fs.rename(a.ino, b('sub'), bd.ino, b('empty'));
  await rejectsCode(fs.getattr(empty.ino), 'ENOENT');
  assert.equal((await fs.lookup(bd.ino, b('empty'))).ino, sub.ino);
  assert.equal((await fs.getattr(a.ino)).nlink, aN - 1);
  assert.equal((await fs.getattr(bd.ino)).nlink, bN); // one in, one replaced
  // The moved dir's new parent is what the under-itself check walks.
  await rejectsCode(fs.rename(bd.ino, b('empty'), deep.ino, b('x')), 'EINVAL');
  await fs.rename(1n, b('a'), deep.ino, b('a')); // a is no longer above deep
  // Renaming onto another link of the same inode does nothing.
  await fs.link(f.ino, bd.ino, b('g2'));
  await fs.rename(bd.ino, b('g'), bd.ino, b('g2'));
  assert.equal((await fs.getattr(f.ino)).nlink, 2);
  await rejectsCode(fs.rename(1n, b('b'), 1n, new Uint8Array(256).fill(0x61)), 'ENAMETOOLONG');

  await fs.sync();
  await m.close();
  await fsckClean(p, 'rename');
  const m2 = await mountPair(p, 5n);
  assert.equal((await m2.fs.lookup(deep.ino, b('a'))).ino, a.ino);
  assert.deepEqual((await m2.fs.readdir(bd.ino, 0n, 10)).map((e) => s(e.name)).sort(), ['empty', 'g', 'g2']);
  await m2.close();
});

test('setattr: mode, owner, times, truncate', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const f = await fs.create(1n, b('f'), 0o644, CTX);
  const a = await fs.setattr(f.ino, { mode: 0o600, uid: 7, gid: 8, mtime: { sec: 5n, nsec: 6 }, atime: { sec: 3n, nsec: 4 } });
  assert.equal(a.mode, 0o100600);
  assert.equal(a.uid, 7);
  assert.equal(a.gid, 8);
  assert.deepEqual(a.mtime, { sec: 5n, nsec: 6 });
  assert.deepEqual(a.atime, { sec: 3n, nsec: 4 });
  await rejectsCode(fs.setattr(1n, { size: 0n }), 'EISDIR');
  await rejectsCode(fs.setattr(424242n, { mode: 0o600 }), 'ENOENT');
  await m.close();
});

for (const cacheBytes of [undefined, 256 << 10]) test(`a 5000-entry directory reads back each entry once (item cache ${cacheBytes ?? 'default'} bytes)`, async () => {
  const p = mkfsPair();
  const m = await mountPair(p, 1n, [], cacheBytes);
  const fs = m.fs;
  const d = await fs.mkdir(1n, b('big'), 0o755, CTX);
  const N = 5000;
  for (let i = 0; i < N; i++) await fs.create(d.ino, b(`entry-${i}`), 0o644, CTX);
  const check = async (f: typeof fs): Promise<void> => {
    const seen = new Set<string>();
    let pos = 0n;
    let lastPos = -1n;
    for (;;) {
      const ents = await f.readdir(d.ino, pos, 128);
      if (ents.length === 0) break;
      for (const e of ents) {
        assert(e.pos > lastPos, 'positions increase');
        lastPos = e.pos;
        const n = s(e.name);
        assert(!seen.has(n), `${n} twice`);
        seen.add(n);
      }
      pos = ents[ents.length - 1]!.pos + 1n;
    }
    assert.equal(seen.size, N);
    assert.equal((await f.lookup(d.ino, b('entry-4321'))).nlink, 1);
  };
  await check(fs);
  await fs.sync();
  // Committed items may now be evicted (a small cache) and read back from the log tree.
  await check(fs);
  await m.close();
  await fsckClean(p, 'big dir');
  const m2 = await mountPair(p, 3n, [], cacheBytes);
  await check(m2.fs);
  await m2.close();
});

/*
 * Goal: `.srch.` xattrs are found by Mount.searchXattrs exactly when they
 * exist, whichever srch files their entries landed in.  A seeded random
 * workload sets, replaces and removes srch xattrs on a pool of inodes and
 * deletes whole inodes (whose srch xattrs go with them), over many
 * transactions; the server rotates every srch file into srch_root at
 * commit (rotation threshold 1 block) in one run and never in the other,
 * and a remount (farewell rotates the rest) is checked too.  After every
 * few steps the search results must equal a model (a Map of what is set),
 * and fsck stays clean.  Also: src/srch/search.ts's result limit cuts the
 * range and says so.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeededRandom } from '../../../src/runtime/random.js';
import { searchXattrs, srchFiles } from '../../../src/srch/search.js';
import { srchHash } from '../../../src/format/hash.js';
import { readMetaSuper } from '../../../src/server/volume.js';
import { CommittedStore } from '../../../src/forest/reader.js';
import { CacheImages } from '../../../src/block/images.js';
import { BlockCache } from '../../../src/block/cache.js';
import { CTX, b, fsckClean, mkfsPair, mountPair, type Pair } from './env.js';
import type { Super } from '../../../src/format/super.js';

/** The committed super and a verified read-only store over its blocks. */
async function withCommitted(pair: Pair, fn: (store: CommittedStore, sb: Super) => Promise<void>): Promise<void> {
  const sb = await readMetaSuper(pair.meta);
  const cache = new BlockCache({ slots: 64 });
  try {
    await fn(new CommittedStore(new CacheImages(cache, pair.meta, sb.hdr.fsid, new SeededRandom(1n)), { segments: 0, staleDirty: 0 } as never), sb);
  } finally {
    cache.destroy();
  }
}

const NAMES = ['scoutfs.srch.a', 'scoutfs.srch.b', 'scoutfs.hide.srch.c'];

for (const rotate of [1n, 1_000_000n]) {
  test(`search-xattrs equals the model (srch rotation at ${rotate} blocks)`, async () => {
    const pair = mkfsPair();
    let m = await mountPair(pair, 3n, [], undefined, rotate);
    const rnd = new SeededRandom(rotate);
    const inos: bigint[] = [];
    // model: name -> set of inos carrying it
    const model = new Map<string, Set<bigint>>(NAMES.map((n) => [n, new Set()]));
    const check = async (what: string): Promise<void> => {
      for (const n of NAMES) {
        const r = await m.searchXattrs(b(n));
        const want = [...model.get(n)!].sort((x, y) => (x < y ? -1 : 1));
        assert.deepEqual(r.inos, want, `${what}: ${n}`);
        assert.equal(r.complete, true);
      }
    };
    for (let i = 0; i < 24; i++) inos.push((await m.fs.create(m.fs.rootIno, b(`f${i}`), 0o100644, CTX)).ino);
    for (let step = 0; step < 300; step++) {
      const k = rnd.int(inos.length);
      const ino = inos[k]!;
      const name = NAMES[rnd.int(NAMES.length)]!;
      const op = rnd.int(10);
      if (op < 5) {
        await m.fs.setxattr(ino, b(name), b(`v${step}`), {});
        model.get(name)!.add(ino);
      } else if (op < 8) {
        if (model.get(name)!.has(ino)) {
          await m.fs.removexattr(ino, b(name));
          model.get(name)!.delete(ino);
        }
      } else if (op < 9) {
        // Delete the inode with whatever it carries; a fresh one replaces it.
        await m.fs.unlink(m.fs.rootIno, b(`f${k}`));
        for (const s of model.values()) s.delete(ino);
        inos[k] = (await m.fs.create(m.fs.rootIno, b(`f${k}`), 0o100644, CTX)).ino;
      } else {
        await m.fs.sync();
      }
      if (step % 25 === 24) await check(`step ${step}`);
      if (step === 150) {
        await m.close();
        m = await mountPair(pair, 4n, [], undefined, rotate);
        await check('after a remount');
      }
    }
    await check('at the end');
    await m.close();
    // The run read what it meant to: many rotated files, or only the two
    // that each farewell rotated.
    await withCommitted(pair, async (store, sb) => {
      const files = await srchFiles(store, sb);
      if (rotate === 1n) assert.ok(files.length > 10, `${files.length} rotated files`);
      else assert.equal(files.length, 2);
    });
    await fsckClean(pair, 'after the srch workload');
  });
}

test('a search past its limit is cut short below the largest ino and says so', async () => {
  const pair = mkfsPair();
  const m = await mountPair(pair, 5n);
  const inos: bigint[] = [];
  for (let i = 0; i < 10; i++) {
    const a = await m.fs.create(m.fs.rootIno, b(`g${i}`), 0o100644, CTX);
    await m.fs.setxattr(a.ino, b('scoutfs.srch.x'), b('1'), {});
    inos.push(a.ino);
  }
  await m.fs.sync();
  try {
    await withCommitted(pair, async (store, sb) => {
      const all = await searchXattrs(store, sb, srchHash('scoutfs.srch.x'));
      assert.deepEqual(all.inos, inos);
      assert.equal(all.complete, true);
      const cut = await searchXattrs(store, sb, srchHash('scoutfs.srch.x'), 0n, 2n ** 64n - 1n, 4);
      assert.equal(cut.complete, false);
      assert.deepEqual(cut.inos, inos.slice(0, cut.inos.length));
      assert.ok(cut.inos.length <= 4 && cut.inos.length > 0);
      const range = await searchXattrs(store, sb, srchHash('scoutfs.srch.x'), inos[3]!, inos[5]!);
      assert.deepEqual(range.inos, inos.slice(3, 6));
    });
  } finally {
    await m.close();
  }
});

/*
 * Goal: the archive interface at the fs level (src/fs/archive.ts), over
 * in-memory devices: release and stage keep bytes, block counts and
 * data_version exactly as the scoutfs suite's basic-block-counts,
 * simple-staging and simple-release-extents expect (offline extents merge
 * as their golden output says), every argument error of release, stage,
 * setattr_more, move-blocks and data-wait-err, and the waiting rules:
 * readers, writers and size changes that meet offline blocks wait without
 * holding the fs lock, show up in dataWaiting once per block, wake on
 * stage, fail with the errno data-wait-err gives, EINTR on abort, and
 * ESHUTDOWN at unmount.  Every test ends with fsck clean, which accounts
 * every data block as mapped or free exactly once and every file's counts
 * against its extents.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkfsPair, mountPair, fsckClean, rejectsCode, durableExtents, CTX, b, type Pair } from './env.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { ERRNO, FsError } from '../../../src/format/errors.js';
import type { Attr, Fs } from '../../../src/fs/api.js';
import type { Mount } from '../../../src/mount/mount.js';
import { DATA_WAIT_OP } from '../../../src/fs/archive.js';

const BS = 4096;
const OFFLINE = 1;

async function file(fs: Fs, name: string, bytes: Uint8Array): Promise<Attr> {
  const a = await fs.create(1n, b(name), 0o644, CTX);
  for (let off = 0; off < bytes.length; off += 131072) await fs.write(a.ino, BigInt(off), bytes.subarray(off, off + 131072));
  return fs.getattr(a.ino);
}

async function counts(fs: Fs, ino: bigint): Promise<[bigint, bigint, bigint]> {
  const a = await fs.getattr(ino);
  return [a.online_blocks, a.offline_blocks, a.blocks];
}

/** Let the event loop run until cond holds (bounded). */
async function until(cond: () => Promise<boolean> | boolean, what: string): Promise<void> {
  for (let i = 0; i < 10_000; i++) {
    if (await cond()) return;
    await new Promise((r) => setImmediate(r));
  }
  assert.fail(`never happened: ${what}`);
}

async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  p.then(() => { done = true; }, () => { done = true; });
  for (let i = 0; i < 50; i++) await new Promise((r) => setImmediate(r));
  return done;
}

async function withMount(fn: (fs: Fs, m: Mount, p: Pair) => Promise<void>, what: string): Promise<void> {
  const p = mkfsPair();
  const m = await mountPair(p);
  try {
    await fn(m.fs, m, p);
  } finally {
    await m.close();
  }
  await fsckClean(p, what);
}

test('block counts across write, release, stage and truncate (basic-block-counts)', async () => {
  await withMount(async (fs) => {
    const f = await file(fs, 'f', new Uint8Array(BS));
    assert.deepEqual(await counts(fs, f.ino), [1n, 0n, 8n]);
    await fs.write(f.ino, 0n, new Uint8Array(BS));
    assert.deepEqual(await counts(fs, f.ino), [1n, 0n, 8n]);
    await fs.write(f.ino, BigInt(BS), new Uint8Array(BS));
    assert.deepEqual(await counts(fs, f.ino), [2n, 0n, 16n]);
    const dv = (await fs.getattr(f.ino)).data_version;
    const seq0 = (await fs.getattr(f.ino)).data_seq;
    await fs.releaseData(f.ino, 0n, 8192n, dv);
    assert.deepEqual(await counts(fs, f.ino), [0n, 2n, 16n], 'release');
    await fs.releaseData(f.ino, 0n, 8192n, dv);
    assert.deepEqual(await counts(fs, f.ino), [0n, 2n, 16n], 'duplicate release');
    await fs.releaseData(f.ino, 0n, 65536n, dv);
    assert.deepEqual(await counts(fs, f.ino), [0n, 2n, 16n], 'duplicate release past i_size');
    await fs.stageData(f.ino, dv, 0n, new Uint8Array(8192));
    assert.deepEqual(await counts(fs, f.ino), [2n, 0n, 16n], 'stage');
    await fs.stageData(f.ino, dv, 0n, new Uint8Array(8192));
    assert.deepEqual(await counts(fs, f.ino), [2n, 0n, 16n], 'duplicate stage');
    const a = await fs.getattr(f.ino);
    assert.equal(a.data_version, dv, 'release and stage keep data_version');
    assert.equal(a.data_seq, seq0, 'release and stage keep data_seq');
    const big = await file(fs, 'big', new Uint8Array(1 << 20));
    assert.deepEqual(await counts(fs, big.ino), [256n, 0n, 2048n]);
    await fs.setattr(big.ino, { size: 512n << 10n });
    assert.deepEqual(await counts(fs, big.ino), [128n, 0n, 1024n], 'partial truncate');
    const sparse = await fs.create(1n, b('sparse'), 0o644, CTX);
    await fs.write(sparse.ino, 1024n * 4096n, new Uint8Array(BS));
    assert.deepEqual(await counts(fs, sparse.ino), [1n, 0n, 8n], 'single sparse block');
    const empty = await fs.create(1n, b('empty'), 0o644, CTX);
    assert.deepEqual(await counts(fs, empty.ino), [0n, 0n, 0n]);
    const d = await fs.mkdir(1n, b('dir'), 0o755, CTX);
    assert.deepEqual(await counts(fs, d.ino), [0n, 0n, 0n]);
  }, 'block counts');
});

test('release then stage brings back byte-exact data without touching data_version, data_seq or times', async () => {
  await withMount(async (fs, m) => {
    const rnd = new SeededRandom(13n);
    for (const size of [4096, 2048, 16 << 20, 3 * 4096 + 100]) {
      const want = rnd.bytes(size);
      const f = await file(fs, `f${size}`, want);
      const before = await fs.getattr(f.ino);
      await fs.releaseData(f.ino, 0n, BigInt(Math.ceil(size / BS) * BS), before.data_version);
      const rel = await fs.getattr(f.ino);
      assert.equal(rel.online_blocks, 0n);
      assert.equal(rel.offline_blocks, BigInt(Math.ceil(size / BS)));
      assert.equal(rel.size, before.size);
      assert.deepEqual([rel.data_version, rel.data_seq, rel.mtime, rel.ctime], [before.data_version, before.data_seq, before.mtime, before.ctime]);
      assert(rel.meta_seq >= before.meta_seq);
      await fs.stageData(f.ino, before.data_version, 0n, want);
      const st = await fs.getattr(f.ino);
      assert.deepEqual([st.data_version, st.data_seq, st.mtime, st.ctime, st.size], [before.data_version, before.data_seq, before.mtime, before.ctime, before.size]);
      assert.equal(st.online_blocks, BigInt(Math.ceil(size / BS)));
      assert.equal(st.offline_blocks, 0n);
      assert.deepEqual(await fs.read(f.ino, 0n, size + 10), want, `size ${size}`);
    }
    // Nine release/stage cycles with a commit between each.
    const want = rnd.bytes(1 << 20);
    const f = await file(fs, 'cycles', want);
    const dv = (await fs.getattr(f.ino)).data_version;
    for (let i = 0; i < 9; i++) {
      await fs.releaseData(f.ino, 0n, 1n << 20n, dv);
      await fs.sync();
      await fs.stageData(f.ino, dv, 0n, want);
      assert.deepEqual(await fs.read(f.ino, 0n, 1 << 20), want);
      await fs.sync();
    }
    // Stage changes meta_seq (the inode item is written).
    await fs.releaseData(f.ino, 0n, 1n << 20n, dv);
    await fs.sync();
    const ms = (await fs.getattr(f.ino)).meta_seq;
    await fs.stageData(f.ino, dv, 0n, want);
    assert.notEqual((await fs.getattr(f.ino)).meta_seq, ms);
    void m;
  }, 'round trips');
});

test('staging in parts, out of order, with a partial final block', async () => {
  await withMount(async (fs) => {
    const rnd = new SeededRandom(7n);
    const size = 64 * BS + 123;
    const want = rnd.bytes(size);
    const f = await file(fs, 'parts', want);
    const dv = (await fs.getattr(f.ino)).data_version;
    await fs.releaseData(f.ino, 0n, BigInt(65 * BS), dv);
    const order = [...Array(65).keys()].sort(() => rnd.int(3) - 1);
    for (const blk of order) {
      const off = blk * BS;
      await fs.stageData(f.ino, dv, BigInt(off), want.subarray(off, Math.min(off + BS, size)));
    }
    assert.deepEqual(await fs.read(f.ino, 0n, size), want);
    assert.deepEqual(await counts(fs, f.ino), [65n, 0n, 520n]);
  }, 'parts');
});

test('stage and release argument errors (simple-staging, simple-release-extents)', async () => {
  await withMount(async (fs) => {
    const f = await file(fs, 'f', new Uint8Array(8192).fill(7));
    const dv = (await fs.getattr(f.ino)).data_version;
    const U64 = (1n << 64n) - 1n;
    // release
    await rejectsCode(fs.releaseData(f.ino, 1n, 4096n, dv), 'EINVAL');
    await rejectsCode(fs.releaseData(f.ino, 0n, 1n, dv), 'EINVAL');
    await fs.releaseData(f.ino, 0xfffffffffffff000n, 4096n, dv); // the last block: fine
    await rejectsCode(fs.releaseData(f.ino, 0xfffffffffffff000n, 8192n, dv), 'EINVAL');
    await rejectsCode(fs.releaseData(f.ino, 0n, 4096n, dv + 1n), 'ESTALE');
    await fs.releaseData(f.ino, 0n, 0n, dv + 1n); // zero length: nothing checked, nothing done
    await rejectsCode(fs.releaseData(1n, 0n, 4096n, 0n), 'EISDIR');
    const sym = await fs.symlink(1n, b('sym'), b('f'), CTX);
    await rejectsCode(fs.releaseData(sym.ino, 0n, 4096n, 0n), 'EINVAL');
    await fs.releaseData(f.ino, 400n << 10n, 4096n, dv); // past i_size: fine
    assert.deepEqual(await counts(fs, f.ino), [2n, 0n, 16n]);
    // stage
    await fs.releaseData(f.ino, 0n, 8192n, dv);
    await rejectsCode(fs.stageData(f.ino, dv, 1n, new Uint8Array(4095)), 'EINVAL');
    await rejectsCode(fs.stageData(f.ino, dv, 0n, new Uint8Array(1024)), 'EINVAL');
    await rejectsCode(fs.stageData(f.ino, dv, 0xfffffffffffff000n, new Uint8Array(8192)), 'EINVAL');
    await rejectsCode(fs.stageData(f.ino, dv, 4096n, new Uint8Array(8192)), 'EINVAL'); // past i_size
    await rejectsCode(fs.stageData(f.ino, dv + 1n, 0n, new Uint8Array(8192)), 'ESTALE');
    await rejectsCode(fs.stageData(1n, 0n, 0n, new Uint8Array(1)), 'EISDIR');
    await fs.stageData(f.ino, dv, 4096n, new Uint8Array(0)); // zero length: nothing
    assert.deepEqual(await counts(fs, f.ino), [0n, 2n, 16n], 'failed stages bring nothing online');
    // can't use stage to extend a file
    const t = await fs.create(1n, b('touched'), 0o644, CTX);
    await rejectsCode(fs.stageData(t.ino, 0n, 0n, new Uint8Array(4096)), 'EINVAL');
    assert.equal((await fs.getattr(t.ino)).size, 0n);
    // stage onto online blocks keeps them
    const on = await file(fs, 'online', new Uint8Array(4096).fill(9));
    const odv = (await fs.getattr(on.ino)).data_version;
    await fs.stageData(on.ino, odv, 0n, new Uint8Array(4096));
    assert.deepEqual(await fs.read(on.ino, 0n, 4096), new Uint8Array(4096).fill(9));
    void U64;
  }, 'errors');
});

/** The extents a 5-block file has after releasing blocks a, b and c (a model of simple-release-extents). */
function modelRelease(rel: Set<number>, base: bigint): { start: bigint; len: bigint; blkno: bigint; flags: number }[] {
  const out: { start: bigint; len: bigint; blkno: bigint; flags: number }[] = [];
  for (let blk = 0; blk < 5; blk++) {
    const off = rel.has(blk);
    const last = out[out.length - 1];
    if (last !== undefined && ((last.flags & OFFLINE) !== 0) === off) {
      last.len++;
      continue;
    }
    out.push({ start: BigInt(blk), len: 1n, blkno: off ? 0n : base + BigInt(blk), flags: off ? OFFLINE : 0 });
  }
  return out;
}

test('released blocks merge into offline extents (all 125 orders of simple-release-extents)', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const cases: { ino: bigint; rel: Set<number>; base: bigint }[] = [];
  const firstBlk = new Map<bigint, bigint>();
  for (let a = 0; a < 5; a++) {
    for (let bb = 0; bb < 5; bb++) {
      for (let c = 0; c < 5; c++) {
        const f = await file(fs, `f${a}${bb}${c}`, new Uint8Array(5 * BS).fill(a + bb + c));
        const dv = (await fs.getattr(f.ino)).data_version;
        for (const x of [a, bb, c]) await fs.releaseData(f.ino, BigInt(x * BS), BigInt(BS), dv);
        cases.push({ ino: f.ino, rel: new Set([a, bb, c]), base: 0n });
      }
    }
  }
  await m.close();
  await fsckClean(p, 'release merging');
  const ext = await durableExtents(p);
  for (const cs of cases) {
    const got = ext.get(cs.ino) ?? [];
    // The file was written as one extent: its first online block tells the base.
    const on = got.find((e) => e.blkno !== 0n);
    const base = on === undefined ? 0n : on.blkno - on.start;
    firstBlk.set(cs.ino, base);
    assert.deepEqual(got, modelRelease(cs.rel, base), `released ${[...cs.rel].join(' ')}`);
  }
});

test('release past EOF drops preallocated extents once nothing is online', async () => {
  await withMount(async (fs) => {
    const f = await file(fs, 'f', new Uint8Array(6144).fill(1));
    const dv = (await fs.getattr(f.ino)).data_version;
    await fs.releaseData(f.ino, 4096n, 4096n, dv); // the block straddling i_size
    assert.deepEqual(await counts(fs, f.ino), [1n, 1n, 16n]);
    await fs.releaseData(f.ino, 0n, 400n << 10n, dv);
    assert.deepEqual(await counts(fs, f.ino), [0n, 2n, 16n]);
    // Many extents: more than one unit.
    const frag = await fs.create(1n, b('frag'), 0o644, CTX);
    const other = await fs.create(1n, b('other'), 0o644, CTX);
    for (let i = 0; i < 600; i++) {
      await fs.write(frag.ino, BigInt(i * 2 * BS), new Uint8Array(BS).fill(i & 0xff));
      await fs.write(other.ino, BigInt(i * BS), new Uint8Array(BS));
    }
    const fdv = (await fs.getattr(frag.ino)).data_version;
    await fs.releaseData(frag.ino, 0n, BigInt(1200 * BS), fdv);
    assert.deepEqual(await counts(fs, frag.ino), [0n, 600n, 4800n]);
    for (let i = 0; i < 600; i++) await fs.stageData(frag.ino, fdv, BigInt(i * 2 * BS), new Uint8Array(BS).fill(i & 0xff));
    assert.deepEqual(await counts(fs, frag.ino), [600n, 0n, 4800n], 'the holes between stay holes');
    const r = await fs.read(frag.ino, 0n, 1199 * BS);
    for (let i = 0; i < 600; i++) assert.equal(r[i * 2 * BS], i & 0xff);
  }, 'past EOF');
});

test('setattr_more argument rules and effects (setattr_more)', async () => {
  await withMount(async (fs) => {
    const f = await fs.create(1n, b('f'), 0o644, CTX);
    await rejectsCode(fs.setattrMore(f.ino, { dataVersion: 0n, size: 1n, offline: false }), 'EINVAL');
    await rejectsCode(fs.setattrMore(f.ino, { dataVersion: 1n, size: 0n, offline: true }), 'EINVAL');
    await rejectsCode(fs.setattrMore(1n, { dataVersion: 1n, size: 1n, offline: false }), 'EISDIR');
    const c = await fs.mknod(1n, b('char'), 0o020644, (1 << 20) | 3, CTX);
    await rejectsCode(fs.setattrMore(c.ino, { dataVersion: 1n, size: 1n, offline: false }), 'EINVAL');
    const written = await file(fs, 'written', b('contents\n'));
    await rejectsCode(fs.setattrMore(written.ino, { dataVersion: 1n, size: 1n, offline: false }), 'EINVAL');
    const trunc = await fs.create(1n, b('trunc'), 0o644, CTX);
    await fs.setattr(trunc.ino, { size: 1n << 20n });
    await fs.setattr(trunc.ino, { size: 0n });
    await rejectsCode(fs.setattrMore(trunc.ino, { dataVersion: 1n, size: 1n, offline: true }), 'EINVAL');
    const big = await fs.setattrMore(f.ino, { dataVersion: 1n, size: 578437695752307201n, offline: false });
    assert.equal(big.size, 578437695752307201n);
    const g = await fs.create(1n, b('g'), 0o644, CTX);
    assert.equal((await fs.setattrMore(g.ino, { dataVersion: 578437695752307201n, size: 1n, offline: false })).data_version, 578437695752307201n);
    const h = await fs.create(1n, b('h'), 0o644, CTX);
    const ct = await fs.setattrMore(h.ino, { dataVersion: 1n, size: 1n, offline: false, ctime: { sec: 67305985n, nsec: 999999999 }, crtime: { sec: 5n, nsec: 6 } });
    assert.deepEqual(ct.ctime, { sec: 67305985n, nsec: 999999999 });
    assert.deepEqual(ct.crtime, { sec: 5n, nsec: 6 });
    const o = await fs.create(1n, b('o'), 0o644, CTX);
    const oa = await fs.setattrMore(o.ino, { dataVersion: 1n, size: 10007n * 4096n, offline: true });
    assert.deepEqual([oa.online_blocks, oa.offline_blocks, oa.size], [0n, 10007n, 10007n * 4096n]);
    const o2 = await fs.create(1n, b('o2'), 0o644, CTX);
    assert.equal((await fs.setattrMore(o2.ino, { dataVersion: 1n, size: 4000000000n, offline: true })).offline_blocks, 976563n);
    // Omitting data_version and size sets only the times.
    const t = await fs.create(1n, b('t'), 0o644, CTX);
    const ta = await fs.setattrMore(t.ino, { dataVersion: 0n, size: 0n, offline: false, ctime: { sec: 1725670311n, nsec: 0 }, crtime: { sec: 1725670311n, nsec: 0 } });
    assert.deepEqual([ta.size, ta.data_version, ta.ctime.sec, ta.crtime.sec], [0n, 0n, 1725670311n, 1725670311n]);
    // A restored offline file stages like any released one.
    const r = await fs.create(1n, b('restored'), 0o644, CTX);
    await fs.setattrMore(r.ino, { dataVersion: 5n, size: 10000n, offline: true });
    const want = new SeededRandom(3n).bytes(10000);
    await fs.stageData(r.ino, 5n, 0n, want);
    assert.deepEqual(await fs.read(r.ino, 0n, 20000), want);
    assert.deepEqual(await counts(fs, r.ino), [3n, 0n, 24n]);
  }, 'setattr_more');
});

test('move-blocks errors, moves and field updates (move-blocks)', async () => {
  await withMount(async (fs) => {
    const rnd = new SeededRandom(5n);
    const LEN = 8 * BS + 123;
    const regen = async (tag: string): Promise<{ from: Attr; to: Attr; bytes: Uint8Array }> => {
      const bytes = rnd.bytes(LEN);
      const from = await file(fs, `from-${tag}`, bytes);
      const to = await fs.create(1n, b(`to-${tag}`), 0o644, CTX);
      return { from, to, bytes };
    };
    const mv = (from: bigint, fromOff: bigint, len: bigint, to: bigint, toOff: bigint) =>
      fs.moveBlocks({ fromIno: from, fromOff, len, toIno: to, toOff, stage: false, dataVersion: 0n });
    const { from, to, bytes } = await regen('e');
    const HUGE = 0xfffffffffffff000n;
    await rejectsCode(mv(from.ino, HUGE, 8192n, to.ino, 0n), 'EOVERFLOW');
    await rejectsCode(mv(from.ino, 0n, HUGE, to.ino, 8192n), 'EOVERFLOW');
    await rejectsCode(mv(from.ino, 0n, 4096n, from.ino, 0n), 'EINVAL');
    await rejectsCode(mv(from.ino, 1n, 4096n, to.ino, 0n), 'EINVAL');
    await rejectsCode(mv(from.ino, 0n, 1n, to.ino, 0n), 'EINVAL');
    await rejectsCode(mv(from.ino, 0n, 4096n, to.ino, 1n), 'EINVAL');
    await rejectsCode(mv(1n, 0n, 4096n, to.ino, 0n), 'EISDIR');
    await fs.write(to.ino, 0n, new Uint8Array(BS));
    await rejectsCode(mv(from.ino, 0n, 4096n, to.ino, 0n), 'EINVAL'); // onto an existing extent
    await fs.releaseData(to.ino, 0n, 4096n, (await fs.getattr(to.ino)).data_version);
    await rejectsCode(mv(from.ino, 0n, 4096n, to.ino, 0n), 'ENODATA'); // onto offline
    await fs.releaseData(from.ino, 0n, 4096n, (await fs.getattr(from.ino)).data_version);
    const to2 = await fs.create(1n, b('to2'), 0o644, CTX);
    await rejectsCode(mv(from.ino, 0n, 4096n, to2.ino, 0n), 'ENODATA'); // from offline
    void bytes;

    // Moves: bytes go across, the source keeps its size with holes.
    for (const [fo, len, tof] of [[0, BS, 0], [0, BS, BS], [0, LEN, 0], [LEN - 123, 123, 0]] as const) {
      const r = await regen(`m${fo}-${len}-${tof}`);
      await fs.sync(); // a new transaction seq, so data_seq and meta_seq can move
      const before = { f: await fs.getattr(r.from.ino), t: await fs.getattr(r.to.ino) };
      await mv(r.from.ino, BigInt(fo), BigInt(len), r.to.ino, BigInt(tof));
      const fa = await fs.getattr(r.from.ino);
      const ta = await fs.getattr(r.to.ino);
      assert.equal(fa.size, BigInt(LEN), 'moving does not truncate the source');
      assert.equal(ta.size, BigInt(Math.max(tof + len, 0)));
      const blocks = Math.ceil(len / BS);
      assert.equal(fa.online_blocks, 9n - BigInt(blocks));
      assert.equal(ta.online_blocks, BigInt(blocks));
      const fromData = await fs.read(r.from.ino, 0n, LEN);
      const exp = Uint8Array.from(r.bytes);
      exp.fill(0, fo, Math.min(fo + blocks * BS, LEN));
      assert.deepEqual(fromData, exp);
      assert.deepEqual((await fs.read(r.to.ino, BigInt(tof), len)), r.bytes.subarray(fo, fo + len));
      for (const k of ['data_version', 'data_seq', 'mtime', 'ctime', 'meta_seq'] as const) {
        if (k !== 'mtime' && k !== 'ctime') {
          assert.notDeepEqual(fa[k], before.f[k], `from ${k}`);
          assert.notDeepEqual(ta[k], before.t[k], `to ${k}`);
        }
      }
      assert.equal(fa.data_version, before.f.data_version + 1n);
      assert.equal(ta.data_version, before.t.data_version + 1n);
    }
    // Backwards, block by block, rebuilds the file in the destination.
    const r = await regen('back');
    await mv(r.from.ino, BigInt(LEN - 123), 123n, r.to.ino, BigInt(LEN - 123));
    for (let i = 7; i >= 0; i--) await mv(r.from.ino, BigInt(i * BS), BigInt(BS), r.to.ino, BigInt(i * BS));
    assert.deepEqual(await fs.read(r.to.ino, 0n, LEN + 10), r.bytes);
    assert.deepEqual(await counts(fs, r.from.ino), [0n, 0n, 0n]);

    // A staging move fills an offline range and keeps the destination's data_version.
    const src = await file(fs, 'stage-src', r.bytes.subarray(0, 2 * BS));
    const dst = await fs.create(1n, b('stage-dst'), 0o644, CTX);
    await fs.setattrMore(dst.ino, { dataVersion: 9n, size: BigInt(4 * BS), offline: true });
    const sm = (dv: bigint, toOff: bigint, len = BigInt(2 * BS)) => fs.moveBlocks({ fromIno: src.ino, fromOff: 0n, len, toIno: dst.ino, toOff, stage: true, dataVersion: dv });
    await rejectsCode(sm(8n, 0n), 'ESTALE');
    await rejectsCode(sm(9n, BigInt(3 * BS)), 'EINVAL'); // runs past the offline range and the size
    const beforeDst = await fs.getattr(dst.ino);
    await sm(9n, BigInt(BS));
    const after = await fs.getattr(dst.ino);
    assert.deepEqual([after.data_version, after.data_seq, after.mtime, after.size], [9n, beforeDst.data_seq, beforeDst.mtime, beforeDst.size]);
    assert.deepEqual([after.online_blocks, after.offline_blocks], [2n, 2n]);
    assert.deepEqual(await fs.read(dst.ino, BigInt(BS), 2 * BS), r.bytes.subarray(0, 2 * BS));
    await rejectsCode(sm(9n, BigInt(BS)), 'EINVAL'); // the destination range is online now
  }, 'move-blocks');
});

test('a read of offline data waits without the fs lock, is listed once per block, and wakes on stage', async () => {
  await withMount(async (fs) => {
    const want = new SeededRandom(11n).bytes(256 * BS);
    const f = await file(fs, 'f', want);
    const dv = (await fs.getattr(f.ino)).data_version;
    assert.deepEqual(await fs.dataWaiting(0n, 0n, 100), []);
    await fs.releaseData(f.ino, 0n, BigInt(256 * BS), dv);
    const r1 = fs.read(f.ino, 0n, 65536);
    const r2 = fs.read(f.ino, 0n, 4096);
    const r3 = fs.read(f.ino, BigInt(BS), 4096);
    await until(async () => (await fs.dataWaiting(0n, 0n, 100)).length === 2, 'two blocks waited on');
    assert.deepEqual(await fs.dataWaiting(0n, 0n, 100), [
      { ino: f.ino, iblock: 0n, ops: DATA_WAIT_OP.READ },
      { ino: f.ino, iblock: 1n, ops: DATA_WAIT_OP.READ },
    ]);
    assert.deepEqual(await fs.dataWaiting(f.ino, 0n, 100), [{ ino: f.ino, iblock: 1n, ops: DATA_WAIT_OP.READ }], 'after (ino, 0)');
    assert.equal(await settled(r1), false, 'the read waits');
    // Nothing is held while waiting: other operations go on.
    const g = await file(fs, 'other', b('hello'));
    assert.deepEqual(await fs.read(g.ino, 0n, 5), b('hello'));
    await fs.sync();
    // Staging block 0 alone: r2 completes, r1 waits on the next block, r3 still on block 1.
    await fs.stageData(f.ino, dv, 0n, want.subarray(0, BS));
    assert.deepEqual(await r2, want.subarray(0, BS));
    await until(async () => (await fs.dataWaiting(0n, 0n, 100)).length === 1, 'only block 1 waited on');
    assert.deepEqual(await fs.dataWaiting(0n, 0n, 100), [{ ino: f.ino, iblock: 1n, ops: DATA_WAIT_OP.READ }]);
    await fs.stageData(f.ino, dv, 0n, want);
    assert.deepEqual(await r1, want.subarray(0, 65536));
    assert.deepEqual(await r3, want.subarray(BS, 2 * BS));
    assert.deepEqual(await fs.dataWaiting(0n, 0n, 100), []);
  }, 'waiting reads');
});

test('writes and size changes wait; data-wait-err fails waiters with its errno; abort is EINTR; unmount is ESHUTDOWN', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const want = new SeededRandom(12n).bytes(16 * BS);
  const f = await file(fs, 'f', want);
  const dv = (await fs.getattr(f.ino)).data_version;
  await fs.releaseData(f.ino, 0n, BigInt(16 * BS), dv);

  // Truncate to the same size does not wait; another size does.
  await fs.setattr(f.ino, { size: BigInt(16 * BS) });
  const tr = fs.setattr(f.ino, { size: BigInt(BS) });
  await until(async () => (await fs.dataWaiting(0n, 0n, 9)).length === 1, 'truncate waits');
  assert.deepEqual(await fs.dataWaiting(0n, 0n, 9), [{ ino: f.ino, iblock: 0n, ops: DATA_WAIT_OP.CHANGE_SIZE }]);
  await fs.stageData(f.ino, dv, 0n, want);
  assert.equal((await tr).size, BigInt(BS));
  assert.equal((await fs.getattr(f.ino)).data_version, dv + 1n);

  // Overwrites wait (WRITE), extending writes of a partly offline file wait (CHANGE_SIZE).
  const g = await file(fs, 'g', want);
  const gdv = (await fs.getattr(g.ino)).data_version;
  await fs.releaseData(g.ino, BigInt(4 * BS), BigInt(4 * BS), gdv);
  const w1 = fs.write(g.ino, BigInt(5 * BS), b('x'));
  const w2 = fs.write(g.ino, BigInt(16 * BS), b('tail'));
  const ok = await fs.write(g.ino, 0n, b('online'));
  assert.equal(ok, 6, 'a write to online blocks goes on');
  await until(async () => (await fs.dataWaiting(0n, 0n, 9)).length === 2, 'two writers wait');
  assert.deepEqual(await fs.dataWaiting(0n, 0n, 9), [
    { ino: g.ino, iblock: 4n, ops: DATA_WAIT_OP.CHANGE_SIZE },
    { ino: g.ino, iblock: 5n, ops: DATA_WAIT_OP.WRITE },
  ]);
  const gdv2 = (await fs.getattr(g.ino)).data_version;
  await rejectsCode(fs.dataWaitErr({ ino: g.ino, dataVersion: gdv2 + 1n, offset: 0n, count: 1n << 20n, op: 7, errno: 5 }), 'ESTALE');
  await rejectsCode(fs.dataWaitErr({ ino: g.ino, dataVersion: gdv2, offset: 0n, count: 0n, op: 7, errno: 5 }), 'EINVAL');
  await rejectsCode(fs.dataWaitErr({ ino: g.ino, dataVersion: gdv2, offset: 0n, count: 1n, op: 8, errno: 5 }), 'EINVAL');
  await rejectsCode(fs.dataWaitErr({ ino: g.ino, dataVersion: gdv2, offset: 0n, count: 1n, op: 1, errno: 0 }), 'EINVAL');
  await rejectsCode(fs.dataWaitErr({ ino: 999999n, dataVersion: 0n, offset: 0n, count: 1n, op: 1, errno: 5 }), 'ENOENT');
  assert.equal(await fs.dataWaitErr({ ino: g.ino, dataVersion: gdv2, offset: 0n, count: 1n << 20n, op: DATA_WAIT_OP.READ, errno: 5 }), 0, 'no reader waits');
  assert.equal(await fs.dataWaitErr({ ino: g.ino, dataVersion: gdv2, offset: BigInt(5 * BS), count: 1n, op: DATA_WAIT_OP.WRITE, errno: 122 }), 1);
  await assert.rejects(w1, (e: unknown) => e instanceof FsError && e.code === 'EDQUOT' && e.errno === ERRNO.EDQUOT);
  // An errno we have no name for still reaches the caller as its number.
  assert.equal(await fs.dataWaitErr({ ino: g.ino, dataVersion: gdv2, offset: 0n, count: 1n << 20n, op: 7, errno: 200 }), 1);
  await assert.rejects(w2, (e: unknown) => e instanceof FsError && e.errno === 200);
  assert.deepEqual(await fs.dataWaiting(0n, 0n, 9), []);

  // An aborted wait is EINTR and leaves no waiter behind.
  const ac = new AbortController();
  const r = fs.read(g.ino, BigInt(4 * BS), 100, { signal: ac.signal });
  await until(async () => (await fs.dataWaiting(0n, 0n, 9)).length === 1, 'a reader waits');
  ac.abort();
  await rejectsCode(r, 'EINTR');
  assert.deepEqual(await fs.dataWaiting(0n, 0n, 9), []);
  const pre = new AbortController();
  pre.abort();
  await rejectsCode(fs.read(g.ino, BigInt(4 * BS), 100, { signal: pre.signal }), 'EINTR');

  // Unmount fails the waiters.
  const last = fs.read(g.ino, BigInt(4 * BS), 100);
  await until(async () => (await fs.dataWaiting(0n, 0n, 9)).length === 1, 'a reader waits');
  await m.close();
  await rejectsCode(last, 'ESHUTDOWN');
  await fsckClean(p, 'waiters');
});

test('ino-path and hidden xattrs', async () => {
  await withMount(async (fs) => {
    const d = await fs.mkdir(1n, b('a'), 0o755, CTX);
    const e = await fs.mkdir(d.ino, b('b'), 0o755, CTX);
    const f = await fs.create(e.ino, b('file'), 0o644, CTX);
    await fs.link(f.ino, 1n, b('top'));
    const paths = (await fs.inoPaths(f.ino)).map((x) => new TextDecoder().decode(x)).sort();
    assert.deepEqual(paths, ['/a/b/file', '/top']);
    assert.deepEqual((await fs.inoPaths(1n)).map((x) => new TextDecoder().decode(x)), ['/']);
    await rejectsCode(fs.inoPaths(123456789n), 'ENOENT');
    await fs.setxattr(f.ino, b('scoutfs.hide.one'), b('1'), {});
    await fs.setxattr(f.ino, b('scoutfs.hide.srch.two'), b('2'), {});
    await fs.setxattr(f.ino, b('user.shown'), b('3'), {});
    const hidden = (await fs.listHiddenXattrs(f.ino)).map((x) => new TextDecoder().decode(x)).sort();
    assert.deepEqual(hidden, ['scoutfs.hide.one', 'scoutfs.hide.srch.two']);
    assert.deepEqual((await fs.listxattr(f.ino)).map((x) => new TextDecoder().decode(x)), ['user.shown']);
  }, 'ino-path');
});

test('offline state survives a remount: counts, extents and staging afterwards', async () => {
  const p = mkfsPair();
  const want = new SeededRandom(21n).bytes(100 * BS);
  let ino = 0n;
  let dv = 0n;
  {
    const m = await mountPair(p);
    const f = await file(m.fs, 'f', want);
    ino = f.ino;
    dv = f.data_version;
    await m.fs.releaseData(ino, BigInt(10 * BS), BigInt(50 * BS), dv);
    await m.close();
  }
  await fsckClean(p, 'after release');
  const ext = (await durableExtents(p)).get(ino)!;
  assert.deepEqual(ext.map((e) => [e.start, e.len, e.blkno === 0n, e.flags]), [[0n, 10n, false, 0], [10n, 50n, true, OFFLINE], [60n, 40n, false, 0]]);
  {
    const m = await mountPair(p, 2n);
    assert.deepEqual(await counts(m.fs, ino), [50n, 50n, 800n]);
    await m.fs.stageData(ino, dv, BigInt(10 * BS), want.subarray(10 * BS, 60 * BS));
    assert.deepEqual(await m.fs.read(ino, 0n, 100 * BS), want);
    await m.close();
  }
  await fsckClean(p, 'after stage');
});

/*
 * Goal: the single-node log merge at mount (src/server/logmerge.ts) folds
 * every finalized log tree into fs_root without changing what anyone
 * reads, frees the merged trees, and is crash atomic.
 *   - a seeded random workload through the real Fs (create, write, unlink,
 *     rename over existing names, user and `.totl.` xattrs) across many
 *     mount/unmount cycles, some with tiny merge commits: after every
 *     remount the namespace, file contents, xattrs and totals equal a
 *     model, fsck is clean and logs_root holds only the mount's open lt;
 *     after deleting everything and two more remounts the free metadata
 *     blocks are back within a small margin of the fresh mkfs;
 *   - power cuts at random writes and flushes of the merge, over many
 *     seeds: the reopened volume holds every input lt (the old state, its
 *     fs_root maybe partly merged) or none (the new state), fsck is clean,
 *     the model reads back before and after the next merge completes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeededRandom } from '../../../src/runtime/random.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';
import { PowerCutDevice } from './powercut.js';
import type { BlockDevice } from '../../../src/runtime/device.js';
import { FsError } from '../../../src/format/errors.js';
import { ZONE } from '../../../src/format/items.js';
import { key } from '../../../src/format/key.js';
import { U64_MAX } from '../../../src/format/layout.js';
import { decodeLogTrees, LOG_TREES_FLAG_FINALIZED } from '../../../src/format/logtrees.js';
import { btreeIterate } from '../../../src/btree/btree.js';
import { metaAllocSizing, type Mount } from '../../../src/mount/mount.js';
import { ServerVolume, readMetaSuper } from '../../../src/server/volume.js';
import { CommitQueue } from '../../../src/server/commitq.js';
import { SeqCounter } from '../../../src/server/seq.js';
import { ServerMutexes } from '../../../src/server/mutex.js';
import { mergeFinalizedLogTrees, type LogMergeResult } from '../../../src/server/logmerge.js';
import { totlNameKey } from '../../../src/fs/fs.js';
import { CTX, b, fsckClean, mkfsPair, mountPair, s, type Pair } from '../fs/env.js';

interface FileModel {
  ino: bigint;
  data: Uint8Array;
  xattrs: Map<string, string>;
}
type Model = Map<string, FileModel>;

function mount(p: Pair, seed: bigint, merge: { disabled?: boolean; maxChangesPerCommit?: number } = {}, logs: string[] = []): Promise<Mount> {
  return mountPair(p, seed, logs, undefined, undefined, merge);
}

const SERVER_OPTS = (seed: bigint, totalMeta: bigint) => ({
  random: new SeededRandom(seed), cacheSlots: 512, fillLo: 256, fillTarget: 1024, reserved: () => metaAllocSizing(totalMeta).reserved,
});

/** The lts in the committed logs_root: [finalized, open]. */
async function ltCounts(meta: BlockDevice): Promise<{ finalized: number; open: number; freeMeta: bigint; metaAlloc: bigint; fsRootHeight: number }> {
  const vol = await ServerVolume.open(meta, { random: new SeededRandom(1n), cacheSlots: 64 });
  try {
    let finalized = 0;
    let open = 0;
    await btreeIterate(vol.store, vol.sb.logs_root, key(ZONE.LOG_TREES, 0n, 0), key(ZONE.LOG_TREES, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff), (it) => {
      if ((decodeLogTrees(it.val).flags & LOG_TREES_FLAG_FINALIZED) !== 0n) finalized++;
      else open++;
    });
    return {
      finalized, open, freeMeta: vol.alloc.freeMetaBlocks(),
      metaAlloc: vol.sb.meta_alloc[0].total_len + vol.sb.meta_alloc[1].total_len, fsRootHeight: vol.sb.fs_root.height,
    };
  } finally {
    vol.close();
  }
}

function totalsOf(model: Model): Map<string, { total: bigint; count: bigint }> {
  const want = new Map<string, { total: bigint; count: bigint }>();
  for (const f of model.values()) {
    for (const [n, v] of f.xattrs) {
      const k = totlNameKey(b(n));
      if (!n.startsWith('scoutfs.totl.') || k === null) continue;
      const t = `${k.a}.${k.b}.${k.c}`;
      const w = want.get(t) ?? { total: 0n, count: 0n };
      want.set(t, { total: w.total + BigInt(v), count: w.count + 1n });
    }
  }
  return want;
}

/** Everything the model says, read back through the Fs. */
async function verify(m: Mount, model: Model, what: string): Promise<void> {
  const fs = m.fs;
  const names: string[] = [];
  for (let pos = 0n; ;) {
    const ents = await fs.readdir(fs.rootIno, pos, 64);
    if (ents.length === 0) break;
    for (const e of ents) {
      const n = s(e.name);
      if (n !== '.' && n !== '..') names.push(n);
    }
    pos = ents[ents.length - 1]!.pos + 1n;
  }
  assert.deepEqual(names.sort(), [...model.keys()].sort(), `${what}: names`);
  for (const [name, f] of model) {
    const a = await fs.lookup(fs.rootIno, b(name));
    assert.equal(a.ino, f.ino, `${what}: ino of ${name}`);
    assert.equal(a.size, BigInt(f.data.length), `${what}: size of ${name}`);
    const got = f.data.length === 0 ? new Uint8Array(0) : await fs.read(f.ino, 0n, f.data.length + 10);
    assert.ok(Buffer.from(got).equals(Buffer.from(f.data)), `${what}: contents of ${name}`);
    const xs = (await fs.listxattr(f.ino)).map(s).sort();
    assert.deepEqual(xs, [...f.xattrs.keys()].sort(), `${what}: xattr names of ${name}`);
    for (const [n, v] of f.xattrs) assert.equal(s(await fs.getxattr(f.ino, b(n))), v, `${what}: xattr ${n} of ${name}`);
  }
  const got = await m.readXattrTotals();
  assert.deepEqual(new Map(got.map((g) => [g.name.join('.'), { total: g.total, count: g.count }])), totalsOf(model), `${what}: totals`);
}

const XATTRS = ['user.a', 'user.big', 'scoutfs.totl.t.1.2.3', 'scoutfs.totl.t.1.2.4', 'scoutfs.totl.u.5.0.0'];

function bytes(rnd: SeededRandom, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rnd.int(256);
  return out;
}

/** One random operation through the Fs, mirrored in the model. */
async function randomOp(m: Mount, rnd: SeededRandom, model: Model, nameSpace: number): Promise<void> {
  const fs = m.fs;
  const name = `f${rnd.int(nameSpace)}`;
  const f = model.get(name);
  const op = rnd.int(100);
  if (f === undefined || op < 15) {
    if (f !== undefined) return;
    const a = await fs.create(fs.rootIno, b(name), 0o100644, CTX);
    model.set(name, { ino: a.ino, data: new Uint8Array(0), xattrs: new Map() });
  } else if (op < 35) {
    const off = rnd.int(Math.max(1, f.data.length + 1));
    const d = bytes(rnd, 1 + rnd.int(3000));
    assert.equal(await fs.write(f.ino, BigInt(off), d), d.length);
    const nd = new Uint8Array(Math.max(f.data.length, off + d.length));
    nd.set(f.data);
    nd.set(d, off);
    f.data = nd;
  } else if (op < 45) {
    await fs.unlink(fs.rootIno, b(name));
    model.delete(name);
  } else if (op < 55) {
    const to = `f${rnd.int(nameSpace)}`;
    if (to === name) return;
    await fs.rename(fs.rootIno, b(name), fs.rootIno, b(to));
    model.delete(name);
    model.set(to, f);
  } else if (op < 85) {
    const n = XATTRS[rnd.int(XATTRS.length)]!;
    const v = n === 'user.big' ? 'x'.repeat(1 + rnd.int(2500)) : String(rnd.int(1000));
    await fs.setxattr(f.ino, b(n), b(v), {});
    f.xattrs.set(n, v);
  } else {
    const n = [...f.xattrs.keys()][rnd.int(Math.max(1, f.xattrs.size))];
    if (n === undefined) return;
    await fs.removexattr(f.ino, b(n));
    f.xattrs.delete(n);
  }
}

test('random workload over 12 remounts: the model reads back, only the open lt remains, space comes back', async () => {
  const pair = mkfsPair();
  const fresh = await ltCounts(pair.meta);
  const rnd = new SeededRandom(4242n);
  const model: Model = new Map();
  let merges = 0;
  for (let cycle = 0; cycle < 12; cycle++) {
    const logs: string[] = [];
    const m = await mount(pair, BigInt(100 + cycle), { maxChangesPerCommit: cycle % 3 === 2 ? 5 : undefined }, logs);
    try {
      if (cycle > 0) {
        const c = await ltCounts(pair.meta);
        assert.deepEqual([c.finalized, c.open], [0, 1], `cycle ${cycle}: lts after the merge at mount (${logs.join('; ')})`);
        assert.ok(logs.some((l) => /^merged 1 log trees into fs_root \(\d+ items, \d+ blocks freed\)$/.test(l)), `cycle ${cycle}: ${logs.join('; ')}`);
        merges++;
        if (cycle === 1 || cycle === 11) console.log(`cycle ${cycle}: ${logs.filter((l) => l.startsWith('merged')).join('; ')}`);
        await verify(m, model, `cycle ${cycle} after mount`);
      }
      for (let i = 0; i < 80; i++) {
        await randomOp(m, rnd, model, 40);
        if (i % 30 === 29) await m.fs.sync();
      }
      await verify(m, model, `cycle ${cycle} before unmount`);
    } finally {
      await m.close();
    }
    await fsckClean(pair, `cycle ${cycle}`);
  }
  assert.equal(merges, 11);
  // Delete everything, then remount twice: space comes back.
  let m = await mount(pair, 900n);
  for (const name of [...model.keys()]) {
    await m.fs.unlink(m.fs.rootIno, b(name));
    model.delete(name);
  }
  await m.close();
  for (const seed of [901n, 902n]) {
    m = await mount(pair, seed);
    await verify(m, model, `empty, mount ${seed}`);
    await m.close();
    await fsckClean(pair, `empty, mount ${seed}`);
  }
  const end = await ltCounts(pair.meta);
  const used = fresh.freeMeta - end.freeMeta;
  console.log(`free meta blocks: fresh mkfs ${fresh.freeMeta}, after the workload, deleting everything and two remounts ${end.freeMeta} (${used} in use)`);
  assert.ok(used >= 0n && used <= 24n, `${used} more metadata blocks in use than after mkfs`);
});

test('without the merge the same remounts keep every finalized lt (what the merge fixes)', async () => {
  const pair = mkfsPair();
  const rnd = new SeededRandom(7n);
  const model: Model = new Map();
  for (let cycle = 0; cycle < 3; cycle++) {
    const m = await mount(pair, BigInt(cycle + 1), { disabled: true });
    for (let i = 0; i < 40; i++) await randomOp(m, rnd, model, 20);
    await m.close();
  }
  assert.equal((await ltCounts(pair.meta)).finalized, 3);
  const logs: string[] = [];
  const m = await mount(pair, 50n, {}, logs);
  await verify(m, model, 'after merging three');
  await m.close();
  assert.ok(logs.some((l) => l.startsWith('merged 3 log trees into fs_root')), logs.join('; '));
  await fsckClean(pair, 'after merging three');
});


function cloneDev(d: MemoryBlockDevice): MemoryBlockDevice {
  const c = new MemoryBlockDevice(d.sizeBytes, d.path);
  const chunks = (d as unknown as { chunks: Map<bigint, Uint8Array> }).chunks;
  for (const [i, ch] of chunks) c.writeSync(i << 16n, ch);
  return c;
}

/** The server side of a mount's open, then the merge alone, over `meta`. */
async function runMerge(meta: BlockDevice, seed: bigint, maxChangesPerCommit?: number, fill = { lo: 256, target: 1024 }): Promise<LogMergeResult> {
  const total = (await readMetaSuper(meta)).total_meta_blocks;
  const vol = await ServerVolume.open(meta, { ...SERVER_OPTS(seed, total), fillLo: fill.lo, fillTarget: fill.target });
  try {
    const commitq = new CommitQueue(vol);
    await SeqCounter.open(vol, commitq);
    const r = await mergeFinalizedLogTrees(vol, commitq, new ServerMutexes(), { reserveBlocks: metaAllocSizing(total).reserved, maxChangesPerCommit });
    assert.equal(r.skipped, null);
    return r;
  } finally {
    vol.close();
  }
}

test('a merge larger than the server allocator budget takes several consistent commits', async () => {
  const pair = mkfsPair();
  const model: Model = new Map();
  const m = await mount(pair, 1n, { disabled: true });
  for (let i = 0; i < 1500; i++) {
    const name = `g${i}`;
    const a = await m.fs.create(m.fs.rootIno, b(name), 0o100644, CTX);
    const v = 'v'.repeat(200 + (i % 300));
    await m.fs.setxattr(a.ino, b('user.v'), b(v), {});
    await m.fs.setxattr(a.ino, b(`scoutfs.totl.t.${i % 7}.0.0`), b(String(i)), {});
    model.set(name, { ino: a.ino, data: new Uint8Array(0), xattrs: new Map([['user.v', v], [`scoutfs.totl.t.${i % 7}.0.0`, String(i)]]) });
  }
  await m.close();
  const r = await runMerge(pair.meta, 3n, undefined, { lo: 96, target: 192 });
  console.log(`large merge: ${r.items} items in ${r.commits} commits, ${r.blocksFreed} blocks freed`);
  assert.equal(r.trees, 1);
  assert.ok(r.commits >= 3, `${r.commits} commits`);
  await fsckClean(pair, 'after the large merge');
  const c = await ltCounts(pair.meta);
  assert.deepEqual([c.finalized, c.open], [0, 0]);
  assert.ok(c.fsRootHeight >= 2, `fs_root height ${c.fsRootHeight}`);
  const m2 = await mount(pair, 2n);
  await verify(m2, model, 'after the large merge');
  await m2.close();
  await fsckClean(pair, 'after the large merge and a mount');
});

test('a power cut anywhere in the merge leaves the old or the new state, fsck clean, the model intact', async () => {
  const base = mkfsPair();
  const rnd = new SeededRandom(99n);
  const model: Model = new Map();
  for (let cycle = 0; cycle < 4; cycle++) {
    const m = await mount(base, BigInt(cycle + 1), { disabled: true });
    for (let i = 0; i < 70; i++) await randomOp(m, rnd, model, 30);
    await m.close();
  }
  const inputs = (await ltCounts(base.meta)).finalized;
  assert.equal(inputs, 4);
  // How many writes and flushes a whole merge does, one commit and many.
  const probe = async (max?: number): Promise<{ writes: number; flushes: number }> => {
    const meta = cloneDev(base.meta);
    const w0 = meta.writes;
    const f0 = meta.flushes;
    await runMerge(meta, 5n, max);
    return { writes: meta.writes - w0, flushes: meta.flushes - f0 };
  };
  const full = { one: await probe(), many: await probe(7) };
  assert.ok(full.many.flushes > full.one.flushes, `tiny commits made ${full.many.flushes} flushes, one commit ${full.one.flushes}`);
  const seeds = Number(process.env.SCOUTFS_CRASH_SEEDS ?? 40);
  let sawOld = 0;
  let sawNew = 0;
  let cuts = 0;
  for (let seed = 1; seed <= seeds; seed++) {
    const r = new SeededRandom(BigInt(seed));
    const max = seed % 2 === 0 ? 7 : undefined;
    const span = max === undefined ? full.one : full.many;
    const at = r.float() < 0.5 ? { flushes: 1 + r.int(span.flushes + 1) } : { writes: 1 + r.int(span.writes + 1) };
    const pair = { meta: cloneDev(base.meta), data: cloneDev(base.data) };
    const fdev = new PowerCutDevice(pair.meta, r.fork('fault'), at);
    try {
      assert.equal((await runMerge(fdev, BigInt(seed), max)).trees, inputs);
    } catch (e) {
      assert.ok(e instanceof FsError && e.code === 'EIO', `seed ${seed}: unexpected ${(e as Error).stack}`);
    }
    if (fdev.cut) cuts++;
    await fdev.crash({ crashLandProbability: 0.5, tearProbability: 0.5 });
    await fsckClean(pair, `seed ${seed} after the crash`);
    const c = await ltCounts(pair.meta);
    assert.equal(c.open, 0, `seed ${seed}`);
    if (c.finalized === inputs) sawOld++;
    else if (c.finalized === 0) sawNew++;
    else assert.fail(`seed ${seed}: ${c.finalized} of ${inputs} input lts remain`);
    // What was there reads back as it is, then after the merge completes.
    let m = await mount(pair, BigInt(1000 + seed), { disabled: true });
    await verify(m, model, `seed ${seed} after the crash`);
    await m.close();
    m = await mount(pair, BigInt(2000 + seed));
    await verify(m, model, `seed ${seed} after the merge`);
    await m.close();
    await fsckClean(pair, `seed ${seed} at the end`);
    const e = await ltCounts(pair.meta);
    assert.deepEqual([e.finalized, e.open], [1, 0], `seed ${seed}: only the last mount's lt is left`);
  }
  assert.ok(cuts >= seeds * 0.7, `the power was cut in ${cuts} of ${seeds} runs`);
  assert.ok(sawOld > 0 && sawNew > 0, `old ${sawOld}, new ${sawNew}`);
});

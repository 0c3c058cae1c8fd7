/*
 * Goal: a bulk build from a sorted stream, with leaves filled by piscina
 * workers writing straight into reserved block cache slots, gives a valid
 * tree with exactly the input items, the same contents as one-by-one
 * insertion, and a volume that fsck passes after commit; ENOSPC while
 * reserving leaves nothing behind.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { btreeBuild, partitionLeaves, packItems, BUILD_FILL } from '../../../src/btree/build.js';
import { btreeForce, btreeIterate } from '../../../src/btree/btree.js';
import { assertBtreeOk } from '../../../src/btree/check.js';
import { MemBlockStore } from '../../../src/btree/memstore.js';
import { emptyRoot, type BtreeRoot, type BlockStore } from '../../../src/btree/store.js';
import { key, type Key } from '../../../src/format/key.js';
import { PiscinaPool } from '../../../src/runtime/workerpool.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { ServerVolume } from '../../../src/server/volume.js';
import { mkfsMemory } from '../../../src/mkfs/memory.js';
import { fsck } from '../../../src/fsck/fsck.js';
import { FsError } from '../../../src/format/errors.js';

const pool = new PiscinaPool({ maxThreads: 2 });
after(() => pool.destroy());

function items(n: number, seed: number): { key: Key; seq: bigint; val: Uint8Array }[] {
  const rnd = new SeededRandom(BigInt(seed));
  return Array.from({ length: n }, (_, i) => {
    const val = rnd.bytes(8 + rnd.int(120));
    return { key: key(4, 1024n + BigInt(i >> 8), 2, BigInt(i & 255)), seq: BigInt(1 + rnd.int(50)), val };
  });
}

async function dump(store: BlockStore, root: BtreeRoot): Promise<string[]> {
  const out: string[] = [];
  await btreeIterate(store, root, key(0, 0n, 0), key(255, 0xffffffffffffffffn, 255), (it) => {
    out.push(`${it.key.first}.${it.key.second}:${it.seq}:${Buffer.from(it.val).toString('hex')}`);
    return true;
  });
  return out;
}

test('partition fills leaves to the target and covers every item once', () => {
  const p = packItems(items(5000, 1));
  const parts = partitionLeaves(p.sizes);
  assert.equal(parts[0]![0], 0);
  assert.equal(parts[parts.length - 1]![1], 5000);
  for (let i = 1; i < parts.length; i++) assert.equal(parts[i]![0], parts[i - 1]![1]);
  for (const [s, e] of parts.slice(0, -1)) {
    let bytes = 0;
    for (let i = s; i < e; i++) bytes += p.sizes[i]!;
    assert.ok(bytes <= BUILD_FILL && bytes + p.sizes[e]! > BUILD_FILL);
  }
});

test('a bulk build equals one-by-one insertion (inline, MemBlockStore)', async () => {
  const its = items(20000, 2);
  const a = new MemBlockStore();
  const { root, stats } = await btreeBuild(a, its);
  assert.ok(stats.leaves > 10 && stats.parents >= 1 && stats.jobs === 0);
  const r = await assertBtreeOk(a, root);
  assert.equal(r.items, its.length);
  const b = new MemBlockStore();
  const rootB = emptyRoot();
  for (const it of its) await btreeForce(b, rootB, it.key, it.val, { seq: it.seq });
  assert.deepEqual(await dump(a, root), await dump(b, rootB));
});

test('workers fill reserved cache slots; the volume commits and fsck is clean', async () => {
  const MIB = 1n << 20n;
  const meta = mkfsMemory(256n * MIB, 16n * MIB, { fsid: 0xbeefn, uuidFill: 1 }).meta;
  let vol = await ServerVolume.open(meta, { random: new SeededRandom(5n), fillLo: 512, fillTarget: 2048, reserved: () => 64n });
  // The new fs_root: the mkfs items plus 30k more, built in one go.
  const old = [...await collect(vol.store, vol.sb.fs_root)];
  const all = [...old, ...items(30000, 3)];
  const { root, stats } = await btreeBuild(vol.store, all, { pool, leavesPerJob: 16 });
  assert.ok(stats.jobs >= 2, `ran ${stats.jobs} worker jobs`);
  vol.store.free(vol.sb.fs_root.ref);
  vol.sb.fs_root = root;
  await vol.commit();
  vol.close();
  const r = await fsck(meta, null);
  assert.deepEqual(r.problems.filter((p) => p.check !== 'warning'), []);
  vol = await ServerVolume.open(meta, { random: new SeededRandom(6n), fillLo: 512, fillTarget: 2048, reserved: () => 64n });
  const got = await collect(vol.store, vol.sb.fs_root);
  assert.equal(got.length, all.length);
  assert.deepEqual(got.map((x) => Buffer.from(x.val).toString('hex')), all.map((x) => Buffer.from(x.val).toString('hex')));
  vol.close();
});

test('ENOSPC while reserving leaves frees what was reserved', async () => {
  const s = new MemBlockStore({ failAllocAfter: 5 });
  await assert.rejects(btreeBuild(s, items(20000, 4)), (e: unknown) => e instanceof FsError && e.code === 'ENOSPC');
  assert.equal(s.dirtyCount, 0);
});

async function collect(store: BlockStore, root: BtreeRoot): Promise<{ key: Key; seq: bigint; val: Uint8Array }[]> {
  const out: { key: Key; seq: bigint; val: Uint8Array }[] = [];
  await btreeIterate(store, root, key(0, 0n, 0), key(255, 0xffffffffffffffffn, 255), (it) => {
    out.push({ key: it.key, seq: it.seq, val: it.val.slice() });
    return true;
  });
  return out;
}

/*
 * Goal: the copy-on-write btree's operations and structural paths, each
 * shown to run by a counter: insert/update/force/delete and their errors,
 * next/prev/range across leaves, leaf and root splits with the ones-key
 * right spine, joins and root collapse down to an empty tree with every
 * block freed, copy on write that never touches a committed block, stale
 * reads retried from a fresh root, corruption reported as CorruptionError,
 * and modifying a leaf written by mkfs (with its odd AVL heights).
 */
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { CorruptionError, FsError } from '../../../src/format/errors.js';
import { key, ONES_KEY, ZERO_KEY, compareKeys } from '../../../src/format/key.js';
import { readItem, walkItems } from '../../../src/format/btree.js';
import { sealBlock } from '../../../src/format/block.js';
import { buildMkfsLeaf } from '../../../src/mkfs/leaf.js';
import {
  btreeInsert, btreeUpdate, btreeForce, btreeDelete, btreeLookup, btreeNext, btreePrev, btreeRange, btreeIterate,
  withStaleRetry, btreeCounters, resetBtreeCounters, btreeInvariants,
} from '../../../src/btree/btree.js';
import { assertBtreeOk, checkBtree } from '../../../src/btree/check.js';
import { MemBlockStore } from '../../../src/btree/memstore.js';
import { emptyRoot, cloneRoot, readBtreeRoot, writeBtreeRoot, type BtreeRoot } from '../../../src/btree/store.js';
import { keyOf, idOf, valOf, Model, assertTreeEqualsModel, checkAndCommit, assertItemIs, sortedBig } from './util.js';

const isCode = (code: string) => (e: unknown): boolean => e instanceof FsError && e.code === code;

beforeEach(() => {
  resetBtreeCounters();
  btreeInvariants.enabled = true;
});

async function fill(store: MemBlockStore, root: BtreeRoot, model: Model, ids: Iterable<number>, len: number): Promise<void> {
  for (const id of ids) {
    const v = valOf(id, 0, len);
    await btreeInsert(store, root, keyOf(id), v, { seq: BigInt(id) });
    model.set(id, { val: v, seq: BigInt(id), flags: 0 });
  }
}

test('single leaf: insert, lookup, update, force, delete and their errors', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  assert.equal(await btreeLookup(store, root, keyOf(1)), null);
  await assert.rejects(btreeUpdate(store, root, keyOf(1), new Uint8Array(1)), isCode('ENOENT'));
  await assert.rejects(btreeDelete(store, root, keyOf(1)), isCode('ENOENT'));
  assert.equal(root.height, 0, 'failed ops on an empty tree leave it empty');
  await btreeInsert(store, root, keyOf(1), valOf(1, 0, 10), { seq: 5n, flags: 1 });
  assert.equal(root.height, 1);
  await assert.rejects(btreeInsert(store, root, keyOf(1), new Uint8Array(0)), isCode('EEXIST'));
  assert.deepEqual(await btreeLookup(store, root, keyOf(1)), { val: valOf(1, 0, 10), seq: 5n, flags: 1 });
  await btreeUpdate(store, root, keyOf(1), valOf(1, 1, 500), { seq: 6n });
  assert.deepEqual(await btreeLookup(store, root, keyOf(1)), { val: valOf(1, 1, 500), seq: 6n, flags: 0 });
  assert.equal(await btreeForce(store, root, keyOf(2), valOf(2, 0, 3)), true);
  assert.equal(await btreeForce(store, root, keyOf(2), valOf(2, 1, 4)), false);
  assert.deepEqual((await btreeLookup(store, root, keyOf(2)))!.val, valOf(2, 1, 4));
  await assert.rejects(btreeUpdate(store, root, keyOf(3), new Uint8Array(1)), isCode('ENOENT'));
  await btreeDelete(store, root, keyOf(1));
  await assert.rejects(btreeDelete(store, root, keyOf(1)), isCode('ENOENT'));
  await assertBtreeOk(store, root);
  await btreeDelete(store, root, keyOf(2));
  assert.deepEqual(root, emptyRoot(), 'deleting the last item zeroes the root');
  assert.equal(store.dirtyCount, 0, 'and frees the leaf');
});

test('growth: leaf and root splits keep a valid tree whose right spine ends in the ones key', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  const model = new Model();
  await fill(store, root, model, Array.from({ length: 3000 }, (_, i) => (i * 7919) % 3000), 300);
  assert(btreeCounters.splits > 10, `splits ${btreeCounters.splits}`);
  assert(btreeCounters.rootSplits >= 1);
  assert.equal(root.height, 2);
  const r = await checkAndCommit(store, root);
  assert.equal(r.items, 3000);
  await assertTreeEqualsModel(store, root, model);
  // The top block's last key is the ones key.
  const top = await store.read(root.ref, 'btree');
  const w = walkItems(top);
  assert(w.ok);
  assert.equal(compareKeys(readItem(top, w.offs[w.offs.length - 1]!).key, ONES_KEY), 0);
});

test('next, prev and range cross leaf boundaries and honour inclusive bounds', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  const model = new Model();
  const ids = Array.from({ length: 1500 }, (_, i) => i * 4 + 2);
  await fill(store, root, model, ids, 200);
  assert(root.height >= 2);
  for (const probe of [0, 1, 2, 3, 1000, 3001, 5998, 5999, 6000, 7000]) {
    assertItemIs(await btreeNext(store, root, keyOf(probe)), model, model.next(probe), `next(${probe})`);
    assertItemIs(await btreePrev(store, root, keyOf(probe)), model, model.prev(probe), `prev(${probe})`);
  }
  // Every leaf boundary: next of (last key of a leaf + 1) must come from the following leaf.
  for (let probe = 0; probe < 6004; probe += 1) {
    if (probe % 97 !== 0) continue;
    assertItemIs(await btreeNext(store, root, keyOf(probe)), model, model.next(probe), `next(${probe})`);
  }
  const got: number[] = [];
  for await (const it of btreeRange(store, root, keyOf(10), keyOf(4010))) got.push(idOf(it.key));
  assert.deepEqual(got, model.range(10, 4010));
  let n = 0;
  assert.equal(await btreeIterate(store, root, keyOf(0), keyOf(99999), () => ++n < 100), 100, 'callback stops the walk');
  assert.equal(await btreeIterate(store, root, keyOf(50), keyOf(10), () => true), 0, 'empty range');
  assert.equal(await btreeNext(store, root, ONES_KEY), null);
  assert.equal(await btreePrev(store, root, ZERO_KEY), null);
});

test('iteration tolerates the caller modifying the tree between items', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  const model = new Model();
  await fill(store, root, model, Array.from({ length: 2000 }, (_, i) => i), 100);
  store.commit();
  const seen: number[] = [];
  for await (const it of btreeRange(store, root, ZERO_KEY, ONES_KEY)) {
    const id = idOf(it.key);
    seen.push(id);
    if (id % 2 === 0) await btreeDelete(store, root, it.key); // COWs and joins under the iterator
  }
  assert.deepEqual(seen, Array.from({ length: 2000 }, (_, i) => i));
  await assertBtreeOk(store, root);
});

test('shrink: joins and root collapse take the tree back to empty with every block freed', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  const model = new Model();
  const ids = Array.from({ length: 4000 }, (_, i) => i);
  await fill(store, root, model, ids, 250);
  await checkAndCommit(store, root);
  const order = ids.map((id) => (id * 1237) % 4000);
  for (let i = 0; i < order.length; i++) {
    await btreeDelete(store, root, keyOf(order[i]!));
    model.delete(order[i]!);
    if (i % 500 === 499) {
      await checkAndCommit(store, root);
      await assertTreeEqualsModel(store, root, model);
    }
  }
  assert(btreeCounters.joins > 10, `joins ${btreeCounters.joins}`);
  assert(btreeCounters.joinsWhole > 5, `whole joins ${btreeCounters.joinsWhole}`);
  assert(btreeCounters.collapses >= 1, 'root collapsed');
  assert.deepEqual(root, emptyRoot());
  store.commit();
  assert.equal(store.committedCount, 0, 'every block freed');
});

test('copy on write: a committed tree is never modified and the old path is freed exactly once', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  const model = new Model();
  await fill(store, root, model, Array.from({ length: 2000 }, (_, i) => i), 200);
  await checkAndCommit(store, root);
  const before = cloneRoot(root);
  const oldBlknos = (await checkBtree(store, before)).blknos;
  await btreeUpdate(store, root, keyOf(777), valOf(777, 1, 10));
  assert.equal(btreeCounters.cowCopies, root.height, 'one copy per level');
  assert.notEqual(root.ref.blkno, before.ref.blkno);
  // The old tree is still intact and still says the old thing.
  assert.deepEqual((await btreeLookup(store, before, keyOf(777)))!.val, valOf(777, 0, 200));
  assert.deepEqual((await btreeLookup(store, root, keyOf(777)))!.val, valOf(777, 1, 10));
  assert.equal(store.freedCommitted.size, root.height);
  for (const b of store.freedCommitted) assert(oldBlknos.has(b));
  // A second update in the same transaction modifies the dirty blocks in place.
  await btreeUpdate(store, root, keyOf(778), valOf(778, 1, 10));
  assert.equal(btreeCounters.cowCopies, root.height, 'no further copies');
  assert.deepEqual(store.verifyCommitted(), []);
  model.set(777, { val: valOf(777, 1, 10), seq: 0n, flags: 0 });
  model.set(778, { val: valOf(778, 1, 10), seq: 0n, flags: 0 });
  await checkAndCommit(store, root);
  await assertTreeEqualsModel(store, root, model);
});

test('stale reads: withStaleRetry re-reads the root; an unchanged root makes it corruption', async () => {
  const store = new MemBlockStore();
  let committed = emptyRoot();
  const root = emptyRoot();
  const model = new Model();
  await fill(store, root, model, Array.from({ length: 1000 }, (_, i) => i), 100);
  store.commit();
  committed = cloneRoot(root);
  const oldRoot = cloneRoot(root);
  // The writer rewrites everything twice so old blknos are reused with new seqs.
  for (let pass = 1; pass <= 2; pass++) {
    for (let id = 0; id < 1000; id++) await btreeUpdate(store, root, keyOf(id), valOf(id, pass, 100));
    store.commit();
  }
  committed = cloneRoot(root);
  await assert.rejects(btreeLookup(store, oldRoot, keyOf(5)), isCode('ESTALE'));
  let calls = 0;
  const got = await withStaleRetry(
    () => (calls++ === 0 ? oldRoot : committed),
    (r) => btreeLookup(store, r, keyOf(5)),
  );
  assert.deepEqual(got!.val, valOf(5, 2, 100));
  assert.equal(btreeCounters.staleRetries, 1);
  await assert.rejects(
    withStaleRetry(() => oldRoot, (r) => btreeLookup(store, r, keyOf(5))),
    (e: unknown) => e instanceof CorruptionError,
  );
});

test('corrupt blocks surface as CorruptionError from reads and writes, and in the checker', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  const model = new Model();
  await fill(store, root, model, Array.from({ length: 1000 }, (_, i) => i), 100);
  store.commit();
  store.corruptByte(root.ref.blkno, 5000);
  await assert.rejects(btreeLookup(store, root, keyOf(1)), CorruptionError);
  await assert.rejects(btreeInsert(store, root, keyOf(5000), new Uint8Array(0)), CorruptionError);
  const r = await checkBtree(store, root);
  assert(!r.ok && /crc/.test(r.problems[0]!), r.problems.join());
});

test('copying a structurally bad committed block fails with CorruptionError and leaks nothing', async () => {
  const store = new MemBlockStore({ fsid: 0x77n });
  const img = buildMkfsLeaf(store.fsid, 9n, 1n, [
    { key: keyOf(1), seq: 1n, val: valOf(1, 0, 8) },
    { key: keyOf(2), seq: 1n, val: valOf(2, 0, 8) },
  ]);
  img[36] ^= 8; // total_item_bytes no longer matches the items
  sealBlock(img);
  const root: BtreeRoot = { ref: store.putCommitted(img), height: 1 };
  assert.deepEqual((await btreeLookup(store, root, keyOf(2)))!.val, valOf(2, 0, 8), 'reads do not validate the whole block');
  await assert.rejects(btreeInsert(store, root, keyOf(3), new Uint8Array(0)), CorruptionError);
  assert.equal(store.dirtyCount, 0, 'the copy was freed');
  assert.equal(store.freedCommitted.size, 0, 'the original was not');
  assert.equal(root.ref.blkno, 9n);
});

test('a root must be sane: bad height or ref is corruption', async () => {
  const store = new MemBlockStore();
  await assert.rejects(btreeLookup(store, { ref: { blkno: 0n, seq: 0n }, height: 2 }, keyOf(1)), CorruptionError);
  await assert.rejects(btreeLookup(store, { ref: { blkno: 5n, seq: 1n }, height: 21 }, keyOf(1)), CorruptionError);
  const b = new Uint8Array(24);
  writeBtreeRoot(b, 0, { ref: { blkno: 9n, seq: 3n }, height: 2 });
  assert.deepEqual(readBtreeRoot(b, 0), { ref: { blkno: 9n, seq: 3n }, height: 2 });
  b[16] = 0;
  assert.throws(() => readBtreeRoot(b, 0), CorruptionError);
});

test('a leaf written by mkfs (left chain, odd heights) can be read and modified', async () => {
  const store = new MemBlockStore({ fsid: 0x1234n });
  const k0 = key(1, 0n, 1, 0n, 1n);
  const k1 = key(4, 1n, 1);
  const inode = valOf(1, 0, 160);
  const img = buildMkfsLeaf(store.fsid, 7n, 1n, [
    { key: k0, seq: 1n, val: new Uint8Array(0) },
    { key: k1, seq: 1n, val: inode },
  ]);
  const ref = store.putCommitted(img);
  const root: BtreeRoot = { ref, height: 1 };
  const strict = await checkBtree(store, root);
  assert(!strict.ok && /height/.test(strict.problems.join()), 'strict check sees the mkfs heights');
  await assertBtreeOk(store, root, { avlHeights: false });
  assert.deepEqual(await btreeLookup(store, root, k1), { val: inode, seq: 1n, flags: 0 });
  assert.deepEqual((await btreeNext(store, root, key(2, 0n, 0)))!.key, k1);
  // Modify: the leaf is copied, its AVL tree rebuilt, and more items go in.
  await btreeInsert(store, root, key(2, 0n, 1, 99n), new Uint8Array(0), { seq: 2n });
  const model: [typeof k0, number][] = [[k0, 0], [key(2, 0n, 1, 99n), 0], [k1, 160]];
  for (let i = 0; i < 2000; i++) {
    const k = key(4, BigInt(1000 + i), 1);
    await btreeInsert(store, root, k, valOf(i, 0, 100));
    model.push([k, 100]);
  }
  assert.notEqual(root.ref.blkno, 7n);
  await btreeDelete(store, root, k0);
  model.shift();
  store.commit();
  await assertBtreeOk(store, root);
  const got: string[] = [];
  await btreeIterate(store, root, ZERO_KEY, ONES_KEY, (it) => void got.push(`${it.key.zone}.${it.key.first}.${it.val.length}`));
  assert.deepEqual(got, model.map(([k, l]) => `${k.zone}.${k.first}.${l}`));
  assert.deepEqual(sortedBig(store.committedBlknos()), sortedBig((await checkBtree(store, root)).blknos));
});

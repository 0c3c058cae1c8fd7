/*
 * Goal: an allocation failure (ENOSPC from the store) in the middle of any
 * btree operation leaves (1) the in-transaction tree consistent, with the
 * failed single-item operation not applied at all, or a merge applied up to
 * some prefix of its input, and (2) after the caller aborts the transaction
 * (dirty blocks discarded, root restored), the committed tree exactly as it
 * was.  Failures are injected at every allocation count, so they land in
 * copy on write, leaf splits, root splits, joins and merge emission.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FsError } from '../../../src/format/errors.js';
import { ONES_KEY, ZERO_KEY } from '../../../src/format/key.js';
import {
  btreeInsert, btreeUpdate, btreeForce, btreeDelete, btreeIterate, btreeCounters, resetBtreeCounters,
} from '../../../src/btree/btree.js';
import { btreeMerge, type MergeItem } from '../../../src/btree/merge.js';
import { assertBtreeOk } from '../../../src/btree/check.js';
import { MemBlockStore } from '../../../src/btree/memstore.js';
import { emptyRoot, cloneRoot, type BtreeRoot } from '../../../src/btree/store.js';
import { keyOf, idOf, valOf, Model, Rng, assertTreeEqualsModel, checkAndCommit, bytesEqual } from './util.js';

const isEnospc = (e: unknown): boolean => e instanceof FsError && e.code === 'ENOSPC';

test('single operations are all-or-nothing under ENOSPC, and abort restores the committed tree', async () => {
  resetBtreeCounters();
  const rng = new Rng(77);
  const store = new MemBlockStore({ seed: 77 });
  let root = emptyRoot();
  let model = new Model();
  let committedRoot = cloneRoot(root);
  let committedModel = model.clone();
  let failures = 0;
  let aborts = 0;
  const kinds = ['force', 'force', 'insert', 'update', 'delete', 'delete'] as const;
  for (let i = 0; i < 8000; i++) {
    // Grow for the first half, then shrink, so splits and joins both fail.
    const kind = i < 4000 ? kinds[rng.int(3)]! : kinds[3 + rng.int(3)]!;
    const ids = model.ids();
    const id = kind === 'delete' && ids.length > 0 ? ids[rng.int(ids.length)]! : rng.int(3000);
    const v = valOf(id, i, rng.chance(0.5) ? 600 + rng.int(297) : rng.int(50));
    if (store.failAllocAfter === null && rng.chance(0.1)) store.failAllocAfter = rng.int(4);
    const present = model.get(id) !== undefined;
    try {
      if (kind === 'force') await btreeForce(store, root, keyOf(id), v);
      else if (kind === 'insert' && !present) await btreeInsert(store, root, keyOf(id), v);
      else if (kind === 'update' && present) await btreeUpdate(store, root, keyOf(id), v);
      else if (kind === 'delete' && present) await btreeDelete(store, root, keyOf(id));
      else continue;
    } catch (e) {
      if (!isEnospc(e)) throw e;
      failures++;
      store.failAllocAfter = null;
      // The dirty tree is consistent and the operation did not happen.
      await assertBtreeOk(store, root);
      await assertTreeEqualsModel(store, root, model);
      if (rng.chance(0.5)) {
        store.abort();
        aborts++;
        root = cloneRoot(committedRoot);
        model = committedModel.clone();
        await assertBtreeOk(store, root);
        await assertTreeEqualsModel(store, root, model);
      }
      continue;
    }
    if (kind === 'delete') model.delete(id);
    else model.set(id, { val: v, seq: 0n, flags: 0 });
    if (i % 250 === 249) {
      store.failAllocAfter = null;
      await checkAndCommit(store, root);
      await assertTreeEqualsModel(store, root, model);
      committedRoot = cloneRoot(root);
      committedModel = model.clone();
    }
  }
  assert(failures > 100 && aborts > 30, `failures ${failures} aborts ${aborts}`);
  if (process.env.BTREE_TEST_VERBOSE) console.log({ failures, aborts, ...btreeCounters });
  assert(store.counters.enospc === failures);
  assert(btreeCounters.splits > 0 && btreeCounters.joins > 0, JSON.stringify(btreeCounters));
});

test('a split that cannot allocate its new root leaves the tree as it was', async () => {
  // Find how many 800-byte items one leaf holds: the insert after them splits.
  const store = new MemBlockStore();
  const root = emptyRoot();
  const model = new Model();
  let id = 0;
  for (;; id++) {
    const v = valOf(id, 0, 800);
    await btreeInsert(store, root, keyOf(id), v);
    if (root.height === 2) break;
    model.set(id, { val: v, seq: 0n, flags: 0 });
  }
  // Rebuild to exactly the one-leaf state and commit it.
  const store2 = new MemBlockStore();
  const root2 = emptyRoot();
  for (const i of model.ids()) await btreeInsert(store2, root2, keyOf(i), model.get(i)!.val);
  assert.equal(root2.height, 1);
  store2.commit();
  const before = cloneRoot(root2);
  for (const allowed of [0, 1, 2]) {
    // Allocations in order: copy of the leaf, the new left sibling, the new root.
    const r = cloneRoot(before);
    store2.failAllocAfter = allowed;
    await assert.rejects(btreeInsert(store2, r, keyOf(id), valOf(id, 0, 800)), isEnospc);
    store2.failAllocAfter = null;
    await assertBtreeOk(store2, r);
    await assertTreeEqualsModel(store2, r, model);
    assert.equal(r.height, 1, `after failing with ${allowed} allocs allowed`);
    assert.equal(store2.dirtyCount, allowed === 0 ? 0 : 1, 'only the copied leaf stays allocated');
    store2.abort();
    assert.deepEqual(store2.verifyCommitted(), []);
    await assertTreeEqualsModel(store2, before, model);
  }
  await btreeInsert(store2, root2, keyOf(id), valOf(id, 0, 800));
  assert.equal(root2.height, 2);
});

test('a join that cannot copy its sibling leaves the tree as it was', async () => {
  resetBtreeCounters();
  const store = new MemBlockStore();
  const root = emptyRoot();
  const model = new Model();
  for (let id = 0; id < 3000; id++) {
    const v = valOf(id, 0, 100);
    await btreeInsert(store, root, keyOf(id), v);
    model.set(id, { val: v, seq: 0n, flags: 0 });
  }
  assert.equal(root.height, 2);
  let hit = false;
  for (let id = 0; id < 3000 && !hit; id++) {
    await checkAndCommit(store, root);
    const committed = cloneRoot(root);
    // After a commit a delete copies the root and the leaf; only a join needs a third block.
    store.failAllocAfter = 2;
    const joins = btreeCounters.joins;
    try {
      await btreeDelete(store, root, keyOf(id));
      model.delete(id);
    } catch (e) {
      if (!isEnospc(e)) throw e;
      hit = true;
      assert.equal(btreeCounters.joins, joins);
      store.failAllocAfter = null;
      await assertBtreeOk(store, root);
      await assertTreeEqualsModel(store, root, model);
      store.abort();
      await assertTreeEqualsModel(store, committed, model);
    }
    store.failAllocAfter = null;
  }
  assert(hit, 'no join ran out of space');
});

test('merge under ENOSPC applies a prefix of its input; abort restores the committed tree', async () => {
  resetBtreeCounters();
  const rng = new Rng(5);
  let failures = 0;
  for (let round = 0; round < 40; round++) {
    const store = new MemBlockStore({ seed: round });
    const root = emptyRoot();
    const model = new Model();
    const load: MergeItem[] = [];
    for (let id = 0; id < 6000; id += 2) load.push({ key: keyOf(id), val: valOf(id, 0, rng.int(200)), seq: 1n });
    await btreeMerge(store, root, load);
    for (const it of load) model.set(idOf(it.key), { val: it.val, seq: 1n, flags: 0 });
    await checkAndCommit(store, root);
    const committed = cloneRoot(root);
    // Dense inserts (emission), replacements and deletions.
    const items: MergeItem[] = [];
    for (let id = 0; id < 6000; id++) {
      if (!rng.chance(0.7)) continue;
      const del = rng.chance(0.3);
      items.push({ key: keyOf(id), val: del ? new Uint8Array(0) : valOf(id, 1, rng.int(300)), seq: 2n, flags: del ? 1 : 0 });
    }
    store.failAllocAfter = rng.int(30);
    try {
      await btreeMerge(store, root, items);
      continue;
    } catch (e) {
      if (!isEnospc(e)) throw e;
      failures++;
    }
    store.failAllocAfter = null;
    await assertBtreeOk(store, root);
    await assertPrefixApplied(store, root, model, items);
    store.abort();
    await assertBtreeOk(store, committed);
    await assertTreeEqualsModel(store, committed, model);
  }
  assert(failures > 20, `failures ${failures}`);
  assert(btreeCounters.mergeRollbacks > 0, 'an emitted sibling was rolled back');
});

/** The tree equals model with items[0..j) applied, for some j. */
async function assertPrefixApplied(store: MemBlockStore, root: BtreeRoot, model: Model, items: MergeItem[]): Promise<void> {
  const tree = new Map<number, Uint8Array>();
  await btreeIterate(store, root, ZERO_KEY, ONES_KEY, (it) => void tree.set(idOf(it.key), it.val));
  const inMerge = new Set(items.map((it) => idOf(it.key)));
  for (const id of model.ids()) {
    if (!inMerge.has(id)) assert(tree.has(id) && bytesEqual(tree.get(id)!, model.get(id)!.val), `untouched ${id}`);
  }
  let sawOld = false;
  for (const it of items) {
    const id = idOf(it.key);
    const del = it.flags === 1;
    const got = tree.get(id);
    const old = model.get(id)?.val;
    const isNew = del ? got === undefined : got !== undefined && bytesEqual(got, it.val);
    const isOld = old === undefined ? got === undefined : got !== undefined && bytesEqual(got, old);
    assert(isNew || isOld, `item ${id} is neither old nor new`);
    if (isNew && !isOld) assert(!sawOld, `item ${id} applied after an unapplied one`);
    if (isOld && !isNew) sawOld = true;
  }
  for (const id of tree.keys()) assert(model.get(id) !== undefined || inMerge.has(id), `stray ${id}`);
}

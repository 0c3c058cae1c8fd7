/*
 * Goal: btreeMerge of a sorted item stream gives exactly the contents that
 * one-by-one btreeForce / delete-if-present would give, for any starting
 * tree and any mix of inserts, replacements and deletions, dense or
 * sparse; it builds well-filled leaves directly on bulk loads, never leaves
 * an empty non-root leaf, can empty a tree completely, stores deletion items
 * when asked to, and accepts async sources.
 */
import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ONES_KEY, ZERO_KEY } from '../../../src/format/key.js';
import { btreeForce, btreeDelete, btreeIterate, btreeInvariants } from '../../../src/btree/btree.js';
import { btreeMerge, type MergeItem } from '../../../src/btree/merge.js';
import { checkBtree } from '../../../src/btree/check.js';
import { MemBlockStore } from '../../../src/btree/memstore.js';
import { emptyRoot, type BtreeRoot } from '../../../src/btree/store.js';
import { LEAF_AREA } from '../../../src/btree/inblock.js';
import { keyOf, idOf, valOf, Model, Rng, assertTreeEqualsModel, checkAndCommit } from './util.js';

beforeEach(() => {
  btreeInvariants.enabled = false;
});

function applyToModel(model: Model, items: MergeItem[], deletions: 'apply' | 'store' = 'apply'): void {
  for (const it of items) {
    const id = idOf(it.key);
    if (deletions === 'apply' && ((it.flags ?? 0) & 1) !== 0) model.delete(id);
    else model.set(id, { val: it.val, seq: it.seq ?? 0n, flags: it.flags ?? 0 });
  }
}

/** Sorted merge items over [0, space): each id included with probability density. */
function genItems(rng: Rng, space: number, density: number, delChance: number, ver: number, start = 0): MergeItem[] {
  const out: MergeItem[] = [];
  for (let id = start; id < space; id++) {
    if (!rng.chance(density)) continue;
    const del = rng.chance(delChance);
    const len = del ? 0 : rng.chance(0.2) ? 200 + rng.int(697) : rng.int(40);
    out.push({ key: keyOf(id), val: valOf(id, ver, len), seq: BigInt(ver), flags: del ? 1 : 0 });
  }
  return out;
}

async function buildOneByOne(store: MemBlockStore, root: BtreeRoot, model: Model, rng: Rng, n: number, space: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const id = rng.int(space);
    const v = valOf(id, 1000 + i, rng.chance(0.2) ? 300 : rng.int(40));
    await btreeForce(store, root, keyOf(id), v, { seq: 7n });
    model.set(id, { val: v, seq: 7n, flags: 0 });
  }
}

async function leafFill(store: MemBlockStore, root: BtreeRoot): Promise<number> {
  const r = await checkBtree(store, root);
  return r.leafItemBytes / r.leaves / LEAF_AREA;
}

test('bulk load: a sorted stream into an empty tree builds well-filled leaves directly', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  const items: MergeItem[] = [];
  for (let id = 0; id < 30000; id++) items.push({ key: keyOf(id), val: valOf(id, 0, 24), seq: 1n });
  const stats = await btreeMerge(store, root, items);
  assert.equal(stats.inserted, 30000);
  assert(stats.leavesEmitted > 20, JSON.stringify(stats));
  const model = new Model();
  applyToModel(model, items);
  await checkAndCommit(store, root);
  await assertTreeEqualsModel(store, root, model);
  const avgFill = await leafFill(store, root);
  assert(avgFill > 0.8, `average leaf fill ${avgFill}`);
});

test('property: merge equals one-by-one application on any starting tree', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 1, max: 0x7fffffff }),
      fc.integer({ min: 0, max: 6000 }),
      fc.constantFrom(0.002, 0.05, 0.3, 0.9),
      fc.constantFrom(0, 0.2, 0.6, 1),
      async (seed, initial, density, delChance) => {
        const rng = new Rng(seed);
        const space = 8000;
        const store = new MemBlockStore({ seed });
        const root = emptyRoot();
        const model = new Model();
        await buildOneByOne(store, root, model, rng, initial, space);
        await checkAndCommit(store, root);
        // A second tree gets the same items one by one.
        const store2 = new MemBlockStore({ seed });
        const root2 = emptyRoot();
        for (const id of model.ids()) {
          const m = model.get(id)!;
          await btreeForce(store2, root2, keyOf(id), m.val, { seq: m.seq });
        }
        for (let round = 0; round < 3; round++) {
          const items = genItems(rng, space, density, delChance, round, rng.int(100));
          await btreeMerge(store, root, items);
          for (const it of items) {
            if (it.flags === 1) await btreeDelete(store2, root2, it.key).catch(() => undefined);
            else await btreeForce(store2, root2, it.key, it.val, { seq: it.seq!, flags: it.flags! });
          }
          applyToModel(model, items);
          await checkAndCommit(store, root);
          await assertTreeEqualsModel(store, root, model);
          await assertTreeEqualsModel(store2, root2, model);
        }
      },
    ),
    { numRuns: 12 },
  );
});

test('mass deletion by merge: non-root leaves never empty, and the tree can be emptied', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  const model = new Model();
  const load: MergeItem[] = [];
  for (let id = 0; id < 20000; id++) load.push({ key: keyOf(id), val: valOf(id, 0, 100), seq: 1n });
  await btreeMerge(store, root, load);
  applyToModel(model, load);
  await checkAndCommit(store, root);
  // Delete 19 of every 20, in one merge.
  const dels = load.filter((_, i) => i % 20 !== 0).map((it) => ({ ...it, flags: 1 }));
  const stats = await btreeMerge(store, root, dels);
  applyToModel(model, dels);
  assert(stats.pushbacks > 0 || stats.leavesIncremental > 0, JSON.stringify(stats));
  await checkAndCommit(store, root);
  await assertTreeEqualsModel(store, root, model);
  // Now delete the rest (and some absent keys).
  const rest: MergeItem[] = [];
  for (let id = 0; id < 20010; id++) rest.push({ key: keyOf(id), val: new Uint8Array(0), flags: 1 });
  await btreeMerge(store, root, rest);
  assert.deepEqual(root, emptyRoot());
  store.commit();
  assert.equal(store.committedCount, 0);
  // Deletions into an empty tree are no-ops.
  await btreeMerge(store, root, rest.slice(0, 10));
  assert.deepEqual(root, emptyRoot());
});

test('a few deletions empty a small root leaf item by item', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  const items: MergeItem[] = [];
  for (let id = 0; id < 5; id++) items.push({ key: keyOf(id), val: valOf(id, 0, 10) });
  await btreeMerge(store, root, items);
  store.commit();
  const stats = await btreeMerge(store, root, items.map((it) => ({ ...it, flags: 1 })));
  assert.equal(stats.leavesIncremental, 1);
  assert.equal(stats.deleted, 5);
  assert.deepEqual(root, emptyRoot());
  store.commit();
  assert.equal(store.committedCount, 0);
});

test("deletions 'store' keeps deletion items as items (log trees)", async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  const items: MergeItem[] = [];
  for (let id = 0; id < 3000; id++) items.push({ key: keyOf(id), val: new Uint8Array(0), seq: 5n, flags: id % 3 === 0 ? 1 : 0 });
  await btreeMerge(store, root, items, { deletions: 'store' });
  const model = new Model();
  applyToModel(model, items, 'store');
  await checkAndCommit(store, root);
  await assertTreeEqualsModel(store, root, model);
  let flagged = 0;
  await btreeIterate(store, root, ZERO_KEY, ONES_KEY, (it) => void (flagged += it.flags));
  assert.equal(flagged, 1000);
});

test('async iterable sources, and inputs larger than one look-ahead chunk', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  async function* gen(): AsyncGenerator<MergeItem> {
    for (let id = 0; id < 10000; id += 1) yield { key: keyOf(id * 3), val: valOf(id, 0, id % 30) };
  }
  const stats = await btreeMerge(store, root, gen());
  assert.equal(stats.items, 10000);
  const model = new Model();
  for (let id = 0; id < 10000; id++) model.set(id * 3, { val: valOf(id, 0, id % 30), seq: 0n, flags: 0 });
  await checkAndCommit(store, root);
  await assertTreeEqualsModel(store, root, model);
});

test('unsorted input is a programmer error', async () => {
  const store = new MemBlockStore();
  const root = emptyRoot();
  await assert.rejects(
    btreeMerge(store, root, [{ key: keyOf(2), val: new Uint8Array(0) }, { key: keyOf(1), val: new Uint8Array(0) }]),
    /strictly increasing/,
  );
});

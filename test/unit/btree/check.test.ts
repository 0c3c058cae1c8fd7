/*
 * Goal: the checker passes good trees, returns exactly the blknos they use,
 * and names each kind of damage it is meant to find: crc, stale refs, level,
 * parent key bounds, the ones-key right spine, blocks referenced twice,
 * leaf hash, accounting and AVL heights.  Damage is made in dirty (unsealed)
 * blocks so only the intended check fails the crc-free path, and in
 * committed blocks for the crc check.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeKey } from '../../../src/format/key.js';
import { LEAF_HASH_OFF } from '../../../src/format/btree.js';
import { readRef, writeRef } from '../../../src/format/block.js';
import { getU16, setU16 } from '../../../src/format/layout.js';
import { btreeInsert } from '../../../src/btree/btree.js';
import { checkBtree } from '../../../src/btree/check.js';
import { MemBlockStore } from '../../../src/btree/memstore.js';
import { emptyRoot, type BtreeRoot } from '../../../src/btree/store.js';
import { avlFirst, avlLast, avlNext, avlRoot } from '../../../src/btree/avl.js';
import { I_KEY, itemValOff } from '../../../src/btree/inblock.js';
import { keyOf, valOf, sortedBig } from './util.js';

async function twoLevelTree(): Promise<{ store: MemBlockStore; root: BtreeRoot; top: Uint8Array }> {
  const store = new MemBlockStore();
  const root = emptyRoot();
  for (let id = 0; id < 2000; id++) await btreeInsert(store, root, keyOf(id * 2), valOf(id, 0, 150));
  assert.equal(root.height, 2);
  return { store, root, top: await store.read(root.ref, 'btree') };
}

async function problemsOf(store: MemBlockStore, root: BtreeRoot): Promise<string> {
  const r = await checkBtree(store, root);
  assert(!r.ok, 'damage went unnoticed');
  return r.problems.join('\n');
}

const childOf = async (store: MemBlockStore, top: Uint8Array, off: number): Promise<Uint8Array> =>
  store.read(readRef(top, itemValOff(top, off)), 'btree');

test('a good tree checks clean and reports its blocks, items and fill', async () => {
  const { store, root } = await twoLevelTree();
  const r = await checkBtree(store, root);
  assert(r.ok, r.problems.join());
  assert.equal(r.items, 2000);
  assert.equal(r.blocks, r.leaves + 1);
  assert.deepEqual(sortedBig(r.blknos), sortedBig(store.dirtyBlknos()));
  assert(r.leafItemBytes > 2000 * (56 + 152) - 1);
  assert((await checkBtree(store, emptyRoot())).ok);
  const bad = await checkBtree(store, { ref: { blkno: 0n, seq: 0n }, height: 1 });
  assert(!bad.ok);
});

test('crc damage in a committed block and stale refs are reported, not thrown', async () => {
  const { store, root, top } = await twoLevelTree();
  store.commit();
  const leafRef = readRef(top, itemValOff(top, avlFirst(top)));
  store.corruptByte(leafRef.blkno, 3000);
  assert.match(await problemsOf(store, root), /crc/);
  const stale = await checkBtree(store, { ref: { blkno: root.ref.blkno, seq: root.ref.seq + 1n }, height: 2 });
  assert.match(stale.problems.join(), /ESTALE/);
});

test('level, bounds, spine and double references', async () => {
  {
    const { store, root, top } = await twoLevelTree();
    (await childOf(store, top, avlFirst(top)))[40] = 1;
    assert.match(await problemsOf(store, root), /block level 1/);
  }
  {
    const { store, root, top } = await twoLevelTree();
    // The first leaf's last key moves beyond its parent key.
    const leaf = await childOf(store, top, avlFirst(top));
    leaf.set(encodeKey(keyOf(3999)), avlLast(leaf) + I_KEY);
    assert.match(await problemsOf(store, root), /above the parent key/);
  }
  {
    const { store, root, top } = await twoLevelTree();
    // The second leaf's first key drops to the first leaf's range.
    const leaf = await childOf(store, top, avlNext(top, avlFirst(top)));
    leaf.set(encodeKey(keyOf(0)), avlFirst(leaf) + I_KEY);
    assert.match(await problemsOf(store, root), /not above the lower bound/);
  }
  {
    const { store, root, top } = await twoLevelTree();
    top.set(encodeKey(keyOf(1 << 21)), avlLast(top) + I_KEY);
    assert.match(await problemsOf(store, root), /not the ones key/);
  }
  {
    const { store, root, top } = await twoLevelTree();
    const a = avlFirst(top);
    writeRef(top, itemValOff(top, avlNext(top, a)), readRef(top, itemValOff(top, a)));
    assert.match(await problemsOf(store, root), /referenced twice/);
  }
});

test('leaf hash, accounting and AVL heights', async () => {
  {
    const { store, root, top } = await twoLevelTree();
    const leaf = await childOf(store, top, avlFirst(top));
    let i = 0;
    while (getU16(leaf, LEAF_HASH_OFF + 2 * i) === 0) i++;
    setU16(leaf, LEAF_HASH_OFF + 2 * i, 0);
    assert.match(await problemsOf(store, root), /leaf hash/);
  }
  {
    const { store, root, top } = await twoLevelTree();
    const leaf = await childOf(store, top, avlFirst(top));
    setU16(leaf, 36, getU16(leaf, 36) + 8);
    assert.match(await problemsOf(store, root), /total_item_bytes/);
  }
  {
    const { store, root, top } = await twoLevelTree();
    const leaf = await childOf(store, top, avlFirst(top));
    leaf[avlRoot(leaf) + 6] = 1;
    assert.match(await problemsOf(store, root), /height/);
    assert((await checkBtree(store, root, { avlHeights: false })).ok);
  }
});

/*
 * Goal: the in-block operations of src/btree (AVL item tree, leaf hash
 * table, item insert/delete/update, compaction, moves, sorted building,
 * adopting foreign blocks) keep every FORMAT.md 7 invariant exactly, match
 * the worked example of FORMAT.md 7.8, and behave like a Map under random
 * operation sequences.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { encodeKey, key, readKey, type Key } from '../../../src/format/key.js';
import { leafHashBucketOfKey } from '../../../src/format/hash.js';
import { LEAF_HASH_OFF, walkItems, LEAF_EMPTY_FREE, PARENT_EMPTY_FREE } from '../../../src/format/btree.js';
import { LG_BLOCK_SIZE, LEAF_ITEM_HASH_NR } from '../../../src/format/constants.js';
import { CorruptionError } from '../../../src/format/errors.js';
import { getU16, setU16 } from '../../../src/format/layout.js';
import { buildMkfsLeaf } from '../../../src/mkfs/leaf.js';
import {
  initBlock, insertItem, deleteItem, setItemValue, compactValues, moveItems, appendSorted, finishSorted, adoptBlock,
  verifyBlockItems, findItem, itemValue, nrItems, totalItemBytes, midFreeLen, itemBytes, itemOffAt, itemValOff,
  hasRoom, I_KEY, round8,
} from '../../../src/btree/inblock.js';
import { avlCheckHeights, avlInOrder, avlRoot, avlLowerBound, avlFloor, avlFirst, avlLast, avlNext, avlPrev } from '../../../src/btree/avl.js';
import { leafHashLookup, leafHashHome } from '../../../src/btree/leafhash.js';
import { keyOf, idOf, valOf, Rng } from './util.js';

const newBlock = (level: number): Uint8Array => {
  const b = new Uint8Array(LG_BLOCK_SIZE);
  initBlock(b, level);
  return b;
};

const kb = (k: Key): Uint8Array => encodeKey(k);
const ins = (b: Uint8Array, k: Key, v: Uint8Array, seq = 0n, flags = 0): number => insertItem(b, kb(k), 0, seq, flags, v, 0, v.length);

function assertOk(b: Uint8Array, heights = true): number[] {
  const { problems, offs } = verifyBlockItems(b, { avlHeights: heights });
  assert.deepEqual(problems, []);
  return offs;
}

function keysInOrder(b: Uint8Array): number[] {
  return avlInOrder(b).map((off) => idOf(readKey(b, off + I_KEY)));
}

test('empty blocks: mid_free_len 62464 for a leaf, 65488 for a parent', () => {
  assert.equal(midFreeLen(newBlock(0)), LEAF_EMPTY_FREE);
  assert.equal(midFreeLen(newBlock(1)), PARENT_EMPTY_FREE);
  assert.equal(LEAF_EMPTY_FREE, 62464);
  assert.equal(nrItems(newBlock(0)), 0);
  assertOk(newBlock(0));
});

test('FORMAT.md 7.8: the fs_root leaf built with insertItem has the documented layout', () => {
  const b = newBlock(0);
  const k0 = key(1, 0n, 1, 0n, 1n);
  const k1 = key(4, 1n, 1);
  const inode = new Uint8Array(160).fill(7);
  ins(b, k0, new Uint8Array(0), 1n);
  ins(b, k1, inode, 1n);
  assert.equal(nrItems(b), 2);
  assert.equal(totalItemBytes(b), 272);
  assert.equal(midFreeLen(b), 62192);
  assert.equal(itemValOff(b, 104), 62352);
  assert.equal(getU16(b, LEAF_HASH_OFF + 2 * 206), 48);
  assert.equal(getU16(b, LEAF_HASH_OFF + 2 * 873), 104);
  assert.equal(leafHashBucketOfKey(k0), 206);
  // Same bytes as mkfs apart from the avl nodes (mkfs writes a left chain with odd heights).
  const m = buildMkfsLeaf(0n, 0n, 0n, [{ key: k0, seq: 1n, val: new Uint8Array(0) }, { key: k1, seq: 1n, val: inode }]);
  const strip = (x: Uint8Array): Uint8Array => {
    const c = x.slice();
    c.fill(0, 0, 34); // header and item_root
    c.fill(0, 48, 56);
    c.fill(0, 104, 112);
    return c;
  };
  assert.deepEqual(strip(b), strip(m));
  assertOk(b);
});

test('insert in random order: AVL in key order, balanced, hash exact, accounting exact', () => {
  const b = newBlock(0);
  const rng = new Rng(3);
  const ids = new Set<number>();
  let total = 0;
  while (ids.size < 700) {
    const id = rng.int(100000);
    if (ids.has(id)) continue;
    const v = valOf(id, 0, rng.int(40));
    if (!hasRoom(b, v.length)) break;
    ins(b, keyOf(id), v);
    ids.add(id);
    total += 56 + round8(v.length);
  }
  assert.equal(totalItemBytes(b), total);
  assert.equal(midFreeLen(b), LEAF_EMPTY_FREE - total);
  assert.deepEqual(keysInOrder(b), [...ids].sort((x, y) => x - y));
  assert.equal(avlCheckHeights(b), null);
  for (const id of ids) {
    const off = findItem(b, kb(keyOf(id)), 0);
    assert(off !== 0);
    assert.deepEqual(itemValue(b, off), valOf(id, 0, itemValue(b, off).length));
  }
  assert.equal(findItem(b, kb(keyOf(100001)), 0), 0);
  assertOk(b);
});

test('ordered neighbours: lowerBound, floor, first, last, next, prev', () => {
  const b = newBlock(1);
  for (const id of [10, 20, 30, 40, 50]) ins(b, keyOf(id), new Uint8Array(16));
  const at = (off: number): number | null => (off === 0 ? null : idOf(readKey(b, off + I_KEY)));
  assert.equal(at(avlLowerBound(b, kb(keyOf(25)), 0)), 30);
  assert.equal(at(avlLowerBound(b, kb(keyOf(30)), 0)), 30);
  assert.equal(at(avlLowerBound(b, kb(keyOf(51)), 0)), null);
  assert.equal(at(avlFloor(b, kb(keyOf(25)), 0)), 20);
  assert.equal(at(avlFloor(b, kb(keyOf(9)), 0)), null);
  assert.equal(at(avlFirst(b)), 10);
  assert.equal(at(avlLast(b)), 50);
  assert.equal(at(avlNext(b, avlLowerBound(b, kb(keyOf(30)), 0))), 40);
  assert.equal(at(avlPrev(b, avlLowerBound(b, kb(keyOf(30)), 0))), 20);
  assert.equal(at(avlNext(b, avlLast(b))), null);
  assert.equal(at(avlPrev(b, avlFirst(b))), null);
  // Parents find exact keys through the AVL tree (they have no hash table).
  assert.notEqual(findItem(b, kb(keyOf(40)), 0), 0);
  assert.equal(findItem(b, kb(keyOf(41)), 0), 0);
});

test('delete moves the last item into the hole and fixes links and buckets; value space becomes a hole', () => {
  const b = newBlock(0);
  for (let id = 0; id < 50; id++) ins(b, keyOf(id * 3), valOf(id, 0, 24));
  const mid0 = midFreeLen(b);
  const total0 = totalItemBytes(b);
  const lastOff = itemOffAt(49);
  const lastId = idOf(readKey(b, lastOff + I_KEY));
  const victim = findItem(b, kb(keyOf(3 * 7)), 0);
  assert.notEqual(victim, lastOff);
  const moved = deleteItem(b, victim);
  assert.equal(moved, lastOff);
  assert.equal(idOf(readKey(b, victim + I_KEY)), lastId, 'last item now lives in the hole');
  assert.equal(findItem(b, kb(keyOf(lastId)), 0), victim);
  assert.equal(findItem(b, kb(keyOf(21)), 0), 0);
  assert.equal(nrItems(b), 49);
  assert.equal(midFreeLen(b), mid0 + 56, 'only the item slot returns to the middle region');
  assert.equal(totalItemBytes(b), total0 - 56 - 24);
  assert(b.subarray(itemOffAt(49), itemOffAt(50)).every((x) => x === 0), 'vacated slot zeroed');
  assertOk(b);
  // Deleting the last array item moves nothing.
  assert.equal(deleteItem(b, itemOffAt(48)), 0);
  assertOk(b);
});

test('update: in place when the value fits its old space, else new space; totals exact', () => {
  const b = newBlock(0);
  ins(b, keyOf(1), valOf(1, 0, 100));
  ins(b, keyOf(2), valOf(2, 0, 8));
  const off = findItem(b, kb(keyOf(1)), 0);
  const vo = itemValOff(b, off);
  const mid = midFreeLen(b);
  setItemValue(b, off, valOf(1, 1, 97), 0, 97); // round8(97) = 104 = round8(100): in place
  assert.equal(itemValOff(b, off), vo);
  assert.equal(midFreeLen(b), mid);
  assert.deepEqual(itemValue(b, off), valOf(1, 1, 97));
  setItemValue(b, off, valOf(1, 2, 300), 0, 300); // bigger: new space from the middle region
  assert.notEqual(itemValOff(b, off), vo);
  assert.equal(midFreeLen(b), mid - 304);
  assert.equal(totalItemBytes(b), 56 * 2 + 8 + 304);
  setItemValue(b, off, new Uint8Array(0), 0, 0);
  assert.equal(itemValOff(b, off), 0);
  assert.equal(totalItemBytes(b), 56 * 2 + 8);
  assertOk(b);
});

test('compaction packs values at the top and recomputes mid_free_len exactly', () => {
  const b = newBlock(0);
  const rng = new Rng(9);
  for (let id = 0; id < 300; id++) ins(b, keyOf(id), valOf(id, 0, 1 + rng.int(150)));
  for (let id = 0; id < 300; id += 2) deleteItem(b, findItem(b, kb(keyOf(id)), 0));
  const total = totalItemBytes(b);
  assert(midFreeLen(b) < LEAF_EMPTY_FREE - total, 'holes exist before compaction');
  compactValues(b);
  assert.equal(midFreeLen(b), LEAF_EMPTY_FREE - total);
  const offs = assertOk(b);
  for (const off of offs) {
    const id = idOf(readKey(b, off + I_KEY));
    assert.deepEqual(itemValue(b, off), valOf(id, 0, itemValue(b, off).length));
  }
});

test('leaf hash: probing wraps from bucket 1511 to 0, and deletion repairs the run', () => {
  // Find keys whose home bucket is 1510 or 1511.
  const homes: number[] = [];
  const ids: number[] = [];
  for (let id = 0; ids.length < 5; id++) {
    const k = kb(keyOf(id));
    const h = leafHashHome(k, 0);
    if (h >= 1510) {
      ids.push(id);
      homes.push(h);
    }
  }
  const b = newBlock(0);
  const bucket = (i: number): number => getU16(b, LEAF_HASH_OFF + 2 * i);
  for (const id of ids) ins(b, keyOf(id), new Uint8Array(0));
  const used = [...Array(LEAF_ITEM_HASH_NR).keys()].filter((i) => bucket(i) !== 0);
  assert(used.includes(0) && used.includes(1) && used.includes(1511), `buckets used: ${used}`);
  for (const id of ids) assert.notEqual(leafHashLookup(b, kb(keyOf(id)), 0), 0);
  // Delete the first inserted; all others still reachable, one bucket each.
  deleteItem(b, findItem(b, kb(keyOf(ids[0]!)), 0));
  for (const id of ids.slice(1)) assert.notEqual(leafHashLookup(b, kb(keyOf(id)), 0), 0, `id ${id}`);
  assertOk(b);
});

test('moveItems: a split moves the low half into a fresh left block', () => {
  const right = newBlock(0);
  for (let id = 0; id < 400; id++) ins(right, keyOf(id), valOf(id, 0, 64));
  const left = newBlock(0);
  const half = totalItemBytes(right) >>> 1;
  const moved = moveItems(left, right, false, half);
  assert(moved >= half && moved < half + 120);
  const l = keysInOrder(left);
  const r = keysInOrder(right);
  assert.equal(l.length + r.length, 400);
  assert(l[l.length - 1]! < r[0]!, 'left holds the lowest keys');
  assertOk(left);
  assertOk(right);
  // And the high end of left back into right (a join from the left sibling).
  moveItems(right, left, true, 1000);
  assert(keysInOrder(right)[0]! < r[0]!);
  assertOk(left);
  assertOk(right);
});

test('appendSorted + finishSorted builds the same contents as inserts, balanced', () => {
  const a = newBlock(0);
  const bl = newBlock(0);
  for (let id = 0; id < 500; id++) {
    appendSorted(a, kb(keyOf(id * 2)), 0, BigInt(id), id & 1, valOf(id, 0, id % 50), 0, id % 50);
  }
  finishSorted(a);
  for (let id = 499; id >= 0; id--) ins(bl, keyOf(id * 2), valOf(id, 0, id % 50), BigInt(id), id & 1);
  assertOk(a);
  assert.deepEqual(keysInOrder(a), keysInOrder(bl));
  assert.equal(totalItemBytes(a), totalItemBytes(bl));
  assert.equal(midFreeLen(a), LEAF_EMPTY_FREE - totalItemBytes(a));
  assert.throws(() => appendSorted(a, kb(keyOf(3)), 0, 0n, 0, new Uint8Array(0), 0, 0), /keys not increasing/);
});

test('adoptBlock: an mkfs leaf (odd heights) is accepted and gets kernel heights', () => {
  const m = buildMkfsLeaf(1n, 5n, 1n, [
    { key: key(1, 0n, 1, 0n, 1n), seq: 1n, val: new Uint8Array(0) },
    { key: key(4, 1n, 1), seq: 1n, val: new Uint8Array(160) },
  ]);
  assert.notEqual(avlCheckHeights(m), null, 'mkfs heights break the kernel convention');
  assert.deepEqual(verifyBlockItems(m, { avlHeights: false }).problems, []);
  const b = m.slice();
  adoptBlock(b, 0);
  assert.equal(avlCheckHeights(b), null);
  assertOk(b);
  ins(b, key(2, 0n, 1, 1n), new Uint8Array(0));
  assertOk(b);
});

function firstUsedBucket(b: Uint8Array): number {
  for (let i = 0; i < LEAF_ITEM_HASH_NR; i++) if (getU16(b, LEAF_HASH_OFF + 2 * i) !== 0) return i;
  return assert.fail('no used bucket');
}

test('adoptBlock: bad bytes are CorruptionError, not assertions', () => {
  const good = newBlock(0);
  for (let id = 0; id < 20; id++) ins(good, keyOf(id), valOf(id, 0, 8));
  const cases: [string, (b: Uint8Array) => void][] = [
    ['avl link out of range', (b) => setU16(b, avlRoot(b) + 2, 60000)],
    ['avl cycle', (b) => setU16(b, avlRoot(b) + 2, avlRoot(b) - 32)],
    ['keys out of order', (b) => b.set(kb(keyOf(1000)), avlFirst(b) + I_KEY)],
    ['bad total', (b) => setU16(b, 36, 5)],
    ['value outside', (b) => setU16(b, avlFirst(b) + 48, 100)],
    ['mid_free overlaps values', (b) => setU16(b, 38, 62000)],
    ['hash count', (b) => setU16(b, LEAF_HASH_OFF + 2 * firstUsedBucket(b), 0)],
    ['level', (b) => { b[40] = 1; }],
  ];
  for (const [name, mutate] of cases) {
    const b = good.slice();
    mutate(b);
    assert.throws(() => adoptBlock(b, 0), CorruptionError, name);
  }
  const w = walkItems(good);
  assert(w.ok);
});

type Op = { kind: 'ins' | 'del' | 'upd' | 'compact'; id: number; len: number };

test('property: random ops on one block behave like a Map and keep every invariant', () => {
  const op = fc.record({
    kind: fc.constantFrom<Op['kind']>('ins', 'ins', 'ins', 'del', 'del', 'upd', 'compact'),
    id: fc.integer({ min: 0, max: 400 }),
    len: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 40 }), fc.integer({ min: 41, max: 896 })),
  });
  fc.assert(
    fc.property(fc.boolean(), fc.array(op, { maxLength: 300 }), (leaf, ops) => {
      const b = newBlock(leaf ? 0 : 1);
      const model = new Map<number, Uint8Array>();
      ops.forEach((o, i) => {
        const len = leaf ? o.len : 16;
        const v = valOf(o.id, i, len);
        const off = findItem(b, kb(keyOf(o.id)), 0);
        assert.equal(off !== 0, model.has(o.id));
        if (o.kind === 'ins' && off === 0) {
          if (!hasRoom(b, len)) compactValues(b);
          if (!hasRoom(b, len)) return;
          ins(b, keyOf(o.id), v);
          model.set(o.id, v);
        } else if (o.kind === 'del' && off !== 0) {
          deleteItem(b, off);
          model.delete(o.id);
        } else if (o.kind === 'upd' && off !== 0) {
          if (midFreeLen(b) < round8(len) + 8) compactValues(b);
          if (midFreeLen(b) < round8(len)) return;
          setItemValue(b, off, v, 0, len);
          model.set(o.id, v);
        } else if (o.kind === 'compact') {
          compactValues(b);
        }
      });
      const offs = assertOk(b);
      assert.equal(offs.length, model.size);
      let total = 0;
      for (const [id, v] of model) {
        const off = findItem(b, kb(keyOf(id)), 0);
        assert.notEqual(off, 0);
        assert.deepEqual(itemValue(b, off), v);
        total += itemBytes(v.length);
      }
      assert.equal(totalItemBytes(b), total);
      assert.deepEqual(keysInOrder(b), [...model.keys()].sort((x, y) => x - y));
    }),
    { numRuns: 300 },
  );
});

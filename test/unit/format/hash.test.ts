/*
 * Goal: every hash of FORMAT.md s12 and the srch entry codec of s11.4 give
 * the document's test vectors, and key order is scoutfs order (zone, first,
 * type, second, third, fourth), not byte or field order.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  fnv1a32, fnv1a64, direntNameHash, xattrNameHash, srchHash, bloomIndexes, leafHashBucketOfKey,
} from '../../../src/format/hash.js';
import { key, compareKeys, compareKeyBytes, encodeKey, keyInc, keyDec, ONES_KEY, ZERO_KEY, readKey } from '../../../src/format/key.js';
import { encodeSrchEntry, decodeSrchEntry, ZERO_SRCH_ENTRY } from '../../../src/format/srch.js';
import { extentOrder, freeExtentKeys } from '../../../src/format/items.js';

const enc = (s: string) => new TextEncoder().encode(s);
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex').replace(/(..)(?!$)/g, '$1 ');

test('FNV-1a 32 and 64 vectors (s12.2)', () => {
  assert.equal(fnv1a32(enc('')), 0x811c9dc5);
  assert.equal(fnv1a32(enc('a')), 0xe40c292c);
  assert.equal(fnv1a64(enc('a')), 0xaf63dc4c8601ec8cn);
  assert.equal(fnv1a64(enc('')), 0xcbf29ce484222325n);
});

test('dirent name hash vectors (s12.1)', () => {
  const v: [string, bigint][] = [
    ['a', 0x61000000e40c292cn], ['ab', 0x616200004d2505can], ['abcd', 0x61626364ce3479bdn],
    ['abcde', 0x61626364749bcf08n], ['hello', 0x68656c6c4f9f2cabn],
    ['lost+found', 0x67547574a3603574n], ['file.txt', 0x566474640bc16a85n],
  ];
  for (const [name, h] of v) assert.equal(direntNameHash(name), h, name);
});

test('xattr name hash and srch hash vectors (s12.3, s12.4)', () => {
  assert.equal(xattrNameHash('user.foo'), 0xa47a061b);
  assert.equal(xattrNameHash('trusted.bar'), 0x6c67a0b7);
  assert.equal(xattrNameHash('scoutfs.srch.tag'), 0x9d99d63b);
  assert.equal(srchHash('scoutfs.srch.tag'), 0x5c3ed93b9a431d74n);
  assert.equal(srchHash('user.foo'), 0x23f3f1c8eab4ccfcn);
});

test('leaf hash buckets and bloom indexes (s12.2)', () => {
  assert.equal(leafHashBucketOfKey(key(4, 1n, 1)), 873);
  assert.equal(leafHashBucketOfKey(key(1, 0n, 1, 0n, 1n)), 206);
  assert.deepEqual(bloomIndexes(key(4, 0n, 0)), [303865, 166919, 358985]);
  assert.deepEqual(bloomIndexes(key(4, 1024n, 0)), [161317, 497074, 273462]);
  assert.deepEqual(bloomIndexes(key(2, 0n, 1)), [453366, 501118, 360788]);
  assert.deepEqual(bloomIndexes(key(3, 0n, 0)), [344276, 16961, 172023]);
  assert.deepEqual(bloomIndexes(key(1, 0n, 1)), [356419, 130869, 470308]);
});

test('srch entry encoding vectors (s11.4) and round trips', () => {
  const e1 = { hash: 0x1234n, ino: 1025n, id: 0n };
  const e2 = { hash: 0x1234n, ino: 1024n, id: 3n };
  const e3 = { hash: 0xfedcba9876543210n, ino: 5n, id: 1n };
  assert.equal(hex(encodeSrchEntry(ZERO_SRCH_ENTRY, e1)), '22 00 68 24 02 08');
  assert.equal(hex(encodeSrchEntry(e1, e2)), '10 01 01 06');
  assert.equal(hex(encodeSrchEntry(ZERO_SRCH_ENTRY, e3)), '18 01 df 9b 57 13 cf 8a 46 02 0a 02');
  let prev = ZERO_SRCH_ENTRY;
  for (const e of [e1, e2, e3, { hash: 0xffffffffffffffffn, ino: 0n, id: 0xffffffffffffffffn }]) {
    const b = encodeSrchEntry(prev, e);
    const d = decodeSrchEntry(b, 0, b.length, prev);
    assert.ok(d);
    assert.deepEqual(d.entry, e);
    assert.equal(d.bytes, b.length);
    assert.ok(b.length >= 2 && b.length <= 26);
    prev = e;
  }
  assert.equal(decodeSrchEntry(new Uint8Array([0x99, 0x00]), 0, 2, ZERO_SRCH_ENTRY), null, 'nibble 9 is corrupt');
  assert.equal(decodeSrchEntry(new Uint8Array([0x08, 0x00, 1]), 0, 3, ZERO_SRCH_ENTRY), null, 'runs past the end');
});

test('keys sort by zone, first, type, second, third, fourth', () => {
  const ordered = [
    key(1, 5n, 9, 9n, 9n, 9), key(2, 0n, 0), key(2, 1n, 0, 0n), key(2, 1n, 1, 0n),
    key(2, 1n, 1, 1n, 0n, 0), key(2, 1n, 1, 1n, 1n, 0), key(2, 1n, 1, 1n, 1n, 1),
    key(2, 0xffffffffffffffffn, 0), key(3, 0n, 0),
  ];
  for (let i = 0; i < ordered.length; i++) {
    for (let j = 0; j < ordered.length; j++) {
      const want = Math.sign(i - j);
      assert.equal(compareKeys(ordered[i]!, ordered[j]!), want);
      assert.equal(compareKeyBytes(encodeKey(ordered[i]!), 0, encodeKey(ordered[j]!), 0), want);
    }
  }
  const k = key(4, 7n, 1, 3n, 0xffffffffffffffffn, 0xff);
  assert.deepEqual(keyInc(k), key(4, 7n, 1, 4n, 0n, 0));
  assert.deepEqual(keyDec(keyInc(k)), k);
  assert.deepEqual(keyInc(keyDec(ONES_KEY)), ONES_KEY);
  assert.deepEqual(keyDec(keyInc(ZERO_KEY)), ZERO_KEY);
  assert.deepEqual(readKey(encodeKey(k), 0), k);
  assert.throws(() => keyInc(ONES_KEY));
});

test('free extent keys in both keyings (s8.10)', () => {
  assert.equal(extentOrder(1n), 0);
  assert.equal(extentOrder(7n), 0);
  assert.equal(extentOrder(8n), 1);
  assert.equal(extentOrder(63n), 1);
  assert.equal(extentOrder(64n), 2);
  assert.equal(extentOrder(2097088n), 6);
  const { blkno, order } = freeExtentKeys(64n, 2097088n);
  assert.deepEqual(blkno, key(9, 2097151n, 0, 2097088n));
  assert.deepEqual(order, key(10, 0xffffffffffffffffn - 6n, 0, 2097151n, 2097088n));
});

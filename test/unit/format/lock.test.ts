/*
 * Goal: the lock names of src/format/lock.ts are exactly the table of
 * PROTOCOL.md 6.2 / FORMAT.md 10.3 (start and end keys of the inode group,
 * index, orphan, totl and rename locks), every item key falls in the
 * range of the lock lockRangeOf() gives it, a start key from the wire is
 * recognised only when it really starts a lock, and the mode rules of 6.1
 * (satisfies, can read, can write, wire numbers) hold.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ZONE, INDEX_TYPE, inodeKey, indexKey, orphanKey, direntKey, xattrKey } from '../../../src/format/items.js';
import { key, compareKeys, keyInc, keyDec, ONES_KEY } from '../../../src/format/key.js';
import { U64_MAX } from '../../../src/format/layout.js';
import {
  LOCK_MODE, inodeLockRange, indexLockRange, orphanLockRange, totlLockRange, renameLockRange, lockRangeOf, lockStartKey,
  lockRangeOfStart, lockInodeSpan, keyInRange, lockModeName, lockModeSatisfies, lockModeCanRead, lockModeCanWrite,
} from '../../../src/format/lock.js';

test('lock ranges are the PROTOCOL.md 6.2 table', () => {
  assert.deepEqual(inodeLockRange(5000n), {
    start: key(ZONE.FS, 4096n, 0), end: key(ZONE.FS, 5119n, 0xff, U64_MAX, U64_MAX, 0xff),
  });
  assert.deepEqual(inodeLockRange(1023n).start, key(ZONE.FS, 0n, 0));
  assert.deepEqual(indexLockRange(INDEX_TYPE.DATA_SEQ, 3000n), {
    start: key(ZONE.INODE_INDEX, 0n, 2, 2048n), end: key(ZONE.INODE_INDEX, 0n, 2, 3071n, U64_MAX, 0),
  });
  assert.deepEqual(orphanLockRange(), { start: key(ZONE.ORPHAN, 0n, 1), end: key(ZONE.ORPHAN, 0n, 1, U64_MAX) });
  assert.deepEqual(totlLockRange(), {
    start: key(ZONE.XATTR_TOTL, 0n, 0), end: key(ZONE.XATTR_TOTL, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff),
  });
  assert.deepEqual(renameLockRange(), { start: key(ZONE.LOCK, 0n, 1), end: key(ZONE.LOCK, 0n, 1) });
  assert.throws(() => indexLockRange(7, 1n));
});

test('every item key lies in its lock range, and neighbouring groups do not overlap', () => {
  const items = [
    inodeKey(1n), inodeKey(1024n), inodeKey(U64_MAX), direntKey(77n, 0xdeadn, 9n), xattrKey(2047n, 3, 4n, 1),
    indexKey(INDEX_TYPE.META_SEQ, 0n, 5n), indexKey(INDEX_TYPE.META_SEQ, 1023n, U64_MAX), indexKey(INDEX_TYPE.DATA_SEQ, 1024n, 1n),
    orphanKey(0n), orphanKey(U64_MAX), key(ZONE.XATTR_TOTL, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff), key(ZONE.XATTR_TOTL, 0n, 0),
  ];
  for (const k of items) {
    const r = lockRangeOf(k);
    assert.ok(keyInRange(k, r), `${JSON.stringify(k, (_, v) => (typeof v === 'bigint' ? v.toString() : v))}`);
    assert.deepEqual(lockStartKey(k), r.start);
    assert.deepEqual(lockRangeOfStart(r.start)?.range, r, 'the start key names the same range');
  }
  // The last key of one inode group and the first of the next are in different locks.
  const a = inodeLockRange(1023n);
  const b = inodeLockRange(1024n);
  assert.equal(compareKeys(keyInc(a.end), b.start), 0);
  assert.ok(!keyInRange(keyDec(b.start), b));
  assert.throws(() => lockRangeOf(key(ZONE.LOG_TREES, 1n, 0)), /no fs lock/);
});

test('a start key from the wire is recognised only when it starts a lock', () => {
  assert.equal(lockRangeOfStart(key(ZONE.FS, 2048n, 0))?.kind, 'inode');
  assert.equal(lockRangeOfStart(key(ZONE.FS, 2049n, 0)), null, 'not a group boundary');
  assert.equal(lockRangeOfStart(key(ZONE.FS, 2048n, 1)), null, 'a type below the zone');
  assert.equal(lockRangeOfStart(key(ZONE.INODE_INDEX, 0n, 1, 1024n))?.kind, 'index');
  assert.equal(lockRangeOfStart(key(ZONE.INODE_INDEX, 0n, 3, 1024n)), null, 'unknown index type');
  assert.equal(lockRangeOfStart(key(ZONE.ORPHAN, 0n, 1))?.kind, 'orphan');
  assert.equal(lockRangeOfStart(key(ZONE.XATTR_TOTL, 0n, 0))?.kind, 'totl');
  assert.equal(lockRangeOfStart(key(ZONE.LOCK, 0n, 1))?.kind, 'rename');
  assert.equal(lockRangeOfStart(key(ZONE.LOG_TREES, 0n, 0)), null);
  assert.equal(lockRangeOfStart(ONES_KEY), null);
  assert.deepEqual(lockInodeSpan(inodeLockRange(3000n)), { first: 2048n, last: 3071n });
  assert.equal(lockInodeSpan(orphanLockRange()), null);
});

test('modes: wire numbers, satisfies, read and write (PROTOCOL.md 6.1)', () => {
  assert.deepEqual(LOCK_MODE, { NULL: 0, READ: 1, WRITE: 2, WRITE_ONLY: 3 });
  assert.equal(lockModeName(2), 'WRITE');
  assert.equal(lockModeName(4), null);
  assert.equal(lockModeName(-1), null);
  assert.ok(lockModeSatisfies('WRITE', 'READ'));
  assert.ok(lockModeSatisfies('READ', 'READ'));
  assert.ok(!lockModeSatisfies('READ', 'WRITE'));
  assert.ok(!lockModeSatisfies('WRITE', 'WRITE_ONLY'), 'a WRITE grant does not satisfy WRITE_ONLY');
  assert.ok(!lockModeSatisfies('WRITE_ONLY', 'READ'));
  assert.ok(!lockModeSatisfies('NULL', 'READ'));
  assert.deepEqual(['NULL', 'READ', 'WRITE', 'WRITE_ONLY'].map((m) => lockModeCanRead(m as never)), [false, true, true, false]);
  assert.deepEqual(['NULL', 'READ', 'WRITE', 'WRITE_ONLY'].map((m) => lockModeCanWrite(m as never)), [false, false, true, true]);
});

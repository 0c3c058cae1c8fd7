/*
 * Cluster lock names and modes (PROTOCOL.md 6.1, 6.2; FORMAT.md 8.7, 10.3):
 * the one place that says which key range a cluster lock covers, which
 * start key names it on the wire and in the bloom filters, and what the
 * mode numbers of `scoutfs_net_lock` mean.
 *
 *   lock            start key (other fields 0)          end key
 *   inode group     zone 4, first = ino & ~1023          zone 4, first = ino | 1023, type/second/third/fourth ones
 *   inode index     zone 1, type T, second = M & ~1023   zone 1, type T, second = M | 1023, third ones
 *   orphan          zone 2, type 1                       zone 2, type 1, second ones
 *   xattr totl      zone 3                               zone 3, first/type/second/third/fourth ones
 *   rename          zone 5, type 1 (RENAME)              the same key
 *
 * A lock is named by its start key only: that is what travels in LOCK and
 * LOCK_RECOVER messages (the server never sees an end) and what a writer
 * hashes into the bloom filter of every log tree it writes an item to.
 * Readers hash the start key of the lock they hold and skip log trees
 * whose bloom lacks it, so the writer's bloom key must be exactly the start
 * key of the lock covering the item: this table is the contract between
 * the forest (bloom bits), the item cache (reads clipped to a lock range),
 * the lock client (what it invalidates) and the filesystem (what it locks).
 *
 * Which lock covers which item: FS zone items of inode N (the inode, its
 * xattrs, dirents and readdir entries of directory N, backrefs to N,
 * symlink targets, extents) are under N's inode group lock; index items of
 * major M under the index lock of (type, M); every orphan item under the
 * one orphan lock; every totl item under the one totl lock.  The rename
 * lock covers no items (zone 5 is never stored): it serializes renames
 * across the cluster.
 *
 * Modes (the u8 values on the wire): NULL 0, READ 1, WRITE 2, WRITE_ONLY 3.
 * Locally a granted mode satisfies a wanted one when they are equal or the
 * grant is WRITE and READ is wanted (6.1).  Which pairs may be held at once
 * by different mounts is the lock server's rule (src/server/lock.ts).
 *
 * Pure functions; no state.  An item key of a zone that has no fs lock
 * (the server's private zones) asks a question that has no answer: that
 * is our bug and asserts.  A start key received from the network is
 * checked with lockRangeOfStart(), which returns null instead.
 */
import assert from 'node:assert/strict';
import { U64_MAX } from './layout.js';
import { key, compareKeys, type Key } from './key.js';
import { ZONE, ORPHAN_TYPE, INDEX_TYPE, LOCK_TYPE_RENAME } from './items.js';
import { LOCK_SEQ_GROUP_MASK } from './constants.js';

/* ---- modes ---------------------------------------------------------------- */

export const LOCK_MODE = { NULL: 0, READ: 1, WRITE: 2, WRITE_ONLY: 3 } as const;
export type LockModeName = keyof typeof LOCK_MODE;
export type LockModeNumber = (typeof LOCK_MODE)[LockModeName];
/** The modes a user can hold (NULL is "not held"). */
export type HeldLockMode = Exclude<LockModeName, 'NULL'>;

const MODE_NAMES: readonly LockModeName[] = ['NULL', 'READ', 'WRITE', 'WRITE_ONLY'];

/** The name of a wire mode, or null when the byte is not a mode. */
export function lockModeName(n: number): LockModeName | null {
  return Number.isInteger(n) && n >= 0 && n < MODE_NAMES.length ? MODE_NAMES[n]! : null;
}

export function lockModeNumber(m: LockModeName): LockModeNumber {
  return LOCK_MODE[m];
}

/** 6.1: a granted mode satisfies a wanted mode when equal, or granted WRITE and wanted READ. */
export function lockModeSatisfies(granted: LockModeName, wanted: LockModeName): boolean {
  return granted === wanted || (granted === 'WRITE' && wanted === 'READ');
}

/** Can a holder of this mode read items (populate the item cache)? */
export function lockModeCanRead(m: LockModeName): boolean {
  return m === 'READ' || m === 'WRITE';
}

/** Can a holder of this mode write items? */
export function lockModeCanWrite(m: LockModeName): boolean {
  return m === 'WRITE' || m === 'WRITE_ONLY';
}

/* ---- key ranges --------------------------------------------------------------- */

/** An inclusive key range [start, end]. */
export interface KeyRange {
  start: Key;
  end: Key;
}

/** What a lock covers, by kind (the filesystem picks its locks by these names). */
export type LockKind = 'inode' | 'index' | 'orphan' | 'totl' | 'rename';

const GROUP_MASK = LOCK_SEQ_GROUP_MASK; // 1023: inode groups and index seq groups are both 1024 wide

/** The lock of the 1024-inode group holding ino: every FS zone item of those inodes. */
export function inodeLockRange(ino: bigint): KeyRange {
  return {
    start: key(ZONE.FS, ino & ~GROUP_MASK, 0),
    end: key(ZONE.FS, ino | GROUP_MASK, 0xff, U64_MAX, U64_MAX, 0xff),
  };
}

/** The lock of the 1024 seqs of one index (INDEX_TYPE) holding major. */
export function indexLockRange(type: number, major: bigint): KeyRange {
  assert(type === INDEX_TYPE.META_SEQ || type === INDEX_TYPE.DATA_SEQ, `index type ${type}`);
  return {
    start: key(ZONE.INODE_INDEX, 0n, type, major & ~GROUP_MASK),
    end: key(ZONE.INODE_INDEX, 0n, type, major | GROUP_MASK, U64_MAX, 0),
  };
}

/** The one orphan lock. */
export function orphanLockRange(): KeyRange {
  return { start: key(ZONE.ORPHAN, 0n, ORPHAN_TYPE), end: key(ZONE.ORPHAN, 0n, ORPHAN_TYPE, U64_MAX) };
}

/** The one xattr totl lock. */
export function totlLockRange(): KeyRange {
  return { start: key(ZONE.XATTR_TOTL, 0n, 0), end: key(ZONE.XATTR_TOTL, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff) };
}

/** The global rename lock: one key, covering no items. */
export function renameLockRange(): KeyRange {
  const k = key(ZONE.LOCK, 0n, LOCK_TYPE_RENAME);
  return { start: k, end: { ...k } };
}

/** The lock range covering an item key of a forest zone. */
export function lockRangeOf(k: Key): KeyRange {
  switch (k.zone) {
    case ZONE.FS:
      return inodeLockRange(k.first);
    case ZONE.INODE_INDEX:
      // Index items of an unknown type still group by (type, major): the
      // bloom key must be the same on both sides whatever the type byte.
      return {
        start: key(ZONE.INODE_INDEX, 0n, k.type, k.second & ~GROUP_MASK),
        end: key(ZONE.INODE_INDEX, 0n, k.type, k.second | GROUP_MASK, U64_MAX, 0),
      };
    case ZONE.ORPHAN:
      return orphanLockRange();
    case ZONE.XATTR_TOTL:
      return totlLockRange();
    default:
      assert.fail(`zone ${k.zone} items are not stored in the forest and have no fs lock`);
  }
}

/** The bloom key of an item: the start key of its lock. */
export function lockStartKey(k: Key): Key {
  return lockRangeOf(k).start;
}

/**
 * The range and kind of the lock a start key names, or null when the key
 * is not the start key of any lock (input from the network is checked
 * with this).
 */
export function lockRangeOfStart(start: Key): { kind: LockKind; range: KeyRange } | null {
  let kind: LockKind;
  let range: KeyRange;
  switch (start.zone) {
    case ZONE.FS:
      kind = 'inode';
      range = inodeLockRange(start.first);
      break;
    case ZONE.INODE_INDEX:
      if (start.type !== INDEX_TYPE.META_SEQ && start.type !== INDEX_TYPE.DATA_SEQ) return null;
      kind = 'index';
      range = indexLockRange(start.type, start.second);
      break;
    case ZONE.ORPHAN:
      kind = 'orphan';
      range = orphanLockRange();
      break;
    case ZONE.XATTR_TOTL:
      kind = 'totl';
      range = totlLockRange();
      break;
    case ZONE.LOCK:
      kind = 'rename';
      range = renameLockRange();
      break;
    default:
      return null;
  }
  return compareKeys(range.start, start) === 0 ? { kind, range } : null;
}

/** The inode numbers an inode group lock covers, or null for the other kinds. */
export function lockInodeSpan(r: KeyRange): { first: bigint; last: bigint } | null {
  if (r.start.zone !== ZONE.FS) return null;
  return { first: r.start.first, last: r.end.first };
}

export function keyInRange(k: Key, r: KeyRange): boolean {
  return compareKeys(k, r.start) >= 0 && compareKeys(k, r.end) <= 0;
}

/** Zones whose items live in fs_root and the log trees. */
export function isForestZone(zone: number): boolean {
  return zone === ZONE.INODE_INDEX || zone === ZONE.ORPHAN || zone === ZONE.XATTR_TOTL || zone === ZONE.FS;
}

export const minKey = (a: Key, b: Key): Key => (compareKeys(a, b) <= 0 ? a : b);
export const maxKey = (a: Key, b: Key): Key => (compareKeys(a, b) >= 0 ? a : b);

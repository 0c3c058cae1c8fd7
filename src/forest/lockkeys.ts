/*
 * Lock ranges of fs items (PROTOCOL.md 6.2, FORMAT.md 10.3): which cluster
 * lock covers an item key, and so which start key goes into the bloom
 * filter of every log tree the item is written to.
 *
 *   items                          lock start key (other fields 0)
 *   zone 4 FS, first = N           zone 4, first = N & ~1023
 *   zone 1 index, type T, major M  zone 1, type T, second = M & ~1023
 *   zone 2 orphan                  zone 2, type 1
 *   zone 3 xattr totl              zone 3
 *
 * The end keys follow the same table: an inode group lock ends at
 * first = N | 1023 with every lower field all ones, an index lock at
 * second = M | 1023 with third all ones, the orphan lock at second all
 * ones, the totl lock with everything below the zone all ones.
 *
 * What it owns.  Only the arithmetic; it is pure.  The bloom key of an item
 * must be exactly the start key of the lock the writer held, or readers
 * (who compute it from the lock they hold) skip the tree and miss the item:
 * the FORMAT.md table is the contract on both sides.  An item key in any
 * other zone never reaches the forest; asking for its lock is a bug and
 * asserts.
 *
 * Why it lives here.  The forest needs it (bloom bits) and the layering
 * lets the forest import neither the lock client nor anything above it.  The
 * lock client will need the very same function; the right home is
 * src/format/ (it is layout knowledge), where it should move when the lock
 * client is written, since this task may not edit src/format/.
 */
import assert from 'node:assert/strict';
import { U64_MAX } from '../format/layout.js';
import { key, compareKeys, type Key } from '../format/key.js';
import { ZONE, ORPHAN_TYPE } from '../format/items.js';
import { LOCK_SEQ_GROUP_MASK } from '../format/constants.js';

/** An inclusive key range [start, end]. */
export interface KeyRange {
  start: Key;
  end: Key;
}

const GROUP_MASK = LOCK_SEQ_GROUP_MASK; // 1023: inode groups and index seq groups are both 1024 wide

/** The lock range covering an fs item key. */
export function lockRangeOf(k: Key): KeyRange {
  switch (k.zone) {
    case ZONE.FS:
      return {
        start: key(ZONE.FS, k.first & ~GROUP_MASK, 0),
        end: key(ZONE.FS, k.first | GROUP_MASK, 0xff, U64_MAX, U64_MAX, 0xff),
      };
    case ZONE.INODE_INDEX:
      return {
        start: key(ZONE.INODE_INDEX, 0n, k.type, k.second & ~GROUP_MASK),
        end: key(ZONE.INODE_INDEX, 0n, k.type, k.second | GROUP_MASK, U64_MAX, 0),
      };
    case ZONE.ORPHAN:
      return {
        start: key(ZONE.ORPHAN, 0n, ORPHAN_TYPE),
        end: key(ZONE.ORPHAN, 0n, ORPHAN_TYPE, U64_MAX),
      };
    case ZONE.XATTR_TOTL:
      return {
        start: key(ZONE.XATTR_TOTL, 0n, 0),
        end: key(ZONE.XATTR_TOTL, U64_MAX, 0xff, U64_MAX, U64_MAX, 0xff),
      };
    default:
      assert.fail(`zone ${k.zone} items are not stored in the forest and have no fs lock`);
  }
}

/** The bloom key of an item: the start key of its lock. */
export function lockStartKey(k: Key): Key {
  return lockRangeOf(k).start;
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

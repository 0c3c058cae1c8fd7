/*
 * Transitional: the lock names moved to src/format/lock.ts (the one place
 * they are written down).  src/fs/fs.ts still imports them from here until
 * the filesystem split lands; then this file goes.  Nothing is defined
 * here, only re-exported.
 */
export { lockRangeOf, lockStartKey, keyInRange, isForestZone, minKey, maxKey, type KeyRange } from '../format/lock.js';

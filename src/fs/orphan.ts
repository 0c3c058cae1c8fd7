/*
 * Orphans and final deletion (PROTOCOL.md 10.3), as scoutfs's inode.c
 * eviction path.  When the last link goes away and the inode is open here,
 * an orphan item (2.0.1.ino, no value) is created and the inode lives on
 * until the last release, which deletes its extents, xattrs (logging the
 * srch and totl changes of tagged ones), symlink items, index items, inode
 * item and orphan item.  Inodes with no opens are deleted at once.  At
 * mount, orphan items left by a crashed mount are finished.
 *
 * Open counts live in FsCore.opens (main thread only).  Invariant: an
 * inode with nlink 0 and an item either has an open count here or an
 * orphan item (a crash leaves only the orphan item).
 *
 * Left out: the periodic orphan scan of other mounts' orphans (single
 * node: orphans are handled at release and at mount).
 */
import assert from 'node:assert/strict';
import { FsError } from '../format/errors.js';
import { FS_TYPE, INDEX_TYPE, ZONE, decodeInode, indexKey, inodeKey, orphanKey, type Inode } from '../format/items.js';
import { key } from '../format/key.js';
import { U64_MAX } from '../format/layout.js';
import type { TransHold } from '../trans/trans.js';
import { ignoreEnoent, isReg, type FsCore } from './core.js';
import { truncateBlocks } from './data.js';
import { forgetXattrPart } from './xattr.js';

/** Delete everything of an unlinked inode (10.3). */
export async function deleteInode(c: FsCore, h: TransHold, ino: bigint, i: Inode): Promise<void> {
  assert(i.nlink === 0, `deleting inode ${ino} with nlink ${i.nlink}`);
  if (isReg(i)) await truncateBlocks(c, ino, i, 0n);
  // xattrs and symlink chunks: every remaining item of this inode except the inode itself
  for (const type of [FS_TYPE.XATTR, FS_TYPE.SYMLINK, FS_TYPE.DATA_EXTENT]) {
    const last = key(ZONE.FS, ino, type, U64_MAX, U64_MAX, 0xff);
    for (let it = await c.nextItem(key(ZONE.FS, ino, type), last); it !== null; it = await c.nextItem(key(ZONE.FS, ino, type), last)) {
      // The first part of an xattr carries its name.
      if (type === FS_TYPE.XATTR && it.key.fourth === 0) await forgetXattrPart(c, h, ino, it.key.third, it.val);
      await c.deleteItem(it.key);
    }
  }
  await c.deleteItem(indexKey(INDEX_TYPE.META_SEQ, i.meta_seq, ino)).catch(ignoreEnoent);
  if (isReg(i)) await c.deleteItem(indexKey(INDEX_TYPE.DATA_SEQ, i.data_seq, ino)).catch(ignoreEnoent);
  await c.deleteItem(inodeKey(ino));
  if ((await c.lookupItem(orphanKey(ino))) !== null) await c.deleteItem(orphanKey(ino));
  c.d.trans.addInodeCount(h, -1n);
  c.counters.inodesDeleted++;
}

/** nlink reached 0: delete now, or orphan it while it is open. */
export async function dropInode(c: FsCore, h: TransHold, ino: bigint, i: Inode): Promise<void> {
  if ((c.opens.get(ino) ?? 0) > 0) {
    await c.putInode(h, ino, i);
    if ((await c.lookupItem(orphanKey(ino))) === null) await c.createItem(orphanKey(ino), new Uint8Array(0));
    c.counters.orphansCreated++;
  } else {
    await deleteInode(c, h, ino, i);
  }
}

/** Finish the deletion of inodes a previous mount left as orphans. */
export async function recoverOrphans(c: FsCore): Promise<void> {
  const first = orphanKey(0n);
  const last = orphanKey(U64_MAX);
  const inos: bigint[] = [];
  for (let it = await c.nextItem(first, last); it !== null; it = it.key.second === U64_MAX ? null : await c.nextItem(orphanKey(it.key.second + 1n), last)) {
    inos.push(it.key.second);
  }
  for (const ino of inos) {
    await c.modify(async (h) => {
      const v = await c.lookupItem(inodeKey(ino));
      if (v === null || decodeInode(v).nlink !== 0) {
        await c.deleteItem(orphanKey(ino));
        return;
      }
      await deleteInode(c, h, ino, decodeInode(v));
      c.counters.orphansRecovered++;
    }, false);
  }
  if (c.counters.orphansRecovered > 0) {
    c.d.log(`finished the deletion of ${c.counters.orphansRecovered} unlinked inode(s) a previous mount left open`);
  }
}

export async function openInode(c: FsCore, ino: bigint): Promise<void> {
  await c.getInode(ino);
  c.opens.set(ino, (c.opens.get(ino) ?? 0) + 1);
}

/**
 * Drop one open count (under the exclusive fs lock); the last release of
 * an unlinked inode deletes it.  After destroy() only the count changes.
 */
export async function releaseInode(c: FsCore, ino: bigint): Promise<void> {
  const n = c.opens.get(ino) ?? 0;
  if (n === 0) throw new FsError('EBADF', `release of inode ${ino} that is not open`);
  if (n > 1) {
    c.opens.set(ino, n - 1);
    return;
  }
  c.opens.delete(ino);
  if (c.destroyed) return;
  const v = await c.lookupItem(inodeKey(ino));
  if (v === null || decodeInode(v).nlink !== 0) return;
  const h = await c.d.trans.hold();
  try {
    await deleteInode(c, h, ino, decodeInode(v));
  } finally {
    c.d.trans.release(h);
  }
}

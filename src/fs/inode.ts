/*
 * Inode attributes, as scoutfs's inode.c: getattr and setattr over the
 * 160-byte inode item (4.ino.1, FORMAT.md 8.1).  Item access and the seq
 * rules (meta_seq and data_seq move to the transaction's seq with their
 * index items) live in FsCore.putInode (src/fs/core.ts).
 *
 * setattr: a size change frees or zero-fills through data.ts and bumps
 * data_version and mtime; mode keeps the file type bits; ctime is always
 * now.  Every function runs inside the unit of work the caller opened.
 */
import { FsError } from '../format/errors.js';
import { U64_MAX } from '../format/layout.js';
import type { TransHold } from '../trans/trans.js';
import type { Attr, SetAttr } from './api.js';
import { S_IFMT, isDir, isReg, type FsCore } from './core.js';
import { truncateBlocks } from './data.js';

export async function getattr(c: FsCore, ino: bigint): Promise<Attr> {
  return c.toAttr(ino, await c.getInode(ino));
}

export async function setattr(c: FsCore, h: TransHold, ino: bigint, set: SetAttr): Promise<Attr> {
  const i = await c.getInode(ino);
  const now = c.now();
  let data = false;
  if (set.size !== undefined) {
    if (isDir(i)) throw new FsError('EISDIR');
    if (!isReg(i)) throw new FsError('EINVAL', 'size of a non-regular file');
    if (set.size < 0n || set.size > U64_MAX / 2n) throw new FsError('EINVAL');
    if (set.size < i.size) await truncateBlocks(c, ino, i, set.size);
    if (set.size !== i.size) {
      i.size = set.size;
      i.data_version++;
      i.mtime = now;
    }
    data = true;
  }
  if (set.mode !== undefined) i.mode = (i.mode & S_IFMT) | (set.mode & ~S_IFMT);
  if (set.uid !== undefined) i.uid = set.uid;
  if (set.gid !== undefined) i.gid = set.gid;
  if (set.atime !== undefined) i.atime = set.atime;
  if (set.mtime !== undefined) i.mtime = set.mtime;
  i.ctime = now;
  await c.putInode(h, ino, i, data);
  return c.toAttr(ino, i);
}

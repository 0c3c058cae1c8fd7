/*
 * Directories and names (PROTOCOL.md 10.2), as scoutfs's dir.c: each entry
 * is stored three times with the same value (32-byte dirent + name bytes):
 *
 *   dirent   4.dir.3.namehash.pos    lookup by name
 *   readdir  4.dir.4.pos             readdir in position order
 *   backref  4.ino.5.dir.pos         the links of an inode (parent of a dir)
 *
 * Positions come from the directory's next_readdir_pos (0 and 1 are "."
 * and ".."), so readdir offsets are stable.  A directory's size is the sum
 * of its entries' name lengths.  Names are raw bytes (no encoding), 1..255
 * of them, without '/' or NUL.  Symlink targets are stored in 896-byte
 * chunks (4.ino.6.nr) of the target plus a NUL.
 *
 * Every function here runs inside a unit of work the caller (src/fs/fs.ts)
 * opened: reading() for lookup/readdir/readlink, modify() with its hold for
 * the rest.  A set-group-ID directory gives new inodes its group and new
 * directories its S_ISGID bit (the kernel's inode_init_owner).
 *
 * Left out: the rename lock (single node).
 */
import { CorruptionError, FsError } from '../format/errors.js';
import { DT, backrefKey, decodeDirent, direntKey, encodeDirent, orphanKey, readdirKey, symlinkKey, type Dirent, type Inode } from '../format/items.js';
import { direntNameHash } from '../format/hash.js';
import { U64_MAX } from '../format/layout.js';
import type { Timespec } from '../format/common.js';
import type { TransHold } from '../trans/trans.js';
import type { Attr, Ctx, DirEntry } from './api.js';
import { NAME_MAX, ROOT_INO, S_IFLNK, S_IFMT, S_IFREG, S_ISGID, bytesEq, dtOfMode, isDir, isLnk, lockFor, type FsCore } from './core.js';
import { dropInode } from './orphan.js';
import { PART_BYTES } from './xattr.js';

export const SYMLINK_MAX = 4096; // including the NUL

function checkName(name: Uint8Array): void {
  if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${name.length} bytes`);
  if (name.length === 0) throw new FsError('ENOENT', 'empty name');
  if (name.includes(0x2f) || name.includes(0)) throw new FsError('EINVAL', 'name with / or NUL');
}

async function getDir(c: FsCore, ino: bigint): Promise<Inode> {
  const i = await c.getInode(ino);
  if (!isDir(i)) throw new FsError('ENOTDIR', `inode ${ino}`);
  return i;
}

async function findDirent(c: FsCore, dir: bigint, name: Uint8Array): Promise<Dirent | null> {
  const hash = direntNameHash(name);
  const last = direntKey(dir, hash, U64_MAX);
  let k = direntKey(dir, hash, 0n);
  for (;;) {
    const it = await c.nextItem(k, last);
    if (it === null) return null;
    const d = decodeDirent(it.val);
    if (d === null) throw new CorruptionError('fs items', null, 'structure', `dirent in dir ${dir} of ${it.val.length} bytes`);
    if (bytesEq(d.name, name)) return d;
    if (it.key.third === U64_MAX) return null;
    k = direntKey(dir, hash, it.key.third + 1n);
  }
}

async function addEntry(c: FsCore, dirIno: bigint, dir: Inode, name: Uint8Array, ino: bigint, type: number): Promise<void> {
  const pos = dir.next_readdir_pos++;
  const hash = direntNameHash(name);
  const val = encodeDirent({ ino, hash, pos, type, name });
  await c.createItem(direntKey(dirIno, hash, pos), val);
  await c.createItem(readdirKey(dirIno, pos), val);
  await c.createItem(backrefKey(ino, dirIno, pos), val);
  dir.size += BigInt(name.length);
}

async function removeEntry(c: FsCore, dirIno: bigint, dir: Inode, d: Dirent): Promise<void> {
  await c.deleteItem(direntKey(dirIno, d.hash, d.pos));
  await c.deleteItem(readdirKey(dirIno, d.pos));
  await c.deleteItem(backrefKey(d.ino, dirIno, d.pos));
  dir.size -= BigInt(d.name.length);
}

async function dirIsEmpty(c: FsCore, ino: bigint): Promise<boolean> {
  return (await c.nextItem(readdirKey(ino, 0n), readdirKey(ino, U64_MAX))) === null;
}

/** The parent of a directory (its one backref), null for the root. */
export async function parentOf(c: FsCore, dir: bigint): Promise<bigint | null> {
  if (dir === ROOT_INO) return null;
  const it = await c.nextItem(backrefKey(dir, 0n, 0n), backrefKey(dir, U64_MAX, U64_MAX));
  return it === null ? null : it.key.second;
}

export async function lookup(c: FsCore, dir: bigint, name: Uint8Array): Promise<Attr> {
  if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
  await getDir(c, dir);
  const d = await findDirent(c, dir, name);
  if (d === null) throw new FsError('ENOENT');
  return c.toAttr(d.ino, await c.getInode(d.ino));
}

/**
 * Create an inode of `mode` named `name` in `dir`; `fill` writes its
 * content items (a symlink's target) before the entry appears.
 */
export async function makeNode(
  c: FsCore, h: TransHold, dir: bigint, name: Uint8Array, mode: number, rdev: number, ctx: Ctx,
  fill?: (h: TransHold, ino: bigint, i: Inode) => Promise<void>,
): Promise<Attr> {
  checkName(name);
  const type = dtOfMode(mode);
  const di = await getDir(c, dir);
  if ((await findDirent(c, dir, name)) !== null) throw new FsError('EEXIST');
  if ((di.mode & S_ISGID) !== 0) {
    ctx = { uid: ctx.uid, gid: di.gid };
    if (type === DT.DIR) mode |= S_ISGID;
  }
  const { ino, i } = await c.newInode(h, mode, rdev, ctx);
  if (fill !== undefined) await fill(h, ino, i);
  await addEntry(c, dir, di, name, ino, type);
  if (type === DT.DIR) di.nlink++;
  di.mtime = di.ctime = i.ctime;
  await c.putInode(h, dir, di);
  if (fill !== undefined) await c.putInode(h, ino, i, true);
  return c.toAttr(ino, i);
}

/** Checks that need no items; the caller rejects before opening a unit. */
export function checkSymlinkTarget(target: Uint8Array): void {
  if (target.length === 0) throw new FsError('ENOENT', 'empty symlink target');
  if (target.length + 1 > SYMLINK_MAX) throw new FsError('ENAMETOOLONG', `symlink target of ${target.length} bytes`);
}

export function symlink(c: FsCore, h: TransHold, dir: bigint, name: Uint8Array, target: Uint8Array, ctx: Ctx): Promise<Attr> {
  return makeNode(c, h, dir, name, S_IFLNK | 0o777, 0, ctx, async (_h, ino, i) => {
    const full = new Uint8Array(target.length + 1);
    full.set(target);
    for (let nr = 0; nr * PART_BYTES < full.length; nr++) {
      await c.createItem(symlinkKey(ino, nr), full.slice(nr * PART_BYTES, (nr + 1) * PART_BYTES));
    }
    i.size = BigInt(full.length);
  });
}

export async function readlink(c: FsCore, ino: bigint): Promise<Uint8Array> {
  const i = await c.getInode(ino);
  if (!isLnk(i)) throw new FsError('EINVAL', 'not a symlink');
  const chunks: Uint8Array[] = [];
  let got = 0;
  for (let nr = 0; got < Number(i.size); nr++) {
    const v = await c.lookupItem(symlinkKey(ino, nr));
    if (v === null || v.length === 0) throw new CorruptionError('fs items', null, 'structure', `symlink ${ino} item ${nr} missing`);
    chunks.push(v);
    got += v.length;
  }
  const all = Buffer.concat(chunks);
  if (all.length !== Number(i.size) || all[all.length - 1] !== 0) {
    throw new CorruptionError('fs items', null, 'structure', `symlink ${ino} target is not ${i.size} bytes ending in NUL`);
  }
  return new Uint8Array(all.subarray(0, all.length - 1));
}

export async function link(c: FsCore, h: TransHold, ino: bigint, dir: bigint, name: Uint8Array): Promise<Attr> {
  checkName(name);
  const di = await getDir(c, dir);
  const i = await c.getInode(ino);
  if (isDir(i)) throw new FsError('EPERM', 'hard link to a directory');
  if ((await findDirent(c, dir, name)) !== null) throw new FsError('EEXIST');
  await addEntry(c, dir, di, name, ino, dtOfMode(i.mode));
  if (i.nlink === 0 && (await c.lookupItem(orphanKey(ino))) !== null) await c.deleteItem(orphanKey(ino));
  i.nlink++;
  const now = c.now();
  i.ctime = now;
  di.mtime = di.ctime = now;
  await c.putInode(h, dir, di);
  await c.putInode(h, ino, i);
  return c.toAttr(ino, i);
}

/** Drop one link of `ino` (the entry is already removed). */
async function unlinkInode(c: FsCore, h: TransHold, ino: bigint, now: Timespec): Promise<void> {
  const i = await c.getInode(ino);
  i.ctime = now;
  i.nlink = isDir(i) ? 0 : i.nlink - 1;
  if (i.nlink === 0) await dropInode(c, h, ino, i);
  else await c.putInode(h, ino, i);
}

export async function unlink(c: FsCore, h: TransHold, dir: bigint, name: Uint8Array): Promise<void> {
  if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
  const di = await getDir(c, dir);
  const d = await findDirent(c, dir, name);
  if (d === null) throw new FsError('ENOENT');
  if (d.type === DT.DIR) throw new FsError('EISDIR');
  await removeEntry(c, dir, di, d);
  const now = c.now();
  di.mtime = di.ctime = now;
  await c.putInode(h, dir, di);
  await unlinkInode(c, h, d.ino, now);
}

export async function rmdir(c: FsCore, h: TransHold, dir: bigint, name: Uint8Array): Promise<void> {
  if (name.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
  const di = await getDir(c, dir);
  const d = await findDirent(c, dir, name);
  if (d === null) throw new FsError('ENOENT');
  if (d.type !== DT.DIR) throw new FsError('ENOTDIR');
  if (!(await dirIsEmpty(c, d.ino))) throw new FsError('ENOTEMPTY');
  await removeEntry(c, dir, di, d);
  const now = c.now();
  di.nlink--;
  di.mtime = di.ctime = now;
  await c.putInode(h, dir, di);
  await unlinkInode(c, h, d.ino, now);
}

/** rename(2); with `noreplace` (RENAME_NOREPLACE) an existing target is EEXIST. */
export async function rename(
  c: FsCore, h: TransHold, fromDir: bigint, fromName: Uint8Array, toDir: bigint, toName: Uint8Array, noreplace = false,
): Promise<void> {
  if (fromName.length > NAME_MAX) throw new FsError('ENAMETOOLONG');
  checkName(toName);
  const fd = await getDir(c, fromDir);
  const td = toDir === fromDir ? fd : await getDir(c, toDir);
  const src = await findDirent(c, fromDir, fromName);
  if (src === null) throw new FsError('ENOENT');
  const srcIsDir = src.type === DT.DIR;
  // Never move a directory under itself.
  if (srcIsDir && toDir !== fromDir) {
    for (let p: bigint | null = toDir; p !== null; p = await parentOf(c, p)) {
      if (p === src.ino) throw new FsError('EINVAL', 'rename of a directory under itself');
    }
  }
  const dst = await findDirent(c, toDir, toName);
  if (dst !== null && noreplace) throw new FsError('EEXIST');
  if (dst !== null && dst.ino === src.ino) return; // the same inode: nothing to do (POSIX)
  if (dst !== null) {
    const dstIsDir = dst.type === DT.DIR;
    if (srcIsDir && !dstIsDir) throw new FsError('ENOTDIR');
    if (!srcIsDir && dstIsDir) throw new FsError('EISDIR');
    if (dstIsDir && !(await dirIsEmpty(c, dst.ino))) throw new FsError('ENOTEMPTY');
  }
  const now = c.now();
  if (dst !== null) {
    await removeEntry(c, toDir, td, dst);
    if (dst.type === DT.DIR) td.nlink--;
    await unlinkInode(c, h, dst.ino, now);
  }
  await removeEntry(c, fromDir, fd, src);
  await addEntry(c, toDir, td, toName, src.ino, src.type);
  if (srcIsDir && toDir !== fromDir) {
    fd.nlink--;
    td.nlink++;
  }
  fd.mtime = fd.ctime = now;
  td.mtime = td.ctime = now;
  await c.putInode(h, fromDir, fd);
  if (toDir !== fromDir) await c.putInode(h, toDir, td);
  const si = await c.getInode(src.ino);
  si.ctime = now;
  await c.putInode(h, src.ino, si);
}

export async function readdir(c: FsCore, dir: bigint, pos: bigint, max: number): Promise<DirEntry[]> {
  await getDir(c, dir);
  const out: DirEntry[] = [];
  const last = readdirKey(dir, U64_MAX - 1n);
  const k = readdirKey(dir, pos);
  for (const it of await c.items.nextN(k, last, lockFor(k), max)) {
    const d = decodeDirent(it.val);
    if (d === null) throw new CorruptionError('fs items', null, 'structure', `readdir item in dir ${dir} of ${it.val.length} bytes`);
    out.push({ name: d.name, ino: d.ino, type: d.type, pos: it.key.second });
  }
  return out;
}


/**
 * O_TMPFILE: a regular file with no name (nlink 0), open once, kept by an
 * orphan item until its last release (or until a later mount finishes it
 * after a crash), as scoutfs's tmpfile does.  `dir` must exist and be a
 * directory; the new inode takes its set-group-ID rule like a create.
 */
export async function tmpfile(c: FsCore, h: TransHold, dir: bigint, mode: number, ctx: Ctx): Promise<Attr> {
  const di = await getDir(c, dir);
  if ((di.mode & S_ISGID) !== 0) ctx = { uid: ctx.uid, gid: di.gid };
  const { ino, i } = await c.newInode(h, (mode & ~S_IFMT) | S_IFREG, 0, ctx);
  i.nlink = 0;
  await c.putInode(h, ino, i, true);
  await c.createItem(orphanKey(ino), new Uint8Array(0));
  c.opens.set(ino, (c.opens.get(ino) ?? 0) + 1);
  c.counters.orphansCreated++;
  return c.toAttr(ino, i);
}

/*
 * Inode number to paths (PROTOCOL.md 9.3 INO_PATH, `scoutfs ino-path`),
 * from the LINK_BACKREF items that every link stores (FORMAT.md 8.6.3):
 *
 *   4.ino.5.dir.pos  ->  dirent (ino, hash, pos, type, name)
 *
 * One path per backref of the inode: the link's name, then each parent
 * directory's own name up to the root (a directory has exactly one
 * backref, its entry in its parent).  Paths are absolute within the
 * filesystem: "/" + names joined by "/"; the root's path is "/".  The
 * reference ioctl returns one path per call after a (dir_ino, dir_pos)
 * cursor; we return them all in backref order ((dir, pos) order), which is
 * what the CLI's loop prints.  Runs inside a reading() unit (src/fs/fs.ts),
 * so no rename is seen half done.
 *
 * Failures: no such inode, or an inode with no links (unlinked but still
 * open), is ENOENT.  A directory without a backref other than the root,
 * a chain longer than MAX_DEPTH or a bad dirent value is corruption (EIO).
 */
import { CorruptionError, FsError } from '../format/errors.js';
import { backrefKey, decodeDirent } from '../format/items.js';
import { U64_MAX } from '../format/layout.js';
import { ROOT_INO, type FsCore } from './core.js';

const MAX_DEPTH = 4096;

async function backrefs(c: FsCore, ino: bigint, max: number): Promise<{ dir: bigint; name: Uint8Array }[]> {
  const out: { dir: bigint; name: Uint8Array }[] = [];
  const last = backrefKey(ino, U64_MAX, U64_MAX);
  for (let k = backrefKey(ino, 0n, 0n); out.length < max;) {
    const it = await c.nextItem(k, last);
    if (it === null) break;
    const d = decodeDirent(it.val);
    if (d === null || d.ino !== ino) throw new CorruptionError('fs items', null, 'structure', `link backref of inode ${ino} in dir ${it.key.second}`);
    out.push({ dir: it.key.second, name: d.name });
    if (it.key.third === U64_MAX) {
      if (it.key.second === U64_MAX) break;
      k = backrefKey(ino, it.key.second + 1n, 0n);
    } else {
      k = backrefKey(ino, it.key.second, it.key.third + 1n);
    }
  }
  return out;
}

/** Every path of `ino` as name bytes joined by "/", absolute within the filesystem. */
export async function inoPaths(c: FsCore, ino: bigint): Promise<Uint8Array[]> {
  await c.getInode(ino);
  if (ino === ROOT_INO) return [new Uint8Array([0x2f])];
  const links = await backrefs(c, ino, Number.MAX_SAFE_INTEGER);
  if (links.length === 0) throw new FsError('ENOENT', `inode ${ino} has no links`);
  const out: Uint8Array[] = [];
  for (const l of links) {
    const parts: Uint8Array[] = [l.name];
    let dir = l.dir;
    for (let depth = 0; dir !== ROOT_INO; depth++) {
      if (depth >= MAX_DEPTH) throw new CorruptionError('fs items', null, 'structure', `directory chain of inode ${ino} deeper than ${MAX_DEPTH}`);
      const [up] = await backrefs(c, dir, 1);
      if (up === undefined) throw new CorruptionError('fs items', null, 'structure', `directory ${dir} has no link backref`);
      parts.unshift(up.name);
      dir = up.dir;
    }
    const bytes: number[] = [];
    for (const p of parts) bytes.push(0x2f, ...p);
    out.push(Uint8Array.from(bytes));
  }
  return out;
}

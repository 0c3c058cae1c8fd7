/*
 * Server-side inode number allocation (PROTOCOL.md 10.1, ALLOC_INODES) for
 * the single-node mount.
 *
 * super.next_ino (mkfs: 1024) is the next unallocated number.  A request for
 * `count` numbers returns (ino = next_ino, nr = min(count, ~0 - next_ino)),
 * advances next_ino and commits before answering, inside one commit queue
 * hold: a number handed out is durable before anyone can use it, so a crash
 * never hands the same number out twice.  nr == 0 is ENOSPC.  Numbers are
 * never reused; a mount's unused pool numbers are lost at unmount.
 *
 * It lives in src/mount/ (not src/server/) because it is the mount's
 * in-process stand-in until the networked server grows the ALLOC_INODES
 * handler; it only touches vol.sb.next_ino through the commit queue.
 */
import { FsError } from '../format/errors.js';
import { U64_MAX } from '../format/layout.js';
import type { CommitQueue } from '../server/commitq.js';

export async function allocInodes(commitq: CommitQueue, count: bigint): Promise<{ ino: bigint; nr: bigint }> {
  return commitq.run(async () => {
    const sb = commitq.vol.sb;
    const ino = sb.next_ino;
    const left = U64_MAX - ino;
    const nr = count < left ? count : left;
    if (nr <= 0n) throw new FsError('ENOSPC', 'inode numbers exhausted');
    sb.next_ino = ino + nr;
    return { ino, nr };
  });
}

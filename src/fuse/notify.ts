/*
 * src/fuse/notify.ts: the invalidation API.  The kernel caches entries
 * (names and negative names), attributes, file pages and directory
 * listings for an hour (ops.ts); whoever changes the filesystem behind the
 * kernel's back (another node through the cluster lock layer, the archive
 * interface, a test hook) calls one of these so the next syscall asks us
 * again:
 *
 *   inode(ino)             attributes, all pages and (for a directory) its
 *                          cached listing: FUSE_NOTIFY_INVAL_INODE off 0 len 0
 *   inodeAttrs(ino)        attributes only (off -1)
 *   inodePages(ino,o,l)    attributes and the pages of [o, o+l)
 *   entry(dir, name)       one name, positive or negative: INVAL_ENTRY
 *   deleted(dir,ino,name)  a name removed: NOTIFY_DELETE (the kernel drops
 *                          the dentry and, if it still points at `ino`,
 *                          marks that inode's link gone)
 *
 * Each returns a promise that settles when the kernel has done it.  The
 * kernel may need locks that a request in flight holds (INVAL_ENTRY takes
 * the directory's lock; dropping a dirty page under the writeback cache
 * writes it back first, which is a WRITE request to us), so:
 *   - the notification is written from the libuv pool, never on the main
 *     thread, and the main thread keeps answering requests meanwhile;
 *   - a request handler must never await one (it could wait for itself);
 *   - at most one notification is in the pool at a time (dev.ts queues the
 *     rest), so invalidations cannot take the pool threads the Fs needs.
 *
 * An inode or directory the kernel holds no reference to (lookup count 0,
 * session.ts) has nothing cached, so nothing is sent.  ENOENT from the
 * kernel (it let go of the inode meanwhile) is success.  Without a running
 * session (before INIT, after the unmount) invalidations are no-ops: there
 * is no cache to be wrong.
 *
 * Under the writeback cache the kernel owns the size and times of regular
 * files (it takes neither from our attributes once it has the inode), so
 * inode() refreshes everything else but not those; a mount whose files
 * change size behind its back (a cluster) must run without it.
 */
import { FsError } from '../format/errors.js';
import { NOTIFY, NOTIFY_DELETE_OUT, NOTIFY_INVAL_ENTRY_OUT, NOTIFY_INVAL_INODE_OUT, outHeader } from './proto.js';
import type { Session } from './session.js';

export interface Invalidator {
  inode(ino: bigint): Promise<void>;
  inodeAttrs(ino: bigint): Promise<void>;
  inodePages(ino: bigint, off: bigint, len: bigint): Promise<void>;
  entry(dir: bigint, name: Uint8Array): Promise<void>;
  deleted(dir: bigint, ino: bigint, name: Uint8Array): Promise<void>;
}

export interface NotifyCounters {
  sent: number;
  skipped: number;
  enoent: number;
}

export class Notifier implements Invalidator {
  readonly counters: NotifyCounters = { sent: 0, skipped: 0, enoent: 0 };

  constructor(private readonly session: Session, private readonly onInode: (ino: bigint) => void = () => {}) {}

  inode(ino: bigint): Promise<void> {
    return this.invalInode(ino, 0n, 0n);
  }

  inodeAttrs(ino: bigint): Promise<void> {
    return this.invalInode(ino, -1n, 0n);
  }

  inodePages(ino: bigint, off: bigint, len: bigint): Promise<void> {
    return this.invalInode(ino, off, len);
  }

  private invalInode(ino: bigint, off: bigint, len: bigint): Promise<void> {
    this.onInode(ino);
    if (this.session.lookupCount(ino) === 0n) {
      this.counters.skipped++;
      return Promise.resolve();
    }
    const b = Buffer.alloc(NOTIFY_INVAL_INODE_OUT.size);
    b.writeBigUInt64LE(ino, NOTIFY_INVAL_INODE_OUT.o('ino'));
    b.writeBigInt64LE(off, NOTIFY_INVAL_INODE_OUT.o('off'));
    b.writeBigInt64LE(len, NOTIFY_INVAL_INODE_OUT.o('len'));
    return this.send(NOTIFY.INVAL_INODE, [b]);
  }

  entry(dir: bigint, name: Uint8Array): Promise<void> {
    if (this.session.lookupCount(dir) === 0n) {
      this.counters.skipped++;
      return Promise.resolve();
    }
    const b = Buffer.alloc(NOTIFY_INVAL_ENTRY_OUT.size);
    b.writeBigUInt64LE(dir, NOTIFY_INVAL_ENTRY_OUT.o('parent'));
    b.writeUInt32LE(name.length, NOTIFY_INVAL_ENTRY_OUT.o('namelen'));
    return this.send(NOTIFY.INVAL_ENTRY, [b, name, NUL]);
  }

  deleted(dir: bigint, ino: bigint, name: Uint8Array): Promise<void> {
    this.onInode(ino);
    if (this.session.lookupCount(dir) === 0n) {
      this.counters.skipped++;
      return Promise.resolve();
    }
    const b = Buffer.alloc(NOTIFY_DELETE_OUT.size);
    b.writeBigUInt64LE(dir, NOTIFY_DELETE_OUT.o('parent'));
    b.writeBigUInt64LE(ino, NOTIFY_DELETE_OUT.o('child'));
    b.writeUInt32LE(name.length, NOTIFY_DELETE_OUT.o('namelen'));
    return this.send(NOTIFY.DELETE, [b, name, NUL]);
  }

  private async send(code: number, parts: Uint8Array[]): Promise<void> {
    if (this.session.initialized === null) {
      this.counters.skipped++;
      return;
    }
    let len = 0;
    for (const p of parts) len += p.length;
    // A notification is an out header with unique 0 and the code as "error".
    try {
      await this.session.notify([outHeader(0n, code, len), ...parts]);
      this.counters.sent++;
    } catch (e) {
      if (e instanceof FsError && (e.code === 'ENOENT' || e.code === 'ENOTCONN')) {
        this.counters.enoent++;
        return;
      }
      throw e;
    }
  }
}

const NUL = new Uint8Array(1);

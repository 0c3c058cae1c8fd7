/*
 * src/fuse/ops.ts: what each FUSE request means for the filesystem.  The
 * session (session.ts) hands every decoded request here; dispatch() calls
 * the inode-based Fs (src/fs/api.ts) and encodes the reply's payload.  This
 * file and errnoOf below are the one place errno numbers are made for the
 * kernel (the fuse-native adapter imports errnoOf from here).
 *
 * Node ids are scoutfs inode numbers: the root is nodeid 1 = ROOT_INO 1,
 * and because scoutfs never reuses an inode number the generation is
 * always 0.  Replies that hand the kernel a reference to an inode (LOOKUP,
 * CREATE, MKNOD, MKDIR, SYMLINK, LINK, TMPFILE and each READDIRPLUS entry
 * but . and ..) list that ino in Answer.lookups; the session counts them
 * once the reply was delivered, and FORGET takes them back.
 *
 * Names and symlink targets are bytes from the kernel to the items: no
 * decoding anywhere on this path.
 *
 * Caching.  Entries, negative entries and attributes are cached by the
 * kernel for `timeoutS` (an hour by default); files are opened with
 * KEEP_CACHE and directories with CACHE_DIR, so pages and directory
 * listings survive across opens.  That is correct only because every
 * change made to the filesystem behind the kernel's back (other nodes,
 * the archive interface, test hooks) is followed by an invalidation
 * (notify.ts).  Changes made through the kernel are known to it.
 *
 * Fast path.  Before every write(2) the kernel asks
 * GETXATTR("security.capability") (FUSE clears SB_NOSEC, so it never
 * learns that a file has none).  A miss is remembered per inode in
 * `noCaps` and answered synchronously (trySync) without a trip through the
 * Fs; any xattr change on that inode, and any invalidation of it, forgets
 * it.  The native reader keeps a copy of the set (capSink) and answers
 * those requests itself, before JavaScript sees them.  Nothing else takes
 * that path.
 *
 * Errors.  A FsError becomes its errno; CorruptionError and anything
 * unexpected become EIO and one log line (errnoOf).  ProtoError (a request
 * we cannot parse) is EIO with one line naming the opcode.  dispatch never
 * throws synchronously into the session: every failure is a rejection.
 */
import type { Attr, Ctx, DirEntry, Fs, SetAttr, StatFs } from '../fs/api.js';
import type { Timespec } from '../format/common.js';
import { CorruptionError, ERRNO, FsError } from '../format/errors.js';
import { DT } from '../format/items.js';
import { DataWaitError } from '../fs/archive.js';
import { RecentFailures } from './requester.js';
import {
  ATTR_OUT, CREATE_IN, ENTRY_OUT, FALLOCATE_IN, FATTR, FOPEN, FSYNC_IN, GETXATTR_IN, GETXATTR_OUT, IOCTL_IN, IOCTL_OUT, KSTATFS,
  LINK_IN, LINUX_DT, LSEEK_IN, LSEEK_OUT, MKDIR_IN, MKNOD_IN, OP, OP_NAME, OPEN_OUT, READ_IN, RELEASE_IN, RENAME, RENAME2_IN,
  RENAME_IN, SETATTR_IN, SETXATTR_IN, STAT_MORE, STATFS_MORE, IOC_STAT_MORE, IOC_STATFS_MORE, WRITE_IN, WRITE_OUT, cstring, direntSize, direntplusSize, need, writeAttrOut,
  writeDirent, writeEntry, writeOpenOut, type InHeader, type WireAttr,
} from './proto.js';

/* ---- the one errno mapping ------------------------------------------------- */

/** Negative errno for the kernel; logs everything that is not an FsError. */
export function errnoOf(e: unknown, op: string, log: (line: string) => void): number {
  if (e instanceof FsError) {
    // e.errno: a data-wait-err may carry any errno (src/fs/archive.ts).
    const n = e.errno;
    if (typeof n === 'number' && n > 0) return -n;
  }
  // Bad bytes from disk are expected (STYLE.md s4): their message names
  // the device, the blkno and the failed check, and is the one line.
  if (e instanceof CorruptionError) {
    log(`fuse: ${op}: ${e.message} (EIO)`);
    return -ERRNO.EIO;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  log(`fuse: ${op}: unexpected ${err.name}: ${err.message} (EIO)`);
  return -ERRNO.EIO;
}

/** errno names as FsError codes for what only this layer answers. */
const ENOSYS = (): FsError => new FsError('ENOSYS');

/* ---- conversions ----------------------------------------------------------- */

const S_IFMT = 0o170000;

/** scoutfs dirent type (DT in src/format/items.ts) -> Linux DT_. */
function linuxDt(t: number): number {
  switch (t) {
    case DT.FIFO: return LINUX_DT.FIFO;
    case DT.CHR: return LINUX_DT.CHR;
    case DT.DIR: return LINUX_DT.DIR;
    case DT.BLK: return LINUX_DT.BLK;
    case DT.REG: return LINUX_DT.REG;
    case DT.LNK: return LINUX_DT.LNK;
    case DT.SOCK: return LINUX_DT.SOCK;
    default: return LINUX_DT.UNKNOWN;
  }
}

export function wireAttr(a: Attr): WireAttr {
  return {
    ino: a.ino, size: a.size, blocks: a.blocks,
    atimeSec: a.atime.sec, atimeNsec: a.atime.nsec,
    mtimeSec: a.mtime.sec, mtimeNsec: a.mtime.nsec,
    ctimeSec: a.ctime.sec, ctimeNsec: a.ctime.nsec,
    mode: a.mode, nlink: a.nlink, uid: a.uid, gid: a.gid, rdev: a.rdev, blksize: 4096,
  };
}

/** A wire time (s64 seconds, u32 nanoseconds) as a Timespec; nsec >= 1e9 is EINVAL. */
function timespec(sec: bigint, nsec: number): Timespec {
  if (nsec >= 1e9) throw new FsError('EINVAL', `nanoseconds ${nsec}`);
  return { sec, nsec };
}

/* ---- requests and answers ------------------------------------------------------ */

export interface Answer {
  /** Reply payload after the out header. */
  parts: Uint8Array[];
  /** Inos whose lookup count the kernel takes with this reply. */
  lookups?: bigint[];
}

const EMPTY: Answer = { parts: [] };

export interface OpsOptions {
  log: (line: string) => void;
  /** Entry, negative entry and attribute cache lifetime given to the kernel. */
  timeoutS: number;
  /** Wall time for UTIME_NOW (the Fs clock). */
  now: () => Timespec;
  /** Told of every change to the set of inodes without capabilities (dev.ts mirrors it natively). */
  capSink?: (ino: bigint, known: boolean) => void;
  /**
   * Whether the kernel already holds a reference to an inode (session.ts
   * lookup counts).  READDIRPLUS sends such entries without attributes.
   */
  kernelKnows?: (ino: bigint) => boolean;
  /** The volume's STATFS_MORE fields (the mount knows the super and the rid). */
  statfsMore?: () => Promise<{ fsid: bigint; rid: bigint; committedSeq: bigint; totalMetaBlocks: bigint; totalDataBlocks: bigint; reservedMetaBlocks: bigint }>;
}

export interface OpsCounters {
  requests: number;
  errors: Map<string, number>;
  fastCapMiss: number;
}

export class Ops {
  readonly counters: OpsCounters = { requests: 0, errors: new Map(), fastCapMiss: 0 };
  private readonly log: (line: string) => void;
  private readonly t: number;
  /** fh -> ino of open files and directories (RELEASE names the ino too; this is for accounting). */
  private readonly handles = new Map<bigint, bigint>();
  private nextFh = 1n;
  /** Inodes known to have no security.capability xattr (see the header). */
  private readonly noCaps = new Set<bigint>();

  constructor(private readonly fs: Fs, private readonly o: OpsOptions) {
    this.log = o.log;
    this.t = o.timeoutS;
  }

  openHandles(): number {
    return this.handles.size;
  }

  /** Something changed behind the kernel's back: forget what we assumed about `ino`. */
  invalidated(ino: bigint): void {
    this.forgetCaps(ino);
  }

  private forgetCaps(ino: bigint): void {
    if (this.noCaps.delete(ino)) this.o.capSink?.(ino, false);
  }

  /** The errno for a failed request; counted by name. */
  errno(e: unknown, h: InHeader): number {
    const op = OP_NAME.get(h.opcode) ?? `opcode ${h.opcode}`;
    const n = errnoOf(e, op, this.log);
    const key = e instanceof FsError ? e.code : e instanceof CorruptionError ? 'EIO(corruption)' : 'EIO(unexpected)';
    this.counters.errors.set(key, (this.counters.errors.get(key) ?? 0) + 1);
    return n;
  }

  /**
   * A request answered without the Fs, synchronously, or null.  Only
   * GETXATTR of security.capability on an inode known to have none.
   */
  trySync(h: InHeader, args: Buffer): number | null {
    if (h.opcode !== OP.GETXATTR || !this.noCaps.has(h.nodeid) || args.length !== GETXATTR_IN.size + 20) return null;
    if (args.toString('latin1', GETXATTR_IN.size, GETXATTR_IN.size + 20) !== 'security.capability\0') return null;
    this.counters.fastCapMiss++;
    return -ERRNO.ENODATA;
  }

  private entry(a: Attr): Answer {
    const b = Buffer.allocUnsafe(ENTRY_OUT.size);
    writeEntry(b, 0, wireAttr(a), this.t, this.t);
    return { parts: [b], lookups: [a.ino] };
  }

  private attrOut(a: Attr): Answer {
    const b = Buffer.allocUnsafe(ATTR_OUT.size);
    writeAttrOut(b, 0, wireAttr(a), this.t);
    return { parts: [b] };
  }

  private newFh(ino: bigint): bigint {
    const fh = this.nextFh++;
    this.handles.set(fh, ino);
    return fh;
  }

  private openOut(fh: bigint, flags: number): Buffer {
    const b = Buffer.allocUnsafe(OPEN_OUT.size);
    writeOpenOut(b, 0, fh, flags);
    return b;
  }

  private ctx(h: InHeader): Ctx {
    return { uid: h.uid, gid: h.gid };
  }

  /** The reply payload of one request; rejects with the error to answer. */
  /** data-wait-err errors by process and inode, for the kernel's retry of a failed read (requester.ts). */
  private readonly failedReads = new RecentFailures();

  /** `signal` cancels a wait for offline data (INTERRUPT, or the requester died: session.ts). */
  async dispatch(h: InHeader, args: Buffer, signal?: AbortSignal): Promise<Answer> {
    this.counters.requests++;
    const fs = this.fs;
    const ino = h.nodeid;
    switch (h.opcode) {
      case OP.LOOKUP: {
        const { name } = cstring(args, 0, 'LOOKUP name');
        try {
          return this.entry(await fs.lookup(ino, name));
        } catch (e) {
          if (!(e instanceof FsError && e.code === 'ENOENT')) throw e;
          // A negative entry, cached like the others: creates through the
          // kernel replace it, creates behind its back invalidate it.
          const b = Buffer.allocUnsafe(ENTRY_OUT.size);
          writeEntry(b, 0, null, this.t, this.t);
          return { parts: [b] };
        }
      }
      case OP.GETATTR:
        return this.attrOut(await fs.getattr(ino));
      case OP.SETATTR:
        return this.attrOut(await this.setattr(ino, need(args, SETATTR_IN), signal));
      case OP.READLINK:
        return { parts: [await fs.readlink(ino)] };
      case OP.SYMLINK: {
        const n = cstring(args, 0, 'SYMLINK name');
        const target = cstring(args, n.next, 'SYMLINK target');
        return this.entry(await fs.symlink(ino, n.name, target.name, this.ctx(h)));
      }
      case OP.MKNOD: {
        need(args, MKNOD_IN);
        const { name } = cstring(args, MKNOD_IN.size, 'MKNOD name');
        const mode = args.readUInt32LE(MKNOD_IN.o('mode'));
        return this.entry(await fs.mknod(ino, name, mode, args.readUInt32LE(MKNOD_IN.o('rdev')), this.ctx(h)));
      }
      case OP.MKDIR: {
        need(args, MKDIR_IN);
        const { name } = cstring(args, MKDIR_IN.size, 'MKDIR name');
        return this.entry(await fs.mkdir(ino, name, args.readUInt32LE(MKDIR_IN.o('mode')), this.ctx(h)));
      }
      case OP.UNLINK:
        await fs.unlink(ino, cstring(args, 0, 'UNLINK name').name);
        return EMPTY;
      case OP.RMDIR:
        await fs.rmdir(ino, cstring(args, 0, 'RMDIR name').name);
        return EMPTY;
      case OP.RENAME: {
        need(args, RENAME_IN);
        const from = cstring(args, RENAME_IN.size, 'RENAME old name');
        const to = cstring(args, from.next, 'RENAME new name');
        await fs.rename(ino, from.name, args.readBigUInt64LE(RENAME_IN.o('newdir')), to.name);
        return EMPTY;
      }
      case OP.RENAME2: {
        need(args, RENAME2_IN);
        const flags = args.readUInt32LE(RENAME2_IN.o('flags'));
        const from = cstring(args, RENAME2_IN.size, 'RENAME2 old name');
        const to = cstring(args, from.next, 'RENAME2 new name');
        const newdir = args.readBigUInt64LE(RENAME2_IN.o('newdir'));
        // scoutfs knows RENAME_NOREPLACE only.
        if ((flags & ~RENAME.NOREPLACE) !== 0) throw new FsError('EINVAL', `rename flags ${flags}`);
        if (flags === RENAME.NOREPLACE) await fs.renameNoreplace(ino, from.name, newdir, to.name);
        else await fs.rename(ino, from.name, newdir, to.name);
        return EMPTY;
      }
      case OP.LINK: {
        need(args, LINK_IN);
        const { name } = cstring(args, LINK_IN.size, 'LINK name');
        return this.entry(await fs.link(args.readBigUInt64LE(LINK_IN.o('oldnodeid')), ino, name));
      }
      case OP.OPEN: {
        await fs.open(ino);
        return { parts: [this.openOut(this.newFh(ino), FOPEN.KEEP_CACHE)] };
      }
      case OP.CREATE: {
        need(args, CREATE_IN);
        const { name } = cstring(args, CREATE_IN.size, 'CREATE name');
        const a = await fs.create(ino, name, args.readUInt32LE(CREATE_IN.o('mode')), this.ctx(h));
        await fs.open(a.ino);
        const e = this.entry(a);
        return { parts: [...e.parts, this.openOut(this.newFh(a.ino), FOPEN.KEEP_CACHE)], lookups: e.lookups };
      }
      case OP.TMPFILE: {
        need(args, CREATE_IN);
        // The name the kernel sends ("/") means nothing: the inode has none.
        const a = await fs.tmpfile(ino, args.readUInt32LE(CREATE_IN.o('mode')), this.ctx(h));
        const e = this.entry(a);
        return { parts: [...e.parts, this.openOut(this.newFh(a.ino), FOPEN.KEEP_CACHE)], lookups: e.lookups };
      }
      case OP.READ: {
        need(args, READ_IN);
        const off = args.readBigUInt64LE(READ_IN.o('offset'));
        const size = args.readUInt32LE(READ_IN.o('size'));
        let data: Uint8Array;
        try {
          data = await fs.read(ino, off, size, { signal, failInstead: this.failedReads.get(h.pid, ino) });
        } catch (e) {
          if (e instanceof DataWaitError) this.failedReads.note(h.pid, ino, e);
          throw e;
        }
        return { parts: [data.length > size ? data.subarray(0, size) : data] };
      }
      case OP.WRITE: {
        need(args, WRITE_IN);
        const off = args.readBigUInt64LE(WRITE_IN.o('offset'));
        const size = args.readUInt32LE(WRITE_IN.o('size'));
        if (args.length < WRITE_IN.size + size) throw new FsError('EIO', `WRITE of ${size} bytes carries ${args.length - WRITE_IN.size}`);
        const n = await fs.write(ino, off, args.subarray(WRITE_IN.size, WRITE_IN.size + size), { signal });
        const b = Buffer.alloc(WRITE_OUT.size);
        b.writeUInt32LE(n, WRITE_OUT.o('size'));
        return { parts: [b] };
      }
      case OP.STATFS:
        return { parts: [kstatfs(await fs.statfs())] };
      case OP.RELEASE:
      case OP.RELEASEDIR: {
        need(args, RELEASE_IN);
        this.handles.delete(args.readBigUInt64LE(RELEASE_IN.o('fh')));
        if (h.opcode === OP.RELEASE) await fs.release(ino);
        return EMPTY;
      }
      case OP.FSYNC:
      case OP.FSYNCDIR:
      case OP.SYNCFS:
        if (h.opcode !== OP.SYNCFS) need(args, FSYNC_IN);
        // scoutfs's fsync commits the whole filesystem.
        await fs.sync();
        return EMPTY;
      case OP.FLUSH:
        // Nothing to do at close: writes are in the Fs when answered.
        // ENOSYS makes the kernel stop sending FLUSH (one request less per close).
        throw ENOSYS();
      case OP.SETXATTR: {
        need(args, SETXATTR_IN);
        const size = args.readUInt32LE(SETXATTR_IN.o('size'));
        const flags = args.readUInt32LE(SETXATTR_IN.o('flags'));
        const n = cstring(args, SETXATTR_IN.size, 'SETXATTR name');
        if (args.length < n.next + size) throw new FsError('EIO', `SETXATTR value of ${size} bytes carries ${args.length - n.next}`);
        adminOnly(n.name, h);
        this.forgetCaps(ino);
        // XATTR_CREATE 1, XATTR_REPLACE 2.
        await fs.setxattr(ino, n.name, args.subarray(n.next, n.next + size), { create: (flags & 1) !== 0, replace: (flags & 2) !== 0 });
        return EMPTY;
      }
      case OP.GETXATTR: {
        need(args, GETXATTR_IN);
        const size = args.readUInt32LE(GETXATTR_IN.o('size'));
        const { name } = cstring(args, GETXATTR_IN.size, 'GETXATTR name');
        let v: Uint8Array;
        try {
          v = await fs.getxattr(ino, name);
        } catch (e) {
          if (e instanceof FsError && e.code === 'ENODATA' && name.toString('latin1') === 'security.capability') {
            this.noCaps.add(ino);
            this.o.capSink?.(ino, true);
          }
          throw e;
        }
        return sized(size, [v], v.length);
      }
      case OP.LISTXATTR: {
        need(args, GETXATTR_IN);
        const size = args.readUInt32LE(GETXATTR_IN.o('size'));
        const names = await fs.listxattr(ino);
        const parts: Uint8Array[] = [];
        let total = 0;
        for (const n of names) {
          parts.push(n, NUL);
          total += n.length + 1;
        }
        return sized(size, parts, total);
      }
      case OP.REMOVEXATTR: {
        const { name } = cstring(args, 0, 'REMOVEXATTR name');
        adminOnly(name, h);
        this.forgetCaps(ino);
        await fs.removexattr(ino, name);
        return EMPTY;
      }
      case OP.OPENDIR: {
        await fs.getattr(ino);
        // CACHE_DIR + KEEP_CACHE: listings stay in the kernel across opens;
        // changes through the kernel drop them, others are invalidated.
        return { parts: [this.openOut(this.newFh(ino), FOPEN.CACHE_DIR | FOPEN.KEEP_CACHE)] };
      }
      case OP.READDIR:
      case OP.READDIRPLUS:
        return this.readdir(ino, need(args, READ_IN), h.opcode === OP.READDIRPLUS);
      case OP.FALLOCATE: {
        need(args, FALLOCATE_IN);
        await fs.fallocate(ino, args.readBigUInt64LE(FALLOCATE_IN.o('offset')), args.readBigUInt64LE(FALLOCATE_IN.o('length')),
          args.readUInt32LE(FALLOCATE_IN.o('mode')));
        return EMPTY;
      }
      case OP.LSEEK: {
        need(args, LSEEK_IN);
        const off = await fs.seek(ino, args.readBigUInt64LE(LSEEK_IN.o('offset')), args.readUInt32LE(LSEEK_IN.o('whence')));
        const b = Buffer.allocUnsafe(LSEEK_OUT.size);
        b.writeBigUInt64LE(off, 0);
        return { parts: [b] };
      }
      case OP.IOCTL:
        return this.ioctl(ino, need(args, IOCTL_IN));
      case OP.ACCESS:
        // default_permissions: the kernel checks modes itself and only
        // asks here without it; ENOSYS makes it stop asking.
        throw ENOSYS();
      default:
        throw ENOSYS();
    }
  }

  private async setattr(ino: bigint, a: Buffer, signal?: AbortSignal): Promise<Attr> {
    const valid = a.readUInt32LE(SETATTR_IN.o('valid'));
    const set: SetAttr = {};
    if (valid & FATTR.MODE) set.mode = a.readUInt32LE(SETATTR_IN.o('mode')) & ~S_IFMT;
    if (valid & FATTR.UID) set.uid = a.readUInt32LE(SETATTR_IN.o('uid'));
    if (valid & FATTR.GID) set.gid = a.readUInt32LE(SETATTR_IN.o('gid'));
    if (valid & FATTR.SIZE) set.size = a.readBigUInt64LE(SETATTR_IN.o('size'));
    if (valid & FATTR.ATIME) {
      set.atime = valid & FATTR.ATIME_NOW ? this.o.now()
        : timespec(a.readBigInt64LE(SETATTR_IN.o('atime')), a.readUInt32LE(SETATTR_IN.o('atimensec')));
    }
    if (valid & FATTR.MTIME) {
      set.mtime = valid & FATTR.MTIME_NOW ? this.o.now()
        : timespec(a.readBigInt64LE(SETATTR_IN.o('mtime')), a.readUInt32LE(SETATTR_IN.o('mtimensec')));
    }
    // A size change may drop a file's capabilities (the kernel asks again).
    if (valid & (FATTR.MODE | FATTR.UID | FATTR.GID | FATTR.SIZE)) this.forgetCaps(ino);
    return this.fs.setattr(ino, set, { signal });
  }

  /**
   * READDIR(PLUS) from offset `off`: "." is offset 0, ".." 1, and an entry
   * at readdir position p (>= 2, stable for the entry's life) is continued
   * from with offset p + 1.  Entries are packed until the next would not
   * fit in the kernel's `size`.
   */
  private async readdir(dir: bigint, a: Buffer, plus: boolean): Promise<Answer> {
    const off = a.readBigUInt64LE(READ_IN.o('offset'));
    const size = a.readUInt32LE(READ_IN.o('size'));
    const out = Buffer.alloc(size);
    const lookups: bigint[] = [];
    let used = 0;
    const put = (ino: bigint, next: bigint, type: number, name: Uint8Array, attr: Attr | null): boolean => {
      const need = plus ? direntplusSize(name.length) : direntSize(name.length);
      if (used + need > size) return false;
      if (plus) {
        // . and .. carry no entry (nodeid 0): the kernel does not look them up.
        writeEntry(out, used, attr === null ? null : wireAttr(attr), attr === null ? 0 : this.t, this.t);
        if (attr !== null) lookups.push(attr.ino);
        writeDirent(out, used + ENTRY_OUT.size, ino, next, type, name);
      } else {
        writeDirent(out, used, ino, next, type, name);
      }
      used += need;
      return true;
    };
    if (off === 0n && !put(dir, 1n, LINUX_DT.DIR, DOT, null)) return { parts: [] };
    if (off <= 1n) {
      const parent = await this.fs.parentOf(dir);
      if (!put(parent ?? dir, 2n, LINUX_DT.DIR, DOTDOT, null)) return { parts: [out.subarray(0, used)] };
    }
    let pos = off < 2n ? 2n : off;
    for (;;) {
      const room = Math.ceil((size - used) / (plus ? direntplusSize(1) : direntSize(1)));
      if (room <= 0) break;
      const ents: DirEntry[] = await this.fs.readdir(dir, pos, Math.min(room, 1024));
      if (ents.length === 0) break;
      let full = false;
      for (const e of ents) {
        let attr: Attr | null = null;
        // An inode the kernel holds already needs no attributes here (an
        // entry with nodeid 0 is listed but not looked up): its cached
        // attributes are kept right by the kernel's timeouts and by our
        // invalidations, and the getattr per entry is most of a listing.
        if (plus && this.o.kernelKnows?.(e.ino) !== true) {
          try {
            attr = await this.fs.getattr(e.ino);
          } catch (err) {
            // Removed since the listing: still listed, not looked up.
            if (!(err instanceof FsError && err.code === 'ENOENT')) throw err;
          }
        }
        if (!put(e.ino, e.pos + 1n, linuxDt(e.type), e.name, attr)) {
          full = true;
          break;
        }
        pos = e.pos + 1n;
      }
      if (full) break;
    }
    return { parts: [out.subarray(0, used)], lookups };
  }

  /**
   * Restricted ioctls (proto.ts STAT_MORE, STATFS_MORE): the reply is
   * fuse_ioctl_out (result 0, no iovecs) and then the struct, exactly the
   * size the command encodes.  Anything else (Python's open asks TCGETS)
   * is ENOTTY, as on any file that is not a terminal.  The pointer-bearing
   * scoutfs ioctls stay on the control channel (PROTOCOL.md s0).
   */
  private async ioctl(ino: bigint, a: Buffer): Promise<Answer> {
    const cmd = a.readUInt32LE(IOCTL_IN.o('cmd'));
    const outSize = a.readUInt32LE(IOCTL_IN.o('out_size'));
    let body: Buffer;
    if (cmd === IOC_STAT_MORE) {
      const x = await this.fs.getattr(ino);
      body = Buffer.alloc(STAT_MORE.size);
      body.writeBigUInt64LE(BigInt(STAT_MORE.size), STAT_MORE.o('valid_bytes'));
      body.writeBigUInt64LE(x.meta_seq, STAT_MORE.o('meta_seq'));
      body.writeBigUInt64LE(x.data_seq, STAT_MORE.o('data_seq'));
      body.writeBigUInt64LE(x.data_version, STAT_MORE.o('data_version'));
      body.writeBigUInt64LE(x.online_blocks, STAT_MORE.o('online_blocks'));
      body.writeBigUInt64LE(x.offline_blocks, STAT_MORE.o('offline_blocks'));
      body.writeBigInt64LE(BigInt.asIntN(64, x.crtime.sec), STAT_MORE.o('crtime_sec'));
      body.writeUInt32LE(x.crtime.nsec, STAT_MORE.o('crtime_nsec'));
    } else if (cmd === IOC_STATFS_MORE && this.o.statfsMore !== undefined) {
      const m = await this.o.statfsMore();
      body = Buffer.alloc(STATFS_MORE.size);
      body.writeBigUInt64LE(BigInt(STATFS_MORE.size), STATFS_MORE.o('valid_bytes'));
      body.writeBigUInt64LE(m.fsid, STATFS_MORE.o('fsid'));
      body.writeBigUInt64LE(m.rid, STATFS_MORE.o('rid'));
      body.writeBigUInt64LE(m.committedSeq, STATFS_MORE.o('committed_seq'));
      body.writeBigUInt64LE(m.totalMetaBlocks, STATFS_MORE.o('total_meta_blocks'));
      body.writeBigUInt64LE(m.totalDataBlocks, STATFS_MORE.o('total_data_blocks'));
      body.writeBigUInt64LE(m.reservedMetaBlocks, STATFS_MORE.o('reserved_meta_blocks'));
    } else {
      throw new FsError('ENOTTY');
    }
    // The kernel gives room for exactly the encoded size; never more.
    if (outSize < body.length) throw new FsError('EINVAL', `ioctl ${cmd.toString(16)} with ${outSize} bytes of room`);
    return { parts: [Buffer.alloc(IOCTL_OUT.size), body] };
  }
}

const NUL = new Uint8Array(1);
const DOT = Buffer.from('.');
const DOTDOT = Buffer.from('..');

/** The xattr answer to a buffer of `size`: the length when probed (0), ERANGE when it does not fit. */
function sized(size: number, parts: Uint8Array[], total: number): Answer {
  if (size === 0) {
    const b = Buffer.alloc(GETXATTR_OUT.size);
    b.writeUInt32LE(total, GETXATTR_OUT.o('size'));
    return { parts: [b] };
  }
  if (total > size) throw new FsError('ERANGE', `${total} bytes for a buffer of ${size}`);
  return { parts };
}

/** Tagged scoutfs. xattrs are root's (CAP_SYS_ADMIN in scoutfs). */
function adminOnly(name: Uint8Array, h: InHeader): void {
  if (h.uid !== 0 && Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1').startsWith('scoutfs.')) {
    throw new FsError('EPERM', 'scoutfs. xattrs need root');
  }
}

/** statfs without 32-bit clamping: the kernel's kstatfs fields are u64. */
function kstatfs(s: StatFs): Buffer {
  const b = Buffer.alloc(KSTATFS.size);
  b.writeBigUInt64LE(s.totalBlocks, KSTATFS.o('blocks'));
  b.writeBigUInt64LE(s.freeBlocks, KSTATFS.o('bfree'));
  b.writeBigUInt64LE(s.freeBlocks, KSTATFS.o('bavail'));
  b.writeBigUInt64LE(s.totalInodes, KSTATFS.o('files'));
  b.writeBigUInt64LE(s.freeInodes, KSTATFS.o('ffree'));
  b.writeUInt32LE(s.blockSize, KSTATFS.o('bsize'));
  b.writeUInt32LE(s.nameMax, KSTATFS.o('namelen'));
  b.writeUInt32LE(s.blockSize, KSTATFS.o('frsize'));
  return b;
}

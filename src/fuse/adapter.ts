/*
 * src/fuse/adapter.ts is the thin adapter from fuse-native@2 (libfuse2's
 * high-level, path-based API) to the inode-based Fs interface
 * (src/fs/api.ts): the second transport (`-o transport=fuse-native`; the
 * default is our own protocol over /dev/fuse, kernel.ts).  Every handler
 * runs its body through `answer`, and `errnoOf` (ops.ts, shared with the
 * kernel transport) is the single mapping from a thrown error to a
 * negative errno.
 *
 * What this transport cannot do: invalidate the kernel's caches (libfuse2's
 * path API has no notify), so it is for a single node with short
 * timeouts; ioctl, fallocate, SEEK_DATA/SEEK_HOLE, O_TMPFILE and
 * RENAME_NOREPLACE never reach it; times cross as milliseconds; names,
 * symlink targets and xattr names cross as UTF-8 strings, so those that
 * are not UTF-8 are refused with EINVAL (paths.ts nameBytes) and left out
 * of readdir and listxattr rather than rewritten.
 *
 * Threads.  fuse-native's FUSE loop thread hands each request to the Node
 * main thread and waits; every handler here runs on the main thread and
 * answers through the binding's callback exactly once.  Handlers never
 * throw into the binding: a FsError becomes -ERRNO[code]
 * (src/format/errors.ts), anything else (CorruptionError, LifecycleError,
 * a bug) becomes EIO and one log line, and the daemon keeps serving.
 * Rejected: letting an assertion failure stop the daemon here as STYLE.md
 * s4 suggests for the core; a dead FUSE daemon leaves a mount that fails
 * every syscall with ENOTCONN until someone runs fusermount, which is worse
 * for users than EIO on one request plus a log line.
 *
 * Paths.  FUSE hands us absolute paths; src/fuse/paths.ts resolves them to
 * inos through a cache that namespace changes here invalidate.  Open files
 * are tracked by handle (fi->fh) -> ino.
 *
 * Unlinked open files.  With hard_remove, libfuse2 drops the path of an
 * unlinked node, and because fuse-native does not set flag_nullpath_ok,
 * libfuse then answers ENOENT itself for every read, write and fstat of the
 * still-open file: POSIX broken.  So we mount without hard_remove and take
 * over libfuse's "hide" step instead: to unlink (or rename over) an open
 * file, libfuse first renames it to `.fuse_hiddenXXXXXXXXYYYYYYYY` in the
 * same directory and unlinks that name at the last release.  A rename whose
 * target has that form and whose source is open here is performed as an
 * unlink in the Fs (which keeps the inode alive through its orphan item,
 * PROTOCOL.md s10.3), and the hidden name is remembered in memory only
 * (keyed by its unique basename, so renaming the directory does not lose
 * it).  Nothing named .fuse_hidden* is ever stored: readdir never shows one
 * and a crash leaves only the orphan item, which the next mount finishes.
 * The hidden name's later unlink just forgets it.  Invariant: every entry
 * of `hidden` names an inode with an open handle here.
 *
 * Mount options (fuseOptions): the kernel caches names (dentries) for
 * ENTRY_TIMEOUT_S (1 s), and neither attributes nor negative lookups.
 * Name caching is coherent only while this mount is the volume's one
 * writer, which it is today (src/mount/mount.ts refuses a second mount):
 * every namespace change passes through this kernel, which drops the
 * dentries it makes stale.  Attributes are not cached because libfuse2's
 * high-level API gives every hard link its own kernel inode: after a write
 * or unlink through one name, another name's cached size or nlink would be
 * stale for the whole timeout (measured: nlink 3 after the unlink that
 * made it 2).  Cost: one getattr per stat (with 0 entry timeouts too, a
 * stat of a/b/c cost 5 getattr round trips, 15% of a passthrough's rate).
 * PROTOCOL.md s0 wants another mount's change seen at the next syscall:
 * the cluster mount must set the entry timeout to 0 or invalidate on
 * cluster lock loss.  use_ino so st_ino is the scoutfs ino; no
 * hard_remove (above); big_writes and max_write so writes arrive in 128 KiB
 * requests; default_permissions so the kernel checks modes.  The binding
 * emits only a fixed list of options and skips zero values, so all of
 * these ride in the `fsname` string, which it appends verbatim after
 * "fsname=" (the value itself ends at the first comma).
 *
 * The binding.  native/fuse is fuse-native 2.2.6 with three patches
 * (native/fuse/fuse-native.c header): the caller's uid/gid reach creating
 * ops (new inodes belong to the caller, not the daemon), st_ino is 64 bits,
 * and utimens passes the mtime and UTIME_OMIT/UTIME_NOW.  scripts/setup.sh
 * builds it; when it did not build, loadFuse falls back to the fuse-native
 * package and logs what is lost.
 *
 * fuse-native traps handled here (measured, see perf/fuse-passthrough.ts):
 *   - fsync and fsyncdir arguments are (path, datasync, fd, cb).
 *   - fgetattr is routed to ops.getattr by the binding (path only); an
 *     unlinked open file's hidden name still resolves (above).
 *   - Upstream only: utimens gets the atime in both positions, so both
 *     times are set to the first (touch and utimes(t, t) work); st_ino is a
 *     uint32 (inos >= 2^32 truncated; `scoutfs stat` goes by path); no
 *     caller context, so new inodes get the daemon's uid and gid.
 *   - Times cross the binding as milliseconds; sub-ms nsec are lost.
 *   - write's and setxattr's buffers are external buffers detached right
 *     after the answer; we copy them before the first await.
 *   - create() receives no open flags; the kernel did the O_EXCL check via
 *     lookup already.
 *   - The binding answers ETIMEDOUT for an op slower than its timeout
 *     (15 s default): we raise it to 10 minutes because a commit under
 *     fsync can legitimately wait for the server, and lift it for read,
 *     write, truncate and ftruncate, which wait for offline data as long
 *     as the archive agent takes (a tape recall can take longer than any
 *     timeout we would pick).
 *
 * Waiting for offline data (src/fs/archive.ts).  read, write, truncate and
 * ftruncate pass an AbortSignal to the Fs; the wait holds no FUSE thread
 * of ours (libfuse2's multi-threaded loop starts another thread while one
 * waits) and no fs lock.  libfuse2's high-level API through fuse-native
 * never tells us about FUSE_INTERRUPT, and with ASYNC_READ a reader that
 * is killed while its readahead waits dies at once in the kernel, leaving
 * our request pending.  So the adapter watches the requesting process of
 * every data request older than WATCH_MS (the pid the patched binding
 * reports): when it is gone (no /proc entry, a zombie, another process
 * under the same pid) or dying (SIGKILL pending, which the kernel queues
 * for every default-fatal signal), the wait is aborted and answered EINTR.
 * Non-fatal signals do not interrupt (the kernel's readahead waits are
 * killable only, and an EINTR there would surface as EIO); the kernel
 * transport, which sees FUSE_INTERRUPT, can cancel on any signal.  With
 * the upstream binding there is no pid and a waiter stays until a stage,
 * a data-wait-err or the unmount ends it.  Two kernel effects of libfuse2
 * to know (measured): a page cache reader of an offline file waits on the
 * block it needs and on the readahead windows after it (each a request of
 * its own, listed by data-waiting), and while those wait another open() of
 * the same file waits in the kernel, because libfuse2 (no keep_cache) has
 * every open drop the file's cached pages, which waits for pages being
 * read.  O_DIRECT readers, stat, and the control channel (stage!) are not
 * held up.  When data-wait-err fails a page cache reader's requests, the
 * kernel drops the failed readahead and asks again for the one page read()
 * needs; so the adapter remembers, for RETRY_WINDOW_MS, the data-wait-err
 * error of each (process, inode), and a read from that process of that
 * inode that would wait fails with it at once: read() returns the errno
 * data-wait-err set, as with the reference (src/fuse/requester.ts, shared
 * with the kernel transport).
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Attr, Ctx, Fs, DirEntry } from '../fs/api.js';
import type { Timespec } from '../format/common.js';
import { CorruptionError, FsError } from '../format/errors.js';
import { DT } from '../format/items.js';
import { PathCache, nameBytes, nameString, splitParent } from './paths.js';
import { errnoOf } from './ops.js';
import { DataWaitError } from '../fs/archive.js';
import { RecentFailures, WATCH_MS, requesterGone } from './requester.js';

export { requesterGone } from './requester.js';

const require = createRequire(import.meta.url);

/** libfuse2's hide_node() names: ".fuse_hidden" + node id + counter, %08x each. */
const HIDDEN_NAME = /^\.fuse_hidden[0-9a-f]{16}$/;

/** native/fuse's UTIME_OMIT and UTIME_NOW sentinels (milliseconds). */
export const UTIME_OMIT_MS = 2 ** 53 - 1;
export const UTIME_NOW_MS = 2 ** 53 - 2;

export type FuseCb = (code: number, ...rest: unknown[]) => void;

interface FuseInstance {
  /** Only in the patched binding (native/fuse). */
  caller?: () => Ctx & { pid: number };
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
}
interface FuseCtor {
  new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>): FuseInstance;
  unmount(mnt: string, cb: (err: Error | null) => void): void;
}

export const OP_TIMEOUT_MS = 600_000;
/** Ops that may wait for offline data: no binding timeout. */
export const OP_TIMEOUTS = { default: OP_TIMEOUT_MS, read: false, write: false, truncate: false, ftruncate: false } as const;
/** Kernel dentry cache lifetime (single writer: see the header). */
export const ENTRY_TIMEOUT_S = 1;
export const MAX_WRITE_BYTES = 131072;

/* ---- the one errno mapping (shared with the kernel transport) ------------- */

export { errnoOf };

/* ---- conversions ----------------------------------------------------------- */

function ms(t: Timespec): number {
  return Number(t.sec) * 1000 + Math.floor(t.nsec / 1e6);
}

function msToTimespec(msVal: number): Timespec {
  const sec = Math.floor(msVal / 1000);
  return { sec: BigInt(sec), nsec: Math.round(msVal - sec * 1000) * 1e6 };
}

/** The stat object fuse-native's getStatArray reads. */
export function statOf(a: Attr, ino64 = false): Record<string, number> {
  return {
    mode: a.mode,
    uid: a.uid,
    gid: a.gid,
    size: Number(a.size),
    dev: 0,
    nlink: a.nlink,
    // Upstream carries st_ino as a uint32 (see the header); native/fuse
    // in 64 bits (exact as a JS number below 2^53).
    ino: ino64 ? Number(a.ino) : Number(a.ino & 0xffffffffn),
    rdev: a.rdev,
    blksize: 4096,
    blocks: Number(a.blocks),
    atime: ms(a.atime),
    mtime: ms(a.mtime),
    ctime: ms(a.ctime),
  };
}

/** S_IF* type bits of a scoutfs dirent type. */
const DT_MODE: Record<number, number> = {
  [DT.FIFO]: 0o010000, [DT.CHR]: 0o020000, [DT.DIR]: 0o040000, [DT.BLK]: 0o060000,
  [DT.REG]: 0o100000, [DT.LNK]: 0o120000, [DT.SOCK]: 0o140000,
};

/** The stat libfuse2's readdir filler reads: st_ino and the type bits of st_mode. */
function entryStat(e: DirEntry, ino64: boolean): Record<string, number> {
  return { mode: DT_MODE[e.type] ?? 0, ino: ino64 ? Number(e.ino) : Number(e.ino & 0xffffffffn), uid: 0, gid: 0, size: 0, dev: 0, nlink: 1, rdev: 0, blksize: 4096, blocks: 0, atime: 0, mtime: 0, ctime: 0 };
}

const CLAMP32 = 0xffffffffn;
function u32(n: bigint): number {
  return Number(n > CLAMP32 ? CLAMP32 : n < 0n ? 0n : n);
}

/* ---- the ops table ----------------------------------------------------------- */

export interface AdapterOptions {
  log: (line: string) => void;
  /**
   * The requesting process of the op being dispatched, read synchronously
   * at the start of creating ops (the patched binding's Fuse#caller).
   * Without it new inodes belong to the daemon's uid and gid.
   */
  caller?: () => Ctx;
  /** The binding passes utimens's atime and mtime apart (native/fuse). */
  utimensFixed?: boolean;
  /** The binding carries st_ino in 64 bits (native/fuse); else 32. */
  ino64?: boolean;
  /** The requesting process of the op being dispatched (native/fuse), read synchronously; 0 = unknown. */
  callerPid?: () => number;
}


export interface Adapter {
  ops: Record<string, unknown>;
  paths: PathCache;
  /** Open handles, for tests and status. */
  openHandles(): number;
  /** Unlinked open files libfuse knows by a hidden name. */
  hiddenFiles(): number;
  /** Counts of errors answered, by errno name, 'EIO(corruption)' or 'EIO(unexpected)'. */
  errors: Map<string, number>;
  /** Data requests in flight (they may be waiting for offline data). */
  dataRequests(): number;
  /** Waits aborted because their process was gone. */
  readonly abandoned: { count: number };
}

export function makeAdapter(fs: Fs, opts: AdapterOptions): Adapter {
  const log = opts.log;
  const daemon: Ctx = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const callerCtx = opts.caller ?? ((): Ctx => daemon);
  const ino64 = opts.ino64 === true;
  const paths = new PathCache(fs);
  const handles = new Map<number, bigint>();
  let nextHandle = 1;
  const errors = new Map<string, number>();
  // libfuse's hidden names of unlinked open files -> ino (see the header).
  const hidden = new Map<string, bigint>();
  const dirStat = (ino: bigint): Record<string, number> => entryStat({ name: new Uint8Array(0), ino, type: DT.DIR, pos: 0n }, ino64);
  const isOpenHere = (ino: bigint): boolean => {
    for (const v of handles.values()) if (v === ino) return true;
    return false;
  };

  // Data requests that may wait for offline data, and their watcher (see the header).
  interface DataRequest { pid: number; ac: AbortController; since: number; seen: { start?: string } }
  const inflight = new Set<DataRequest>();
  const abandoned = { count: 0 };
  let watcher: NodeJS.Timeout | null = null;
  const watch = (): void => {
    const now = Date.now();
    for (const r of inflight) {
      if (r.pid <= 0 || r.ac.signal.aborted || now - r.since < WATCH_MS) continue;
      if (requesterGone(r.pid, r.seen)) {
        abandoned.count++;
        r.ac.abort();
      }
    }
  };
  const dataRequest = (): DataRequest => {
    const r: DataRequest = { pid: opts.callerPid?.() ?? 0, ac: new AbortController(), since: Date.now(), seen: {} };
    inflight.add(r);
    if (watcher === null) {
      watcher = setInterval(watch, WATCH_MS);
      watcher.unref();
    }
    return r;
  };
  const dataDone = (r: DataRequest): void => {
    inflight.delete(r);
    if (inflight.size === 0 && watcher !== null) {
      clearInterval(watcher);
      watcher = null;
    }
  };
  /** Run a data op body with its request's signal, untracked when it settles. */
  const withSignal = <T>(body: (signal: AbortSignal, pid: number) => Promise<T>): Promise<T> => {
    const r = dataRequest();
    let p: Promise<T>;
    try {
      p = body(r.ac.signal, r.pid);
    } catch (e) {
      p = Promise.reject(e);
    }
    return p.finally(() => dataDone(r));
  };
  // data-wait-err errors by process and inode, for the kernel's retry of a failed read (requester.ts).
  const failedReads = new RecentFailures();

  // Run an op body and answer the kernel exactly once.  `shape` maps a
  // successful result to the callback arguments.
  function answer<T>(op: string, cb: FuseCb, body: () => Promise<T>, shape: (r: T) => unknown[]): void {
    let p: Promise<T>;
    try {
      p = body();
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      (r) => {
        let args: unknown[];
        try {
          args = shape(r);
        } catch (e) {
          fail(op, cb, e);
          return;
        }
        cb(0, ...args);
      },
      (e: unknown) => fail(op, cb, e),
    );
  }
  function fail(op: string, cb: FuseCb, e: unknown): void {
    const n = errnoOf(e, op, log);
    const key = e instanceof FsError ? e.code : e instanceof CorruptionError ? 'EIO(corruption)' : 'EIO(unexpected)';
    errors.set(key, (errors.get(key) ?? 0) + 1);
    cb(n);
  }
  const none = (): unknown[] => [];

  // Resolve the parent of `path` and the last name as bytes.
  async function parentOf(path: string): Promise<{ dir: bigint; name: Uint8Array; last: string }> {
    const { parent, name } = splitParent(path);
    return { dir: await paths.resolve(parent), name: nameBytes(name), last: name };
  }

  // scoutfs. xattrs (hide/srch/totl tags) need CAP_SYS_ADMIN (PROTOCOL.md
  // 8.1); we know the caller's uid only, so that is uid 0.
  function adminOnly(name: string, who: Ctx): void {
    if (name.startsWith('scoutfs.') && who.uid !== 0) throw new FsError('EPERM', `${name} needs root`);
  }

  async function resolveFresh(path: string): Promise<bigint> {
    const h = hiddenIno(path);
    return h ?? paths.resolve(path);
  }

  function hiddenIno(path: string): bigint | undefined {
    if (hidden.size === 0) return undefined;
    const last = path.slice(path.lastIndexOf('/') + 1);
    return HIDDEN_NAME.test(last) ? hidden.get(last) : undefined;
  }

  // getattr by path; a cached ino that vanished is dropped and walked again.
  async function getattrPath(path: string): Promise<Attr> {
    const h = hiddenIno(path);
    if (h !== undefined) return fs.getattr(h);
    const ino = await resolveFresh(path);
    try {
      return await fs.getattr(ino);
    } catch (e) {
      if (!(e instanceof FsError && e.code === 'ENOENT') || path === '/') throw e;
      paths.forget(path);
      return fs.getattr(await paths.resolve(path));
    }
  }

  function handleIno(fd: number, path: string): Promise<bigint> {
    const ino = handles.get(fd);
    if (ino !== undefined) return Promise.resolve(ino);
    return paths.resolve(path);
  }

  async function openIno(ino: bigint): Promise<number> {
    await fs.open(ino);
    const fd = nextHandle++;
    if (nextHandle > 0x7fffffff) nextHandle = 1;
    handles.set(fd, ino);
    return fd;
  }

  const ops: Record<string, unknown> = {
    init: (cb: FuseCb) => cb(0),
    getattr: (path: string, cb: FuseCb) => answer('getattr', cb, () => getattrPath(path), (a) => [statOf(a, ino64)]),
    fgetattr: (path: string, fd: number, cb: FuseCb) =>
      answer('fgetattr', cb, async () => fs.getattr(await handleIno(fd, path)), (a) => [statOf(a, ino64)]),
    // default_permissions makes the kernel check modes; access only checks existence.
    access: (path: string, _mode: number, cb: FuseCb) => answer('access', cb, () => getattrPath(path), none),
    statfs: (_path: string, cb: FuseCb) =>
      answer('statfs', cb, () => fs.statfs(), (s) => [{
        bsize: s.blockSize, frsize: s.blockSize, blocks: u32(s.totalBlocks), bfree: u32(s.freeBlocks),
        bavail: u32(s.freeBlocks), files: u32(s.totalInodes), ffree: u32(s.freeInodes), favail: u32(s.freeInodes),
        fsid: 0, flag: 0, namemax: s.nameMax,
      }]),
    // With stats (inode number and type), so getdents shows d_ino and
    // d_type.  Names that are not UTF-8 cannot cross the binding: they are
    // left out of the listing (counted in errors as 'EINVAL(unlisted name)').
    readdir: (path: string, cb: FuseCb) =>
      answer('readdir', cb, async () => {
        const dir = await resolveFresh(path);
        const parent = (await fs.parentOf(dir)) ?? dir;
        const names = ['.', '..'];
        const stats = [dirStat(dir), dirStat(parent)];
        let pos = 0n;
        for (;;) {
          const ents: DirEntry[] = await fs.readdir(dir, pos, 256);
          if (ents.length === 0) break;
          for (const e of ents) {
            const n = nameString(e.name);
            if (n === null) {
              errors.set('EINVAL(unlisted name)', (errors.get('EINVAL(unlisted name)') ?? 0) + 1);
              continue;
            }
            names.push(n);
            stats.push(entryStat(e, ino64));
          }
          pos = ents[ents.length - 1]!.pos + 1n;
        }
        return { names, stats };
      }, (r) => [r.names, r.stats]),
    open: (path: string, _flags: number, cb: FuseCb) =>
      answer('open', cb, async () => openIno(await resolveFresh(path)), (fd) => [fd]),
    opendir: (_path: string, _flags: number, cb: FuseCb) => cb(0, 0),
    releasedir: (_path: string, _fd: number, cb: FuseCb) => cb(0),
    create: (path: string, mode: number, cb: FuseCb) =>
      answer('create', cb, async () => {
        const ctx = callerCtx(); // before the first await: see AdapterOptions.caller
        const { dir, name } = await parentOf(path);
        const a = await fs.create(dir, name, mode, ctx);
        paths.remember(path, a.ino);
        return openIno(a.ino);
      }, (fd) => [fd]),
    release: (path: string, fd: number, cb: FuseCb) =>
      answer('release', cb, async () => {
        const ino = handles.get(fd);
        if (ino === undefined) return;
        handles.delete(fd);
        await fs.release(ino);
      }, none),
    read: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: FuseCb) => {
      const body = async (signal: AbortSignal, pid: number): Promise<number> => {
        const ino = await handleIno(fd, path);
        let data: Uint8Array;
        try {
          data = await fs.read(ino, BigInt(pos), len, { signal, failInstead: failedReads.get(pid, ino) });
        } catch (e) {
          if (e instanceof DataWaitError) failedReads.note(pid, ino, e);
          throw e;
        }
        const n = Math.min(data.length, len);
        buf.set(data.subarray(0, n), 0);
        return n;
      };
      // read answers the byte count in the error slot.
      withSignal(body).then((n) => cb(n), (e: unknown) => fail('read', cb, e));
    },
    write: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: FuseCb) => {
      // The binding detaches buf after we answer; copy before awaiting.
      const data = Uint8Array.prototype.slice.call(buf, 0, len);
      const body = async (signal: AbortSignal): Promise<number> => fs.write(await handleIno(fd, path), BigInt(pos), data, { signal });
      withSignal(body).then((n) => cb(n), (e: unknown) => fail('write', cb, e));
    },
    flush: (_path: string, _fd: number, cb: FuseCb) => cb(0),
    // (path, datasync, fd): the order the binding really uses.  scoutfs
    // fsync commits the whole filesystem.
    fsync: (_path: string, _datasync: number, _fd: number, cb: FuseCb) => answer('fsync', cb, () => fs.sync(), none),
    fsyncdir: (_path: string, _datasync: number, _fd: number, cb: FuseCb) =>
      answer('fsyncdir', cb, () => fs.sync(), none),
    truncate: (path: string, size: number, cb: FuseCb) =>
      answer('truncate', cb, () => withSignal(async (signal) => fs.setattr(await resolveFresh(path), { size: BigInt(size) }, { signal })), none),
    ftruncate: (path: string, fd: number, size: number, cb: FuseCb) =>
      answer('ftruncate', cb, () => withSignal(async (signal) => fs.setattr(await handleIno(fd, path), { size: BigInt(size) }, { signal })), none),
    readlink: (path: string, cb: FuseCb) =>
      answer('readlink', cb, async () => {
        const t = nameString(await fs.readlink(await resolveFresh(path)));
        if (t === null) throw new FsError('EINVAL', 'a symlink target that is not UTF-8 cannot cross fuse-native');
        return t;
      }, (t) => [t]),
    chown: (path: string, uid: number, gid: number, cb: FuseCb) =>
      answer('chown', cb, async () => {
        // (uid_t)-1 / (gid_t)-1 mean "leave unchanged".
        const set: { uid?: number; gid?: number } = {};
        if (uid !== 0xffffffff && uid !== -1) set.uid = uid;
        if (gid !== 0xffffffff && gid !== -1) set.gid = gid;
        return fs.setattr(await resolveFresh(path), set);
      }, none),
    chmod: (path: string, mode: number, cb: FuseCb) =>
      answer('chmod', cb, async () => {
        const ino = await resolveFresh(path);
        const a = await fs.getattr(ino);
        return fs.setattr(ino, { mode: (a.mode & ~0o7777) | (mode & 0o7777) });
      }, none),
    // The patched binding passes both times, UTIME_OMIT and UTIME_NOW as
    // sentinels; upstream passes the atime twice (see the header).
    utimens: (path: string, atimeMs: number, mtimeMs: number, cb: FuseCb) =>
      answer('utimens', cb, async () => {
        const now = Date.now();
        const pick = (v: number): Timespec | undefined =>
          v === UTIME_OMIT_MS ? undefined : msToTimespec(v === UTIME_NOW_MS ? now : v);
        const atime = pick(atimeMs);
        const mtime = opts.utimensFixed === true ? pick(mtimeMs) : atime;
        const set: { atime?: Timespec; mtime?: Timespec } = {};
        if (atime !== undefined) set.atime = atime;
        if (mtime !== undefined) set.mtime = mtime;
        return fs.setattr(await resolveFresh(path), set);
      }, none),
    mknod: (path: string, mode: number, dev: number, cb: FuseCb) =>
      answer('mknod', cb, async () => {
        const ctx = callerCtx(); // before the first await: see AdapterOptions.caller
        const { dir, name } = await parentOf(path);
        const a = await fs.mknod(dir, name, mode, dev, ctx);
        paths.remember(path, a.ino);
      }, none),
    mkdir: (path: string, mode: number, cb: FuseCb) =>
      answer('mkdir', cb, async () => {
        const ctx = callerCtx(); // before the first await: see AdapterOptions.caller
        const { dir, name } = await parentOf(path);
        const a = await fs.mkdir(dir, name, mode, ctx);
        paths.remember(path, a.ino);
      }, none),
    unlink: (path: string, cb: FuseCb) =>
      answer('unlink', cb, async () => {
        const last = path.slice(path.lastIndexOf('/') + 1);
        // libfuse removing the hidden name at the last release: the Fs
        // unlinked the inode already and release() finished it.
        if (hidden.delete(last)) return;
        const { dir, name } = await parentOf(path);
        try {
          await fs.unlink(dir, name);
        } finally {
          paths.forget(path);
        }
      }, none),
    rmdir: (path: string, cb: FuseCb) =>
      answer('rmdir', cb, async () => {
        const { dir, name } = await parentOf(path);
        try {
          await fs.rmdir(dir, name);
        } finally {
          paths.forget(path);
        }
      }, none),
    rename: (src: string, dest: string, cb: FuseCb) =>
      answer('rename', cb, async () => {
        const from = await parentOf(src);
        const to = await parentOf(dest);
        if (HIDDEN_NAME.test(to.last) && from.dir === to.dir) {
          // libfuse hiding an open file it is about to unlink or replace.
          const ino = (await fs.lookup(from.dir, from.name)).ino;
          if (isOpenHere(ino)) {
            try {
              await fs.unlink(from.dir, from.name);
            } finally {
              paths.forget(src);
            }
            hidden.set(to.last, ino);
            return;
          }
        }
        try {
          await fs.rename(from.dir, from.name, to.dir, to.name);
        } finally {
          paths.forget(src);
          paths.forget(dest);
        }
      }, none),
    link: (src: string, dest: string, cb: FuseCb) =>
      answer('link', cb, async () => {
        const ino = await resolveFresh(src);
        const { dir, name } = await parentOf(dest);
        const a = await fs.link(ino, dir, name);
        paths.remember(dest, a.ino);
      }, none),
    // symlink(target, linkPath)
    symlink: (target: string, linkPath: string, cb: FuseCb) =>
      answer('symlink', cb, async () => {
        const ctx = callerCtx(); // before the first await: see AdapterOptions.caller
        const { dir, name } = await parentOf(linkPath);
        const a = await fs.symlink(dir, name, nameBytes(target), ctx);
        paths.remember(linkPath, a.ino);
      }, none),
    setxattr: (path: string, name: string, value: Buffer, _position: number, flags: number, cb: FuseCb) => {
      const v = Uint8Array.prototype.slice.call(value);
      // XATTR_CREATE 1, XATTR_REPLACE 2.
      const who = callerCtx(); // before the first await
      answer('setxattr', cb, async () => {
        adminOnly(name, who);
        return fs.setxattr(await resolveFresh(path), nameBytes(name), v, { create: (flags & 1) !== 0, replace: (flags & 2) !== 0 });
      }, none);
    },
    getxattr: (path: string, name: string, _position: number, cb: FuseCb) =>
      answer('getxattr', cb, async () => fs.getxattr(await resolveFresh(path), nameBytes(name)),
        (v) => [Buffer.from(v.buffer, v.byteOffset, v.byteLength)]),
    listxattr: (path: string, cb: FuseCb) =>
      answer('listxattr', cb, async () => fs.listxattr(await resolveFresh(path)),
        (names) => [names.map(nameString).filter((n): n is string => n !== null)]),
    removexattr: (path: string, name: string, cb: FuseCb) => {
      const who = callerCtx(); // before the first await
      answer('removexattr', cb, async () => {
        adminOnly(name, who);
        return fs.removexattr(await resolveFresh(path), nameBytes(name));
      }, none);
    },
  };
  return { ops, paths, openHandles: () => handles.size, hiddenFiles: () => hidden.size, errors, dataRequests: () => inflight.size, abandoned };
}

/* ---- mounting -------------------------------------------------------------------- */

/** The option string that rides in fsname (see the header). */
export function fuseOptions(fsname: string): string {
  const safe = fsname.replace(/[,\s\\]/g, '_') || 'scoutfs';
  return [
    safe, 'subtype=scoutfs', 'use_ino', 'default_permissions', 'allow_other',
    'attr_timeout=0', `entry_timeout=${ENTRY_TIMEOUT_S}`, 'negative_timeout=0',
    'big_writes', `max_write=${MAX_WRITE_BYTES}`,
  ].join(',');
}

export interface FuseMount {
  readonly mnt: string;
  readonly adapter: Adapter;
  readonly optionString: string;
  /** Unmount (fusermount -uz) and stop the FUSE thread; idempotent. */
  unmount(): Promise<void>;
}

/** native/fuse from the project root (this file is dist/src/fuse/adapter.js). */
const PATCHED = fileURLToPath(new URL('../../../native/fuse/', import.meta.url));

/**
 * The patched binding (native/fuse, built by scripts/setup.sh) when it was
 * built, else the fuse-native package.  SCOUTFS_FUSE_BINDING=upstream
 * forces the package (tests of the fallback).
 */
export function loadFuse(): { Fuse: FuseCtor; patched: boolean } {
  if (process.env.SCOUTFS_FUSE_BINDING !== 'upstream' && existsSync(join(PATCHED, 'build', 'Release', 'fuse.node'))) {
    return { Fuse: require(join(PATCHED, 'index.cjs')) as FuseCtor, patched: true };
  }
  return { Fuse: require('fuse-native') as FuseCtor, patched: false };
}

/** Mount `fs` at `mnt`; resolves once the kernel finished FUSE_INIT. */
export async function mountFuse(mnt: string, fs: Fs, opts: AdapterOptions & { fsname?: string }): Promise<FuseMount> {
  const { Fuse, patched } = loadFuse();
  // The instance exists only after the ops table; the caller is read late.
  const holder: { fuse: FuseInstance | null } = { fuse: null };
  const adapter = makeAdapter(fs, {
    ...opts,
    ...(patched ? { caller: () => holder.fuse!.caller!(), callerPid: () => holder.fuse!.caller!().pid, utimensFixed: true, ino64: true } : {}),
  });
  const optionString = fuseOptions(opts.fsname ?? 'scoutfs');
  const fuse = new Fuse(mnt, adapter.ops, { fsname: optionString, maxRead: MAX_WRITE_BYTES, timeout: OP_TIMEOUTS });
  holder.fuse = fuse;
  if (!patched) opts.log('fuse: native/fuse is not built; using the fuse-native package (new files belong to the daemon, st_ino is 32 bits)');
  await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())));
  let unmounting: Promise<void> | null = null;
  return {
    mnt,
    adapter,
    optionString,
    unmount(): Promise<void> {
      if (!unmounting) {
        unmounting = new Promise<void>((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve())));
      }
      return unmounting;
    },
  };
}

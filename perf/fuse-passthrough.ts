/*
 * perf/fuse-passthrough.ts is the FUSE baseline of the perf suite: a
 * passthrough filesystem written with fuse-native@2 that mirrors a backing
 * directory (a tmpfs in the suite) at a mount point.
 *
 *   node dist/perf/fuse-passthrough.js [--product] BACKING_DIR MOUNTPOINT
 *
 * Why it exists.  Our scoutfs mount goes through the same binding, so the
 * cost of FUSE + fuse-native + one JS thread is a floor no FUSE filesystem
 * of ours can beat.  Comparing scoutfs to this passthrough separates "our
 * code is slow" from "FUSE in Node is slow"; comparing it to ext4 shows
 * what FUSE costs at all.
 *
 * It runs on the main thread of its own process: fuse-native calls every
 * handler on the main JS thread (its FUSE loop thread hands requests over
 * and waits), so the handlers here use synchronous fs calls, which on a
 * tmpfs never block for long and avoid a libuv threadpool hop per request.
 * A handler never throws: every error becomes the negative errno Node
 * reports in err.errno (Linux errno, as FUSE wants).  An unknown error is
 * EIO.
 *
 * fuse-native details that matter here:
 *   - Op timeouts: fuse-native answers ETIMEDOUT for any op whose callback
 *     has not run within `timeout` (15 s default).  Our ops are synchronous
 *     and short, but a 128 KiB write to a tmpfs under memory pressure must
 *     not turn into a spurious ETIMEDOUT in a benchmark: the timeout is 120 s.
 *   - fsync's arguments are (path, datasync, fd, cb), not (path, fd,
 *     datasync, cb) as its README says (index.js _op_fsync).
 *   - fgetattr is routed to ops.getattr by index.js, and utimens receives
 *     the atime in both positions (fuse-native.c); we implement both as the
 *     binding actually calls them.
 *   - create() gets no open flags, only the mode: the kernel already did
 *     the O_EXCL check through lookup, so we open O_CREAT|O_RDWR.
 *   - Mount options: the binding only emits options from a fixed list, but
 *     appends `fsname` verbatim to the -o string, which is how options
 *     reach libfuse.  Two sets:
 *       - PRODUCT_OPTIONS, with --product, what the perf suite mounts (issue #10: "the
 *         cache options it would use as a product"): libfuse2's largest
 *         requests (big_writes, max_write 128 KiB), kernel_cache (its
 *         backing tmpfs is written only through this mount, so pages stay
 *         valid across opens) and libfuse's default 1 s entry and
 *         attribute timeouts (longer ones would hide changes made to the
 *         backing directory, which libfuse2's path API cannot invalidate).
 *       - passthroughOptions(), by default: the scoutfs fuse-native mount's
 *         own option string (src/fuse/adapter.ts fuseOptions), which
 *         perf/fuse-opcount.ts uses too so that its request counts compare
 *         the same kernel caching.  Only the subtype differs
 *         (fuse.passthrough), and allow_other is dropped when not root.
 *     The mount log prints the full option string.
 *
 * Lifecycle: prints "mounted BACKING at MOUNTPOINT (options)" once the
 * kernel finished FUSE_INIT; on SIGTERM or SIGINT it unmounts
 * (fusermount -u) and exits 0.  If it dies without unmounting, the harness
 * cleanup unmounts the dead mount (fusermount -uz).
 */
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fuseOptions, MAX_WRITE_BYTES } from '../src/fuse/adapter.js';

const require = createRequire(import.meta.url);

type Cb = (code: number, ...rest: unknown[]) => void;
interface FuseCtor {
  new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>): {
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
  };
  EIO: number;
}

const Fuse = require('fuse-native') as FuseCtor;

/** The options the perf suite's passthrough mounts with (see the header). */
export const PRODUCT_OPTIONS = 'perf-passthrough,big_writes,max_write=131072,kernel_cache,entry_timeout=1,attr_timeout=1';

/** The scoutfs mount's FUSE options for a passthrough mount (see the header). */
export function passthroughOptions(fsname: string): string {
  const o = fuseOptions(fsname).split(',').map((x) => (x === 'subtype=scoutfs' ? 'subtype=passthrough' : x));
  return (process.getuid?.() === 0 ? o : o.filter((x) => x !== 'allow_other')).join(',');
}

function errno(e: unknown): number {
  const n = (e as { errno?: unknown }).errno;
  return typeof n === 'number' && n < 0 ? n : Fuse.EIO;
}

export function passthroughOps(backing: string): Record<string, unknown> {
  const real = (p: string): string => join(backing, p);
  // Run a synchronous body and answer the kernel: its result, or its errno.
  const run = (cb: Cb, body: () => unknown[] | void): void => {
    let out: unknown[] | void;
    try {
      out = body();
    } catch (e) {
      cb(errno(e));
      return;
    }
    cb(0, ...(out ?? []));
  };
  return {
    getattr: (p: string, cb: Cb) => run(cb, () => [fs.lstatSync(real(p))]),
    access: (p: string, mode: number, cb: Cb) => run(cb, () => fs.accessSync(real(p), mode)),
    statfs: (p: string, cb: Cb) =>
      run(cb, () => {
        const s = fs.statfsSync(real(p));
        return [{ bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail,
          files: s.files, ffree: s.ffree, favail: s.ffree, fsid: 0, flag: 0, namemax: 255 }];
      }),
    readdir: (p: string, cb: Cb) => run(cb, () => [fs.readdirSync(real(p))]),
    open: (p: string, flags: number, cb: Cb) => run(cb, () => [fs.openSync(real(p), flags)]),
    create: (p: string, mode: number, cb: Cb) =>
      run(cb, () => [fs.openSync(real(p), fs.constants.O_CREAT | fs.constants.O_RDWR, mode)]),
    read: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) => {
      try {
        cb(fs.readSync(fd, buf, 0, len, pos));
      } catch (e) {
        cb(errno(e));
      }
    },
    write: (_p: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) => {
      try {
        cb(fs.writeSync(fd, buf, 0, len, pos));
      } catch (e) {
        cb(errno(e));
      }
    },
    flush: (_p: string, _fd: number, cb: Cb) => cb(0),
    // (path, datasync, fd): the order the binding really uses.
    fsync: (_p: string, datasync: number, fd: number, cb: Cb) =>
      run(cb, () => (datasync ? fs.fdatasyncSync(fd) : fs.fsyncSync(fd))),
    release: (_p: string, fd: number, cb: Cb) => run(cb, () => fs.closeSync(fd)),
    truncate: (p: string, size: number, cb: Cb) => run(cb, () => fs.truncateSync(real(p), size)),
    ftruncate: (_p: string, fd: number, size: number, cb: Cb) => run(cb, () => fs.ftruncateSync(fd, size)),
    unlink: (p: string, cb: Cb) => run(cb, () => fs.unlinkSync(real(p))),
    mkdir: (p: string, mode: number, cb: Cb) => run(cb, () => void fs.mkdirSync(real(p), { mode })),
    rmdir: (p: string, cb: Cb) => run(cb, () => fs.rmdirSync(real(p))),
    rename: (src: string, dest: string, cb: Cb) => run(cb, () => fs.renameSync(real(src), real(dest))),
    link: (src: string, dest: string, cb: Cb) => run(cb, () => fs.linkSync(real(src), real(dest))),
    symlink: (target: string, linkPath: string, cb: Cb) => run(cb, () => fs.symlinkSync(target, real(linkPath))),
    readlink: (p: string, cb: Cb) => run(cb, () => [fs.readlinkSync(real(p))]),
    chmod: (p: string, mode: number, cb: Cb) => run(cb, () => fs.chmodSync(real(p), mode)),
    chown: (p: string, uid: number, gid: number, cb: Cb) => run(cb, () => fs.lchownSync(real(p), uid, gid)),
    // The binding passes the atime twice (see above); milliseconds.
    utimens: (p: string, atimeMs: number, mtimeMs: number, cb: Cb) =>
      run(cb, () => fs.utimesSync(real(p), atimeMs / 1000, mtimeMs / 1000)),
  };
}

function main(): void {
  const args = process.argv.slice(2);
  const product = args[0] === '--product';
  const [backing, mntArg] = product ? args.slice(1) : args;
  if (!backing || !mntArg) {
    process.stderr.write('usage: fuse-passthrough.js [--product] BACKING_DIR MOUNTPOINT\n');
    process.exit(2);
  }
  const mnt = resolve(mntArg);
  if (!fs.statSync(backing).isDirectory()) throw new Error(`${backing} is not a directory`);
  const opts = {
    // Appended verbatim to -o by the binding (see the header).
    fsname: product ? PRODUCT_OPTIONS : passthroughOptions('perf-passthrough'),
    maxRead: MAX_WRITE_BYTES,
    timeout: 120_000,
    mkdir: true,
  };
  const fuse = new Fuse(mnt, passthroughOps(backing), opts);
  fuse.mount((err) => {
    if (err) {
      process.stderr.write(`fuse-passthrough: mount failed: ${err.message}\n`);
      process.exit(1);
    }
    process.stdout.write(`mounted ${backing} at ${mnt} (fsname=${opts.fsname}, max_read=${opts.maxRead}, op timeout ${opts.timeout} ms)\n`);
  });
  let stopping = false;
  const stop = (sig: string): void => {
    if (stopping) return;
    stopping = true;
    const mounts = fs.readFileSync('/proc/mounts', 'utf8');
    if (!mounts.split('\n').some((l) => l.split(' ')[1] === mnt)) {
      // Unmounted from outside (harness cleanup runs fusermount first).
      process.stdout.write(`${sig}: ${mnt} already unmounted; exiting\n`);
      process.exit(0);
    }
    process.stdout.write(`${sig}: unmounting ${mnt}\n`);
    fuse.unmount((err) => {
      if (err) process.stderr.write(`fuse-passthrough: unmount failed: ${err.message}\n`);
      process.exit(err ? 1 : 0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

// Mount only when run as a program; importing passthroughOps (diagnostics,
// tests) must not mount anything.
if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) main();

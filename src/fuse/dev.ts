/*
 * src/fuse/dev.ts: /dev/fuse and the mount, with no libfuse.
 *
 *   openDevice()      open /dev/fuse read-write (one fd: the connection)
 *   dev.start(cb)     deliver each request message to cb
 *   kernelMount()     `mount -i -t fuse.scoutfs -o fd=3,rootmode=40000,
 *                     user_id=U,group_id=G,allow_other,default_permissions
 *                     SOURCE MNT` with the device fd as the child's fd 3:
 *                     the kernel binds the new mount to our open file
 *   kernelUnmount()   `umount MNT`, lazily (-l) when it is busy
 *
 * Reading without starving the libuv pool.  A read(2) of /dev/fuse blocks
 * until the kernel has a request, so an fs.read() would hold a pool thread
 * for as long as the mount is idle, and the Fs needs the pool for its
 * device I/O.  Two readers, chosen at open:
 *   - native (native/fusedev, built by scripts/setup.sh): uv_poll on the
 *     non-blocking fd, read(2) when readable, on the main thread.  Nothing
 *     waits anywhere; this is the fast one.
 *   - worker (the pure-JS fallback when the addon is not built, or with
 *     SCOUTFS_FUSE_READER=worker): one worker thread loops on a blocking
 *     readSync of the fd and posts each message (its ArrayBuffer
 *     transferred) to the main thread.  It holds its own thread, never a
 *     pool one.  Rejected: raising UV_THREADPOOL_SIZE and keeping pool
 *     reads outstanding, because the pool is already running before any
 *     module code runs (measured: Node 20's ESM loader reads the entry
 *     module through it), so only the environment of the process could
 *     raise it.
 * Reading starts after mount(2) bound the device (before, reads fail and
 * poll says error).  Either way one reader delivers requests in the kernel's order, and the
 * main thread then handles many at once (session.ts).
 *
 * Writes.  Replies are one synchronous writev(2) on the main thread: the
 * kernel copies them and never blocks a reply.  Notifications can block in
 * the kernel (notify.ts), so they are written from the libuv pool, one at
 * a time, queued in order.  A write refused with ENOENT (the request was
 * interrupted and abandoned, or the notified inode is gone) is not an
 * error; ENODEV means the connection ended.
 *
 * The read buffer is max_write plus a page for the headers, which is what
 * the kernel needs for the largest WRITE request.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync, write, writeFileSync, writevSync, writev } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { FsError, type ErrnoName, ERRNO } from '../format/errors.js';
import type { Channel } from './session.js';

const require = createRequire(import.meta.url);

/** native/fusedev from the project root (this file is dist/src/fuse/dev.js). */
const NATIVE = fileURLToPath(new URL('../../../native/fusedev/build/Release/fusedev.node', import.meta.url));

interface NativeReader {
  start(fd: number, size: number, cb: (b: Buffer | null, errno?: number) => void): unknown;
  stop(h: unknown): void;
  noCaps(h: unknown, ino: bigint, known: boolean): void;
  fastCount(h: unknown): number;
}

export type ReaderKind = 'native' | 'worker';

/** The reader this process would use. */
export function readerKind(): ReaderKind {
  if (process.env.SCOUTFS_FUSE_READER === 'worker') return 'worker';
  return existsSync(NATIVE) ? 'native' : 'worker';
}

const ERRNO_NAME = new Map<number, string>(Object.entries(ERRNO).map(([k, v]) => [v, k]));

function codeOf(e: unknown): string {
  return (e as NodeJS.ErrnoException).code ?? String(e);
}

/** The worker reader's body (eval'd): blocking reads, each message posted with its buffer. */
const WORKER_SRC = `
const { parentPort, workerData } = require('node:worker_threads');
const { readSync } = require('node:fs');
const buf = Buffer.allocUnsafe(workerData.size);
for (;;) {
  let n;
  try {
    n = readSync(workerData.fd, buf, 0, buf.length, null);
  } catch (e) {
    if (e.code === 'EINTR' || e.code === 'ENOENT' || e.code === 'EAGAIN') continue;
    parentPort.postMessage({ end: e.code || String(e) });
    break;
  }
  const out = new Uint8Array(n);
  out.set(buf.subarray(0, n));
  parentPort.postMessage(out, [out.buffer]);
}
`;

export class FuseDevice implements Channel {
  readonly reader: ReaderKind;
  private nativeHandle: unknown = null;
  private worker: Worker | null = null;
  private closed = false;
  private notifyChain: Promise<void> = Promise.resolve();

  private constructor(readonly fd: number, private readonly bufSize: number) {
    this.reader = readerKind();
  }

  /** Open /dev/fuse; `bufSize` is max_write plus a page. */
  static open(bufSize: number): FuseDevice {
    let fd: number;
    try {
      fd = openSync('/dev/fuse', 'r+');
    } catch (e) {
      throw new FsError('ENODEV', `cannot open /dev/fuse: ${codeOf(e)} (is the fuse module loaded?)`);
    }
    return new FuseDevice(fd, bufSize);
  }

  /**
   * Deliver every message to onMessage, in order; onEnd once when the
   * device ends (ENODEV after the unmount) or fails.
   */
  start(onMessage: (m: Buffer) => void, onEnd: (code: string) => void): void {
    if (this.reader === 'native') {
      const n = require(NATIVE) as NativeReader;
      this.nativeHandle = n.start(this.fd, this.bufSize, (b, errno) => {
        if (b !== null) onMessage(b);
        else onEnd(ERRNO_NAME.get(errno ?? 0) ?? `errno ${errno}`);
      });
      return;
    }
    const w = new Worker(WORKER_SRC, { eval: true, workerData: { fd: this.fd, size: this.bufSize } });
    this.worker = w;
    w.on('message', (m: Uint8Array | { end: string }) => {
      if (m instanceof Uint8Array) onMessage(Buffer.from(m.buffer, m.byteOffset, m.byteLength));
      else onEnd(m.end);
    });
    w.on('error', (e) => onEnd(`reader thread: ${e.message}`));
    // The worker blocks in read(2) while the mount is idle: it must not
    // keep the process alive by itself.
    w.unref();
  }

  /**
   * Mirror of ops.ts's set of inodes without security.capability: the
   * native reader answers their GETXATTR itself.  No-op for the worker.
   */
  noCaps(ino: bigint, known: boolean): void {
    if (this.nativeHandle !== null && !this.closed) (require(NATIVE) as NativeReader).noCaps(this.nativeHandle, ino, known);
  }

  /** Requests the native reader answered without JavaScript. */
  fastCount(): number {
    return this.nativeHandle !== null && !this.closed ? (require(NATIVE) as NativeReader).fastCount(this.nativeHandle) : 0;
  }

  reply(parts: readonly Uint8Array[]): boolean {
    try {
      writevSync(this.fd, parts as Uint8Array[]);
      return true;
    } catch (e) {
      const c = codeOf(e);
      if (c === 'ENOENT') return false;
      if (c === 'ENODEV') return false;
      throw e;
    }
  }

  notify(parts: readonly Uint8Array[]): Promise<void> {
    const p = this.notifyChain.then(() => new Promise<void>((resolve, reject) => {
      const cb = (e: NodeJS.ErrnoException | null): void => {
        if (e === null) resolve();
        else if (e.code === 'ENOENT' || e.code === 'ENODEV') reject(new FsError(e.code === 'ENOENT' ? 'ENOENT' : 'ENOTCONN', 'notify'));
        else reject(new FsError((e.code ?? 'EIO') in ERRNO ? (e.code as ErrnoName) : 'EIO', `notify: ${e.message}`));
      };
      if (parts.length === 1) write(this.fd, parts[0]!, cb);
      else writev(this.fd, parts as Uint8Array[], (e) => cb(e));
    }));
    this.notifyChain = p.catch(() => {});
    return p;
  }

  /** Stop reading and close the fd (the connection ends if nothing else holds it). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.nativeHandle !== null) (require(NATIVE) as NativeReader).stop(this.nativeHandle);
    // The worker may sit in read(2) of this fd; closing it there is safe
    // (the read ends with EBADF or ENODEV) and terminate() reaps the thread.
    void this.worker?.terminate();
    try {
      closeSync(this.fd);
    } catch {
      // Already gone.
    }
  }
}

/* ---- mount and unmount ------------------------------------------------------------ */

function run(cmd: string, args: string[], extraFd?: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'pipe', 'pipe'];
    if (extraFd !== undefined) stdio.push(extraFd);
    const c = spawn(cmd, args, { stdio, cwd: '/' });
    let out = '';
    c.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    c.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', (e) => resolve({ code: -1, out: `${cmd}: ${e.message}` }));
    c.on('close', (code) => resolve({ code: code ?? -1, out: out.trim() }));
  });
}

/** The mount options that bind a FUSE mount to fd 3 of the mount(8) child. */
export function kernelMountOptions(): string {
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  return `fd=3,rootmode=40000,user_id=${uid},group_id=${gid},allow_other,default_permissions`;
}

/**
 * Mount `dev` at `mnt` as fuse.scoutfs with `source` as its source.  The
 * reader must already run: mount(2) sends INIT and anything mount(8) does
 * on the new mount afterwards waits for its answer.
 */
export async function kernelMount(dev: FuseDevice, source: string, mnt: string): Promise<void> {
  const r = await run('mount', ['-i', '-t', 'fuse.scoutfs', '-o', kernelMountOptions(), source, mnt], dev.fd);
  if (r.code !== 0) throw new FsError('EIO', `mount -t fuse.scoutfs ${mnt} failed (exit ${r.code}): ${r.out}`);
}

/** `umount MNT`, then `umount -l MNT` if it was busy.  Throws when neither worked. */
export async function kernelUnmount(mnt: string): Promise<void> {
  const r = await run('umount', [mnt]);
  if (r.code === 0) return;
  const l = await run('umount', ['-l', mnt]);
  if (l.code !== 0) throw new FsError('EIO', `umount ${mnt}: ${r.out}; umount -l: ${l.out}`);
}

/**
 * "major:minor" of the filesystem mounted at `mnt` (its bdi name), from
 * /proc/self/mountinfo: never stat() our own mount from the thread that
 * serves it (the stat would wait for an answer only this thread gives).
 */
export function mountDevId(mnt: string): string {
  let id: string | null = null;
  for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = l.split(' ');
    if (f.length < 5) continue;
    const target = f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (target === mnt) id = f[2]!;
  }
  if (id === null) throw new FsError('ENOENT', `${mnt} is not in /proc/self/mountinfo`);
  return id;
}

/**
 * Raise the mount's readahead so sequential reads arrive as requests of
 * up to `kb` KiB (the kernel starts FUSE mounts at 128 KiB).  Best effort:
 * returns the error text when the bdi cannot be written.
 */
export function raiseReadahead(devId: string, kb: number): string | null {
  const p = join('/sys/class/bdi', devId, 'read_ahead_kb');
  try {
    if (Number(readFileSync(p, 'utf8').trim()) >= kb) return null;
    writeFileSync(p, `${kb}\n`);
    return null;
  } catch (e) {
    return `${p}: ${codeOf(e)}`;
  }
}

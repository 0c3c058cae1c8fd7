/*
 * src/fuse/kernel.ts: a mount served over /dev/fuse by our own protocol
 * code (the default transport of `scoutfs mount`), put together from
 * dev.ts (device, reader, mount(8)), session.ts (the connection), ops.ts
 * (requests -> Fs) and notify.ts (invalidations).
 *
 * mountKernel resolves once the mount is in place and the kernel's INIT
 * was answered; `ended` resolves when the connection is gone (the mount
 * was unmounted from outside, or aborted), which is how the daemon learns
 * of `umount MNT` at once.  unmount() runs `umount MNT` (lazily when busy)
 * and waits for the end of the connection.
 *
 * After INIT the mount's readahead is raised to 4 MiB (the bdi of a new
 * FUSE mount starts at 128 KiB), so sequential reads arrive as 1 MiB
 * requests (max_pages), several in flight at once: measured on a loaded
 * 2-core machine, a warm 256 MiB read ran at 172 MB/s with 1 MiB of
 * readahead and 253 MB/s with 4 MiB.  A failure there is logged, not fatal.
 *
 * Failure while mounting (mount(8) refused, INIT never came): everything
 * opened here is closed again and the error names the step.
 */
import type { Fs } from '../fs/api.js';
import type { Timespec } from '../format/common.js';
import { FsError } from '../format/errors.js';
import { FuseDevice, kernelMount, kernelMountOptions, kernelUnmount, mountDevId, raiseReadahead, type ReaderKind } from './dev.js';
import { Notifier } from './notify.js';
import { Ops, type OpsOptions } from './ops.js';
import { MAX_PAGES, Session, type InitInfo } from './session.js';

export const KERNEL_TIMEOUT_S = 3600;
export const KERNEL_MAX_WRITE = MAX_PAGES * 4096;
export const READAHEAD_KB = 4096;

export interface KernelMountOptions {
  log: (line: string) => void;
  /** The mount's source in /proc/mounts (the data device). */
  source: string;
  now: () => Timespec;
  /** Ask for the writeback cache (default off: see MountOpts.writebackCache in src/mount/daemon.ts). */
  writebackCache?: boolean;
  /** Entry/attribute cache lifetime (default an hour). */
  timeoutS?: number;
  /** How long to wait for INIT after mount(8) returned. */
  initTimeoutMs?: number;
  /** The STATFS_MORE restricted ioctl's fields (ops.ts). */
  statfsMore?: OpsOptions['statfsMore'];
}

export interface KernelMount {
  readonly mnt: string;
  readonly reader: ReaderKind;
  readonly optionString: string;
  readonly session: Session;
  readonly ops: Ops;
  readonly notifier: Notifier;
  /** Resolves with the reason when the connection ends. */
  readonly ended: Promise<string>;
  unmount(): Promise<void>;
  status(): object;
}

export async function mountKernel(mnt: string, fs: Fs, o: KernelMountOptions): Promise<KernelMount> {
  const log = o.log;
  const dev = FuseDevice.open(KERNEL_MAX_WRITE + 4096);
  const holder: { session: Session | null } = { session: null };
  const ops = new Ops(fs, {
    log, timeoutS: o.timeoutS ?? KERNEL_TIMEOUT_S, now: o.now, capSink: (ino, known) => dev.noCaps(ino, known), statfsMore: o.statfsMore,
    kernelKnows: (ino) => (holder.session?.lookupCount(ino) ?? 0n) > 0n,
  });
  let initDone: (i: InitInfo) => void = () => {};
  const inited = new Promise<InitInfo>((r) => (initDone = r));
  const session = new Session(ops, dev, {
    log, writebackCache: o.writebackCache ?? false, maxWriteBytes: KERNEL_MAX_WRITE, onInit: (i) => initDone(i),
  });
  holder.session = session;
  const notifier = new Notifier(session, (ino) => ops.invalidated(ino));
  let endReason: (why: string) => void = () => {};
  const ended = new Promise<string>((r) => (endReason = r));
  let over = false;
  try {
    // The device refuses reads (and poll says error) until mount(2) has
    // bound it, and mount(8) does not wait for INIT: mount, then read.
    await kernelMount(dev, o.source, mnt);
    dev.start((m) => session.handle(m), (code) => {
      over = true;
      endReason(code === 'ENODEV' ? 'unmounted' : `device read failed: ${code}`);
    });
    const timeout = new Promise<never>((_r, reject) => {
      const t = setTimeout(() => reject(new FsError('ETIMEDOUT', 'the kernel sent no FUSE INIT')), o.initTimeoutMs ?? 30_000);
      t.unref();
      void inited.then(() => clearTimeout(t));
    });
    await Promise.race([inited, timeout, ended.then((why) => { throw new FsError('EIO', `connection ended during mount: ${why}`); })]);
  } catch (e) {
    if (!over) await kernelUnmount(mnt).catch(() => {});
    dev.close();
    throw e;
  }
  const ra = raiseReadahead(mountDevId(mnt), READAHEAD_KB);
  if (ra !== null) log(`fuse: readahead stays at the kernel's default: ${ra}`);
  void ended.then(() => dev.close());
  let unmounting: Promise<void> | null = null;
  return {
    mnt, reader: dev.reader, session, ops, notifier, ended,
    optionString: `${kernelMountOptions().replace(/^fd=3,/, '')} (reader ${dev.reader}, ${o.writebackCache === true ? 'writeback cache' : 'write-through'}, cache ${o.timeoutS ?? KERNEL_TIMEOUT_S} s)`,
    unmount(): Promise<void> {
      if (unmounting === null) {
        unmounting = (async () => {
          if (!over) await kernelUnmount(mnt);
          await ended;
        })();
      }
      return unmounting;
    },
    status() {
      return {
        transport: 'kernel', reader: dev.reader, init: session.initialized, session: session.counters,
        knownInodes: session.knownInodes(), openHandles: ops.openHandles(),
        requests: ops.counters.requests, fastCapMiss: ops.counters.fastCapMiss, nativeCapMiss: dev.fastCount(),
        errors: Object.fromEntries(ops.counters.errors), notify: notifier.counters,
      };
    },
  };
}

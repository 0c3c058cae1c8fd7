/*
 * src/mount/daemon.ts is the body of `scoutfs mount`: one process per
 * mount that opens the devices, runs the filesystem (src/mount/mount.ts
 * openMount), serves it to the kernel through FUSE (src/fuse/) and serves
 * the CLI through the control channel (src/mount/control.ts).
 *
 * Life cycle, in order (each step undone in reverse on any failure):
 *   1. Parse the -o options strictly (parseMountOptions): we reject what
 *      the kernel would only log (PROTOCOL.md preamble), so a typo never
 *      mounts with defaults.
 *   2. Refuse a busy mount point (anything mounted there in /proc/mounts)
 *      and a second mount of the same devices: each device's realpath is
 *      claimed by a pid file <runDir>/dev-<sha1>.pid created exclusively;
 *      a claim whose pid is dead is stale and taken over.
 *   3. Open both devices, read the meta super: quorum_slot_nr must name a
 *      configured slot (1.2), and fsid/totals are kept for statfs.
 *   4. openMount, then the FUSE mount (resolves after FUSE_INIT), then the
 *      control socket.  Only then the line "mounted DATA at MNT" is logged:
 *      the detached parent and the tests wait for it.
 *   5. Stop on SIGTERM/SIGINT, or when the mount disappears from
 *      /proc/mounts (someone ran `umount MNT` or `fusermount -u MNT`; the
 *      binding does not tell us, so we poll every 500 ms): close the
 *      control socket, commit (Fs.sync), remove the FUSE mount if it is
 *      still there, close the mount (which commits again and says
 *      farewell), release the claims, exit 0.  Any error on the way is
 *      logged and the exit status is 1, but every later step still runs:
 *      the FUSE mount is always removed.
 *   An uncaught exception or rejection is logged, the FUSE mount is removed
 *   synchronously (fusermount -uz) and the process exits 1, so a dead
 *   daemon never leaves a mount that answers ENOTCONN.
 *
 * Everything runs on the main thread; the Fs calls the adapter makes and
 * the control requests interleave at await points like any other work.
 *
 * Left out: quorum election and networking are not in openMount yet, so
 * quorum_slot_nr is validated and recorded but every mount runs its own
 * in-process server.  Running two daemons on one volume is refused here on
 * one host only; nothing fences across hosts.
 */
import { createHash } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import type { Fs } from '../fs/api.js';
import type { Timespec } from '../format/common.js';
import type { BlockDevice } from '../runtime/device.js';
import { FileBlockDevice } from '../runtime/device.js';
import { CryptoRandom, type Random } from '../runtime/random.js';
import { RealClock, type Clock } from '../runtime/clock.js';
import { presentSlots } from '../format/super.js';
import { readMetaSuper } from '../server/volume.js';
import { FsError } from '../format/errors.js';
import { mountFuse } from '../fuse/adapter.js';
import { mountKernel, type KernelMountOptions } from '../fuse/kernel.js';
import { mountDevId } from '../fuse/dev.js';
import type { Invalidator } from '../fuse/notify.js';
import { DEFAULT_RUN_DIR, startControlServer, type ControlServer, type ControlRequest } from './control.js';
import { stageFromFile } from './stagefile.js';

/** How the mount talks to the kernel (see src/fuse/kernel.ts and adapter.ts). */
export type Transport = 'kernel' | 'fuse-native';
export const TRANSPORTS: readonly Transport[] = ['kernel', 'fuse-native'];

export interface MountOpts {
  metadevPath: string;
  quorumSlotNr: number | null;
  transport: Transport;
  /**
   * The kernel's writeback cache (kernel transport, `-o writeback_cache`).
   * Off by default: with it the kernel acknowledges write(2) from its page
   * cache and owns the file size, so a full device is reported only at
   * fsync or close while the cache still shows the unwritten bytes, and a
   * size changed behind the kernel's back cannot be invalidated.  On, small
   * writes run at page-cache speed; for a single node that will not fill up.
   */
  writebackCache: boolean;
}

export class MountOptionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MountOptionError';
  }
}

/** Parse `-o` strictly: unknown, repeated or malformed options are errors. */
export function parseMountOptions(s: string): MountOpts {
  let metadevPath: string | null = null;
  let quorumSlotNr: number | null = null;
  let transport: Transport | null = null;
  let writebackCache: boolean | null = null;
  for (const part of s.split(',')) {
    if (part === '') throw new MountOptionError(`empty option in '${s}'`);
    const eq = part.indexOf('=');
    const key = eq < 0 ? part : part.slice(0, eq);
    const val = eq < 0 ? null : part.slice(eq + 1);
    if (key === 'metadev_path') {
      if (metadevPath !== null) throw new MountOptionError('metadev_path given twice');
      if (!val) throw new MountOptionError('metadev_path needs a path: metadev_path=PATH');
      metadevPath = val;
    } else if (key === 'quorum_slot_nr') {
      if (quorumSlotNr !== null) throw new MountOptionError('quorum_slot_nr given twice');
      if (val === null || !/^\d+$/.test(val) || Number(val) >= 15) {
        throw new MountOptionError(`quorum_slot_nr must be a number from 0 to 14, not '${val ?? ''}'`);
      }
      quorumSlotNr = Number(val);
    } else if (key === 'transport') {
      if (transport !== null) throw new MountOptionError('transport given twice');
      if (!TRANSPORTS.includes(val as Transport)) throw new MountOptionError(`transport must be ${TRANSPORTS.join(' or ')}, not '${val ?? ''}'`);
      transport = val as Transport;
    } else if (key === 'writeback_cache') {
      if (writebackCache !== null) throw new MountOptionError('writeback_cache given twice');
      if (val !== null) throw new MountOptionError('writeback_cache takes no value');
      writebackCache = true;
    } else {
      throw new MountOptionError(`unknown mount option '${key}' (known: metadev_path, quorum_slot_nr, transport, writeback_cache)`);
    }
  }
  if (metadevPath === null) throw new MountOptionError('the metadev_path=PATH option is required');
  if (writebackCache === true && transport === 'fuse-native') throw new MountOptionError('writeback_cache needs transport=kernel');
  return { metadevPath, quorumSlotNr, transport: transport ?? 'kernel', writebackCache: writebackCache ?? false };
}

/** The mount the daemon runs: openMount's result (src/mount/mount.ts). */
export interface OpenedMount {
  fs: Fs;
  searchXattrs(name: Uint8Array): Promise<{ inos: bigint[]; complete: boolean }>;
  readXattrTotals(): Promise<{ name: [bigint, bigint, bigint]; total: bigint; count: bigint }[]>;
  close(): Promise<void>;
  status(): object;
}
export type OpenMountFn = (opts: {
  metaDev: BlockDevice; dataDev: BlockDevice; random: Random; clock: Clock; log?: (line: string) => void;
}) => Promise<OpenedMount>;

export interface DaemonArgs {
  dataPath: string;
  mnt: string;
  opts: MountOpts;
  log: (line: string) => void;
  runDir?: string;
  /** Injected in tests; defaults to src/mount/mount.ts. */
  openMount?: OpenMountFn;
}

function mountedTargets(): string[] {
  const out: string[] = [];
  for (const l of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const f = l.split(' ');
    if (f.length > 2) out.push(f[1]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
  }
  return out;
}

export function isMountPoint(path: string): boolean {
  return mountedTargets().includes(path);
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function cmdlineOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
  } catch {
    return '?';
  }
}

/** How long a new mount waits for the previous daemon of its devices to exit. */
export const CLAIM_WAIT_MS = 30_000;

/**
 * Claim a device for this process: <runDir>/dev-<sha1>.pid holds
 * "pid\ndevice\nmount point\n[exiting]".  A claim of a dead pid is taken
 * over.  A live daemon that is leaving (it marked its claim exiting, or its
 * mount point is no longer mounted: it is committing after an unmount) is
 * waited for, up to `waitMs`; a live daemon still serving its mount is
 * EBUSY at once.  The error names the pid and its command line.  The
 * offline CLI commands (change-format-version, resize-devices -F) claim
 * with waitMs 0 and remove the file when done.
 */
export async function claimDevice(runDir: string, devPath: string, mnt: string, log: (l: string) => void, waitMs = CLAIM_WAIT_MS): Promise<string> {
  const real = realpathSync(devPath);
  const file = join(runDir, `dev-${createHash('sha1').update(real).digest('hex')}.pid`);
  const deadline = Date.now() + waitMs;
  let said = false;
  for (;;) {
    try {
      writeFileSync(file, `${process.pid}\n${real}\n${mnt}\n`, { flag: 'wx', mode: 0o600 });
      return file;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    let lines: string[];
    try {
      lines = readFileSync(file, 'utf8').split('\n');
    } catch {
      continue; // removed meanwhile: try again
    }
    const pid = Number(lines[0]);
    if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
      const leaving = lines[3] === 'exiting' || (lines[2] !== undefined && lines[2] !== '' && !isMountPoint(lines[2]));
      if (!leaving) throw new FsError('EBUSY', `${real} is already mounted by scoutfs daemon pid ${pid} (${cmdlineOf(pid)}) at ${lines[2] ?? '?'}`);
      if (Date.now() >= deadline) {
        throw new FsError('EBUSY', `${real} is already mounted by scoutfs daemon pid ${pid} (${cmdlineOf(pid)}); it did not exit within ${waitMs / 1000} s`);
      }
      if (!said) {
        log(`scoutfs mount: ${real} is held by scoutfs daemon pid ${pid}; waiting up to ${waitMs / 1000} s for it to exit`);
        said = true;
      }
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    rmSync(file, { force: true });
  }
}

/** The /proc/self/mountinfo line of the mount at `mnt`, split, or null. */
function mountInfo(mnt: string): { devId: string; fstype: string } | null {
  let found: { devId: string; fstype: string } | null = null;
  for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = l.split(' ');
    if (f.length < 10) continue;
    const target = f[4]!.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    if (target !== mnt) continue;
    const dash = f.indexOf('-');
    found = { devId: f[2]!, fstype: dash > 0 ? f[dash + 1]! : '?' };
  }
  return found;
}

/**
 * A mount point still holding the FUSE mount of a daemon that died
 * (every syscall there answers ENOTCONN) is cleared with `umount -l`;
 * a live mount there is EBUSY.  Only scoutfs mounts are touched.
 */
function clearDeadMount(mnt: string, log: (l: string) => void): void {
  const m = mountInfo(mnt);
  if (m === null) return;
  let dead = false;
  try {
    statSync(mnt);
  } catch (e) {
    dead = (e as NodeJS.ErrnoException).code === 'ENOTCONN';
  }
  if (!dead || m.fstype !== 'fuse.scoutfs') throw new FsError('EBUSY', `${mnt} is already a mount point (${m.fstype})`);
  try {
    execFileSync('umount', ['-l', mnt], { stdio: 'pipe', timeout: 10_000 });
  } catch (e) {
    throw new FsError('EBUSY', `${mnt} holds the dead mount of a scoutfs daemon that exited and cannot be removed (${(e as Error).message.trim()}); run: umount -l ${mnt}`);
  }
  log(`scoutfs mount: removed the dead mount a previous daemon left at ${mnt} (umount -l ${mnt})`);
}

/**
 * A watcher process that outlives a daemon killed with SIGKILL: it waits
 * for the end of a pipe only the daemon holds, then, if the mount at MNT
 * is still the one this daemon made (same device id in mountinfo) and is
 * dead, removes it with `umount -l` and says so in the daemon's log; if it
 * cannot, it names the command that clears it.  A daemon that exits
 * normally has unmounted first, so the watcher finds nothing to do.
 */
function startWatcher(mnt: string, devId: string): void {
  // mountinfo's octal escapes, with backslashes doubled for awk -v.
  const esc = mnt.replace(/[\\ \t\n]/g, (c) => `\\${c.charCodeAt(0).toString(8).padStart(3, '0')}`).replace(/\\/g, '\\\\');
  const script = [
    'cat >/dev/null',
    'awk -v d="$2" -v m="$3" \'$3==d && $5==m {f=1} END {exit !f}\' /proc/self/mountinfo || exit 0',
    'stat "$1" >/dev/null 2>&1 && exit 0',
    'if umount -l "$1" 2>/dev/null; then echo "scoutfs mount watcher: daemon pid $4 died; removed its dead mount $1 (umount -l $1)" >&2;',
    'else echo "scoutfs mount watcher: daemon pid $4 died and its mount $1 is dead; run: umount -l $1" >&2; fi',
  ].join('\n');
  const w = spawn('sh', ['-c', script, 'scoutfs-watch', mnt, devId, esc, String(process.pid)], {
    stdio: ['pipe', 'ignore', 'inherit'], detached: true, cwd: '/',
  });
  w.on('error', () => {});
  w.unref();
  // The write end stays open in this process until it dies, without
  // keeping the event loop alive.
  (w.stdin as unknown as Socket).unref();
}

function hex16(n: bigint): string {
  return n.toString(16).padStart(16, '0');
}

function u64(v: unknown, what: string): bigint {
  if (typeof v !== 'string' || !/^\d+$/.test(v)) throw new FsError('EINVAL', `${what} must be a decimal u64`);
  const n = BigInt(v);
  if (n >= 1n << 64n) throw new FsError('EINVAL', `${what} out of range`);
  return n;
}

function timespec(v: unknown, what: string): Timespec | undefined {
  if (v === undefined || v === null) return undefined;
  const t = v as { sec?: unknown; nsec?: unknown };
  const nsec = t.nsec;
  if (typeof nsec !== 'number' || !Number.isInteger(nsec) || nsec < 0 || nsec > 999_999_999) throw new FsError('EINVAL', `${what}.nsec must be 0..999999999`);
  return { sec: u64(t.sec, `${what}.sec`), nsec };
}

const b64 = (u: Uint8Array): string => Buffer.from(u.buffer, u.byteOffset, u.byteLength).toString('base64');

/** The FUSE side of a mount, whichever transport serves it. */
interface Served {
  optionString: string;
  /** Resolves when the kernel connection ended (kernel transport only). */
  ended: Promise<string> | null;
  unmount(): Promise<void>;
  /** A path relative to the mount (the control channel's `stat`) to its ino. */
  resolve(rel: string): Promise<bigint>;
  status(): object;
  /** The kernel's cache invalidation (kernel transport only). */
  invalidator: Invalidator | null;
}

async function serve(
  transport: Transport, mnt: string, fs: Fs,
  o: { log: (l: string) => void; source: string; clock: Clock; statfsMore: KernelMountOptions['statfsMore']; writebackCache: boolean },
): Promise<Served> {
  if (transport === 'fuse-native') {
    const fm = await mountFuse(mnt, fs, { log: o.log, fsname: o.source });
    return {
      optionString: `fuse options ${fm.optionString}`,
      ended: null,
      unmount: () => fm.unmount(),
      resolve: (rel) => fm.adapter.paths.resolve('/' + rel),
      status: () => ({
        transport, pathCache: fm.adapter.paths.size, errors: Object.fromEntries(fm.adapter.errors),
        dataRequests: fm.adapter.dataRequests(), dataWaitsAbandoned: fm.adapter.abandoned.count,
      }),
      invalidator: null,
    };
  }
  const km = await mountKernel(mnt, fs, { log: o.log, source: o.source, now: () => o.clock.wallTime(), statfsMore: o.statfsMore, writebackCache: o.writebackCache });
  return {
    optionString: km.optionString,
    ended: km.ended,
    unmount: () => km.unmount(),
    // Names are bytes: the CLI's path is UTF-8, as the kernel gave it to it.
    async resolve(rel) {
      let ino = fs.rootIno;
      for (const c of rel.split('/').filter((x) => x.length > 0)) ino = (await fs.lookup(ino, Buffer.from(c))).ino;
      return ino;
    },
    status: () => km.status(),
    invalidator: km.notifier,
  };
}

/**
 * The test hook (SCOUTFS_TEST_HOOKS=1 in the daemon's environment only):
 * change the filesystem behind the kernel's back, through the Fs, and
 * invalidate the kernel's caches or not.  Tests use it to show that the
 * kernel's caches hold (no invalidation: the old state stays visible with
 * hour-long timeouts) and that an invalidation makes the change visible
 * at once.  Never reachable without the variable.
 */
async function testHook(fs: Fs, served: Served, req: ControlRequest): Promise<unknown> {
  const rel = typeof req.path === 'string' ? req.path : '';
  const inval = req.invalidate === true ? served.invalidator : null;
  if (req.invalidate === true && inval === null) throw new FsError('EOPNOTSUPP', 'this transport cannot invalidate');
  const name = typeof req.name === 'string' ? Buffer.from(req.name, 'hex') : null;
  switch (req.action) {
    case 'chmod': {
      const ino = await served.resolve(rel);
      await fs.setattr(ino, { mode: Number(req.mode) & 0o7777 });
      await inval?.inode(ino);
      return { ino: String(ino) };
    }
    case 'write': {
      const ino = await served.resolve(rel);
      await fs.write(ino, BigInt(Number(req.off ?? 0)), Buffer.from(String(req.data), 'hex'));
      await inval?.inode(ino);
      return { ino: String(ino) };
    }
    case 'create': {
      if (name === null) throw new FsError('EINVAL', 'create needs a name');
      const dir = await served.resolve(rel);
      const a = await fs.create(dir, name, 0o644, { uid: 0, gid: 0 });
      await inval?.entry(dir, name);
      await inval?.inode(dir);
      return { ino: String(a.ino) };
    }
    case 'unlink': {
      if (name === null) throw new FsError('EINVAL', 'unlink needs a name');
      const dir = await served.resolve(rel);
      const ino = (await fs.lookup(dir, name)).ino;
      await fs.unlink(dir, name);
      await inval?.deleted(dir, ino, name);
      await inval?.inode(dir);
      return { ino: String(ino) };
    }
    default:
      throw new FsError('EINVAL', `unknown test hook action '${String(req.action)}'`);
  }
}

/** Run a mount until it is stopped; resolves with the exit status. */
export async function runDaemon(a: DaemonArgs): Promise<number> {
  const log = a.log;
  const runDir = a.runDir ?? DEFAULT_RUN_DIR;
  const undo: { name: string; fn: () => Promise<void> | void }[] = [];
  let mnt = '';
  let stopWaits: (() => void) | null = null;
  let kernelEnded: Promise<string> | null = null;
  const claims: string[] = [];
  // A new mount of our devices waits for a claim marked exiting.
  const markExiting = (): void => {
    for (const c of claims) {
      try {
        const l = readFileSync(c, 'utf8').split('\n');
        if (Number(l[0]) === process.pid) writeFileSync(c, `${l[0]}\n${l[1]}\n${l[2]}\nexiting\n`);
      } catch {
        // Gone already.
      }
    }
  };
  let exitCode = 0;

  const emergencyUnmount = (): void => {
    if (!mnt) return;
    try {
      if (isMountPoint(mnt)) execFileSync('umount', ['-l', mnt], { stdio: 'ignore', timeout: 10_000 });
    } catch {
      // Nothing more we can do from a dying process.
    }
  };
  const onFatal = (what: string) => (e: unknown): void => {
    log(`scoutfs mount: ${what}: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
    emergencyUnmount();
    process.exit(1);
  };
  process.on('uncaughtException', onFatal('uncaught exception'));
  process.on('unhandledRejection', onFatal('unhandled rejection'));

  const teardown = async (): Promise<void> => {
    while (undo.length > 0) {
      const u = undo.pop()!;
      try {
        await u.fn();
      } catch (e) {
        exitCode = 1;
        log(`scoutfs mount: ${u.name} failed: ${(e as Error).message}`);
      }
    }
  };

  try {
    mnt = realpathSync(a.mnt);
    if (!statSync(mnt).isDirectory()) throw new FsError('ENOTDIR', `${a.mnt} is not a directory`);
    mkdirSync(runDir, { recursive: true, mode: 0o700 });
    for (const dev of [a.opts.metadevPath, a.dataPath]) {
      const claim = await claimDevice(runDir, dev, mnt, log, Number(process.env.SCOUTFS_CLAIM_WAIT_MS ?? CLAIM_WAIT_MS));
      claims.push(claim);
      undo.push({ name: `release claim ${claim}`, fn: () => rmSync(claim, { force: true }) });
    }
    if (realpathSync(a.opts.metadevPath) === realpathSync(a.dataPath)) {
      throw new FsError('EINVAL', 'the meta and data devices are the same');
    }
    // After the claims: a dead mount of the previous daemon of these
    // devices can only be cleared once that daemon is gone.
    clearDeadMount(mnt, log);

    const metaDev = await FileBlockDevice.open(a.opts.metadevPath);
    undo.push({ name: 'close meta device', fn: () => metaDev.close() });
    const dataDev = await FileBlockDevice.open(a.dataPath);
    undo.push({ name: 'close data device', fn: () => dataDev.close() });
    // The verified read (crc, magic, META flag, size): a device holding
    // something else, or zeros, is named as such before its bytes are
    // taken for a quorum configuration.
    const sup = await readMetaSuper(metaDev);
    if (a.opts.quorumSlotNr !== null) {
      const slots = presentSlots(sup);
      if (!slots.includes(a.opts.quorumSlotNr)) {
        throw new FsError('EINVAL', `quorum_slot_nr=${a.opts.quorumSlotNr} is not a configured slot (configured: ${slots.join(',') || 'none'})`);
      }
    }

    const openMount = a.openMount ?? ((await import('./mount.js')).openMount as unknown as OpenMountFn);
    const m = await openMount({ metaDev, dataDev, random: new CryptoRandom(), clock: new RealClock(), log });
    undo.push({ name: 'close mount', fn: () => m.close() });
    const fs = m.fs;
    stopWaits = () => fs.shutdownDataWaits();

    const { metaAllocSizing } = await import('./mount.js');
    const statfsMore = async (): Promise<{ fsid: bigint; rid: bigint; committedSeq: bigint; totalMetaBlocks: bigint; totalDataBlocks: bigint; reservedMetaBlocks: bigint }> => {
      const rid = (m.status() as { rid?: unknown }).rid;
      return {
        fsid: sup.hdr.fsid, rid: typeof rid === 'string' ? BigInt(`0x${rid}`) : 0n, committedSeq: await fs.committedSeq(),
        totalMetaBlocks: sup.total_meta_blocks, totalDataBlocks: sup.total_data_blocks,
        reservedMetaBlocks: metaAllocSizing(sup.total_meta_blocks).reserved,
      };
    };
    const served = await serve(a.opts.transport, mnt, fs, { log, source: realpathSync(a.dataPath), clock: new RealClock(), statfsMore, writebackCache: a.opts.writebackCache });
    if (served.ended) kernelEnded = served.ended;
    undo.push({
      name: 'remove FUSE mount',
      fn: async () => {
        if (isMountPoint(mnt)) await served.unmount();
      },
    });
    if (a.opts.transport === 'kernel') startWatcher(mnt, mountDevId(mnt));
    undo.push({ name: 'commit', fn: () => fs.sync() });

    const status = (): Record<string, unknown> => (m.status() ?? {}) as Record<string, unknown>;
    const inoOf = async (p: unknown, what: string): Promise<bigint> => {
      if (typeof p !== 'string') throw new FsError('EINVAL', `${what} needs a path`);
      return served.resolve(p);
    };
    const handler = async (req: ControlRequest, payload: Buffer | null): Promise<unknown> => {
      switch (req.op) {
        // Changes behind the kernel's back: the kernel transport caches
        // pages and attributes, so the inodes are invalidated after them
        // (a released region must be read from us again, and wait).
        case 'release': {
          const ino = await inoOf(req.path, 'release');
          await fs.releaseData(ino, u64(req.offset, 'offset'), u64(req.length, 'length'), u64(req.data_version, 'data_version'));
          await served.invalidator?.inode(ino);
          return {};
        }
        case 'stage': {
          const data = payload ?? new Uint8Array(0);
          await fs.stageData(await inoOf(req.path, 'stage'), u64(req.data_version, 'data_version'), u64(req.offset, 'offset'), data);
          return { staged: data.length };
        }
        case 'stage-file': {
          if (typeof req.source !== 'string') throw new FsError('EINVAL', 'stage-file needs a source');
          const staged = await stageFromFile(fs, await inoOf(req.path, 'stage'), u64(req.data_version, 'data_version'), u64(req.offset, 'offset'),
            req.length === undefined ? null : u64(req.length, 'length'), req.source);
          return { staged };
        }
        case 'setattr-more': {
          const ino = await inoOf(req.path, 'setattr');
          const a = await fs.setattrMore(ino, {
            dataVersion: req.data_version === undefined ? 0n : u64(req.data_version, 'data_version'),
            size: req.size === undefined ? 0n : u64(req.size, 'size'),
            offline: req.offline === true,
            ctime: timespec(req.ctime, 'ctime'),
            crtime: timespec(req.crtime, 'crtime'),
          });
          await served.invalidator?.inode(ino);
          return { ino: a.ino, size: a.size, data_version: a.data_version, offline_blocks: a.offline_blocks };
        }
        case 'move-blocks': {
          const fromIno = await inoOf(req.from, 'move-blocks');
          const toIno = await inoOf(req.to, 'move-blocks');
          await fs.moveBlocks({
            fromIno, fromOff: u64(req.from_offset, 'from_offset'), len: u64(req.length, 'length'),
            toIno, toOff: u64(req.to_offset, 'to_offset'),
            stage: req.stage === true, dataVersion: req.data_version === undefined ? 0n : u64(req.data_version, 'data_version'),
          });
          await served.invalidator?.inode(fromIno);
          await served.invalidator?.inode(toIno);
          return {};
        }
        case 'data-waiting': {
          const max = typeof req.max === 'number' && req.max > 0 ? Math.min(req.max, 1 << 20) : 1 << 20;
          const entries = await fs.dataWaiting(u64(req.after_ino ?? '0', 'after_ino'), u64(req.after_iblock ?? '0', 'after_iblock'), max);
          return { entries };
        }
        case 'data-wait-err': {
          const op = req.op_mask;
          const errno = req.errno;
          if (typeof op !== 'number' || typeof errno !== 'number') throw new FsError('EINVAL', 'data-wait-err needs op_mask and errno numbers');
          const count = await fs.dataWaitErr({
            ino: u64(req.ino, 'ino'), dataVersion: u64(req.data_version, 'data_version'), offset: u64(req.offset, 'offset'),
            count: u64(req.count, 'count'), op, errno,
          });
          return { count };
        }
        case 'ino-path':
          return { paths: (await fs.inoPaths(u64(req.ino, 'ino'))).map(b64) };
        case 'list-hidden-xattrs':
          return { names: (await fs.listHiddenXattrs(await inoOf(req.path, 'list-hidden-xattrs'))).map(b64) };
        case 'sync':
          await fs.sync();
          return {};
        case 'walk-inodes': {
          const index = req.index;
          if (index !== 'meta_seq' && index !== 'data_seq') throw new FsError('EINVAL', 'index must be meta_seq or data_seq');
          const f = req.first as { major?: string; ino?: string } | undefined;
          const l = req.last as { major?: string; ino?: string } | undefined;
          const max = typeof req.max === 'number' && req.max > 0 && req.max <= 4096 ? req.max : 128;
          const entries = await fs.walkInodes(index,
            { major: u64(f?.major, 'first.major'), ino: u64(f?.ino, 'first.ino') },
            { major: u64(l?.major, 'last.major'), ino: u64(l?.ino, 'last.ino') }, max);
          return { entries };
        }
        case 'search-xattrs': {
          if (typeof req.name !== 'string' || req.name.length === 0) throw new FsError('EINVAL', 'search-xattrs needs a name');
          const r = await m.searchXattrs(new TextEncoder().encode(req.name));
          return { inos: r.inos, complete: r.complete };
        }
        case 'read-xattr-totals':
          return { totals: await m.readXattrTotals() };
        case 'stat': {
          if (typeof req.path !== 'string') throw new FsError('EINVAL', 'stat needs a path');
          const at = await served.resolve(req.path);
          const x = await fs.getattr(at);
          return {
            ino: x.ino, meta_seq: x.meta_seq, data_seq: x.data_seq, data_version: x.data_version,
            online_blocks: x.online_blocks, offline_blocks: x.offline_blocks,
            crtime: `${x.crtime.sec}.${String(x.crtime.nsec).padStart(9, '0')}`,
          };
        }
        case 'statfs': {
          const st = status();
          return {
            fsid: hex16(sup.hdr.fsid),
            rid: typeof st.rid === 'string' ? st.rid : '0'.repeat(16),
            committed_seq: await fs.committedSeq(),
            total_meta_blocks: sup.total_meta_blocks,
            total_data_blocks: sup.total_data_blocks,
          };
        }
        case 'df': {
          const s = await fs.statfs();
          return {
            total_meta_blocks: s.totalMetaBlocks, free_meta_blocks: s.freeMetaBlocks,
            total_data_blocks: s.totalDataBlocks, free_data_blocks: s.freeDataBlocks,
          };
        }
        case 'test-hook':
          if (process.env.SCOUTFS_TEST_HOOKS !== '1') throw new FsError('EPERM', 'test hooks are off (SCOUTFS_TEST_HOOKS=1)');
          return testHook(fs, served, req);
        case 'status':
          return { ...status(), fuse: { options: served.optionString, ...served.status() } };
        default:
          throw new FsError('EINVAL', `unknown control op '${req.op}'`);
      }
    };
    const ctl: ControlServer = await startControlServer(mnt, handler, log, runDir);
    undo.push({ name: 'close control socket', fn: () => ctl.close() });
    log(`mounted ${a.dataPath} at ${mnt} (metadev_path=${a.opts.metadevPath}${a.opts.quorumSlotNr === null ? '' : `, quorum_slot_nr=${a.opts.quorumSlotNr}`}, transport ${a.opts.transport}, ${served.optionString}, control ${ctl.path})`);
  } catch (e) {
    log(`scoutfs mount: ${e instanceof Error ? e.message : String(e)}`);
    await teardown();
    return 1;
  }

  // Serve until a signal or an external unmount.
  const why = await new Promise<string>((resolve) => {
    process.once('SIGTERM', () => resolve('SIGTERM'));
    process.once('SIGINT', () => resolve('SIGINT'));
    const poll = setInterval(() => {
      if (!isMountPoint(mnt)) {
        clearInterval(poll);
        resolve('unmounted');
      }
    }, 500);
    // The kernel transport learns of `umount MNT` at once: the device ends.
    void kernelEnded?.then((why) => {
      clearInterval(poll);
      resolve(why);
    });
  });
  log(`scoutfs mount: ${why}: committing and closing ${mnt}`);
  // Tasks waiting for offline data get ESHUTDOWN now, before the FUSE
  // mount goes away under them.
  stopWaits?.();
  markExiting();
  await teardown();
  log(`scoutfs mount: ${mnt} closed${exitCode === 0 ? '' : ' with errors'}`);
  return exitCode;
}

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
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Fs } from '../fs/api.js';
import type { Timespec } from '../format/common.js';
import type { BlockDevice } from '../runtime/device.js';
import { FileBlockDevice } from '../runtime/device.js';
import { CryptoRandom, type Random } from '../runtime/random.js';
import { RealClock, type Clock } from '../runtime/clock.js';
import { presentSlots } from '../format/super.js';
import { readMetaSuper } from '../server/volume.js';
import { FsError } from '../format/errors.js';
import { mountFuse, type FuseMount } from '../fuse/adapter.js';
import { DEFAULT_RUN_DIR, startControlServer, type ControlServer, type ControlRequest } from './control.js';

export interface MountOpts {
  metadevPath: string;
  quorumSlotNr: number | null;
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
    } else {
      throw new MountOptionError(`unknown mount option '${key}' (known: metadev_path, quorum_slot_nr)`);
    }
  }
  if (metadevPath === null) throw new MountOptionError('the metadev_path=PATH option is required');
  return { metadevPath, quorumSlotNr };
}

/** The mount the daemon runs: openMount's result (src/mount/mount.ts). */
export interface OpenedMount {
  fs: Fs;
  searchXattrs(name: Uint8Array): Promise<{ inos: bigint[]; complete: boolean }>;
  readXattrTotals(): Promise<{ name: [bigint, bigint, bigint]; total: bigint; count: bigint }[]>;
  close(): Promise<void>;
  status(): object;
  counters(): Record<string, number>;
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

/**
 * Claim a device for this process; throws EBUSY if a live daemon holds it.
 * Returns the claim file, which the owner removes when done (the offline
 * CLI commands, change-format-version and resize-devices -F, claim too).
 */
export function claimDevice(runDir: string, devPath: string): string {
  const real = realpathSync(devPath);
  const file = join(runDir, `dev-${createHash('sha1').update(real).digest('hex')}.pid`);
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n${real}\n`, { flag: 'wx', mode: 0o600 });
      return file;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const pid = Number(readFileSync(file, 'utf8').split('\n')[0]);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && pidAlive(pid)) {
        throw new FsError('EBUSY', `${real} is already mounted by scoutfs daemon pid ${pid}`);
      }
      rmSync(file, { force: true });
    }
  }
  throw new FsError('EBUSY', `cannot claim ${real}`);
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

/** Run a mount until it is stopped; resolves with the exit status. */
export async function runDaemon(a: DaemonArgs): Promise<number> {
  const log = a.log;
  const runDir = a.runDir ?? DEFAULT_RUN_DIR;
  const undo: { name: string; fn: () => Promise<void> | void }[] = [];
  let fm: FuseMount | null = null;
  let mnt = '';
  let stopWaits: (() => void) | null = null;
  let exitCode = 0;

  const emergencyUnmount = (): void => {
    if (!mnt) return;
    try {
      if (isMountPoint(mnt)) execFileSync('fusermount', ['-uz', mnt], { stdio: 'ignore', timeout: 10_000 });
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
    if (isMountPoint(mnt)) throw new FsError('EBUSY', `${mnt} is already a mount point`);
    mkdirSync(runDir, { recursive: true, mode: 0o700 });
    for (const dev of [a.opts.metadevPath, a.dataPath]) {
      const claim = claimDevice(runDir, dev);
      undo.push({ name: `release claim ${claim}`, fn: () => rmSync(claim, { force: true }) });
    }
    if (realpathSync(a.opts.metadevPath) === realpathSync(a.dataPath)) {
      throw new FsError('EINVAL', 'the meta and data devices are the same');
    }

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

    fm = await mountFuse(mnt, fs, { log, fsname: realpathSync(a.dataPath) });
    const fuse = fm;
    undo.push({
      name: 'remove FUSE mount',
      fn: async () => {
        if (isMountPoint(mnt)) await fuse.unmount();
      },
    });
    undo.push({ name: 'commit', fn: () => fs.sync() });

    const status = (): Record<string, unknown> => (m.status() ?? {}) as Record<string, unknown>;
    const inoOf = async (p: unknown, what: string): Promise<bigint> => {
      if (typeof p !== 'string') throw new FsError('EINVAL', `${what} needs a path`);
      return fuse.adapter.paths.resolve('/' + p);
    };
    const handler = async (req: ControlRequest, payload: Buffer | null): Promise<unknown> => {
      switch (req.op) {
        case 'release':
          await fs.releaseData(await inoOf(req.path, 'release'), u64(req.offset, 'offset'), u64(req.length, 'length'), u64(req.data_version, 'data_version'));
          return {};
        case 'stage': {
          const data = payload ?? new Uint8Array(0);
          await fs.stageData(await inoOf(req.path, 'stage'), u64(req.data_version, 'data_version'), u64(req.offset, 'offset'), data);
          return { staged: data.length };
        }
        case 'setattr-more': {
          const a = await fs.setattrMore(await inoOf(req.path, 'setattr'), {
            dataVersion: req.data_version === undefined ? 0n : u64(req.data_version, 'data_version'),
            size: req.size === undefined ? 0n : u64(req.size, 'size'),
            offline: req.offline === true,
            ctime: timespec(req.ctime, 'ctime'),
            crtime: timespec(req.crtime, 'crtime'),
          });
          return { ino: a.ino, size: a.size, data_version: a.data_version, offline_blocks: a.offline_blocks };
        }
        case 'move-blocks':
          await fs.moveBlocks({
            fromIno: await inoOf(req.from, 'move-blocks'), fromOff: u64(req.from_offset, 'from_offset'), len: u64(req.length, 'length'),
            toIno: await inoOf(req.to, 'move-blocks'), toOff: u64(req.to_offset, 'to_offset'),
            stage: req.stage === true, dataVersion: req.data_version === undefined ? 0n : u64(req.data_version, 'data_version'),
          });
          return {};
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
        case 'counters':
          return {
            counters: {
              ...m.counters(),
              fuse_data_requests: fuse.adapter.dataRequests(),
              fuse_data_waits_abandoned: fuse.adapter.abandoned.count,
              fuse_open_handles: fuse.adapter.openHandles(),
              fuse_path_cache_entries: fuse.adapter.paths.size,
              ...Object.fromEntries([...fuse.adapter.errors].map(([k, v]) => [`fuse_errors_${k.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/_$/, '')}`, v])),
            },
          };
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
          const at = await fuse.adapter.paths.resolve('/' + req.path);
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
        case 'status':
          return { ...status(), fuse: { options: fuse.optionString, pathCache: fuse.adapter.paths.size, errors: Object.fromEntries(fuse.adapter.errors) } };
        default:
          throw new FsError('EINVAL', `unknown control op '${req.op}'`);
      }
    };
    const ctl: ControlServer = await startControlServer(mnt, handler, log, runDir);
    undo.push({ name: 'close control socket', fn: () => ctl.close() });
    log(`mounted ${a.dataPath} at ${mnt} (metadev_path=${a.opts.metadevPath}${a.opts.quorumSlotNr === null ? '' : `, quorum_slot_nr=${a.opts.quorumSlotNr}`}, fuse options ${fuse.optionString}, control ${ctl.path})`);
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
  });
  log(`scoutfs mount: ${why}: committing and closing ${mnt}`);
  // Tasks waiting for offline data get ESHUTDOWN now, before the FUSE
  // mount goes away under them.
  stopWaits?.();
  await teardown();
  log(`scoutfs mount: ${mnt} closed${exitCode === 0 ? '' : ' with errors'}`);
  return exitCode;
}

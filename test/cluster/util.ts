/*
 * Shared helpers for the tests that mount real FUSE filesystems on loop
 * devices (test/cluster/*.test.ts).
 *
 * A Volume is two sparse images attached to loop devices with scoutfs mkfs
 * on them, a mount point and a temp dir for logs, all recorded in the
 * caller's CleanupRegistry (LIFO: daemon stopped and FUSE mount removed
 * before the loop devices are detached and the images removed), so a
 * failing or timed-out test leaves nothing mounted or attached.  The CLI
 * always runs as a child process (`bin/scoutfs`), exactly as a user runs
 * it; mounts run it in the foreground under harness/proc.ts, and a mount is
 * ready when it is in /proc/mounts and its log says "mounted DATA at MNT".
 *
 * A daemon killed with SIGKILL leaves a dead FUSE mount behind (every
 * syscall answers ENOTCONN): `forceUnmount` removes it lazily with
 * fusermount -uz (then umount -l) before anything is remounted there.
 *
 * Quorum ports: cluster tests use 42200-42299 (mount.test.ts uses 42000),
 * one per volume, so tests running in parallel do not clash.
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CleanupRegistry, isMounted, listMounts, unmount } from '../../harness/cleanup.js';
import { attachLoop, attachedLoops, createImage } from '../../harness/loop.js';
import { logMatches, mountAppears, startProc, type NodeProc } from '../../harness/proc.js';
import { isRoot, sleep, trySh, which } from '../../harness/sys.js';

const run = promisify(execFile);
export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(ROOT, 'bin', 'scoutfs');
export const GIB = 1024 ** 3;
export const MIB = 1024 ** 2;

/** false when real mounts can run here, else the reason to skip. */
export async function clusterSkip(): Promise<string | false> {
  if (!existsSync(join(ROOT, 'dist', 'src', 'mount', 'mount.js'))) return 'src/mount/mount.ts is not built yet';
  if (isRoot() && existsSync('/dev/fuse') && (await which('fusermount')) && (await which('losetup'))) return false;
  return 'needs root, /dev/fuse, fusermount and losetup';
}

export interface CliResult {
  code: number;
  out: string;
  err: string;
}

/** Run `bin/scoutfs ARGS` as a child process. */
export async function scoutfs(...args: string[]): Promise<CliResult> {
  try {
    const r = await run(process.execPath, [CLI, ...args], { timeout: 120_000, maxBuffer: 64 << 20 });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, out: x.stdout ?? '', err: x.stderr ?? '' };
  }
}

/** A per-file temp dir, removed by the registry. */
export async function tempBase(reg: CleanupRegistry, label: string): Promise<string> {
  const base = await fsp.mkdtemp(join(tmpdir(), `sfs-${label}-`));
  await reg.add(`rm ${base}`, () => fsp.rm(base, { recursive: true, force: true }));
  return base;
}

/** Remove a (possibly dead) mount: fusermount -uz, then umount -l. */
export async function forceUnmount(mnt: string): Promise<void> {
  for (let i = 0; i < 5 && (await isMounted(mnt)); i++) {
    const r = await trySh('fusermount', ['-uz', mnt], { timeoutMs: 20_000 });
    if (r.exitCode !== 0) await trySh('umount', ['-l', mnt], { timeoutMs: 20_000 });
    if (await isMounted(mnt)) await sleep(50);
  }
  assert.equal(await isMounted(mnt), false, `${mnt} is still mounted`);
}

export interface VolumeOptions {
  metaBytes: number;
  dataBytes: number;
  /** Quorum port, 42200-42299. */
  port: number;
  /** Quorum address (default 127.0.0.1); randomQuorumAddr() gives one no parallel run shares. */
  addr?: string;
  /** Extra mkfs arguments (before the devices). */
  mkfsArgs?: string[];
}

/** Two loop devices with scoutfs on them, a mount point and a log dir. */
export type Transport = 'kernel' | 'fuse-native';

export class Volume {
  private nth = 0;
  /** The transport= option mounts use (null: the default, kernel). */
  transport: Transport | null = null;
  /** Extra environment of the mount daemons (e.g. SCOUTFS_TEST_HOOKS). */
  env: Record<string, string> = {};
  /** Extra -o options of the mounts (e.g. ',writeback_cache'). */
  extraOptions = '';

  private constructor(
    readonly reg: CleanupRegistry,
    readonly base: string,
    readonly name: string,
    readonly meta: string,
    readonly data: string,
    readonly metaImage: string,
    readonly dataImage: string,
    readonly mnt: string,
    readonly port: number,
    readonly addr = '127.0.0.1',
  ) {}

  /** Images, loop devices and a mount point; mkfs unless `mkfs: false`. */
  static async create(reg: CleanupRegistry, base: string, name: string, o: VolumeOptions & { mkfs?: boolean }): Promise<Volume> {
    assert(o.port >= 42200 && o.port <= 42299, 'cluster tests use quorum ports 42200-42299');
    const dir = join(base, name);
    const mnt = join(dir, 'mnt');
    await fsp.mkdir(mnt, { recursive: true });
    const mi = await createImage(reg, join(dir, 'meta.img'), o.metaBytes, { remove: 'always' });
    const di = await createImage(reg, join(dir, 'data.img'), o.dataBytes, { remove: 'always' });
    const meta = (await attachLoop(reg, mi.path)).path;
    const data = (await attachLoop(reg, di.path)).path;
    const v = new Volume(reg, dir, name, meta, data, mi.path, di.path, mnt, o.port, o.addr);
    if (o.mkfs !== false) await v.mkfs(o.mkfsArgs ?? []);
    return v;
  }

  /**
   * Loop devices over existing images (made elsewhere, e.g. by the
   * reference mkfs) and a mount point; the images stay the caller's.
   * Such a volume has no quorum port of ours: mkfs() is not for it.
   */
  static async attach(reg: CleanupRegistry, base: string, name: string, metaImage: string, dataImage: string): Promise<Volume> {
    const dir = join(base, name);
    const mnt = join(dir, 'mnt');
    await fsp.mkdir(mnt, { recursive: true });
    const meta = (await attachLoop(reg, metaImage)).path;
    const data = (await attachLoop(reg, dataImage)).path;
    return new Volume(reg, dir, name, meta, data, metaImage, dataImage, mnt, 0);
  }

  async mkfs(extra: string[] = [], meta = this.meta, data = this.data): Promise<void> {
    assert(this.port !== 0, 'an attached volume has no quorum port of ours');
    const r = await scoutfs('mkfs', '-A', '-f', ...extra, '-Q', `0,${this.addr},${this.port}`, meta, data);
    assert.equal(r.code, 0, r.out + r.err);
  }

  /**
   * Start `scoutfs mount` (foreground child) and wait until it is mounted.
   * The daemon is stopped and the mount removed by the registry.
   */
  async mount(o: { meta?: string; data?: string; timeoutMs?: number } = {}): Promise<NodeProc> {
    const proc = await this.startMount(o);
    const up = mountAppears(this.mnt);
    const said = logMatches(proc.logPath, /^mounted \S+ at /m);
    await proc.waitReady(async () => (await up()) && (await said()), { timeoutMs: o.timeoutMs ?? 60_000, what: 'scoutfs mount' });
    return proc;
  }

  /** Start `scoutfs mount` without waiting: for mounts that must fail. */
  async startMount(o: { meta?: string; data?: string } = {}): Promise<NodeProc> {
    const name = `${this.name}-mount${this.nth++}`;
    const proc = await startProc(this.reg, {
      name, command: process.execPath,
      args: [CLI, 'mount', '-o', `metadev_path=${o.meta ?? this.meta},quorum_slot_nr=0${this.transport === null ? '' : `,transport=${this.transport}`}${this.extraOptions}`,
        o.data ?? this.data, this.mnt],
      logPath: join(this.base, `${name}.log`),
      stopTimeoutMs: 30_000,
      env: this.env,
    });
    await this.reg.add(`unmount ${this.mnt} (${name})`, () => forceUnmountQuiet(this.mnt));
    return proc;
  }

  /**
   * A mount that must be refused: it exits non-zero within timeoutMs
   * without ever mounting.  Returns its log.
   */
  async mountRefused(o: { meta?: string; data?: string; timeoutMs?: number } = {}): Promise<{ code: number | null; log: string }> {
    const proc = await this.startMount(o);
    const timer = new Promise<null>((r) => setTimeout(() => r(null), o.timeoutMs ?? 60_000).unref());
    const ex = await Promise.race([proc.exited, timer]);
    const log = await proc.log();
    assert.notEqual(ex, null, `the refused mount is still running; log:\n${log}`);
    assert.equal(await isMounted(this.mnt), false, 'a refused mount left a mount behind');
    return { code: ex!.code, log };
  }

  async fsck(meta = this.meta, data = this.data): Promise<CliResult> {
    return scoutfs('fsck', meta, data);
  }

  /** fsck must report nothing. */
  async assertFsckClean(): Promise<void> {
    const r = await this.fsck();
    assert.equal(r.code, 0, `fsck of ${this.name}:\n${r.out}${r.err}`);
  }

  path(...p: string[]): string {
    return join(this.mnt, ...p);
  }
}

async function forceUnmountQuiet(mnt: string): Promise<void> {
  if (!(await isMounted(mnt))) return;
  await unmount(mnt);
}

/** Stop a mount cleanly (SIGTERM: commit, farewell, exit 0). */
export async function stopMount(proc: NodeProc, mnt: string): Promise<void> {
  const ex = await proc.stop(60_000);
  assert.equal(ex.code, 0, `daemon exit ${ex.code} ${ex.signal}; log tail:\n${await proc.logTail(30)}`);
  assert.equal(await isMounted(mnt), false);
}

/** A random 127.x.y.z quorum address and port in 42200-42299, so parallel test runs never share one. */
export function randomQuorum(): { addr: string; port: number } {
  const r = (n: number): number => Math.floor(Math.random() * n);
  return { addr: `127.${1 + r(254)}.${r(256)}.${1 + r(254)}`, port: 42200 + r(100) };
}

/** Every after(): run the registry, then check nothing is left mounted or attached. */
export async function finish(reg: CleanupRegistry, base: string): Promise<void> {
  const rep = await reg.runAll({ ok: true });
  assert.deepEqual(rep.errors.map((e) => `${e.name}: ${e.error.message}`), []);
  if (base) {
    const left = (await listMounts()).filter((m) => m.target.startsWith(base));
    assert.deepEqual(left, [], 'mounts left behind');
  }
  assert.deepEqual([...attachedLoops().keys()], [], 'loop devices left attached');
}

/** Lines of a daemon log that match re. */
export function logLines(log: string, re: RegExp): string[] {
  return log.split('\n').filter((l) => re.test(l));
}

/** errno code of a rejected fs call, or 'ok'. */
export async function errCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'ok';
  } catch (e) {
    return (e as NodeJS.ErrnoException).code ?? String(e);
  }
}

/**
 * Deterministic file content: byte `off + i` of the file tagged `tag`.
 * Each byte depends on the tag and its offset, so a block at the wrong
 * offset, another file's block or a stale block never passes; a range can
 * be computed on its own (appends, short writes).
 */
export function patternAt(tag: string, off: number, len: number): Buffer {
  let h = 2166136261;
  for (let i = 0; i < tag.length; i++) h = Math.imul(h ^ tag.charCodeAt(i), 16777619) >>> 0;
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) {
    let x = (Math.imul(off + i, 2654435761) ^ h) >>> 0;
    x = Math.imul(x ^ (x >>> 15), 2246822507) >>> 0;
    x ^= x >>> 13;
    b[i] = x & 0xff;
  }
  return b;
}

/** patternAt(tag, 0, len). */
export function pattern(tag: string, len: number): Buffer {
  return patternAt(tag, 0, len);
}

/*
 * perf/workloads.ts owns the end-to-end workloads, each run against a
 * directory (the mount of one target):
 *
 *   meta     create, stat, readdir and unlink COUNT empty files, by 1
 *            client and by 2 clients in parallel (each in its own
 *            directory); phases are run behind a barrier, so the parallel
 *            rate is all clients' ops over the wall time from "go" to the
 *            last client done.  readdir lists the full directory a few
 *            times (workload-worker.ts) and counts entries listed.
 *   stream   write MIB MiB sequentially in 1 MiB writes, fsync (timed), then
 *            `sync; echo 3 > /proc/sys/vm/drop_caches` (root only) and read
 *            it back.  Without root the read may come from the page cache;
 *            the result says so.
 *   archive  (scoutfs only, issue 13) write MIB MiB into a file (a client,
 *            1 MiB writes + fsync: the sequential write rate of this run),
 *            release it with `scoutfs release` (timed, the CLI process
 *            included), then `scoutfs stage` it back from an archive copy
 *            outside the mount, followed by `scoutfs sync` (timed together:
 *            the stage rate, durable like the write's fsync).
 *   fio      4 KiB random writes then random reads, psync, queue depth 1,
 *            O_DIRECT (falls back to buffered I/O where O_DIRECT is refused,
 *            noted), time based, when fio is installed.
 *
 * Clients are separate processes (workload-worker.ts) so that a stuck
 * filesystem op blocks only a client, which is killed on timeout; the
 * caller's cleanup registry kills any client still alive and then unmounts.
 * Every workload removes its files, so workloads do not see each other's
 * leftovers.  Rates are computed from monotonic nanosecond clocks.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rm, writeFile, mkdir } from 'node:fs/promises';
import { join, dirname } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { CleanupRegistry, CleanupHandle } from '../harness/cleanup.js';
import { isRoot, sh, trySh, which } from '../harness/sys.js';

const WORKER = join(dirname(fileURLToPath(import.meta.url)), 'workload-worker.js');

type Msg = Record<string, unknown>;

/** One client process speaking the worker's JSON-lines protocol. */
class Client {
  private readonly queue: Msg[] = [];
  private waiter: ((m: Msg | Error) => void) | null = null;
  private stderr = '';
  private exitErr: Error | null = null;
  private handle: CleanupHandle | null = null;

  private constructor(private readonly child: ChildProcess, readonly label: string) {
    createInterface({ input: child.stdout! }).on('line', (l) => {
      let m: Msg;
      try {
        m = JSON.parse(l) as Msg;
      } catch {
        m = { junk: l };
      }
      this.push(m);
    });
    child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    child.on('exit', (code, sig) => {
      if (code !== 0) {
        this.exitErr = new Error(`${label} exited (code ${code}, signal ${sig}): ${this.stderr.trim()}`);
        this.waiter?.(this.exitErr);
        this.waiter = null;
      }
    });
  }

  static async start(registry: CleanupRegistry, args: string[], label: string): Promise<Client> {
    const child = spawn(process.execPath, [WORKER, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    const c = new Client(child, label);
    c.handle = await registry.add(`kill ${label}`, () => c.kill());
    return c;
  }

  private push(m: Msg): void {
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(m);
    } else {
      this.queue.push(m);
    }
  }

  next(timeoutMs: number): Promise<Msg> {
    const q = this.queue.shift();
    if (q) return Promise.resolve(q);
    if (this.exitErr) return Promise.reject(this.exitErr);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiter = null;
        this.kill();
        reject(new Error(`${this.label}: no answer within ${timeoutMs} ms (killed)`));
      }, timeoutMs);
      this.waiter = (m) => {
        clearTimeout(t);
        if (m instanceof Error) reject(m);
        else resolve(m);
      };
    });
  }

  send(line: string): void {
    this.child.stdin!.write(line + '\n');
  }

  async done(timeoutMs: number): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => {
          this.kill();
          reject(new Error(`${this.label}: did not exit within ${timeoutMs} ms (killed)`));
        }, timeoutMs);
        this.child.once('exit', () => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    if (this.exitErr) throw this.exitErr;
    this.handle?.release();
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

export interface MetaResult {
  create: number;
  stat: number;
  /** Directory entries listed per second. */
  readdir: number;
  unlink: number;
}

/**
 * files/s for each phase with `clients` parallel clients of `count` files
 * each.  `onPhase`, when given, runs once with null when the clients are
 * ready and once after each phase with its name, before the next starts
 * (perf/fuse-opcount.ts reads the daemon's counters there).
 */
export async function metaWorkload(
  registry: CleanupRegistry,
  dir: string,
  clients: number,
  count: number,
  timeoutMs: number,
  onPhase?: (phase: string | null) => Promise<void>,
): Promise<MetaResult> {
  const cs: Client[] = [];
  for (let i = 0; i < clients; i++) {
    cs.push(await Client.start(registry, ['meta', join(dir, `meta-${clients}-${i}`), String(count)], `meta client ${i}`));
  }
  for (const c of cs) {
    const m = await c.next(timeoutMs);
    if (m.ready !== true) throw new Error(`${c.label}: expected ready, got ${JSON.stringify(m)}`);
  }
  const out: Record<string, number> = {};
  await onPhase?.(null);
  for (const phase of ['create', 'stat', 'readdir', 'unlink']) {
    const t0 = process.hrtime.bigint();
    for (const c of cs) c.send('go');
    let ops = 0;
    for (const c of cs) {
      const m = await c.next(timeoutMs);
      if (m.phase !== phase) throw new Error(`${c.label}: expected ${phase}, got ${JSON.stringify(m)}`);
      ops += Number(m.ops);
    }
    const ns = Number(process.hrtime.bigint() - t0);
    out[phase] = ops / (ns / 1e9);
    await onPhase?.(phase);
  }
  for (const c of cs) await c.done(timeoutMs);
  return { create: out.create!, stat: out.stat!, readdir: out.readdir!, unlink: out.unlink! };
}

export interface StreamResult {
  writeMBps: number;
  /** After a remount with the host caches kept (null when not measured). */
  warmReadMBps: number | null;
  readMBps: number;
  cachesDropped: boolean;
}

export async function dropCaches(): Promise<boolean> {
  if (!isRoot()) return false;
  await sh('sync', [], { timeoutMs: 300_000 });
  try {
    await writeFile('/proc/sys/vm/drop_caches', '3\n');
    return true;
  } catch {
    return false;
  }
}

/**
 * MB/s (10^6 bytes) of a sequential write+fsync, a warm read and a cold
 * read.  `remount`, when given, runs before each read: first with the host
 * caches kept (the warm read: the mount's own caches are gone, the device's
 * blocks are still in the host page cache), then after the caches were
 * dropped (the cold read).  Without `remount` only the cold read runs.
 */
export async function streamWorkload(
  registry: CleanupRegistry,
  dir: string,
  mib: number,
  timeoutMs: number,
  remount?: () => Promise<void>,
): Promise<StreamResult> {
  const file = join(dir, 'stream.dat');
  const readOnce = async (): Promise<number> => {
    const r = await Client.start(registry, ['read', file], 'stream reader');
    const m = await r.next(timeoutMs);
    await r.done(timeoutMs);
    if (Number(m.bytes) !== mib * 2 ** 20) throw new Error(`read ${m.bytes} bytes, wrote ${mib} MiB`);
    return Number(m.bytes) / 1e6 / (Number(m.ns) / 1e9);
  };
  try {
    const w = await Client.start(registry, ['write', file, String(mib)], 'stream writer');
    const wm = await w.next(timeoutMs);
    await w.done(timeoutMs);
    let warmReadMBps: number | null = null;
    if (remount) {
      await syncAll();
      await remount();
      warmReadMBps = await readOnce();
    }
    const cachesDropped = await dropCaches();
    if (remount) await remount();
    const readMBps = await readOnce();
    return { writeMBps: Number(wm.bytes) / 1e6 / (Number(wm.ns) / 1e9), warmReadMBps, readMBps, cachesDropped };
  } finally {
    await rm(file, { force: true });
  }
}

/** Single-byte sequential writes per second through the page cache. */
export async function bytesWorkload(registry: CleanupRegistry, dir: string, seconds: number, timeoutMs: number): Promise<number> {
  const file = join(dir, 'bytes.dat');
  try {
    const c = await Client.start(registry, ['bytes', file, String(seconds)], 'byte writer');
    const m = await c.next(timeoutMs);
    await c.done(timeoutMs);
    return Number(m.ops) / (Number(m.ns) / 1e9);
  } finally {
    await rm(file, { force: true });
  }
}

export interface ArchiveResult {
  /** The sequential write (+fsync) rate of the same file in this run. */
  writeMBps: number;
  /** `scoutfs stage` + `scoutfs sync` of the whole file. */
  stageMBps: number;
  /** `scoutfs release` of the whole file, the CLI process included. */
  releaseMs: number;
}

/** MB/s (10^6 bytes) of write and stage and the release time of one MIB MiB file; `cli` runs `scoutfs ARGS`. */
export async function archiveWorkload(
  registry: CleanupRegistry,
  dir: string,
  archiveDir: string,
  mib: number,
  timeoutMs: number,
  cli: (args: string[]) => Promise<string>,
): Promise<ArchiveResult> {
  const file = join(dir, 'archive.dat');
  const copy = join(archiveDir, 'archive-copy.dat');
  try {
    const w = await Client.start(registry, ['write', file, String(mib)], 'archive writer');
    const wm = await w.next(timeoutMs);
    await w.done(timeoutMs);
    // An archive copy of the same size (other random bytes: staging does not compare).
    const c = await Client.start(registry, ['write', copy, String(mib)], 'archive copy writer');
    await c.next(timeoutMs);
    await c.done(timeoutMs);
    const vers = (await cli(['stat', '-s', 'data_version', file])).trim();
    let t0 = process.hrtime.bigint();
    await cli(['release', file, '-V', vers]);
    const releaseNs = process.hrtime.bigint() - t0;
    const off = (await cli(['stat', '-s', 'offline_blocks', file])).trim();
    if (off !== String(mib * 256)) throw new Error(`release left ${off} offline blocks, not ${mib * 256}`);
    t0 = process.hrtime.bigint();
    await cli(['stage', copy, file, '-V', vers]);
    await cli(['sync', dir]);
    const stageNs = process.hrtime.bigint() - t0;
    const on = (await cli(['stat', '-s', 'online_blocks', file])).trim();
    if (on !== String(mib * 256)) throw new Error(`stage left ${on} online blocks, not ${mib * 256}`);
    const bytes = mib * 2 ** 20;
    return {
      writeMBps: Number(wm.bytes) / 1e6 / (Number(wm.ns) / 1e9),
      stageMBps: bytes / 1e6 / (Number(stageNs) / 1e9),
      releaseMs: Number(releaseNs) / 1e6,
    };
  } finally {
    await rm(file, { force: true });
    await rm(copy, { force: true });
  }
}

export interface FioResult {
  randwriteIops: number;
  randreadIops: number;
  direct: boolean;
}

export async function fioAvailable(): Promise<boolean> {
  return (await which('fio')) !== null;
}

interface FioJson {
  jobs: { read: { iops: number }; write: { iops: number }; error: number }[];
}

async function fioRun(file: string, rw: 'randwrite' | 'randread', sizeMiB: number, runtimeS: number, direct: boolean): Promise<number> {
  const args = [
    `--name=${rw}`, `--filename=${file}`, `--rw=${rw}`, '--bs=4k', `--size=${sizeMiB}M`,
    '--ioengine=psync', '--iodepth=1', `--direct=${direct ? 1 : 0}`, '--fallocate=none',
    `--runtime=${runtimeS}`, '--time_based', '--randrepeat=1', '--norandommap',
    '--group_reporting', '--output-format=json',
  ];
  const r = await sh('fio', args, { timeoutMs: (runtimeS + 300) * 1000 });
  // fio may print warnings before the JSON document.
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))) as FioJson;
  const job = j.jobs[0];
  if (!job || job.error) throw new Error(`fio ${rw} failed: error ${job?.error}`);
  return rw === 'randwrite' ? job.write.iops : job.read.iops;
}

/** 4 KiB random write then read IOPS; O_DIRECT unless the target refuses it. */
export async function fioWorkload(dir: string, sizeMiB: number, runtimeS: number): Promise<FioResult> {
  const file = join(dir, 'fio-rand.dat');
  await mkdir(dir, { recursive: true });
  try {
    let direct = true;
    let randwriteIops: number;
    try {
      randwriteIops = await fioRun(file, 'randwrite', sizeMiB, runtimeS, true);
    } catch (e) {
      if (!/EINVAL|Invalid argument|O_DIRECT/i.test(String(e))) throw e;
      direct = false;
      randwriteIops = await fioRun(file, 'randwrite', sizeMiB, runtimeS, false);
    }
    if (!direct) await dropCaches();
    const randreadIops = await fioRun(file, 'randread', sizeMiB, runtimeS, direct);
    return { randwriteIops, randreadIops, direct };
  } finally {
    await rm(file, { force: true });
  }
}

/** `sync` exists everywhere; used by callers that want a quiet device. */
export async function syncAll(): Promise<void> {
  await trySh('sync', [], { timeoutMs: 300_000 });
}

/*
 * perf/e2e.ts owns the end-to-end targets and runs every workload
 * (workloads.ts) against each, in one run:
 *
 *   scoutfs            our mount.  Not mountable yet: reported as
 *                      "scoutfs: not mountable yet, skipped".  When the node
 *                      daemon can mount, it becomes a target like the
 *                      others (format a loop device, start the daemon
 *                      through harness/proc, wait for its FUSE mount).
 *   ext4               mkfs.ext4 on a sparse image on a loop device (root).
 *   fuse-passthrough   perf/fuse-passthrough.ts (fuse-native) mirroring a
 *                      tmpfs directory (a plain directory when not root).
 *
 * Each target is one harness run (harness/runner.ts) with its own run
 * folder under the base directory and its own cleanup registry, so its
 * loop device, mounts and daemon are gone before the next target starts
 * (the machine has 2 cores; targets never overlap) and whatever happens
 * (error, timeout, ^C) they are torn down: client processes first, then the
 * FUSE unmount while the daemon still runs, then the daemon, the tmpfs,
 * the ext4 mount, the loop device.  A failed target keeps its image and
 * run folder, is reported in `errors`, and the other targets still run.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findMount, unmount } from '../harness/cleanup.js';
import { logMatches, mountAppears, startProc } from '../harness/proc.js';
import { runScenario, type RunContext, type Scenario } from '../harness/runner.js';
import { isRoot, which } from '../harness/sys.js';
import type { Metric, Skip } from './results.js';
import { fioAvailable, fioWorkload, metaWorkload, streamWorkload } from './workloads.js';

const PASSTHROUGH = join(dirname(fileURLToPath(import.meta.url)), 'fuse-passthrough.js');
const GiB = 2 ** 30;

export interface E2EOptions {
  baseDir: string;
  files: number;
  streamMiB: number;
  fioSizeMiB: number;
  fioSeconds: number;
  noFio: boolean;
  /** Only these targets (default all). */
  targets: string[] | null;
  progress: (line: string) => void;
  replayArgv: string[];
}

export interface E2EOutcome {
  metrics: Metric[];
  skips: Skip[];
  notes: string[];
  errors: string[];
}

function metric(id: string, name: string, target: string, value: number, unit: string, note?: string): Metric {
  return { id: `e2e.${id}.${target}`, group: 'e2e', name, target, value, unit, higherIsBetter: true, ...(note ? { note } : {}) };
}

/** Every workload against `dir`, appending to `out`. */
async function runWorkloads(ctx: RunContext, dir: string, target: string, o: E2EOptions, out: E2EOutcome): Promise<void> {
  const say = (s: string): void => o.progress(`${target}: ${s}`);
  const t = 600_000;
  for (const clients of [1, 2]) {
    say(`metadata: ${clients} client(s) x ${o.files} files: create, stat, unlink`);
    const m = await metaWorkload(ctx.registry, dir, clients, o.files, t);
    const tag = clients === 1 ? 'meta' : 'meta2';
    const who = clients === 1 ? '1 proc' : `${clients} procs`;
    out.metrics.push(metric(`${tag}.create`, `create (${who})`, target, m.create, 'files/s'));
    out.metrics.push(metric(`${tag}.stat`, `stat (${who})`, target, m.stat, 'files/s'));
    out.metrics.push(metric(`${tag}.unlink`, `unlink (${who})`, target, m.unlink, 'files/s'));
    say(`metadata ${who}: create ${m.create.toFixed(0)}/s stat ${m.stat.toFixed(0)}/s unlink ${m.unlink.toFixed(0)}/s`);
  }
  say(`streaming: write ${o.streamMiB} MiB + fsync, drop caches, read`);
  const s = await streamWorkload(ctx.registry, dir, o.streamMiB, t);
  out.metrics.push(metric('stream.write', `seq write ${o.streamMiB} MiB + fsync`, target, s.writeMBps, 'MB/s'));
  out.metrics.push(metric('stream.read', 'seq read, caches dropped', target, s.readMBps, 'MB/s',
    s.cachesDropped ? undefined : 'caches NOT dropped (not root): may be a page cache read'));
  say(`streaming: write ${s.writeMBps.toFixed(0)} MB/s, read ${s.readMBps.toFixed(0)} MB/s`);
  if (o.noFio || !(await fioAvailable())) {
    const why = o.noFio ? 'skipped (--no-fio)' : 'fio not installed (Debian package fio), skipped';
    out.skips.push({ id: `e2e.fio.randwrite.${target}`, group: 'e2e', name: '4k randwrite (fio)', target, skipped: why });
    out.skips.push({ id: `e2e.fio.randread.${target}`, group: 'e2e', name: '4k randread (fio)', target, skipped: why });
    say(`fio: ${why}`);
    return;
  }
  say(`fio: 4 KiB random write then read, ${o.fioSizeMiB} MiB file, ${o.fioSeconds} s each`);
  const f = await fioWorkload(join(dir, 'fio'), o.fioSizeMiB, o.fioSeconds);
  const note = f.direct ? undefined : 'O_DIRECT refused: buffered I/O';
  out.metrics.push(metric('fio.randwrite', '4k randwrite (fio, qd1)', target, f.randwriteIops, 'IOPS', note));
  out.metrics.push(metric('fio.randread', '4k randread (fio, qd1)', target, f.randreadIops, 'IOPS', note));
  say(`fio: randwrite ${f.randwriteIops.toFixed(0)} IOPS, randread ${f.randreadIops.toFixed(0)} IOPS${f.direct ? '' : ' (buffered)'}`);
}

function imageBytes(o: E2EOptions): number {
  const need = o.streamMiB * 2 ** 20 + o.fioSizeMiB * 2 ** 20;
  return Math.max(2 * GiB, Math.ceil((need * 1.5) / GiB) * GiB);
}

function ext4Target(o: E2EOptions, out: E2EOutcome): Scenario {
  return {
    name: 'perf-ext4',
    description: 'perf baseline: ext4 on a loop device',
    defaultNodes: 1,
    async run(ctx) {
      const img = await ctx.createImage('ext4', imageBytes(o));
      const dev = await ctx.attachLoop(img);
      o.progress(`ext4: mkfs.ext4 on ${dev.path} (${img.sizeBytes / GiB} GiB sparse image)`);
      const dir = await ctx.mountExt4(dev.path, 'ext4');
      const m = await findMount(dir);
      out.notes.push(`ext4: ${dev.path} mounted with ${m?.options ?? '?'}`);
      await runWorkloads(ctx, dir, 'ext4', o, out);
    },
  };
}

function fuseTarget(o: E2EOptions, out: E2EOutcome): Scenario {
  return {
    name: 'perf-fuse',
    description: 'perf baseline: fuse-native passthrough of a tmpfs directory',
    defaultNodes: 1,
    async run(ctx) {
      let backing: string;
      if (isRoot()) {
        backing = await ctx.mountTmpfs('backing', imageBytes(o));
      } else {
        backing = join(ctx.runDir, 'backing');
        await mkdir(backing, { recursive: true });
        out.notes.push('fuse-passthrough: not root, backing directory is not a tmpfs');
      }
      const mnt = join(ctx.runDir, 'mnt', 'fuse');
      await mkdir(mnt, { recursive: true });
      const proc = await startProc(ctx.registry, {
        name: 'fuse-passthrough',
        command: process.execPath,
        args: [PASSTHROUGH, backing, mnt],
        logPath: join(ctx.runDir, 'fuse-passthrough.log'),
        stopTimeoutMs: 10_000,
      });
      // Registered after the daemon: unmounted while it still runs.
      await ctx.registry.add(`unmount ${mnt}`, () => unmount(mnt));
      const mounted = mountAppears(mnt);
      const logged = logMatches(proc.logPath, /^mounted /m);
      await proc.waitReady(async () => (await mounted()) && (await logged()), { timeoutMs: 30_000, what: 'FUSE mount' });
      const m = await findMount(mnt);
      const line = (await proc.log()).split('\n').find((l) => l.startsWith('mounted ')) ?? '';
      out.notes.push(`fuse-passthrough: ${m?.fstype} ${m?.options}; daemon: ${line}`);
      await runWorkloads(ctx, mnt, 'fuse-passthrough', o, out);
    },
  };
}

export async function runE2E(o: E2EOptions): Promise<E2EOutcome> {
  const out: E2EOutcome = { metrics: [], skips: [], notes: [], errors: [] };
  const want = (t: string): boolean => o.targets === null || o.targets.includes(t);

  if (want('scoutfs')) {
    o.progress('scoutfs: not mountable yet, skipped');
    out.skips.push({ id: 'e2e.*.scoutfs', group: 'e2e', name: 'all workloads', target: 'scoutfs', skipped: 'scoutfs: not mountable yet, skipped' });
  }

  const targets: [string, () => Scenario, string | null][] = [
    ['ext4', () => ext4Target(o, out), isRoot() ? ((await which('mkfs.ext4')) ? null : 'mkfs.ext4 not installed (e2fsprogs)') : 'needs root (loop device + mount)'],
    ['fuse-passthrough', () => fuseTarget(o, out), (await which('fusermount')) ? null : 'fusermount not installed (Debian package fuse)'],
  ];
  for (const [name, make, skip] of targets) {
    if (!want(name)) continue;
    if (skip) {
      o.progress(`${name}: ${skip}`);
      out.skips.push({ id: `e2e.*.${name}`, group: 'e2e', name: 'all workloads', target: name, skipped: skip });
      continue;
    }
    const r = await runScenario(make(), {
      baseDir: o.baseDir,
      timeoutMs: 20 * 60_000,
      log: (l) => o.progress(l),
      replayArgv: o.replayArgv,
    });
    if (!r.ok) {
      out.errors.push(`${name}: ${(r.error ?? '').split('\n')[0]} (run folder ${r.runDir})`);
      try {
        const log = await readFile(join(r.runDir, 'fuse-passthrough.log'), 'utf8');
        out.errors.push(`${name}: daemon log tail:\n${log.split('\n').slice(-10).join('\n')}`);
      } catch {
        // Not the FUSE target, or no log.
      }
    }
  }
  return out;
}

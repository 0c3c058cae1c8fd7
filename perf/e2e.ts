/*
 * perf/e2e.ts owns the end-to-end targets and runs every workload
 * (workloads.ts) against each, in one run:
 *
 *   ext4               mkfs.ext4 on a sparse image on a loop device (root).
 *   fuse-passthrough   perf/fuse-passthrough.ts (fuse-native) mirroring a
 *                      tmpfs directory (a plain directory when not root).
 *   scoutfs            our mount on the kernel transport (the default);
 *   scoutfs-native     the same on fuse-native (transport=fuse-native):
 *                      two sparse images (metadata, data) on
 *                      loop devices, `scoutfs mkfs -A -f -Q 0,127.0.0.1,PORT`,
 *                      then `scoutfs mount -o metadev_path=META,
 *                      quorum_slot_nr=0 DATA MNT` as a child process (the
 *                      daemon), ready when its FUSE mount is in /proc/mounts
 *                      and it logged "mounted ".  The sequential read runs
 *                      after the caches were dropped AND the daemon was
 *                      stopped (SIGTERM: commit, unmount) and started
 *                      again, so neither the kernel nor the daemon holds
 *                      the file.  The run ends with a clean stop (exit 0)
 *                      and a clean `scoutfs fsck` of both devices, or the
 *                      target fails.  With --profile DIR the daemon runs under
 *                      `node --cpu-prof --cpu-prof-dir=DIR` (one .cpuprofile
 *                      per daemon process, written when it exits).
 *
 * The workloads run in client processes (workloads.ts), never in the
 * process that serves a FUSE mount: a synchronous syscall on a mount served
 * by the same process would deadlock it.  Here every daemon is a child.
 *
 * Each target is one harness run (harness/runner.ts) with its own run
 * folder under the base directory and its own cleanup registry, so its
 * loop devices, mounts and daemon are gone before the next target starts
 * (the machine has 2 cores; targets never overlap) and whatever happens
 * (error, timeout, ^C) they are torn down: client processes first, then the
 * FUSE unmount while the daemon still runs, then the daemon, the tmpfs,
 * the ext4 mount, the loop devices.  A failed target keeps its images and
 * run folder, is reported in `errors` (with the tail of its daemon log),
 * and the other targets still run.
 *
 * Order: ext4, fuse-passthrough, scoutfs, scoutfs-native, so the ratios
 * to the passthrough come from the same run.  Each workload runs o.rounds
 * times per target and the median is reported (the rounds in its note).
 * Before the warm and the cold sequential read the FUSE targets are
 * remounted (their daemon restarted), the cold one after drop_caches.  The quorum port (42300) is only written by
 * mkfs today: the single-node mount runs its server in process and does
 * not listen on it.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findMount, unmount } from '../harness/cleanup.js';
import { logMatches, mountAppears, startProc, type NodeProc } from '../harness/proc.js';
import { runScenario, type RunContext, type Scenario } from '../harness/runner.js';
import { isRoot, sh, trySh, which } from '../harness/sys.js';
import type { Metric, Skip } from './results.js';
import { archiveWorkload, bytesWorkload, fioAvailable, fioWorkload, metaWorkload, streamWorkload } from './workloads.js';

const PASSTHROUGH = join(dirname(fileURLToPath(import.meta.url)), 'fuse-passthrough.js');
const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const SCOUTFS_CLI = join(REPO, 'bin', 'scoutfs');
const SCOUTFS_BUILT = join(REPO, 'dist', 'src', 'mount', 'mount.js');
const GiB = 2 ** 30;
/** mkfs's quorum slot 0 port: above the ranges other tests use. */
export const SCOUTFS_QUORUM_PORT = 42300;

/** The workload groups runWorkloads knows, in run order. */
export const WORKLOADS = ['meta', 'meta2', 'stream', 'bytes', 'archive', 'fio'] as const;
export type Workload = (typeof WORKLOADS)[number];

export interface E2EOptions {
  baseDir: string;
  files: number;
  streamMiB: number;
  fioSizeMiB: number;
  fioSeconds: number;
  noFio: boolean;
  /** Only these targets (default all). */
  targets: string[] | null;
  /** Only these workloads (default all). */
  workloads: Workload[] | null;
  /** Run the scoutfs daemon under --cpu-prof, profiles written here. */
  profileDir: string | null;
  /** Rounds of each workload per target; the median is reported. */
  rounds: number;
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

const median = (xs: number[]): number => {
  const v = [...xs].sort((a, b) => a - b);
  return v.length % 2 === 1 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2;
};
const fmt = (xs: number[]): string => xs.map((x) => x.toFixed(0)).join(', ');

/**
 * Every workload against `dir`, o.rounds times each, appending medians to
 * `out`.  `remount`, when given, empties the mount's own caches before the
 * warm and the cold sequential read (workloads.ts streamWorkload).
 */
async function runWorkloads(
  ctx: RunContext, dir: string, target: string, o: E2EOptions, out: E2EOutcome, remount?: () => Promise<void>,
): Promise<void> {
  const say = (s: string): void => o.progress(`${target}: ${s}`);
  const want = (w: Workload): boolean => o.workloads === null || o.workloads.includes(w);
  const t = 600_000;
  const R = Math.max(1, o.rounds);
  const rounds = ` (median of ${R})`;
  for (const clients of [1, 2]) {
    const tag = clients === 1 ? 'meta' : 'meta2';
    if (!want(tag)) continue;
    const who = clients === 1 ? '1 proc' : `${clients} procs`;
    const m = { create: [] as number[], stat: [] as number[], readdir: [] as number[], unlink: [] as number[] };
    for (let r = 0; r < R; r++) {
      say(`metadata round ${r + 1}/${R}: ${clients} client(s) x ${o.files} files: create, stat, readdir, unlink`);
      const x = await metaWorkload(ctx.registry, dir, clients, o.files, t);
      m.create.push(x.create); m.stat.push(x.stat); m.readdir.push(x.readdir); m.unlink.push(x.unlink);
    }
    out.metrics.push(metric(`${tag}.create`, `create (${who})`, target, median(m.create), 'files/s', R > 1 ? `rounds ${fmt(m.create)}` : undefined));
    out.metrics.push(metric(`${tag}.stat`, `stat (${who})`, target, median(m.stat), 'files/s', R > 1 ? `rounds ${fmt(m.stat)}` : undefined));
    out.metrics.push(metric(`${tag}.readdir`, `readdir ${o.files} entries (${who})`, target, median(m.readdir), 'entries/s', R > 1 ? `rounds ${fmt(m.readdir)}` : undefined));
    out.metrics.push(metric(`${tag}.unlink`, `unlink (${who})`, target, median(m.unlink), 'files/s', R > 1 ? `rounds ${fmt(m.unlink)}` : undefined));
    say(`metadata ${who}${rounds}: create ${median(m.create).toFixed(0)}/s stat ${median(m.stat).toFixed(0)}/s readdir ${median(m.readdir).toFixed(0)} entries/s unlink ${median(m.unlink).toFixed(0)}/s`);
  }
  if (want('stream')) {
    const w: number[] = [];
    const warm: number[] = [];
    const cold: number[] = [];
    let dropped = true;
    for (let r = 0; r < R; r++) {
      say(`streaming round ${r + 1}/${R}: write ${o.streamMiB} MiB + fsync${remount ? ', remount, warm read' : ''}, drop caches${remount ? ', remount' : ''}, read`);
      const x = await streamWorkload(ctx.registry, dir, o.streamMiB, t, remount);
      w.push(x.writeMBps);
      if (x.warmReadMBps !== null) warm.push(x.warmReadMBps);
      cold.push(x.readMBps);
      dropped &&= x.cachesDropped;
    }
    out.metrics.push(metric('stream.write', `seq write ${o.streamMiB} MiB + fsync`, target, median(w), 'MB/s', R > 1 ? `rounds ${fmt(w)}` : undefined));
    if (warm.length) {
      out.metrics.push(metric('stream.warmread', 'seq read after a remount, host caches kept', target, median(warm), 'MB/s', R > 1 ? `rounds ${fmt(warm)}` : undefined));
    }
    out.metrics.push(metric('stream.read', 'seq read, caches dropped', target, median(cold), 'MB/s',
      dropped ? (R > 1 ? `rounds ${fmt(cold)}` : undefined) : 'caches NOT dropped (not root): may be a page cache read'));
    say(`streaming${rounds}: write ${median(w).toFixed(0)} MB/s${warm.length ? `, warm read ${median(warm).toFixed(0)} MB/s` : ''}, cold read ${median(cold).toFixed(0)} MB/s`);
  }
  if (want('bytes')) {
    const b: number[] = [];
    for (let r = 0; r < R; r++) {
      say(`single-byte writes round ${r + 1}/${R}: 3 s or 4 MiB`);
      b.push(await bytesWorkload(ctx.registry, dir, 3, t));
    }
    out.metrics.push(metric('bytes.write', 'single-byte sequential writes', target, median(b), 'writes/s', R > 1 ? `rounds ${fmt(b)}` : undefined));
    say(`single-byte writes${rounds}: ${median(b).toFixed(0)}/s`);
  }
  if (want('archive') && target.startsWith('scoutfs')) {
    const wr: number[] = [];
    const st: number[] = [];
    const rel: number[] = [];
    const ratio: number[] = [];
    for (let r = 0; r < R; r++) {
      say(`archive round ${r + 1}/${R}: write ${o.streamMiB} MiB + fsync, release it, stage it back + sync`);
      const a = await archiveWorkload(ctx.registry, dir, ctx.runDir, o.streamMiB, t, async (args) => {
        const x = await sh(process.execPath, [SCOUTFS_CLI, ...args], { timeoutMs: t });
        return x.stdout;
      });
      wr.push(a.writeMBps);
      st.push(a.stageMBps);
      rel.push(a.releaseMs);
      ratio.push(a.stageMBps / a.writeMBps);
    }
    const note = (v: number[], digits = 0): string | undefined => (R > 1 ? `rounds ${v.map((x) => x.toFixed(digits)).join(', ')}` : undefined);
    out.metrics.push(metric('archive.write', `seq write ${o.streamMiB} MiB + fsync (archive file)`, target, median(wr), 'MB/s', note(wr)));
    out.metrics.push(metric('archive.stage', `stage ${o.streamMiB} MiB + sync`, target, median(st), 'MB/s', note(st)));
    out.metrics.push({ ...metric('archive.release', `release ${o.streamMiB} MiB (CLI process included)`, target, median(rel), 'ms', note(rel)), higherIsBetter: false });
    out.metrics.push(metric('archive.stage_vs_write', 'stage rate / write rate (same round)', target, median(ratio), 'x', note(ratio, 2)));
    out.notes.push(`${target} archive (issue 13 aims)${rounds}: stage/write ${median(ratio).toFixed(2)}x (aim >= 0.80x), release of ${o.streamMiB} MiB ${median(rel).toFixed(0)} ms (aim < 1000 ms)`);
    say(`archive${rounds}: write ${median(wr).toFixed(0)} MB/s, stage ${median(st).toFixed(0)} MB/s (${median(ratio).toFixed(2)}x), release ${median(rel).toFixed(0)} ms`);
  }
  if (!want('fio')) return;
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
  // stream, then archive (the file and its stage), then fio.
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
      let nth = 0;
      let proc: NodeProc | null = null;
      const start = async (): Promise<void> => {
        const name = `fuse-passthrough${nth++ === 0 ? '' : nth - 1}`;
        proc = await startProc(ctx.registry, {
          name,
          command: process.execPath,
          args: [PASSTHROUGH, '--product', backing, mnt],
          logPath: join(ctx.runDir, `${name}.log`),
          stopTimeoutMs: 10_000,
        });
        // Registered after the daemon: unmounted while it still runs.
        await ctx.registry.add(`unmount ${mnt}`, () => unmount(mnt));
        const mounted = mountAppears(mnt);
        const logged = logMatches(proc.logPath, /^mounted /m);
        await proc.waitReady(async () => (await mounted()) && (await logged()), { timeoutMs: 30_000, what: 'FUSE mount' });
      };
      await start();
      const m = await findMount(mnt);
      const line = (await proc!.log()).split('\n').find((l) => l.startsWith('mounted ')) ?? '';
      out.notes.push(`fuse-passthrough: ${m?.fstype} ${m?.options}; daemon: ${line}`);
      const remount = async (): Promise<void> => {
        const ex = await proc!.stop(30_000);
        if (ex.code !== 0) throw new Error(`fuse-passthrough exited ${ex.code ?? ex.signal} on SIGTERM`);
        await start();
      };
      await runWorkloads(ctx, mnt, 'fuse-passthrough', o, out, remount);
    },
  };
}

/** mkfs, mount (the daemon is a child process), workloads, remount before the cold read, clean stop. */
function scoutfsTarget(o: E2EOptions, out: E2EOutcome, transport: 'kernel' | 'fuse-native', extra = ''): Scenario {
  const target = transport === 'kernel' ? (extra === '' ? 'scoutfs' : 'scoutfs-wb') : 'scoutfs-native';
  return {
    name: `perf-${target}`,
    description: 'perf: a scoutfs mount (mkfs on two loop devices, the mount daemon as a child)',
    defaultNodes: 1,
    async run(ctx) {
      // Metadata: 64 KiB blocks; a few GiB is plenty for these workloads
      // (sparse, so only what is written takes space).
      const metaImg = await ctx.createImage('scoutfs-meta', 4 * GiB);
      const dataImg = await ctx.createImage('scoutfs-data', imageBytes(o) * 2);
      const meta = await ctx.attachLoop(metaImg);
      const data = await ctx.attachLoop(dataImg);
      o.progress(`scoutfs: mkfs on ${meta.path} (meta) and ${data.path} (data)`);
      const mk = await sh(process.execPath, [SCOUTFS_CLI, 'mkfs', '-A', '-f', '-Q', `0,127.0.0.1,${SCOUTFS_QUORUM_PORT}`, meta.path, data.path],
        { timeoutMs: 120_000 });
      await writeFile(join(ctx.runDir, 'mkfs.log'), mk.stdout + mk.stderr);
      const mnt = join(ctx.runDir, 'mnt', 'scoutfs');
      await mkdir(mnt, { recursive: true });
      let nth = 0;
      let proc: NodeProc | null = null;
      const start = async (): Promise<void> => {
        const name = `scoutfs-mount${nth++}`;
        const prof = o.profileDir ? ['--cpu-prof', `--cpu-prof-dir=${o.profileDir}`, `--cpu-prof-name=${name}.cpuprofile`] : [];
        proc = await startProc(ctx.registry, {
          name,
          command: process.execPath,
          args: [...prof, SCOUTFS_CLI, 'mount', '-o', `metadev_path=${meta.path},quorum_slot_nr=0,transport=${transport}${extra}`, data.path, mnt],
          logPath: join(ctx.runDir, `${name}.log`),
          // SIGTERM commits everything first: give it time.
          stopTimeoutMs: 120_000,
        });
        // Registered after the daemon: unmounted while it still runs.
        await ctx.registry.add(`unmount ${mnt} (${name})`, () => unmount(mnt));
        const mounted = mountAppears(mnt);
        const logged = logMatches(proc.logPath, /^mounted \S+ at /m);
        await proc.waitReady(async () => (await mounted()) && (await logged()), { timeoutMs: 120_000, what: 'scoutfs mount' });
      };
      const stop = async (): Promise<void> => {
        const p = proc!;
        const ex = await p.stop(120_000);
        if (ex.code !== 0) throw new Error(`${p.name} exited with ${ex.code ?? ex.signal} on SIGTERM; log tail:\n${await p.logTail()}`);
      };
      await start();
      const m = await findMount(mnt);
      out.notes.push(`${target}: ${m?.fstype} ${m?.options}; meta ${meta.path}, data ${data.path}`);
      await runWorkloads(ctx, mnt, target, o, out, async () => {
        o.progress(`${target}: remount (SIGTERM the daemon, start it again) before the read`);
        await stop();
        await start();
      });
      // A clean stop (final commit, farewell) and a clean fsck of what the
      // workloads left are part of a passing run.
      await stop();
      const fsck = await trySh(process.execPath, [SCOUTFS_CLI, 'fsck', meta.path, data.path], { timeoutMs: 300_000 });
      await writeFile(join(ctx.runDir, 'fsck.log'), fsck.stdout + fsck.stderr);
      if (fsck.exitCode !== 0) throw new Error(`scoutfs fsck after the workloads failed (exit ${fsck.exitCode}): ${fsck.stderr.split('\n').slice(0, 5).join('; ')}`);
      out.notes.push(`${target}: fsck clean after the workloads`);
      if (o.profileDir) out.notes.push(`${target}: daemon CPU profiles in ${o.profileDir}`);
    },
  };
}

export async function runE2E(o: E2EOptions): Promise<E2EOutcome> {
  const out: E2EOutcome = { metrics: [], skips: [], notes: [], errors: [] };
  const want = (t: string): boolean => o.targets === null || o.targets.includes(t);

  const targets: [string, () => Scenario, string | null][] = [
    ['ext4', () => ext4Target(o, out), isRoot() ? ((await which('mkfs.ext4')) ? null : 'mkfs.ext4 not installed (e2fsprogs)') : 'needs root (loop device + mount)'],
    ['fuse-passthrough', () => fuseTarget(o, out), (await which('fusermount')) ? null : 'fusermount not installed (Debian package fuse)'],
  ];
  const scoutfsSkip = !existsSync(SCOUTFS_BUILT) ? 'dist/src/mount/mount.js not built'
    : !isRoot() ? 'needs root (loop devices)'
      : !(await which('fusermount')) ? 'fusermount not installed (Debian package fuse)'
        : !existsSync('/dev/fuse') ? 'no /dev/fuse' : null;
  targets.push(['scoutfs', () => scoutfsTarget(o, out, 'kernel'), scoutfsSkip]);
  targets.push(['scoutfs-native', () => scoutfsTarget(o, out, 'fuse-native'), scoutfsSkip]);
  // Only when asked for by name: the kernel transport with -o writeback_cache.
  if (o.targets?.includes('scoutfs-wb')) targets.push(['scoutfs-wb', () => scoutfsTarget(o, out, 'kernel', ',writeback_cache'), scoutfsSkip]);
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
      for (const f of await readdir(r.runDir).catch(() => [] as string[])) {
        if (!/^(fuse-passthrough\d*|scoutfs-mount\d+)\.log$/.test(f)) continue;
        const log = await readFile(join(r.runDir, f), 'utf8').catch(() => '');
        out.errors.push(`${name}: ${f} tail:\n${log.split('\n').slice(-10).join('\n')}`);
      }
    }
  }
  return out;
}

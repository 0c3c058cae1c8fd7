/*
 * Goal: the archive interface on a real mount, through the paths users
 * take: coreutils (dd, cat, cmp, truncate, stat) on the FUSE mount and the
 * `scoutfs` CLI as a child process, modelled on the scoutfs suite's
 * simple-staging, basic-block-counts, simple-release-extents,
 * setattr_more, move-blocks, offline-extent-waiting, stage-multi-part and
 * stage-release-race-alloc: byte-exact staged data, block counts and
 * data_version after each step, every error case with the reference's
 * failure line (`scoutfs: <cmd> failed: <strerror> (<n>)`, exit 1), readers
 * and writers blocked on offline data woken by stage and by data-wait-err
 * with the errno it set, and a killed reader leaving no waiter behind.
 * The volume is fsck'd (every data block mapped or free exactly once, every
 * file's online/offline counts right) after the unmount.  The mounts use
 * the default (kernel) transport; offline-extent-waiting runs through
 * fuse-native too, whose cancellation works differently (src/fuse/).
 *
 * Left out: the two-node wake (a stage on another node waking a reader
 * here) needs the cluster, which does not exist yet.
 *
 * Sizes: SCOUTFS_STAGE_MULTI_MIB (default 128; the reference uses 4 GiB)
 * for stage-multi-part, SCOUTFS_RACE_ROUNDS (default 6; the reference
 * 1000) for stage-release-race-alloc.  Needs root, /dev/fuse, fusermount
 * and losetup; skipped otherwise.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { CleanupRegistry } from '../../harness/cleanup.js';
import type { NodeProc } from '../../harness/proc.js';
import { sleep } from '../../harness/sys.js';
import { CLI, clusterSkip, finish, GIB, pattern, randomQuorum, scoutfs, stopMount, tempBase, Volume, type CliResult } from './util.js';

const SKIP = await clusterSkip();
const reg = new CleanupRegistry('cluster-archive', 60_000);
const execf = promisify(execFile);
const BS = 4096;
const MULTI_MIB = Number(process.env.SCOUTFS_STAGE_MULTI_MIB ?? 128);
const RACE_ROUNDS = Number(process.env.SCOUTFS_RACE_ROUNDS ?? 6);
let base = '';
let tmp = '';
let v: Volume;
let daemon: NodeProc;

before(async () => {
  if (SKIP) return;
  base = await tempBase(reg, 'archive');
  tmp = join(base, 'tmp');
  await fsp.mkdir(tmp);
  v = await Volume.create(reg, base, 'vol', { metaBytes: GIB, dataBytes: 4 * GIB, ...randomQuorum() });
  daemon = await v.mount();
});

after(async () => {
  if (!SKIP && daemon !== undefined) {
    await stopMount(daemon, v.mnt);
    await v.assertFsckClean();
  }
  await finish(reg, base);
});

async function ok(...args: string[]): Promise<string> {
  const r = await scoutfs(...args);
  assert.equal(r.code, 0, `scoutfs ${args.join(' ')}: exit ${r.code}\n${r.out}${r.err}`);
  return r.out;
}

/** A failure line as the reference prints it, exit 1. */
function failed(r: CliResult, cmd: string, errno: string, n: number): void {
  assert.equal(r.code, 1, `expected ${cmd} to fail ${errno}, got exit ${r.code}: ${r.out}${r.err}`);
  const strerror: Record<string, string> = {
    EINVAL: 'Invalid argument', ESTALE: 'Stale file handle', ENOTTY: 'Inappropriate ioctl for device', EISDIR: 'Is a directory',
    EOVERFLOW: 'Value too large for defined data type', EXDEV: 'Invalid cross-device link', ENODATA: 'No data available', ENOENT: 'No such file or directory',
  };
  assert.match(r.err, new RegExp(`^scoutfs: ${cmd} failed: ${strerror[errno]} \\(${n}\\)`), r.err);
}

async function field(path: string, f: string): Promise<string> {
  return (await ok('stat', '-s', f, path)).trim();
}

async function blocks(path: string): Promise<[string, string, string]> {
  const st = await fsp.stat(path);
  return [await field(path, 'online_blocks'), await field(path, 'offline_blocks'), String(st.blocks)];
}

async function sh(cmd: string, args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await execf(cmd, args, { maxBuffer: 64 << 20 });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, out: x.stdout ?? '', err: x.stderr ?? '' };
  }
}

interface Bg {
  pid: number;
  done: Promise<{ code: number | null; signal: string | null; err: string }>;
  kill(sig?: NodeJS.Signals): void;
}

/** A background command (a reader or writer that will wait), killed by the registry if still running. */
async function bg(cmd: string, args: string[]): Promise<Bg> {
  const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const done = new Promise<{ code: number | null; signal: string | null; err: string }>((resolve) => {
    p.on('close', (code, signal) => resolve({ code, signal, err }));
  });
  await reg.add(`kill ${cmd} ${p.pid}`, () => {
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  });
  return { pid: p.pid!, done, kill: (sig = 'SIGTERM') => p.kill(sig) };
}

async function waiting(): Promise<string[]> {
  const out = await ok('data-waiting', '-I', '0', '-B', '0', '-p', v.mnt);
  return out.split('\n').filter((l) => l !== '');
}

/** Poll until cond holds; the deadline only bounds a hang, it is no speed requirement. */
async function until(cond: () => Promise<boolean>, what: () => string, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) assert.fail(`timed out waiting for: ${what()}`);
    await sleep(50);
  }
}

async function waitingIs(want: string[], what: string): Promise<void> {
  let last: string[] = [];
  await until(async () => JSON.stringify((last = await waiting())) === JSON.stringify(want), () => `${what}: data-waiting ${JSON.stringify(want)} (last ${JSON.stringify(last)})`);
}

/**
 * A reader through the page cache: the kernel's readahead asks for the
 * following windows too (FUSE read requests of 128 KiB each), so the list
 * starts with the block read() needs and may go on with readahead blocks
 * of the same file.  Readers with O_DIRECT ask for exactly their blocks.
 */
async function waitingStartsWith(first: string, n: string, what: string): Promise<string[]> {
  let last: string[] = [];
  await until(async () => {
    last = await waiting();
    return last[0] === first && last.every((l) => l.startsWith(`ino ${n} iblock `) && l.endsWith(' ops read'));
  }, () => `${what}: data-waiting starting with ${first} (last ${JSON.stringify(last)})`);
  return last;
}

async function ino(path: string): Promise<string> {
  return String((await fsp.stat(path, { bigint: true })).ino);
}

async function mkfile(path: string, bytes: Buffer): Promise<void> {
  await fsp.writeFile(path, bytes);
}

test('simple-staging: release and stage round trips byte-exact, keep stat, data_seq and data_version, and refuse bad arguments', { skip: SKIP, timeout: 300_000 }, async () => {
  const d = v.path('staging');
  await fsp.mkdir(d);
  const file = join(d, 'file');
  for (const [size, tag] of [[4096, 'a'], [4096 * 4096, 'b'], [2048, 'c']] as const) {
    const want = pattern(`staging-${tag}`, size);
    const arch = join(tmp, `arch-${tag}`);
    await mkfile(file, want);
    await fsp.writeFile(arch, want);
    const vers = await field(file, 'data_version');
    await ok('release', file, '-V', vers, '-o', '0', '-l', String(Math.ceil(size / BS) * BS));
    assert.deepEqual(await blocks(file), ['0', String(Math.ceil(size / BS)), String(Math.ceil(size / BS) * 8)]);
    await ok('stage', arch, file, '-V', vers, '-o', '0', '-l', String(size));
    assert((await fsp.readFile(file)).equals(want), `${size} bytes staged back byte-exact`);
    await fsp.rm(file);
  }

  // Nine release / stage cycles of a 4 MiB file.
  const want = pattern('cycles', 4 << 20);
  const arch = join(tmp, 'cycles');
  await fsp.writeFile(arch, want);
  await mkfile(file, want);
  const vers = await field(file, 'data_version');
  for (let i = 0; i < 9; i++) {
    await ok('release', file, '-V', vers, '-o', '0', '-l', '4096K');
    await ok('sync', v.mnt);
    await ok('stage', arch, file, '-V', vers, '-o', '0', '-l', String(4 << 20));
    assert((await fsp.readFile(file)).equals(want), `cycle ${i}`);
  }
  await fsp.rm(file);

  // release + stage change neither stat, data_seq nor data_version; stage changes meta_seq.
  await mkfile(file, pattern('keep', 4096));
  await fsp.writeFile(arch, pattern('keep', 4096));
  await ok('sync', v.mnt);
  const st0 = await fsp.stat(file);
  const before = [await field(file, 'data_seq'), await field(file, 'data_version')];
  const vk = before[1]!;
  await ok('release', file, '-V', vk, '-o', '0', '-l', '4K');
  await ok('sync', v.mnt);
  const meta0 = await field(file, 'meta_seq');
  await ok('stage', arch, file, '-V', vk, '-o', '0', '-l', '4096');
  const st1 = await fsp.stat(file);
  assert.deepEqual([st1.size, st1.mtimeMs, st1.ctimeMs, st1.mode, st1.ino], [st0.size, st0.mtimeMs, st0.ctimeMs, st0.mode, st0.ino]);
  assert.deepEqual([await field(file, 'data_seq'), await field(file, 'data_version')], before);
  assert.notEqual(await field(file, 'meta_seq'), meta0, 'stage changes meta_seq');
  await fsp.rm(file);

  // Errors, as the reference prints them.
  await fsp.writeFile(file, '');
  const z = await scoutfs('stage', '/dev/zero', file, '-V', await field(file, 'data_version'), '-o', '0', '-l', '4096');
  assert.equal(z.code, 2, 'a data_version of 0 is a usage error');
  assert.match(z.err, /must provide file version/);
  assert.equal((await fsp.stat(file)).size, 0, "stage can't extend a file");
  await mkfile(file, pattern('e', 8192));
  const ve = await field(file, 'data_version');
  failed(await scoutfs('stage', '/dev/zero', file, '-V', ve, '-o', '0xFFFFFFFFFFFFF000', '-l', '8192'), 'stage', 'EINVAL', 22);
  await ok('release', file, '-V', ve, '-o', '0', '-l', '8K');
  failed(await scoutfs('stage', arch, file, '-V', ve, '-o', '1', '-l', '4095'), 'stage', 'EINVAL', 22);
  failed(await scoutfs('stage', arch, file, '-V', ve, '-o', '0', '-l', '1024'), 'stage', 'EINVAL', 22);
  failed(await scoutfs('stage', '/dev/zero', file, '-V', String(BigInt(ve) + 1n), '-o', '0', '-l', '8192'), 'stage', 'ESTALE', 116);
  await ok('stage', '/dev/zero', file, '-V', ve, '-o', '4096', '-l', '0');
  assert.deepEqual(await blocks(file), ['0', '2', '16'], 'failed and empty stages bring nothing online');
  await fsp.rm(file);
  const chr = join(d, 'char');
  await sh('mknod', [chr, 'c', '1', '3']);
  failed(await scoutfs('stage', '/dev/zero', chr, '-V', '1', '-o', '0', '-l', '1'), 'stage', 'ENOTTY', 25);
  failed(await scoutfs('stage', '/dev/zero', d, '-V', '1', '-o', '0', '-l', '1'), 'stage', 'EISDIR', 21);
  await fsp.rm(chr);
});

test('basic-block-counts: online, offline and st_blocks across write, release, stage and truncate', { skip: SKIP, timeout: 120_000 }, async () => {
  const d = v.path('counts');
  await fsp.mkdir(d);
  const f = join(d, 'file');
  const dd = async (...a: string[]): Promise<void> => {
    const r = await sh('dd', ['if=/dev/zero', `of=${f}`, 'status=none', ...a]);
    assert.equal(r.code, 0, r.err);
  };
  await dd('bs=4K', 'count=1');
  assert.deepEqual(await blocks(f), ['1', '0', '8'], 'single block write');
  await dd('bs=4K', 'count=1', 'conv=notrunc');
  assert.deepEqual(await blocks(f), ['1', '0', '8'], 'single block overwrite');
  await dd('bs=4K', 'count=1', 'conv=notrunc', 'oflag=append');
  assert.deepEqual(await blocks(f), ['2', '0', '16'], 'append');
  const vers = await field(f, 'data_version');
  await ok('release', f, '-V', vers, '-o', '0', '-l', '8K');
  assert.deepEqual(await blocks(f), ['0', '2', '16'], 'release');
  await ok('release', f, '-V', vers, '-o', '0', '-l', '8K');
  assert.deepEqual(await blocks(f), ['0', '2', '16'], 'duplicate release');
  await ok('release', f, '-V', vers, '-o', '0', '-l', '64K');
  assert.deepEqual(await blocks(f), ['0', '2', '16'], 'duplicate release past i_size');
  await ok('stage', '/dev/zero', f, '-V', vers, '-o', '0', '-l', '8192');
  assert.deepEqual(await blocks(f), ['2', '0', '16'], 'stage');
  await ok('stage', '/dev/zero', f, '-V', vers, '-o', '0', '-l', '8192');
  assert.deepEqual(await blocks(f), ['2', '0', '16'], 'duplicate stage');
  assert.equal(await field(f, 'data_version'), vers);
  await dd('bs=1M', 'count=1');
  assert.deepEqual(await blocks(f), ['256', '0', '2048'], 'larger file');
  assert.equal((await sh('truncate', ['-s', '512K', f])).code, 0);
  assert.deepEqual(await blocks(f), ['128', '0', '1024'], 'partial truncate');
  await fsp.rm(f);
  await dd('bs=4K', 'count=1', 'seek=1K');
  assert.deepEqual(await blocks(f), ['1', '0', '8'], 'single sparse block');
  await fsp.rm(f);
  await fsp.writeFile(f, '');
  assert.deepEqual(await blocks(f), ['0', '0', '0'], 'empty file');
  const dir = join(d, 'dir');
  await fsp.mkdir(dir);
  assert.deepEqual(await blocks(dir), ['0', '0', '0'], 'non-regular file');
});

test('simple-release-extents: releases past i_size, of offline blocks and of length 0 are fine; wrapped, non-file and stale ones fail', { skip: SKIP, timeout: 120_000 }, async () => {
  const d = v.path('release');
  await fsp.mkdir(d);
  const f = join(d, 'file');
  await mkfile(f, pattern('rel', 65536));
  let vers = await field(f, 'data_version');
  await ok('release', f, '-V', vers, '-o', '0', '-l', '64K');
  assert.deepEqual(await blocks(f), ['0', '16', '128']);
  await fsp.rm(f);
  await mkfile(f, pattern('rel2', 6144));
  vers = await field(f, 'data_version');
  await ok('release', f, '-V', vers, '-o', '4K', '-l', '4K');
  assert.deepEqual(await blocks(f), ['1', '1', '16'], 'the block straddling i_size');
  await fsp.rm(f);
  await mkfile(f, pattern('rel3', 8192));
  vers = await field(f, 'data_version');
  await ok('release', f, '-V', vers, '-o', '0', '-l', '400K');
  await ok('release', f, '-V', vers, '-o', '0', '-l', '400K');
  await ok('release', f, '-V', vers, '-o', '0', '-l', '0');
  await ok('release', f, '-V', vers, '-o', '400K', '-l', '4K');
  await ok('release', f, '-V', vers, '-o', '0xfffffffffffff000', '-l', '4096');
  assert.deepEqual(await blocks(f), ['0', '2', '16']);
  failed(await scoutfs('release', f, '-V', vers, '-o', '0xfffffffffffff000', '-l', '8192'), 'release', 'EINVAL', 22);
  failed(await scoutfs('release', f, '-V', vers, '-o', '1', '-l', '4096'), 'release', 'EINVAL', 22);
  failed(await scoutfs('release', f, '-V', String(BigInt(vers) + 1n), '-o', '0', '-l', '4096'), 'release', 'ESTALE', 116);
  const chr = join(d, 'char');
  await sh('mknod', [chr, 'c', '1', '3']);
  failed(await scoutfs('release', chr, '-V', '1', '-o', '0', '-l', '4K'), 'release', 'ENOTTY', 25);
  failed(await scoutfs('release', '/dev/null', '-V', '1', '-o', '0', '-l', '4K'), 'release', 'ENOTTY', 25);
  failed(await scoutfs('release', join(tmp, '..'), '-V', '1', '-o', '0', '-l', '4K'), 'release', 'EISDIR', 21);
  const other = join(tmp, 'not-scoutfs');
  await fsp.writeFile(other, 'x');
  failed(await scoutfs('release', other, '-V', '1', '-o', '0', '-l', '4K'), 'release', 'ENOTTY', 25);
  const z = await scoutfs('release', f, '-V', '0', '-o', '0', '-l', '4K');
  assert.equal(z.code, 2);
  assert.match(z.err, /must provide file version/);
  // Length defaults to the size rounded up to 4 KiB.
  await fsp.rm(f);
  await mkfile(f, pattern('rel4', 3 * BS + 1));
  await ok('release', f, '-V', await field(f, 'data_version'));
  assert.deepEqual(await blocks(f), ['0', '4', '32']);
  await fsp.rm(f);
  await fsp.rm(chr);
});

test('setattr_more: argument rules, sizes, versions, times and offline extents', { skip: SKIP, timeout: 120_000 }, async () => {
  const d = v.path('setattr');
  await fsp.mkdir(d);
  const f = join(d, 'file');
  const fresh = async (): Promise<void> => {
    await fsp.rm(f, { force: true });
    await fsp.writeFile(f, '');
  };
  await fresh();
  let r = await scoutfs('setattr', '-V', '0', '-s', '1', f);
  assert.equal(r.code, 2);
  assert.match(r.err, /data version must not be 0/);
  r = await scoutfs('setattr', '-V', '1', '-o', '-s', '0', f);
  assert.equal(r.code, 2);
  assert.match(r.err, /must provide size if using --offline option/);
  failed(await scoutfs('setattr', '-V', '1', '-s', '1', d), 'setattr', 'EISDIR', 21);
  const chr = join(d, 'char');
  await sh('mknod', [chr, 'c', '1', '3']);
  failed(await scoutfs('setattr', '-V', '1', '-s', '1', chr), 'setattr', 'ENOTTY', 25);
  await fsp.rm(chr);
  await fsp.writeFile(f, 'contents\n');
  failed(await scoutfs('setattr', '-V', '1', '-s', '1', f), 'setattr', 'EINVAL', 22);
  await fresh();
  await sh('truncate', ['-s', '1M', f]);
  await sh('truncate', ['-s', '0', f]);
  failed(await scoutfs('setattr', '-V', '1', '-o', '-s', '1', f), 'setattr', 'EINVAL', 22);
  await fresh();
  await ok('setattr', '-V', '1', '-s', '578437695752307201', f);
  // fuse-native carries st_size as a double (exact up to 2^53 only); the kernel transport exactly.
  assert.equal(Number((await fsp.stat(f, { bigint: true })).size), Number(578437695752307201n));
  await fresh();
  await ok('setattr', '-V', '578437695752307201', '-s', '1', f);
  assert.equal(await field(f, 'data_version'), '578437695752307201');
  await fresh();
  await ok('setattr', '-t', '67305985.999999999', '-V', '1', '-s', '1', f);
  // The kernel transport carries nanoseconds, fuse-native milliseconds.
  assert.equal((await fsp.stat(f, { bigint: true })).ctimeNs / 1_000_000n, 67305985999n);
  await fresh();
  await ok('setattr', '-V', '1', '-o', '-s', String(10007 * 4096), f);
  assert.deepEqual(await blocks(f), ['0', '10007', String(10007 * 8)]);
  await fresh();
  await ok('setattr', '-V', '1', '-o', '-s', '4000000000', f);
  assert.equal(await field(f, 'offline_blocks'), '976563');
  await fresh();
  await ok('setattr', '-s', '0', '-t', '1725670311.0', '-r', '1725670311.0', f);
  assert.equal(await field(f, 'crtime'), '1725670311.000000000');
  // A restored offline file is staged from its archive like a released one.
  await fresh();
  const want = pattern('restore', 3 * BS + 77);
  const arch = join(tmp, 'restore');
  await fsp.writeFile(arch, want);
  await ok('setattr', '-V', '7', '-o', '-s', String(want.length), f);
  await ok('stage', arch, f, '-V', '7');
  assert((await fsp.readFile(f)).equals(want));
  assert.deepEqual(await blocks(f), ['4', '0', '32']);
  await fsp.rm(f);
});

test('move-blocks: errors, moves, partial i_size, field updates, backwards and combining', { skip: SKIP, timeout: 180_000 }, async () => {
  const d = v.path('move');
  await fsp.mkdir(d);
  const FROM = join(d, 'from');
  const TO = join(d, 'to');
  const HARD = join(d, 'hardlink');
  const OTHER = join(tmp, 'other');
  const LEN = 8 * BS + 123;
  let gen = 0;
  const regenerate = async (): Promise<Buffer> => {
    await fsp.rm(FROM, { force: true });
    await fsp.rm(TO, { force: true });
    const b = pattern(`move-${gen++}`, LEN);
    await fsp.writeFile(FROM, b);
    await fsp.writeFile(TO, '');
    return b;
  };
  const mv = (from: string, fo: string, len: string, to: string, tof: string): Promise<CliResult> =>
    scoutfs('move-blocks', from, '-f', fo, '-l', len, to, '-t', tof);
  await regenerate();
  await fsp.writeFile(OTHER, '');
  await fsp.link(FROM, HARD);
  const HUGE = '0xfffffffffffff000';
  failed(await mv(FROM, HUGE, '8192', TO, '0'), 'move-blocks', 'EOVERFLOW', 75);
  failed(await mv(FROM, '0', HUGE, TO, '8192'), 'move-blocks', 'EOVERFLOW', 75);
  failed(await mv(FROM, '0', String(BS), HARD, '0'), 'move-blocks', 'EINVAL', 22);
  failed(await mv(OTHER, '0', String(BS), TO, '0'), 'move-blocks', 'EXDEV', 18);
  failed(await mv(FROM, '1', String(BS), TO, '0'), 'move-blocks', 'EINVAL', 22);
  failed(await mv(FROM, '0', '1', TO, '0'), 'move-blocks', 'EINVAL', 22);
  failed(await mv(FROM, '0', String(BS), TO, '1'), 'move-blocks', 'EINVAL', 22);
  await fsp.writeFile(TO, pattern('to', BS));
  failed(await mv(FROM, '0', String(BS), TO, '0'), 'move-blocks', 'EINVAL', 22);
  await ok('release', TO, '-V', await field(TO, 'data_version'), '-o', '0', '-l', String(BS));
  failed(await mv(FROM, '0', String(BS), TO, '0'), 'move-blocks', 'ENODATA', 61);
  await fsp.rm(HARD);
  await regenerate();
  await ok('release', FROM, '-V', await field(FROM, 'data_version'), '-o', '0', '-l', String(BS));
  failed(await mv(FROM, '0', String(BS), TO, '0'), 'move-blocks', 'ENODATA', 61);

  const moveAndCompare = async (from: string, fo: number, len: number, to: string, tof: number): Promise<void> => {
    const f0 = await fsp.readFile(from);
    const t0 = await fsp.readFile(to);
    const blocksN = Math.ceil(len / BS);
    const fexp = Buffer.from(f0);
    fexp.fill(0, fo, Math.min(fo + blocksN * BS, f0.length));
    const texp = Buffer.alloc(Math.max(t0.length, tof + len));
    t0.copy(texp);
    f0.copy(texp, tof, fo, fo + len);
    await ok('move-blocks', from, '-f', String(fo), '-l', String(len), to, '-t', String(tof));
    assert((await fsp.readFile(from)).equals(fexp), 'the source has a hole where the blocks were, and its size');
    assert((await fsp.readFile(to)).equals(texp), 'the destination has the bytes');
  };
  await regenerate();
  await moveAndCompare(FROM, 0, BS, TO, 0);
  await regenerate();
  await moveAndCompare(FROM, 0, BS, TO, BS);
  await regenerate();
  await moveAndCompare(FROM, 0, LEN, TO, 0);
  await regenerate();
  await moveAndCompare(FROM, LEN - 123, 123, TO, 0);
  assert.equal((await fsp.stat(TO)).size, 123, 'moving the final partial block sets a partial i_size');

  await regenerate();
  const fields = async (p: string): Promise<string[]> => {
    const st = await fsp.stat(p);
    return [String(st.ctimeMs), String(st.mtimeMs), await field(p, 'data_version'), await field(p, 'meta_seq'), await field(p, 'data_seq')];
  };
  const fb = await fields(FROM);
  const tb = await fields(TO);
  await ok('sync', v.mnt);
  await sleep(1100);
  await moveAndCompare(FROM, 0, BS, TO, 0);
  const fa = await fields(FROM);
  const ta = await fields(TO);
  for (let i = 0; i < fa.length; i++) {
    assert.notEqual(fa[i], fb[i], `move changes the source's field ${i}`);
    assert.notEqual(ta[i], tb[i], `move changes the destination's field ${i}`);
  }

  const orig = await regenerate();
  await moveAndCompare(FROM, LEN - 123, 123, TO, LEN - 123);
  for (let i = 7; i >= 0; i--) await moveAndCompare(FROM, i * BS, BS, TO, i * BS);
  assert((await fsp.readFile(TO)).equals(orig), 'moving backwards rebuilds the file');

  await regenerate();
  const large: Buffer[] = [];
  for (let i = 0; i < 8; i++) {
    const piece = join(d, `piece.${i}`);
    const b = pattern(`piece-${i}`, 8 * BS);
    await fsp.writeFile(piece, b);
    large.push(b);
    await moveAndCompare(piece, 0, 8 * BS, TO, i * 8 * BS);
    await fsp.rm(piece);
  }
  large.push(await fsp.readFile(FROM));
  await moveAndCompare(FROM, 0, LEN, TO, 8 * 8 * BS);
  assert((await fsp.readFile(TO)).equals(Buffer.concat(large)), 'many files combined into one');
});

const WAITING = 'readers, writers and truncates wait, are listed, wake on stage and on data-wait-err; a killed reader leaves no waiter';

test(`offline-extent-waiting: ${WAITING}`, { skip: SKIP, timeout: 300_000 }, () => offlineExtentWaiting());

test(`offline-extent-waiting through the fuse-native transport: ${WAITING}`, { skip: SKIP, timeout: 300_000 }, async () => {
  const vn = await Volume.create(reg, base, 'native', { metaBytes: GIB, dataBytes: 2 * GIB, ...randomQuorum() });
  vn.transport = 'fuse-native';
  const dn = await vn.mount();
  const kernel = v;
  v = vn;
  try {
    await offlineExtentWaiting();
  } finally {
    v = kernel;
  }
  await stopMount(dn, vn.mnt);
  await vn.assertFsckClean();
});

/** The helpers above use the module's `v`: the volume under test. */
async function offlineExtentWaiting(): Promise<void> {
  const d = v.path('waiting');
  await fsp.mkdir(d);
  const BLOCKS = 256;
  const BYTES = BLOCKS * BS;
  const golden = join(d, 'golden');
  const file = join(d, 'file');
  const g = pattern('golden', BYTES);
  await fsp.writeFile(golden, g);
  await fsp.writeFile(file, g);
  const n = await ino(file);
  const vers = await field(file, 'data_version');
  assert.deepEqual(await waiting(), [], 'nothing waits yet');
  await ok('release', file, '-V', vers, '-o', '0', '-l', String(BYTES));

  // O_DIRECT readers ask for exactly their block.  They go first: while a
  // page cache reader's readahead waits, a new open() of the file waits in
  // the kernel (libfuse2 has it drop the file's cached pages at every
  // open, which waits for pages being read; see src/fuse/adapter.ts).
  const direct = (skip: number): Promise<Bg> => bg('dd', [`if=${file}`, 'of=/dev/null', `bs=${BS}`, 'count=1', `skip=${skip}`, 'iflag=direct']);
  const c2 = await direct(0);
  await waitingIs([`ino ${n} iblock 0 ops read`], 'a reader waits on block 0');
  const c3 = await direct(0);
  await sleep(300);
  await waitingIs([`ino ${n} iblock 0 ops read`], 'two waiters on one block are listed once');
  const d1 = await direct(BLOCKS - 1);
  await waitingIs([`ino ${n} iblock 0 ops read`, `ino ${n} iblock ${BLOCKS - 1} ops read`], 'different blocks show up');
  const c1 = await bg('cat', [file]);
  await until(async () => (await fsp.readFile(`/proc/${c1.pid}/wchan`, 'utf8').catch(() => '')) !== '' && (await waiting()).length >= 2, () => 'the cat reads');
  await sleep(300);
  const lines = await waiting();
  assert.equal(lines[0], `ino ${n} iblock 0 ops read`);
  assert.equal(lines[lines.length - 1], `ino ${n} iblock ${BLOCKS - 1} ops read`);
  assert.equal(new Set(lines).size, lines.length, 'each block once');
  await ok('stage', golden, file, '-V', vers, '-o', '0', '-l', String(BYTES));
  for (const p of [c1, c2, c3, d1]) assert.equal((await p.done).code, 0, 'staging wakes everyone');
  assert.deepEqual(await waiting(), []);

  // Interruption does no harm: the killed reader's wait is gone.
  await ok('release', file, '-V', vers, '-o', '0', '-l', String(BYTES));
  const k = await bg('cat', [file]);
  await waitingStartsWith(`ino ${n} iblock 0 ops read`, n, 'a reader waits');
  k.kill('SIGTERM');
  const kd = await k.done;
  assert.equal(kd.signal, 'SIGTERM');
  await waitingIs([], 'a killed reader leaves no waiter behind');
  const k9 = await bg('dd', [`if=${file}`, 'of=/dev/null', `bs=${BS}`, 'count=1', 'skip=5', 'iflag=direct']);
  await waitingIs([`ino ${n} iblock 5 ops read`], 'a direct reader waits');
  k9.kill('SIGKILL');
  assert.equal((await k9.done).signal, 'SIGKILL');
  await waitingIs([], 'a reader killed with SIGKILL leaves no waiter behind');

  // data-wait-err wakes waiting readers with the errno it names.
  const e1 = await bg('dd', [`if=${file}`, `bs=${BS}`, 'skip=0', 'of=/dev/null', 'iflag=direct']);
  const e2 = await bg('dd', [`if=${file}`, `bs=${BS}`, 'skip=1', 'of=/dev/null', 'iflag=direct']);
  await waitingIs([`ino ${n} iblock 0 ops read`, `ino ${n} iblock 1 ops read`], 'two readers wait');
  failed(await scoutfs('data-wait-err', '-p', d, '-I', n, '-V', String(BigInt(vers) + 1n), '-F', '0', '-C', String(BS * 2), '-O', 'read', '-E', '-5'), 'data-wait-err', 'ESTALE', 116);
  assert.equal(await ok('data-wait-err', '-p', d, '-I', n, '-V', vers, '-F', '0', '-C', String(BS * 2), '-O', 'write', '-E', '-5'), 'data_wait_err found 0 waiters.\n');
  assert.equal(await ok('data-wait-err', '-p', d, '-I', n, '-V', vers, '-F', '0', '-C', String(BS * 2), '-O', 'read', '-E', '-5'), 'data_wait_err found 2 waiters.\n');
  for (const e of [e1, e2]) {
    const r = await e.done;
    assert.notEqual(r.code, 0);
    assert.match(r.err, /error reading .*: Input\/output error/);
  }
  assert.deepEqual(await waiting(), []);
  const e3 = await bg('dd', [`if=${file}`, `bs=${BS}`, 'skip=3', 'count=1', 'of=/dev/null', 'iflag=direct']);
  await waitingIs([`ino ${n} iblock 3 ops read`], 'a reader waits');
  assert.equal(await ok('data-wait-err', '-p', d, '-I', n, '-V', vers, '-F', '0', '-C', String(BYTES), '-O', 'read', '-E', 'ENODATA'), 'data_wait_err found 1 waiters.\n');
  assert.match((await e3.done).err, /No data available/, 'the errno data-wait-err set reaches the reader');

  // Waiting on interesting blocks.
  await ok('stage', golden, file, '-V', vers, '-o', '0', '-l', String(BYTES));
  for (const b of [0, 1, 128, 129, 254, 255]) {
    await ok('release', file, '-V', vers, '-o', '0', '-l', String(BYTES));
    const r = await bg('dd', [`if=${file}`, 'of=/dev/null', 'status=none', `bs=${BS}`, 'count=1', `skip=${b}`]);
    await waitingStartsWith(`ino ${n} iblock ${b} ops read`, n, `a reader of block ${b} waits`);
    await ok('stage', golden, file, '-V', vers, '-o', '0', '-l', String(BYTES));
    assert.equal((await r.done).code, 0);
    assert.deepEqual(await waiting(), [], `nothing waits after block ${b} was staged`);
  }

  // Contents match when staging blocks forwards and backwards under a reader.
  const blockFile = join(tmp, 'block');
  for (const dir of ['forward', 'backward'] as const) {
    await ok('release', file, '-V', vers, '-o', '0', '-l', String(BYTES));
    const out = join(d, dir);
    const reader = await bg('sh', ['-c', `cat "${file}" > "${out}"`]);
    // Pieces of PIECE blocks (the reference stages single blocks: 512 CLI runs).
    const PIECE = 4;
    const order = [...Array(BLOCKS / PIECE).keys()].map((i) => i * PIECE);
    if (dir === 'backward') order.reverse();
    for (const b of order) {
      await fsp.writeFile(blockFile, g.subarray(b * BS, (b + PIECE) * BS));
      await ok('stage', blockFile, file, '-V', vers, '-o', String(b * BS), '-l', String(PIECE * BS));
    }
    assert.equal((await reader.done).code, 0);
    assert((await fsp.readFile(out)).equals(g), `contents match when staging ${dir}`);
  }

  // Truncate to the same size does not wait; to another size it does.
  await ok('release', file, '-V', vers, '-o', '0', '-l', String(BYTES));
  assert.equal((await sh('truncate', ['-s', String(BYTES), file])).code, 0);
  assert.deepEqual(await waiting(), []);
  const t = await bg('truncate', ['-s', String(BS), file]);
  await waitingIs([`ino ${n} iblock 0 ops change_size`], 'truncate waits for the first block');
  await ok('stage', golden, file, '-V', vers, '-o', '0', '-l', String(BYTES));
  assert.equal((await t.done).code, 0);
  assert.deepEqual(await waiting(), []);
  assert.equal((await fsp.stat(file)).size, BS);

  // Writing waits.
  await fsp.writeFile(file, g);
  const v2 = await field(file, 'data_version');
  const other = pattern('other', BYTES);
  const otherPath = join(d, 'other');
  await fsp.writeFile(otherPath, other);
  await ok('release', file, '-V', v2, '-o', '0', '-l', String(BYTES));
  const w = await bg('dd', [`if=${otherPath}`, `of=${file}`, `bs=${BS}`, `count=${BLOCKS}`, 'conv=notrunc', 'status=none']);
  await waitingIs([`ino ${n} iblock 0 ops write`], 'a writer waits');
  await ok('stage', golden, file, '-V', v2, '-o', '0', '-l', String(BYTES));
  assert.equal((await w.done).code, 0);
  assert((await fsp.readFile(file)).equals(other), 'the write landed after the stage');
  assert.notEqual(await field(file, 'data_version'), v2);

  // Other requests go on while readers wait.
  await ok('release', file, '-V', await field(file, 'data_version'), '-o', '0', '-l', String(BYTES));
  const hold = await bg('cat', [file]);
  await waitingStartsWith(`ino ${n} iblock 0 ops read`, n, 'a reader waits');
  await fsp.writeFile(join(d, 'meanwhile'), 'still served\n');
  assert.equal(await fsp.readFile(join(d, 'meanwhile'), 'utf8'), 'still served\n');
  assert.deepEqual((await fsp.readdir(d)).includes('meanwhile'), true);
  assert.match(await ok('data-wait-err', '-p', d, '-I', n, '-V', await field(file, 'data_version'), '-F', '0', '-C', String(BYTES), '-O', 'read,write,change_size', '-E', 'EIO'), /^data_wait_err found [1-9]\d* waiters\.\n$/);
  assert.notEqual((await hold.done).code, 0);
  await fsp.rm(d, { recursive: true });
}

test('stage-multi-part: a reader reads a large file correctly while it is staged in parts from a pipe', { skip: SKIP, timeout: 600_000 }, async () => {
  const d = v.path('multi');
  await fsp.mkdir(d);
  const file = join(d, 'file');
  const FRAG = 16 << 20;
  const frags = Math.max(1, Math.floor((MULTI_MIB << 20) / FRAG));
  // The reference's generator: a line naming each block, padded to 4 KiB.
  const gen = (a: string): string =>
    `perl -e 'my $a = shift; for (my $i = 0; $i < ${FRAG / BS}; $i++) { printf("mount %020u process %020u file %020u blkno %020u%s\n", $a, $a, $a, $i, " " x 3987); }' ${a}`;
  const genAll = `for a in $(seq 1 ${frags}); do ${gen('$a')}; done`;
  let r = await sh('sh', ['-c', `${genAll} > "${file}"`]);
  assert.equal(r.code, 0, r.err);
  assert.equal((await fsp.stat(file)).size, frags * FRAG);
  const vers = await field(file, 'data_version');
  await ok('release', file, '-V', vers, '-o', '0', '-l', String(frags * FRAG));
  const cmp = await bg('sh', ['-c', `${genAll} | cmp "${file}" -`]);
  for (let a = 1; a <= frags; a++) {
    r = await sh('sh', ['-c', `${gen(String(a))} | "${process.execPath}" "${CLI}" stage /dev/stdin "${file}" -V ${vers} -o ${(a - 1) * FRAG}`]);
    assert.equal(r.code, 0, `stage part ${a}: ${r.out}${r.err}`);
  }
  const c = await cmp.done;
  assert.equal(c.code, 0, `the reader saw what was staged: ${c.err}`);
  assert.deepEqual(await blocks(file), [String(frags * FRAG / BS), '0', String(frags * FRAG / 512)]);
  await fsp.rm(d, { recursive: true });
});

test('stage-release-race-alloc: concurrent stages and releases keep every file intact', { skip: SKIP, timeout: 600_000 }, async () => {
  const d = v.path('race');
  const EACH = 4;
  const NR = EACH * 4;
  const BYTES = 1 << 20;
  for (const sub of ['on', 'off', 'good']) await fsp.mkdir(join(d, sub), { recursive: true });
  for (let i = 1; i <= NR; i++) {
    const b = pattern(`race-${i}`, BYTES);
    await fsp.writeFile(join(d, 'good', String(i)), b);
    await fsp.writeFile(join(d, 'on', String(i)), b);
  }
  const shuffle = <T>(a: T[]): T[] => a.map((x) => [Math.random(), x] as const).sort((x, y) => x[0] - y[0]).map((x) => x[1]);
  for (let round = 0; round < RACE_ROUNDS; round++) {
    const on = shuffle(await fsp.readdir(join(d, 'on'))).slice(0, EACH);
    const off = shuffle(await fsp.readdir(join(d, 'off'))).slice(0, EACH);
    const jobs: Promise<string>[] = [];
    for (const f of on) {
      const p = join(d, 'on', f);
      jobs.push(field(p, 'data_version').then((vers) => ok('release', p, '-V', vers, '-o', '0', '-l', String(BYTES))));
    }
    for (const f of off) {
      const p = join(d, 'off', f);
      jobs.push(field(p, 'data_version').then((vers) => ok('stage', join(d, 'good', f), p, '-V', vers, '-o', '0', '-l', String(BYTES))));
    }
    await Promise.all(jobs);
    for (const f of on) await fsp.rename(join(d, 'on', f), join(d, 'off', f));
    for (const f of off) await fsp.rename(join(d, 'off', f), join(d, 'on', f));
    for (const f of await fsp.readdir(join(d, 'on'))) {
      assert((await fsp.readFile(join(d, 'on', f))).equals(await fsp.readFile(join(d, 'good', f))), `round ${round}: file ${f} bad`);
      assert.deepEqual(await blocks(join(d, 'on', f)), [String(BYTES / BS), '0', String(BYTES / 512)]);
    }
    for (const f of await fsp.readdir(join(d, 'off'))) assert.deepEqual(await blocks(join(d, 'off', f)), ['0', String(BYTES / BS), String(BYTES / 512)]);
  }
  await fsp.rm(d, { recursive: true });
});

test('ino-path, list-hidden-xattrs, stat -s, statfs -s and counters', { skip: SKIP, timeout: 120_000 }, async () => {
  const d = v.path('misc', 'a', 'b');
  await fsp.mkdir(d, { recursive: true });
  const f = join(d, 'file');
  await fsp.writeFile(f, 'x');
  await fsp.link(f, v.path('misc', 'top'));
  const n = await ino(f);
  assert.deepEqual((await ok('ino-path', n, '-p', v.mnt)).split('\n').filter((l) => l).sort(), ['/misc/a/b/file', '/misc/top']);
  assert.equal(await ok('ino-path', '1', '-p', v.mnt), '/\n');
  failed(await scoutfs('ino-path', '99999999', '-p', v.mnt), 'ino-path', 'ENOENT', 2);
  let r = await sh('setfattr', ['-n', 'scoutfs.hide.archive_id', '-v', '42', f]);
  assert.equal(r.code, 0, r.err);
  r = await sh('setfattr', ['-n', 'user.visible', '-v', '1', f]);
  assert.equal(r.code, 0, r.err);
  assert.equal(await ok('list-hidden-xattrs', f), 'scoutfs.hide.archive_id\n');
  r = await sh('getfattr', ['-d', '-m', '-', f]);
  assert.doesNotMatch(r.out, /hide/, 'listxattr leaves hidden names out');
  assert.match(await ok('stat', '-s', 'data_version', f), /^\d+\n$/);
  const all = await ok('stat', f);
  assert.deepEqual(all.split('\n').filter((l) => l).map((l) => l.slice(0, 17).trim()), ['meta_seq', 'data_seq', 'data_version', 'online_blocks', 'offline_blocks', 'crtime']);
  assert.match(await ok('statfs', '-s', 'fsid', '-p', v.mnt), /^[0-9a-f]{16}\n$/);
  assert.match(await ok('statfs', '-s', 'total_data_blocks', '-p', v.mnt), /^\d+\n$/);
  const c = await ok('counters', v.mnt);
  const names = c.split('\n').filter((l) => l).map((l) => l.split(' ')[0]!);
  for (const want of ['transCounters.commits', 'fs.dataWaits.waits', 'fs.dataWaits.wakes', 'fs.dataWaits.errors', 'fs.dataWaits.interrupts', 'fs.dataWaits.waiting', 'logMerge.trees', 'fs.counters.blocksAllocated']) {
    assert(names.includes(want), `counter ${want} in:\n${c}`);
  }
  assert.match(c, /^fs\.dataWaits\.waits\s+[1-9]\d*$/m, 'the waits of the tests before count');
  assert.match(c, /^fs\.dataWaits\.waiting\s+0$/m, 'nothing waits now');
  const t = await sh('env', ['COLUMNS=200', process.execPath, CLI, 'counters', '-t', v.mnt]);
  assert.equal(t.code, 0, t.err);
  assert(t.out.split('\n').length < c.split('\n').length, '-t lays counters out in columns');
  for (const nm of names) assert(t.out.includes(nm), `${nm} in the table`);
  await fsp.rm(v.path('misc'), { recursive: true });
});

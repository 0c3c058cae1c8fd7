/*
 * Goal: the perf FUSE baseline (perf/fuse-passthrough.ts) is a working
 * filesystem mounted with the scoutfs mount's FUSE options (cache timeouts,
 * permission checks, request sizes), so its numbers mean something and
 * compare like with like: through the mount we create,
 * write, fsync, read back, truncate, rename, link, symlink, mkdir, readdir,
 * chmod, utimes and unlink, and each change is visible in the backing
 * directory.  The daemon is started and torn down by the harness, which
 * must leave no FUSE mount and no process behind even though the test
 * kills the daemon without an unmount in the second case.
 * Needs /dev/fuse, fusermount and root (a tmpfs backing is not needed).
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CleanupRegistry, findMount, isMounted, unmount, unmountAllUnder } from '../../harness/cleanup.js';
import { fuseOptions, MAX_WRITE_BYTES } from '../../src/fuse/adapter.js';
import { logMatches, mountAppears, pidAlive, startProc, type NodeProc } from '../../harness/proc.js';
import { isRoot, which } from '../../harness/sys.js';

const PT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'perf', 'fuse-passthrough.js');
const SKIP = isRoot() && fs.existsSync('/dev/fuse') && (await which('fusermount')) ? false : 'needs root, /dev/fuse and fusermount';
const base = await mkdtemp(join(tmpdir(), 'sfh-fuse-'));
after(async () => {
  await unmountAllUnder(base).catch(() => {});
  await rm(base, { recursive: true, force: true });
});

async function mountPassthrough(reg: CleanupRegistry, name: string): Promise<{ backing: string; mnt: string; proc: NodeProc }> {
  const backing = join(base, `${name}-backing`);
  const mnt = join(base, `${name}-mnt`);
  fs.mkdirSync(backing);
  fs.mkdirSync(mnt);
  const proc = await startProc(reg, { name, command: process.execPath, args: [PT, backing, mnt], logPath: join(base, `${name}.log`) });
  await reg.add(`unmount ${mnt}`, () => unmount(mnt));
  const up = mountAppears(mnt);
  const said = logMatches(proc.logPath, /^mounted /m);
  await proc.waitReady(async () => (await up()) && (await said()), { timeoutMs: 20_000, what: 'FUSE mount' });
  return { backing, mnt, proc };
}

test('mounted with the scoutfs FUSE options, file and directory operations pass through', { skip: SKIP }, async () => {
  const reg = new CleanupRegistry('fuse-ops');
  try {
    const { backing, mnt, proc } = await mountPassthrough(reg, 'ops');
    // The option string the daemon handed to libfuse is the scoutfs
    // mount's, apart from the fsname and subtype (perf ratios compare like
    // with like); the kernel shows the ones it keeps.
    const logged = /\(fsname=([^ ]+), max_read=(\d+),/.exec(await proc.log());
    assert.ok(logged, await proc.log());
    const own = (o: string): string[] => o.split(',').slice(1).filter((x) => !x.startsWith('subtype=')).sort();
    assert.deepEqual(own(logged[1]!), own(fuseOptions('x')));
    assert.equal(Number(logged[2]), MAX_WRITE_BYTES);
    const m = await findMount(mnt);
    assert.equal(m?.fstype, 'fuse.passthrough');
    for (const o of ['default_permissions', 'allow_other', `max_read=${MAX_WRITE_BYTES}`]) assert.ok(m!.options.split(',').includes(o), `${o} in ${m!.options}`);
    const f = join(mnt, 'a.txt');
    const fd = fs.openSync(f, 'wx', 0o640);
    const data = Buffer.alloc(300_000, 7);
    assert.equal(fs.writeSync(fd, data, 0, data.length, 0), data.length);
    fs.fsyncSync(fd);
    fs.fdatasyncSync(fd);
    fs.closeSync(fd);
    assert.deepEqual(fs.readFileSync(f), data);
    assert.deepEqual(fs.readFileSync(join(backing, 'a.txt')), data);
    assert.equal(fs.statSync(f).mode & 0o777, 0o640);

    fs.truncateSync(f, 1000);
    assert.equal(fs.statSync(join(backing, 'a.txt')).size, 1000);
    fs.mkdirSync(join(mnt, 'd'));
    fs.renameSync(f, join(mnt, 'd', 'b.txt'));
    fs.linkSync(join(mnt, 'd', 'b.txt'), join(mnt, 'd', 'c.txt'));
    assert.equal(fs.statSync(join(mnt, 'd', 'b.txt')).nlink, 2);
    fs.symlinkSync('b.txt', join(mnt, 'd', 'l'));
    assert.equal(fs.readlinkSync(join(mnt, 'd', 'l')), 'b.txt');
    assert.deepEqual(fs.readdirSync(join(mnt, 'd')).sort(), ['b.txt', 'c.txt', 'l']);
    fs.chmodSync(join(mnt, 'd', 'b.txt'), 0o600);
    assert.equal(fs.statSync(join(backing, 'd', 'b.txt')).mode & 0o777, 0o600);
    fs.utimesSync(join(mnt, 'd', 'b.txt'), 1_000_000, 1_000_000);
    assert.equal(Math.round(fs.statSync(join(backing, 'd', 'b.txt')).mtimeMs / 1000), 1_000_000);
    assert.ok(fs.statfsSync(mnt).blocks > 0);
    for (const n of ['b.txt', 'c.txt', 'l']) fs.unlinkSync(join(mnt, 'd', n));
    fs.rmdirSync(join(mnt, 'd'));
    assert.deepEqual(fs.readdirSync(backing), []);
    assert.throws(() => fs.statSync(join(mnt, 'nope')), { code: 'ENOENT' });

    const exit = await proc.stop();
    assert.equal(exit.code, 0, await proc.log());
    assert.equal(await isMounted(mnt), false);
  } finally {
    await reg.runAll({ ok: false });
  }
});

test('a killed daemon leaves a dead mount that cleanup removes', { skip: SKIP }, async () => {
  const reg = new CleanupRegistry('fuse-kill');
  let pid = 0;
  let mnt = '';
  try {
    const m = await mountPassthrough(reg, 'killed');
    pid = m.proc.pid;
    mnt = m.mnt;
    await m.proc.kill();
    assert.equal(await isMounted(mnt), true, 'the kernel keeps the mount of a dead daemon');
  } finally {
    const rep = await reg.runAll({ ok: false });
    assert.deepEqual(rep.errors, []);
  }
  assert.equal(await isMounted(mnt), false);
  assert.equal(await pidAlive(pid), false);
});

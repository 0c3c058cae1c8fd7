/*
 * Goal: the mount's life cycle on the kernel transport, as an operator
 * meets it.
 *
 *   - `umount MNT` stops the daemon (commit, exit 0), and a new mount of
 *     the same devices started right after it is up within 10 s (it waits
 *     for the old daemon to finish instead of failing with EBUSY).
 *   - After kill -9 of the daemon a new mount is up within 10 s: the dead
 *     mount left behind is removed (by the dead daemon's watcher or by the
 *     new mount), and what was fsync'd before the kill is there.
 *   - A live mount of the same devices elsewhere is refused at once, naming
 *     the daemon's pid.
 *   - With -o writeback_cache, small writes go through the kernel's page
 *     cache and reach the filesystem by close and fsync (they survive a
 *     remount).
 *   - `mount -t scoutfs -o metadev_path=META,quorum_slot_nr=0 DATA MNT`
 *     works through the helper setup installs, and `umount MNT` stops
 *     that daemon too.
 *
 * The 10 s bound is the promise for a restart; it is the
 * readiness timeout of those mounts.  Needs root, /dev/fuse and losetup;
 * `mount -t scoutfs` also needs /usr/sbin/mount.scoutfs (make setup).
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { CleanupRegistry, isMounted } from '../../harness/cleanup.js';
import { waitFor } from '../../harness/sys.js';
import { DEFAULT_RUN_DIR, mountKey } from '../../src/mount/control.js';
import { GIB, Volume, clusterSkip, finish, forceUnmount, scoutfs, tempBase } from './util.js';

const run = promisify(execFile);
const SKIP = await clusterSkip();
const NO_HELPER = SKIP || (existsSync('/usr/sbin/mount.scoutfs') ? false : 'needs /usr/sbin/mount.scoutfs (make setup)');

const reg = new CleanupRegistry('cluster-lifecycle', 60_000);
let base = '';
let vol: Volume;

before(async () => {
  if (SKIP) return;
  base = await tempBase(reg, 'lifecycle');
  vol = await Volume.create(reg, base, 'life', { metaBytes: 2 * GIB, dataBytes: 4 * GIB, port: 42263 });
});

after(async () => {
  await finish(reg, base);
});

test('umount stops the daemon, and a mount started right after it is up within 10 s', { skip: SKIP }, async () => {
  const p1 = await vol.mount();
  await fsp.writeFile(vol.path('one'), 'first');
  await run('umount', [vol.mnt]);
  const p2 = await vol.mount({ timeoutMs: 10_000 });
  assert.equal((await p1.exited).code, 0, await p1.log());
  assert.equal(await fsp.readFile(vol.path('one'), 'utf8'), 'first');
  await run('umount', [vol.mnt]);
  assert.equal((await p2.exited).code, 0, await p2.log());
});

test('after kill -9 of the daemon a new mount is up within 10 s and the dead mount is gone', { skip: SKIP }, async () => {
  const p1 = await vol.mount();
  const fh = await fsp.open(vol.path('two'), 'w');
  await fh.write('synced');
  await fh.sync();
  await fh.close();
  await p1.kill();
  const p2 = await vol.mount({ timeoutMs: 10_000 });
  assert.equal(await fsp.readFile(vol.path('two'), 'utf8'), 'synced');
  // Whoever removed the dead mount said so, naming the command.
  const said = (await p1.log()) + (await p2.log());
  assert.match(said, /umount -l /);
  await run('umount', [vol.mnt]);
  assert.equal((await p2.exited).code, 0, await p2.log());
});

test('a second mount of devices a live daemon serves is refused at once, naming its pid', { skip: SKIP }, async () => {
  const p1 = await vol.mount();
  const other = join(base, 'other');
  await fsp.mkdir(other, { recursive: true });
  const r = await scoutfs('mount', '-o', `metadev_path=${vol.meta}`, vol.data, other);
  assert.equal(r.code, 1);
  assert.match(r.err, new RegExp(`already mounted by scoutfs daemon pid ${p1.pid}`));
  assert.equal(await isMounted(other), false);
  await run('umount', [vol.mnt]);
  assert.equal((await p1.exited).code, 0);
});

test('-o writeback_cache: small writes reach the filesystem by fsync and close and survive a remount', { skip: SKIP }, async () => {
  vol.extraOptions = ',writeback_cache';
  try {
    const p1 = await vol.mount();
    assert.match(await p1.log(), /writeback cache/);
    const fh = await fsp.open(vol.path('wb'), 'w');
    for (let i = 0; i < 5000; i++) await fh.write(String.fromCharCode(97 + (i % 26)));
    await fh.sync();
    await fh.close();
    await fsp.appendFile(vol.path('wb'), 'tail');
    await run('umount', [vol.mnt]);
    assert.equal((await p1.exited).code, 0);
  } finally {
    vol.extraOptions = '';
  }
  const p2 = await vol.mount();
  const want = Array.from({ length: 5000 }, (_, i) => String.fromCharCode(97 + (i % 26))).join('') + 'tail';
  assert.equal(await fsp.readFile(vol.path('wb'), 'utf8'), want);
  await run('umount', [vol.mnt]);
  assert.equal((await p2.exited).code, 0);
});

test('mount -t scoutfs works through the installed helper; umount stops that daemon', { skip: NO_HELPER }, async () => {
  await reg.add(`unmount ${vol.mnt} (mount -t scoutfs)`, () => forceUnmount(vol.mnt));
  await run('mount', ['-t', 'scoutfs', '-o', `metadev_path=${vol.meta},quorum_slot_nr=0`, vol.data, vol.mnt]);
  const pid = Number(readFileSync(join(DEFAULT_RUN_DIR, `${mountKey(vol.mnt)}.pid`), 'utf8'));
  assert.ok(pid > 0);
  assert.equal(await isMounted(vol.mnt), true);
  assert.equal(await fsp.readFile(vol.path('one'), 'utf8'), 'first');
  await fsp.writeFile(vol.path('three'), 'helper');
  await run('umount', [vol.mnt]);
  await waitFor(async () => {
    try {
      process.kill(pid, 0);
      return false;
    } catch {
      return true;
    }
  }, { timeoutMs: 60_000, what: 'the helper-started daemon to exit' });
  assert.equal((await vol.fsck()).code, 0);
});

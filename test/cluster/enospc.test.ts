/*
 * Goal: a full device is an ordinary, recoverable condition through a
 * real FUSE mount (issue #6, failure handling).  On small volumes (mkfs -A,
 * 256 MiB of metadata, 64 MiB of data, loop devices):
 *
 *   - data device: files are written until a write fails; the failure is
 *     ENOSPC (not EIO, not a dead mount), every file written before reads
 *     back byte-exact, the partly written file holds a prefix of what was
 *     written; after deleting files (and at most a few syncs) new writes
 *     succeed again and read back.
 *   - metadata device: 64 KiB xattrs are added until setxattr fails; the
 *     failure is ENOSPC, and creating a file or a directory is ENOSPC too,
 *     while reads (stat, getxattr, readdir, file data) keep working; the
 *     full volume unmounts cleanly, fscks clean and mounts again; after
 *     the xattrs are removed new creates succeed again.  The daemon never
 *     logs a failing commit (a full volume must be refused at hold time
 *     through the LOW flag, never by a GET the server cannot fill, which
 *     stalls every operation: the bug this test found, fixed by
 *     metaAllocSizing in src/mount/mount.ts).
 *
 * Both end with a clean unmount (SIGTERM, exit 0), a remount that reads
 * the data back, and a clean `scoutfs fsck`.
 *
 * Needs root, /dev/fuse, fusermount, losetup (and setfattr for the
 * metadata case); skipped otherwise.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CleanupRegistry, isMounted } from '../../harness/cleanup.js';
import { which } from '../../harness/sys.js';
import { clusterSkip, errCode, finish, logLines, MIB, pattern, scoutfs, stopMount, tempBase, Volume } from './util.js';

const run = promisify(execFile);
const SKIP = await clusterSkip();
const reg = new CleanupRegistry('cluster-enospc', 60_000);
let base = '';

before(async () => {
  if (!SKIP) base = await tempBase(reg, 'enospc');
});

after(async () => {
  await finish(reg, base);
});

/** Retry `fn` after a sync until it stops failing with ENOSPC (at most `tries` times). */
async function afterSyncs(mnt: string, tries: number, fn: () => Promise<unknown>): Promise<number> {
  for (let i = 0; ; i++) {
    const c = await errCode(fn());
    if (c === 'ok') return i;
    assert.equal(c, 'ENOSPC', `attempt ${i}`);
    assert.ok(i < tries, `still ENOSPC after ${tries} syncs`);
    const s = await scoutfs('sync', mnt);
    assert.equal(s.code, 0, s.err);
  }
}

test('a full data device gives ENOSPC, and space comes back after deleting', { skip: SKIP, timeout: 240_000 }, async (t) => {
  const v = await Volume.create(reg, base, 'data', { metaBytes: 256 * MIB, dataBytes: 64 * MIB, port: 42210 });
  const proc = await v.mount();
  const size = MIB;
  const full: string[] = [];
  let failed: { name: string; code: string } | null = null;
  for (let i = 0; i < 100 && failed === null; i++) {
    const name = `f${i}`;
    const c = await errCode(fsp.writeFile(v.path(name), pattern(name, size)));
    if (c === 'ok') full.push(name);
    else failed = { name, code: c };
  }
  assert.notEqual(failed, null, '100 MiB fit on a 64 MiB data device');
  assert.equal(failed!.code, 'ENOSPC');
  assert.ok(full.length >= 50, `only ${full.length} MiB fit on a 64 MiB data device`);
  const fit = full.length;
  assert.equal(proc.running, true);
  // Everything written before reads back; the failed file holds a prefix.
  for (const name of full) assert.ok((await fsp.readFile(v.path(name))).equals(pattern(name, size)), name);
  const part = await fsp.readFile(v.path(failed!.name));
  assert.ok(part.length < size);
  assert.ok(part.equals(pattern(failed!.name, size).subarray(0, part.length)), 'the short write kept a prefix');
  // Still full: a new write fails the same way, metadata operations work.
  assert.equal(await errCode(fsp.writeFile(v.path('more'), pattern('more', 256 * 1024))), 'ENOSPC');
  await fsp.mkdir(v.path('dir'));
  assert.equal((await fsp.readdir(v.mnt)).includes('dir'), true);

  // Delete half and write again (the freed blocks return at the next GET).
  for (const name of full.splice(0, full.length >> 1)) await fsp.unlink(v.path(name));
  await fsp.unlink(v.path(failed!.name));
  await fsp.unlink(v.path('more'));
  const syncs = await afterSyncs(v.mnt, 5, () => fsp.writeFile(v.path('dir', 'again'), pattern('again', 8 * MIB)));
  assert.ok((await fsp.readFile(v.path('dir', 'again'))).equals(pattern('again', 8 * MIB)));
  assert.deepEqual(logLines(await proc.log(), /critical transaction commit failure/), []);
  t.diagnostic(`data: ${fit} MiB fit, writes succeeded again after ${syncs} sync(s)`);

  await stopMount(proc, v.mnt);
  await v.assertFsckClean();
  const again = await v.mount();
  for (const name of full) assert.ok((await fsp.readFile(v.path(name))).equals(pattern(name, size)), name);
  assert.ok((await fsp.readFile(v.path('dir', 'again'))).equals(pattern('again', 8 * MIB)));
  await stopMount(again, v.mnt);
  await v.assertFsckClean();
});

test('a full metadata device gives ENOSPC, and space comes back after deleting', { skip: SKIP || (!(await which('setfattr')) && 'needs setfattr'), timeout: 240_000 }, async (t) => {
  const v = await Volume.create(reg, base, 'meta', { metaBytes: 256 * MIB, dataBytes: 64 * MIB, port: 42211 });
  let proc = await v.mount();
  await fsp.writeFile(v.path('keep'), pattern('keep', 100_000));
  await fsp.writeFile(v.path('x'), '');
  // 64 KiB xattr values are the densest metadata one syscall makes.  One
  // shell runs the setfattr loop: a process per call from here is slower.
  const fill = async (prefix: string): Promise<{ n: number; err: string }> => {
    const script = `v=0s$(head -c 65000 /dev/zero | tr '\\0' 'x' | base64 -w0)
for i in $(seq 0 3999); do setfattr -n user.${prefix}$i -v "$v" "$1" 2>/tmp/.sfs-enospc-$$ || { echo "$i"; cat /tmp/.sfs-enospc-$$; rm -f /tmp/.sfs-enospc-$$; exit 0; }; done
rm -f /tmp/.sfs-enospc-$$; echo 4000`;
    const r = await run('bash', ['-c', script, 'fill', v.path('x')], { timeout: 180_000 });
    const [n, ...rest] = r.stdout.split('\n');
    return { n: Number(n), err: rest.join('\n') };
  };
  const unfill = async (prefix: string, n: number): Promise<void> => {
    await run('bash', ['-c', `for i in $(seq 0 ${n - 1}); do setfattr -x user.${prefix}$i "$1" || exit 1; done`, 'unfill', v.path('x')], { timeout: 180_000 });
  };
  let fitA = 0;
  for (const round of ['a', 'b']) {
    const f = await fill(round);
    assert.ok(f.n < 4000, 'a 256 MiB metadata device took 4000 64 KiB xattrs');
    assert.match(f.err, /No space left on device/, `setxattr ${f.n} failed with: ${f.err}`);
    // Round b holds about as much as round a: round a's xattrs were
    // written before a remount and removed after it, and the remount
    // before round b merged both log trees (src/server/logmerge.ts), so
    // the deletions freed their blocks.
    if (round === 'a') fitA = f.n;
    assert.ok(f.n >= (round === 'a' ? 100 : Math.floor(fitA * 0.9)), `only ${f.n} xattrs fit (round a: ${fitA})`);
    // Allocating operations are refused; reads keep working.
    assert.equal(await errCode(fsp.writeFile(v.path(`new-${round}`), 'x')), 'ENOSPC');
    assert.equal(await errCode(fsp.mkdir(v.path(`dir-${round}`))), 'ENOSPC');
    assert.ok((await fsp.readFile(v.path('keep'))).equals(pattern('keep', 100_000)));
    assert.ok((await fsp.readdir(v.mnt)).includes('x'));
    const got = await run('getfattr', ['--only-values', '-n', `user.${round}0`, v.path('x')], { encoding: 'buffer', maxBuffer: 1 << 20 });
    assert.equal(got.stdout.length, 65000);
    assert.equal(proc.running, true);
    assert.deepEqual(logLines(await proc.log(), /critical transaction commit failure/), []);
    if (round === 'a') {
      // A full volume unmounts cleanly (final commit and farewell), is
      // consistent, and mounts again with everything readable.
      await stopMount(proc, v.mnt);
      await v.assertFsckClean();
      proc = await v.mount();
      const again = await run('getfattr', ['--only-values', '-n', `user.${round}${f.n - 1}`, v.path('x')], { encoding: 'buffer', maxBuffer: 1 << 20 });
      assert.equal(again.stdout.length, 65000);
      assert.ok((await fsp.readFile(v.path('keep'))).equals(pattern('keep', 100_000)));
    }
    // Delete, then creating works again (after at most a few syncs).
    await unfill(round, f.n);
    const syncs = await afterSyncs(v.mnt, 8, () => fsp.writeFile(v.path(`new-${round}`), pattern(round, 5000)));
    await fsp.mkdir(v.path(`dir-${round}`));
    t.diagnostic(`metadata round ${round}: ${f.n} xattrs of 64 KiB fit, creates succeeded again after ${syncs} sync(s)`);
    if (round === 'a') {
      // The remount merges the finalized log trees: the one holding round
      // a's xattrs and the one holding their deletion.
      await stopMount(proc, v.mnt);
      await v.assertFsckClean();
      proc = await v.mount();
      const merged = logLines(await proc.log(), /merged \d+ log trees into fs_root/);
      assert.ok(merged.length > 0, `no log merge at the remount: ${logLines(await proc.log(), /log merge|reclaim|mounted/).join('; ')}`);
      t.diagnostic(merged.join('; '));
    }
  }
  assert.deepEqual(logLines(await proc.log(), /critical transaction commit failure/), []);
  await stopMount(proc, v.mnt);
  assert.equal(await isMounted(v.mnt), false);
  await v.assertFsckClean();
  const again = await v.mount();
  assert.ok((await fsp.readFile(v.path('keep'))).equals(pattern('keep', 100_000)));
  assert.ok((await fsp.readFile(v.path('new-b'))).equals(pattern('b', 5000)));
  await stopMount(again, v.mnt);
  await v.assertFsckClean();
});

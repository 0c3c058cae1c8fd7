/*
 * Goal: devices made by the real scoutfs mkfs (../shared/golden/
 * reference-mkfs, see test/golden/reference.ts) mount with `scoutfs mount`
 * on loop devices and work.  For each reference pair: the images are
 * extracted into the test's temp dir and attached; the mount comes up
 * (quorum_slot_nr=0, configured in both); the root directory seen through
 * the kernel is the reference's root inode (mode 040755, nlink 2, uid 0,
 * its atime/mtime/ctime to the millisecond FUSE carries today, empty); `scoutfs statfs` reports
 * the reference's fsid and device totals; a directory and a file of 3 MiB
 * are written and read back; SIGTERM commits and unmounts; fsck is clean;
 * a second mount reads everything back and fsck is clean again.
 *
 * The mount serves its server in-process and listens on no quorum address,
 * so the reference's fixed 127.0.0.1 ports are never bound.
 *
 * Needs root, /dev/fuse, fusermount and losetup; skipped otherwise.  One
 * CleanupRegistry holds the daemons, mounts, loop devices and the temp dir
 * (with the extracted images) and after() runs it also on failure.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { CleanupRegistry } from '../../harness/cleanup.js';
import { Volume, clusterSkip, finish, pattern, scoutfs, stopMount, tempBase } from './util.js';
import { extractReference, parseSummary, referenceCases, referenceInputs } from '../golden/reference.js';

const SKIP = await clusterSkip();
const reg = new CleanupRegistry('cluster-reference', 60_000);
let base = '';

before(async () => {
  if (SKIP) return;
  base = await tempBase(reg, 'cluster-reference');
});

after(async () => {
  await finish(reg, base);
});

for (const c of referenceCases()) {
  test(`reference ${c.name}: the real mkfs's devices mount, show its root inode, take writes, fsck clean, remount (${c.command})`, { skip: SKIP, timeout: 300_000 }, async () => {
    const x = extractReference(c, join(base, `images-${c.name}`));
    const summary = parseSummary(c.out);
    const { fsid, now } = referenceInputs(x.meta);
    const vol = await Volume.attach(reg, base, `vol-${c.name}`, x.meta, x.data);

    let proc = await vol.mount();
    const st = await fsp.stat(vol.mnt, { bigint: true });
    assert.equal(st.mode, 0o040755n, 'root mode');
    assert.equal(st.nlink, 2n, 'root nlink');
    assert.deepEqual([st.uid, st.gid], [0n, 0n], 'root owner');
    // To the millisecond: the fuse-native transport carries times as
    // milliseconds (src/fuse/adapter.ts).  The nanoseconds are checked by
    // print in test/cli/mkfs-reference.test.ts; tighten this to
    // nanoseconds once the kernel transport of issue 10 carries them.
    const ms = (now.sec * 1_000_000_000n + BigInt(now.nsec)) / 1_000_000n;
    assert.deepEqual([st.atimeNs, st.mtimeNs, st.ctimeNs].map((t) => t / 1_000_000n), [ms, ms, ms], 'root times are the reference root inode\'s');
    assert.deepEqual(await fsp.readdir(vol.mnt), []);
    const sf = await scoutfs('statfs', vol.mnt);
    assert.equal(sf.code, 0, sf.err);
    assert.match(sf.out, new RegExp(`^fsid\\s+${fsid.toString(16).padStart(16, '0')}$`, 'm'));
    assert.match(sf.out, new RegExp(`^total_meta_blocks\\s+${summary.metaBlocks}$`, 'm'));
    assert.match(sf.out, new RegExp(`^total_data_blocks\\s+${summary.dataBlocks}$`, 'm'));

    const payload = pattern(`reference-${c.name}`, 3 << 20);
    await fsp.mkdir(vol.path('dir'));
    await fsp.writeFile(vol.path('dir', 'f'), payload);
    const fh = await fsp.open(vol.path('dir', 'f'), 'r');
    await fh.sync();
    await fh.close();
    assert.deepEqual(await fsp.readFile(vol.path('dir', 'f')), payload);
    await stopMount(proc, vol.mnt);
    await vol.assertFsckClean();

    proc = await vol.mount();
    assert.deepEqual(await fsp.readdir(vol.mnt), ['dir']);
    assert.deepEqual(await fsp.readFile(vol.path('dir', 'f')), payload);
    assert.equal((await fsp.stat(vol.mnt)).nlink, 3, 'root nlink with one subdirectory');
    await stopMount(proc, vol.mnt);
    await vol.assertFsckClean();
  });
}

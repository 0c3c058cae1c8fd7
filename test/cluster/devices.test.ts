/*
 * Goal: `scoutfs mount` refuses devices that are not the two halves of one
 * scoutfs filesystem, before it mounts or writes anything, with one clear
 * line saying which device is wrong and why (issue #6, failure handling).
 *
 * Two filesystems A and B (mkfs on loop devices), an ext4 filesystem and an
 * all-zero device.  Each of these exits 1 with nothing mounted, the log's
 * one "scoutfs mount: " line matching the reason, and every device's
 * first MiB (the supers, the quorum blocks, ext4's superblock) unchanged:
 *
 *   data and meta swapped                 -> "devices swapped?"
 *   ext4 or zeros as the metadata device  -> "not a scoutfs metadata device"
 *   ext4 or zeros as the data device      -> "not a scoutfs data device"
 *   B's data device with A's metadata     -> "a foreign data device" (fsid/uuid differ)
 *   A's metadata device as the data device of B -> "devices swapped?"
 *   the same device twice                 -> "the meta and data devices are the same"
 *
 * Afterwards A and B still mount with their own devices and fsck clean.
 *
 * Needs root, /dev/fuse, fusermount, losetup and mkfs.ext4; skipped otherwise.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { CleanupRegistry } from '../../harness/cleanup.js';
import { attachLoop, createImage } from '../../harness/loop.js';
import { mkfsExt4 } from '../../harness/mount.js';
import { which } from '../../harness/sys.js';
import { clusterSkip, finish, GIB, logLines, MIB, stopMount, tempBase, Volume } from './util.js';

const SKIP = (await clusterSkip()) || (!(await which('mkfs.ext4')) && 'needs mkfs.ext4');
const reg = new CleanupRegistry('cluster-devices', 60_000);
let base = '';
let a: Volume;
let b: Volume;
let ext4 = '';
let zeros = '';

before(async () => {
  if (SKIP) return;
  base = await tempBase(reg, 'devices');
  a = await Volume.create(reg, base, 'a', { metaBytes: GIB, dataBytes: GIB, port: 42240 });
  b = await Volume.create(reg, base, 'b', { metaBytes: GIB, dataBytes: GIB, port: 42241 });
  const e = await createImage(reg, join(base, 'ext4.img'), 64 * MIB, { remove: 'always' });
  ext4 = (await attachLoop(reg, e.path)).path;
  await mkfsExt4(ext4, 'notscoutfs');
  const z = await createImage(reg, join(base, 'zeros.img'), 64 * MIB, { remove: 'always' });
  zeros = (await attachLoop(reg, z.path)).path;
});

after(async () => {
  await finish(reg, base);
});

async function head(dev: string): Promise<string> {
  const fh = await open(dev, 'r');
  try {
    const buf = Buffer.alloc(MIB);
    await fh.read(buf, 0, MIB, 0);
    return createHash('sha256').update(buf).digest('hex');
  } finally {
    await fh.close();
  }
}

test('wrong devices are refused with a clear message and left untouched', { skip: SKIP, timeout: 180_000 }, async () => {
  const devs = [a.meta, a.data, b.meta, b.data, ext4, zeros];
  const before = await Promise.all(devs.map(head));
  const cases: { what: string; meta: string; data: string; want: RegExp }[] = [
    { what: 'swapped', meta: a.data, data: a.meta, want: new RegExp(`^scoutfs mount: corruption: ${a.data} blkno 16: .*data device .*devices swapped\\?`) },
    { what: 'ext4 as metadata', meta: ext4, data: a.data, want: new RegExp(`^scoutfs mount: corruption: ${ext4} blkno 16: magic check failed: .*not a scoutfs metadata device`) },
    { what: 'zeros as metadata', meta: zeros, data: a.data, want: new RegExp(`^scoutfs mount: corruption: ${zeros} blkno 16: magic check failed: .*not a scoutfs metadata device`) },
    { what: 'ext4 as data', meta: a.meta, data: ext4, want: new RegExp(`^scoutfs mount: corruption: ${ext4} blkno 16: magic check failed: .*not a scoutfs data device`) },
    { what: 'zeros as data', meta: a.meta, data: zeros, want: new RegExp(`^scoutfs mount: corruption: ${zeros} blkno 16: magic check failed: .*not a scoutfs data device`) },
    { what: 'foreign data device', meta: a.meta, data: b.data, want: new RegExp(`^scoutfs mount: corruption: ${b.data} blkno 16: .*a foreign data device`) },
    { what: 'metadata device as data', meta: b.meta, data: a.meta, want: new RegExp(`^scoutfs mount: corruption: ${a.meta} blkno 16: .*metadata device .*devices swapped\\?`) },
    { what: 'same device twice', meta: a.meta, data: a.meta, want: /^scoutfs mount: EINVAL: the meta and data devices are the same/ },
  ];
  for (const c of cases) {
    const r = await a.mountRefused({ meta: c.meta, data: c.data });
    assert.equal(r.code, 1, `${c.what}: exit ${r.code}\n${r.log}`);
    const said = logLines(r.log, /^scoutfs mount: /);
    assert.equal(said.length, 1, `${c.what}: one line says why:\n${r.log}`);
    assert.match(said[0]!, c.want, c.what);
    assert.deepEqual(logLines(r.log, /^\s+at |uncaught|unhandled/), [], `${c.what}: no crash`);
  }
  assert.deepEqual(await Promise.all(devs.map(head)), before, 'a refused mount wrote to a device');

  // The right pairs still mount and are clean.
  for (const v of [a, b]) {
    const proc = await v.mount();
    await fsp.writeFile(v.path('ok'), v.name);
    assert.equal(await fsp.readFile(v.path('ok'), 'utf8'), v.name);
    await stopMount(proc, v.mnt);
    await v.assertFsckClean();
  }
});

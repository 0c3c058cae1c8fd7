/*
 * Goal: `scoutfs resize-devices -F` and `scoutfs change-format-version -F`
 * on real loop devices (PROTOCOL.md 9.4): a volume made smaller than its
 * devices (mkfs -m/-d) runs out of data space, grows offline to the device
 * sizes, and then takes the data it refused before; statfs shows the new
 * totals and fsck accounts every block of the grown devices.  Shrinking,
 * sizes past the device, unaligned sizes, a mounted volume and the online
 * form are refused with the reference's failure line and change nothing.
 * change-format-version checks the same things and knows only version 0;
 * a volume whose mount was killed (an open log tree) is refused until a
 * clean mount and unmount.
 *
 * Needs root, /dev/fuse, fusermount and losetup; skipped otherwise.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fsp from 'node:fs/promises';
import { CleanupRegistry } from '../../harness/cleanup.js';
import { clusterSkip, errCode, finish, forceUnmount, GIB, MIB, pattern, randomQuorum, scoutfs, stopMount, tempBase, Volume } from './util.js';

const SKIP = await clusterSkip();
const reg = new CleanupRegistry('cluster-resize', 60_000);
let base = '';

before(async () => {
  if (!SKIP) base = await tempBase(reg, 'resize');
});

after(async () => {
  await finish(reg, base);
});

async function statfs(v: Volume, f: string): Promise<string> {
  const r = await scoutfs('statfs', '-s', f, '-p', v.mnt);
  assert.equal(r.code, 0, r.err);
  return r.out.trim();
}

/** Fill the volume with 64 MiB files until ENOSPC; the bytes written. */
async function fill(v: Volume, tag: string): Promise<number> {
  let total = 0;
  for (let i = 0; ; i++) {
    const code = await errCode(fsp.writeFile(v.path(`${tag}-${i}`), pattern(`${tag}-${i}`, 64 * MIB)));
    if (code === 'ENOSPC') return total;
    assert.equal(code, 'ok', `writing ${tag}-${i}`);
    total += 64 * MIB;
    assert(i < 64, 'never ran out of space');
  }
}

test('resize-devices -F grows the data and metadata space of an unmounted volume', { skip: SKIP, timeout: 600_000 }, async () => {
  const v = await Volume.create(reg, base, 'vol', { metaBytes: 2 * GIB, dataBytes: GIB, ...randomQuorum(), mkfsArgs: ['-m', '1G', '-d', '256M'] });
  let d = await v.mount();
  assert.equal(await statfs(v, 'total_data_blocks'), String(256 * 256));
  assert.equal(await statfs(v, 'total_meta_blocks'), String(1024 * 16));
  const before = await fill(v, 'a');
  assert(before > 0 && before < 256 * MIB, `filled ${before} bytes`);
  const busy = await scoutfs('resize-devices', '-F', v.meta, v.data, '-d', '1G');
  assert.equal(busy.code, 1);
  assert.match(busy.err, /^scoutfs: resize-devices failed: Device or resource busy \(16\)/, 'a mounted volume is refused');
  const online = await scoutfs('resize-devices', '-p', v.mnt, '-d', '1G');
  assert.equal(online.code, 1);
  assert.match(online.err, /^scoutfs: resize-devices failed: Operation not supported \(95\)/);
  await stopMount(d, v.mnt);

  const shrink = await scoutfs('resize-devices', '-F', v.meta, v.data, '-d', '128M');
  assert.match(shrink.err, /^scoutfs: resize-devices failed: Invalid argument \(22\): shrinking/);
  const past = await scoutfs('resize-devices', '-F', v.meta, v.data, '-d', '2G');
  assert.match(past.err, /^scoutfs: resize-devices failed: Invalid argument \(22\)/);
  const same = await scoutfs('resize-devices', '-F', v.meta, v.data, '-d', '256M', '-m', '0');
  assert.equal(same.code, 0, same.err);
  assert.equal(same.out, 'meta: 16384 blocks, unchanged\ndata: 65536 blocks, unchanged\n');
  await v.assertFsckClean();

  const grow = await scoutfs('resize-devices', '-F', v.meta, v.data, '-d', String(GIB + 100), '-m', '2G');
  assert.equal(grow.code, 0, grow.err);
  assert.equal(grow.out, `data size ${GIB + 100} is not a multiple of 4096 bytes: truncated to ${GIB}\nmeta: 16384 -> 32768 blocks\ndata: 65536 -> 262144 blocks\n`);
  await v.assertFsckClean();

  d = await v.mount();
  assert.equal(await statfs(v, 'total_data_blocks'), String(262144));
  assert.equal(await statfs(v, 'total_meta_blocks'), String(32768));
  const after = await fill(v, 'b');
  assert(after >= 512 * MIB, `after growing, ${after} more bytes fit`);
  // The files written before the resize (not the one that met ENOSPC) are intact.
  for (let i = 0; i < before / (64 * MIB); i++) assert((await fsp.readFile(v.path(`a-${i}`))).equals(pattern(`a-${i}`, 64 * MIB)), `a-${i} intact`);
  await stopMount(d, v.mnt);
  await v.assertFsckClean();
});

test('change-format-version -F: version 0 only, refused while mounted or after a crash', { skip: SKIP, timeout: 300_000 }, async () => {
  const v = await Volume.create(reg, base, 'cfv', { metaBytes: GIB, dataBytes: GIB, ...randomQuorum() });
  let r = await scoutfs('change-format-version', '-F', v.meta, v.data);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out, 'format version is already 0\n');
  r = await scoutfs('change-format-version', '-V', '1', '-F', v.meta, v.data);
  assert.match(r.err, /^scoutfs: change-format-version failed: Invalid argument \(22\)/);
  r = await scoutfs('change-format-version', '-V', '0');
  assert.match(r.err, /^scoutfs: change-format-version failed: Operation not supported \(95\)/);
  const d = await v.mount();
  r = await scoutfs('change-format-version', '-F', v.meta, v.data);
  assert.match(r.err, /^scoutfs: change-format-version failed: Device or resource busy \(16\)/);
  await fsp.writeFile(v.path('x'), 'x');
  await d.kill();
  await forceUnmount(v.mnt);
  r = await scoutfs('change-format-version', '-F', v.meta, v.data);
  assert.match(r.err, /^scoutfs: change-format-version failed: Device or resource busy \(16\): mounts that did not unmount cleanly/);
  const again = await v.mount();
  await stopMount(again, v.mnt);
  r = await scoutfs('change-format-version', '-F', v.meta, v.data);
  assert.equal(r.code, 0, r.err);
  await v.assertFsckClean();
});

/*
 * Goal: the failure paths of the mount and the Fs: a full data device
 * gives a short write and then ENOSPC with the file and allocators
 * consistent; concurrent operations (FUSE issues them) serialize; a mount
 * whose metadata device fails at each successive read during open tears
 * down what it set up, and the volume mounts cleanly afterwards.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkfsPair, mountPair, fsckClean, rejectsCode, CTX, b, s } from './env.js';
import { openMount } from '../../../src/mount/mount.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { FakeClock } from '../../../src/runtime/clock.js';
import { FsError } from '../../../src/format/errors.js';
import type { BlockDevice } from '../../../src/runtime/device.js';

test('a full data device: short write, then ENOSPC', async () => {
  const p = mkfsPair(1024n << 20n, 8n << 20n);
  const m = await mountPair(p);
  const fs = m.fs;
  const f = await fs.create(1n, b('fill'), 0o644, CTX);
  const free = (await fs.statfs()).freeDataBlocks;
  const chunk = new Uint8Array(1 << 20).fill(0x5a);
  let off = 0n;
  let short = -1;
  for (let i = 0; i < 20; i++) {
    const n = await fs.write(f.ino, off, chunk).catch((e: unknown) => {
      assert(e instanceof FsError && e.code === 'ENOSPC', String(e));
      return -1;
    });
    if (n < 0) break;
    off += BigInt(n);
    if (n < chunk.length) short = n;
  }
  assert(short >= 0, 'one write came back short');
  const a = await fs.getattr(f.ino);
  assert.equal(a.size, off);
  assert.equal(a.online_blocks, free);
  assert.equal((await fs.statfs()).freeDataBlocks, 0n);
  await rejectsCode(fs.write(f.ino, off, b('more')), 'ENOSPC');
  const tail = await fs.read(f.ino, off - 10n, 100);
  assert.deepEqual(tail, new Uint8Array(10).fill(0x5a));
  await fs.unlink(1n, b('fill'));
  await fs.sync();
  assert.equal((await fs.statfs()).freeDataBlocks, free);
  await m.close();
  await fsckClean(p, 'full data device');
});

test('concurrent creates, writes, readdir, sync and mkdir all land: unique inos, every name listed, data read back, fsck clean', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const names = Array.from({ length: 200 }, (_, i) => `c${i}`);
  const attrs = await Promise.all(names.map((n) => fs.create(1n, b(n), 0o644, CTX)));
  await Promise.all(attrs.map((a, i) => fs.write(a.ino, 0n, b(names[i]!))));
  const [ents] = await Promise.all([fs.readdir(1n, 0n, 1000), fs.sync(), fs.mkdir(1n, b('dir'), 0o755, CTX)]);
  // The readdir ran beside the mkdir: it lists every created name, and 'dir' or not.
  const listed = ents.map((e) => s(e.name)).filter((n) => n !== 'dir').sort();
  assert.deepEqual(listed, [...names].sort());
  assert.deepEqual((await fs.readdir(1n, 0n, 1000)).map((e) => s(e.name)).sort(), [...names, 'dir'].sort());
  for (const [i, a] of attrs.entries()) assert.equal(s(await fs.read(a.ino, 0n, 100)), names[i]);
  assert.equal(new Set(attrs.map((a) => a.ino)).size, 200);
  await m.close();
  await fsckClean(p, 'concurrent');
});

/** A device whose reads fail after `left` more reads. */
function failingAfter(dev: BlockDevice, left: number): BlockDevice {
  return {
    path: dev.path, sizeBytes: dev.sizeBytes,
    read: async (off, len) => {
      if (left-- <= 0) throw new FsError('EIO', 'injected read failure');
      return dev.read(off, len);
    },
    write: (off, data) => dev.write(off, data),
    flush: () => dev.flush(),
    close: () => dev.close(),
  };
}

test('a failed open at each step tears down and the volume still mounts', async () => {
  const p = mkfsPair();
  // A first mount leaves a finalized lt and some items to read at open.
  const m0 = await mountPair(p);
  await m0.fs.mkdir(1n, b('d'), 0o755, CTX);
  await m0.close();
  let failures = 0;
  for (let n = 0; n < 60; n += 3) {
    const opened = await openMount({
      metaDev: failingAfter(p.meta, n), dataDev: p.data, random: new SeededRandom(BigInt(n + 10)), clock: new FakeClock(),
    }).catch((e: unknown) => {
      assert(e instanceof Error, String(e));
      failures++;
      return null;
    });
    if (opened !== null) await opened.close().catch(() => {});
    await fsckClean(p, `after an open failing at read ${n}`);
  }
  assert(failures > 3, `${failures} opens failed`);
  const m = await mountPair(p, 99n);
  assert.equal((await m.fs.lookup(1n, b('d'))).nlink, 2);
  await m.close();
  await fsckClean(p, 'final');
});

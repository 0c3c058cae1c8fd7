/*
 * Goal: FileBlockDevice does positional I/O on a sparse regular file and on
 * a real loop device (when root), reports the right size for both (the
 * loop device's from sysfs), and refuses reads and writes past the end, a
 * short read and a write to a read-only device with errors naming the
 * device and offset, never a zero-filled buffer.  MemoryBlockDevice follows
 * the same rules and stays sparse.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsError } from '../../../src/format/errors.js';
import { FileBlockDevice, decodeDev, type BlockDevice } from '../../../src/runtime/device.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';

const MiB = 1024n * 1024n;

function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), 'scoutfs-dev-'));
  return fn(dir).finally(() => rmSync(dir, { recursive: true, force: true }));
}

/** A sparse file of `bytes` (no data blocks allocated). */
function sparseFile(path: string, bytes: bigint | number): void {
  writeFileSync(path, '');
  truncateSync(path, Number(bytes));
}

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

function isEio(path: string, what: RegExp) {
  return (e: unknown): boolean => {
    assert.ok(e instanceof FsError, `expected FsError, got ${String(e)}`);
    assert.equal(e.code, 'EIO');
    assert.ok(e.message.includes(path), `message names the device: ${e.message}`);
    assert.match(e.message, what);
    return true;
  };
}

/** The checks every device must pass; sizeBytes must be 64 MiB. */
async function exercise(dev: BlockDevice): Promise<void> {
  assert.equal(dev.sizeBytes, 64n * MiB);
  // Unwritten space reads as zeros.
  assert.deepEqual(await dev.read(40n * MiB, 4096), new Uint8Array(4096));
  const a = pattern(65536, 1);
  const b = pattern(4096, 2);
  await dev.write(2n * 65536n, a);
  await dev.write(64n * MiB - 4096n, b); // the very last 4 KiB
  await dev.flush();
  assert.deepEqual(await dev.read(2n * 65536n, 65536), a);
  assert.deepEqual(await dev.read(64n * MiB - 4096n, 4096), b);
  // An unaligned read across the written block's end.
  const mid = await dev.read(3n * 65536n - 10n, 20);
  assert.deepEqual(mid.subarray(0, 10), a.subarray(65526));
  assert.deepEqual(mid.subarray(10), new Uint8Array(10));
  // Past the end, straddling the end, negative.
  await assert.rejects(dev.read(64n * MiB, 1), isEio(dev.path, /offset 67108864 is past the end/));
  await assert.rejects(dev.read(64n * MiB - 4096n, 4097), isEio(dev.path, /past the end/));
  await assert.rejects(dev.read(-1n, 1), isEio(dev.path, /past the end/));
  await assert.rejects(dev.write(64n * MiB - 1n, new Uint8Array(2)), isEio(dev.path, /write of 2 bytes/));
  assert.deepEqual(await dev.read(64n * MiB - 4096n, 4096), b, 'a refused write changed nothing');
}

test('file device: sparse regular file', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'meta.img');
    sparseFile(path, 64n * MiB);
    const dev = await FileBlockDevice.open(path);
    try {
      assert.equal(dev.isBlockDevice, false);
      await exercise(dev);
    } finally {
      await dev.close();
    }
    await dev.close(); // twice is fine
  });
});

test('file device: read-only refuses writes, short read is EIO', async () => {
  await withTempDir(async (dir) => {
    const path = join(dir, 'x.img');
    sparseFile(path, 1 << 20);
    const ro = await FileBlockDevice.open(path, { readOnly: true });
    try {
      await assert.rejects(ro.write(0n, new Uint8Array(1)), (e: unknown) => e instanceof FsError && e.code === 'EROFS');
      await ro.flush();
      // The file shrinks under an open device: a read inside the size it had is short.
      truncateSync(path, 4096);
      await assert.rejects(ro.read(8192n, 4096), isEio(path, /short read at offset 8192/));
    } finally {
      await ro.close();
    }
  });
});

test('file device: refuses what is not a file or block device', async () => {
  await assert.rejects(FileBlockDevice.open('/dev/null', { readOnly: true }),
    (e: unknown) => e instanceof FsError && e.code === 'ENODEV');
  await assert.rejects(FileBlockDevice.open('/nonexistent/scoutfs.img'), /ENOENT/);
});

test('decodeDev splits dev_t like the kernel', () => {
  assert.deepEqual(decodeDev(0x700n), { major: 7n, minor: 0n }); // loop0
  // major 259, minor 256: (256 & 0xff) | (259 << 8) | ((256 & ~0xff) << 12)
  assert.deepEqual(decodeDev((259n << 8n) | (256n << 12n)), { major: 259n, minor: 256n });
});

const isRoot = process.getuid?.() === 0;

test('file device: real loop device', { skip: isRoot ? false : 'needs root for losetup' }, async (t) => {
  await withTempDir(async (dir) => {
    const img = join(dir, 'loop.img');
    sparseFile(img, 64n * MiB);
    let loop: string;
    try {
      loop = execFileSync('losetup', ['-f', '--show', img], { encoding: 'utf8' }).trim();
    } catch (e) {
      t.skip(`losetup unavailable here: ${(e as Error).message.split('\n')[0]}`);
      return;
    }
    try {
      const dev = await FileBlockDevice.open(loop);
      try {
        assert.equal(dev.isBlockDevice, true);
        await exercise(dev);
      } finally {
        await dev.close();
      }
      // What was written through the loop device is in the backing file.
      const file = await FileBlockDevice.open(img, { readOnly: true });
      try {
        assert.deepEqual(await file.read(2n * 65536n, 65536), pattern(65536, 1));
      } finally {
        await file.close();
      }
    } finally {
      execFileSync('losetup', ['-d', loop]);
    }
  });
});

test('memory device: same rules, sparse, counts', async () => {
  const dev = new MemoryBlockDevice(64n * MiB, 'mem:test');
  await exercise(dev);
  assert.equal(dev.storedBytes, 2 * 65536, 'only the two touched chunks exist');
  assert.equal(dev.flushes, 1);
  assert.ok(dev.reads >= 4 && dev.writes === 2);
  dev.writeSync(5n, new Uint8Array([9]));
  assert.equal(dev.readSync(5n, 1)[0], 9);
});

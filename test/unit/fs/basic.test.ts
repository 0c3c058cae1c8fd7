/*
 * Goal: a first smoke test of openMount + the Fs: mount, create a file,
 * write, read, sync, close, remount, read back, fsck clean.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkfsPair, mountPair, fsckClean, CTX, b } from './env.js';

test('mount, create, write, read, remount', async () => {
  const p = mkfsPair();
  const logs: string[] = [];
  const m = await mountPair(p, 1n, logs);
  const a = await m.fs.create(1n, b('hello'), 0o644, CTX);
  assert.equal(a.nlink, 1);
  assert.equal(await m.fs.write(a.ino, 0n, b('world')), 5);
  assert.deepEqual(await m.fs.read(a.ino, 0n, 100), b('world'));
  await m.fs.sync();
  await m.close();
  await fsckClean(p, 'after close');
  const m2 = await mountPair(p, 2n, logs);
  const l = await m2.fs.lookup(1n, b('hello'));
  assert.equal(l.ino, a.ino);
  assert.equal(l.size, 5n);
  assert.deepEqual(await m2.fs.read(a.ino, 0n, 100), b('world'));
  await m2.close();
  await fsckClean(p, 'after second close');
});

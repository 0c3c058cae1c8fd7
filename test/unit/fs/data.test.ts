/*
 * Goal: file data through extents on the data device: a sparse file reads
 * zeros in its holes, a 4 MiB file round-trips across a remount, unaligned
 * overwrites keep their neighbours, truncate frees blocks (statfs gets them
 * back after the next commit) and a later extension reads zeros.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkfsPair, mountPair, fsckClean, rejectsCode, CTX, b } from './env.js';
import { SeededRandom } from '../../../src/runtime/random.js';

test('sparse file', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const f = await fs.create(1n, b('sparse'), 0o644, CTX);
  await fs.write(f.ino, 1n << 20n, b('tail'));
  const a = await fs.getattr(f.ino);
  assert.equal(a.size, (1n << 20n) + 4n);
  assert.equal(a.online_blocks, 1n);
  assert.equal(a.blocks, 8n);
  const all = await fs.read(f.ino, 0n, (1 << 20) + 100);
  assert.equal(all.length, (1 << 20) + 4);
  assert(all.subarray(0, 1 << 20).every((x) => x === 0));
  assert.deepEqual(all.subarray(1 << 20), b('tail'));
  assert.deepEqual(await fs.read(f.ino, 5000n, 10), new Uint8Array(10));
  assert.deepEqual(await fs.read(f.ino, 10n << 20n, 10), new Uint8Array(0));
  // Extending by setattr is a hole too.
  await fs.setattr(f.ino, { size: 3n << 20n });
  assert.deepEqual(await fs.read(f.ino, (3n << 20n) - 4n, 10), new Uint8Array(4));
  await rejectsCode(fs.read(1n, 0n, 1), 'EISDIR');
  await rejectsCode(fs.write(1n, 0n, b('x')), 'EISDIR');
  await m.close();
  await fsckClean(p, 'sparse');
});

test('4 MiB file round trip, overwrites, truncate', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const rnd = new SeededRandom(42n);
  const size = 4 << 20;
  const want = rnd.bytes(size);
  const f = await fs.create(1n, b('big'), 0o644, CTX);
  const free0 = (await fs.statfs()).freeDataBlocks;
  for (let off = 0; off < size; off += 131072) await fs.write(f.ino, BigInt(off), want.subarray(off, off + 131072));
  assert.equal((await fs.getattr(f.ino)).online_blocks, 1024n);
  assert.equal((await fs.statfs()).freeDataBlocks, free0 - 1024n);
  assert.deepEqual(await fs.read(f.ino, 0n, size), want);
  // Unaligned overwrite spanning blocks.
  const patch = rnd.bytes(10000);
  await fs.write(f.ino, 4095n, patch);
  want.set(patch, 4095);
  assert.deepEqual(await fs.read(f.ino, 0n, 20000), want.subarray(0, 20000));
  assert.equal((await fs.getattr(f.ino)).online_blocks, 1024n);
  const dv = (await fs.getattr(f.ino)).data_version;
  await fs.sync();
  await m.close();
  await fsckClean(p, '4 MiB');

  const m2 = await mountPair(p, 2n);
  const fs2 = m2.fs;
  assert.deepEqual(await fs2.read(f.ino, 0n, size), want);
  assert.equal((await fs2.getattr(f.ino)).data_version, dv);
  // Truncate to an unaligned size: blocks past it are freed, the tail zeroed.
  await fs2.setattr(f.ino, { size: 10000n });
  const t = await fs2.getattr(f.ino);
  assert.equal(t.size, 10000n);
  assert.equal(t.online_blocks, 3n);
  await fs2.setattr(f.ino, { size: 20000n });
  const r = await fs2.read(f.ino, 0n, 30000);
  assert.equal(r.length, 20000);
  assert.deepEqual(r.subarray(0, 10000), want.subarray(0, 10000));
  assert(r.subarray(10000).every((x) => x === 0), 'extension reads zeros');
  await fs2.sync(); // data_freed goes back to the server at the next GET
  assert.equal((await fs2.statfs()).freeDataBlocks, free0 - 3n);
  await fs2.setattr(f.ino, { size: 0n });
  assert.equal((await fs2.getattr(f.ino)).online_blocks, 0n);
  await fs2.unlink(1n, b('big'));
  await fs2.sync();
  assert.equal((await fs2.statfs()).freeDataBlocks, free0);
  await m2.close();
  await fsckClean(p, 'after truncate');
});

test('appends read back and a deleted file frees its blocks', async () => {
  const p = mkfsPair();
  const m = await mountPair(p);
  const fs = m.fs;
  const f = await fs.create(1n, b('log'), 0o644, CTX);
  const free0 = (await fs.statfs()).freeDataBlocks;
  let want = new Uint8Array(0);
  for (let i = 0; i < 50; i++) {
    const chunk = new Uint8Array(1000 + i).fill(i);
    await fs.write(f.ino, BigInt(want.length), chunk);
    want = new Uint8Array(Buffer.concat([want, chunk]));
  }
  assert.deepEqual(await fs.read(f.ino, 0n, want.length), want);
  await fs.unlink(1n, b('log'));
  await fs.sync();
  assert.equal((await fs.statfs()).freeDataBlocks, free0);
  await m.close();
  await fsckClean(p, 'appends');
});

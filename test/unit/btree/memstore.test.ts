/*
 * Goal: MemBlockStore is a trustworthy oracle for the btree tests: it
 * verifies refs like the kernel (ESTALE for seq/blkno, CorruptionError for
 * crc), frees in two phases, commits and aborts transactions, injects
 * ENOSPC, and refuses double frees and stale frees.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CorruptionError, FsError } from '../../../src/format/errors.js';
import { getU64 } from '../../../src/format/layout.js';
import { MemBlockStore } from '../../../src/btree/memstore.js';

const isCode = (code: string) => (e: unknown): boolean => e instanceof FsError && e.code === code;

test('alloc gives a fresh blkno, random non-zero seq and the header; reads return the same image', async () => {
  const s = new MemBlockStore({ seed: 1, fsid: 42n });
  const a = await s.alloc('btree');
  const b = await s.alloc('btree');
  assert.equal(a.ref.blkno, 2n);
  assert.equal(b.ref.blkno, 3n);
  assert.notEqual(a.ref.seq, 0n);
  assert.notEqual(a.ref.seq, b.ref.seq);
  assert.equal(getU64(a.b, 8), 42n);
  assert.equal(getU64(a.b, 16), a.ref.seq);
  assert.equal(getU64(a.b, 24), a.ref.blkno);
  assert(s.isDirty(a.ref.blkno));
  assert.equal(await s.read(a.ref, 'btree'), a.b);
  await assert.rejects(s.read({ blkno: a.ref.blkno, seq: a.ref.seq + 1n }, 'btree'), isCode('ESTALE'));
  await assert.rejects(s.read({ blkno: 99n, seq: 1n }, 'btree'), isCode('ESTALE'));
  await assert.rejects(s.read(a.ref, 'bloom'), CorruptionError);
});

test('commit seals, two-phase frees stay readable until commit, then blknos are reused with a new seq', async () => {
  const s = new MemBlockStore({ seed: 2 });
  const a = await s.alloc('btree');
  s.commit();
  assert(!s.isDirty(a.ref.blkno));
  assert.deepEqual(s.verifyCommitted(), []);
  s.free(a.ref);
  assert.deepEqual([...s.freedCommitted], [a.ref.blkno]);
  await s.read(a.ref, 'btree'); // still readable in this transaction
  assert.throws(() => s.free(a.ref), /freed twice/);
  const other = await s.alloc('btree');
  assert.notEqual(other.ref.blkno, a.ref.blkno, 'a committed block is not reused before commit');
  s.commit();
  const again = await s.alloc('btree');
  assert.equal(again.ref.blkno, a.ref.blkno);
  assert.notEqual(again.ref.seq, a.ref.seq);
  await assert.rejects(s.read(a.ref, 'btree'), isCode('ESTALE'), 'old ref to a reused block is stale');
});

test('dirty frees are immediate; stale or unknown frees assert', async () => {
  const s = new MemBlockStore();
  const a = await s.alloc('btree');
  assert.throws(() => s.free({ blkno: a.ref.blkno, seq: a.ref.seq ^ 1n }), /stale seq/);
  s.free(a.ref);
  assert(!s.isDirty(a.ref.blkno));
  assert.throws(() => s.free(a.ref), /not in use/);
  assert.equal(s.counters.freesDirty, 1);
});

test('abort drops dirty blocks and forgets pending frees', async () => {
  const s = new MemBlockStore();
  const a = await s.alloc('btree');
  s.commit();
  s.free(a.ref);
  const b = await s.alloc('btree');
  s.abort();
  assert.equal(s.dirtyCount, 0);
  assert.equal(s.freedCommitted.size, 0);
  await s.read(a.ref, 'btree');
  await assert.rejects(s.read(b.ref, 'btree'), isCode('ESTALE'));
  assert.deepEqual([...s.committedBlknos()], [a.ref.blkno]);
});

test('a flipped byte in a committed block is CorruptionError on read and shows in verifyCommitted', async () => {
  const s = new MemBlockStore();
  const a = await s.alloc('btree');
  s.commit();
  s.corruptByte(a.ref.blkno, 1000);
  await assert.rejects(s.read(a.ref, 'btree'), (e: unknown) => e instanceof CorruptionError && e.check === 'crc');
  assert.deepEqual(s.verifyCommitted(), [a.ref.blkno]);
});

test('ENOSPC: failAllocAfter and capacity', async () => {
  const s = new MemBlockStore({ failAllocAfter: 2 });
  await s.alloc('btree');
  await s.alloc('btree');
  await assert.rejects(s.alloc('btree'), isCode('ENOSPC'));
  s.failAllocAfter = null;
  await s.alloc('btree');
  const c = new MemBlockStore({ capacity: 1 });
  await c.alloc('btree');
  await assert.rejects(c.alloc('btree'), isCode('ENOSPC'));
  assert.equal(c.counters.enospc, 1);
});

test('putCommitted installs a foreign block and keeps the allocator away from it', async () => {
  const s = new MemBlockStore();
  const img = new Uint8Array(65536);
  const src = new MemBlockStore({ firstBlkno: 4n, fsid: s.fsid });
  const x = await src.alloc('btree');
  src.commit();
  img.set(x.b);
  const ref = s.putCommitted(img);
  assert.equal(ref.blkno, 4n);
  await s.read(ref, 'btree');
  const got = [];
  for (let i = 0; i < 4; i++) got.push((await s.alloc('btree')).ref.blkno);
  assert.deepEqual(got.sort(), [2n, 3n, 5n, 6n]);
});

/*
 * Goal: the server's hold/apply commit (PROTOCOL.md 4.11), the seq counter
 * and the mutexes behave as their essays say.
 *   - concurrent GETs share one commit (waitersServed > commits), each
 *     resolves only after the commit that made it durable, a read-only
 *     resend queued behind them waits for that commit too, and each got
 *     its own seq;
 *   - a commit error fails every waiter of that commit; the volume is
 *     failed and every later call is EIO; a reopened volume is the last
 *     durable state and serves the resends; fsck is clean;
 *   - a handler error after its first change fails the volume instead of
 *     committing half-done state (nothing reaches the disk);
 *   - hold() commits first when the server allocator is low and the volume
 *     is dirty;
 *   - nextSeq outside a hold is an assertion; the mutex is FIFO.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeededRandom } from '../../../src/runtime/random.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';
import type { BlockDevice } from '../../../src/runtime/device.js';
import { FsError } from '../../../src/format/errors.js';
import { key } from '../../../src/format/key.js';
import { btreeForce } from '../../../src/btree/btree.js';
import { ServerVolume, readMetaSuper } from '../../../src/server/volume.js';
import { CommitQueue } from '../../../src/server/commitq.js';
import { SeqCounter } from '../../../src/server/seq.js';
import { AsyncMutex } from '../../../src/server/mutex.js';
import { ClientSim, VOL_OPTS, assertFsckClean, checkAndClose, logItems, mkfsMem, openServer } from './ltutil.js';

const isFs = (code: string) => (e: unknown) => e instanceof FsError && e.code === code;

/** Writes (and flushes) fail with EIO while `failing` is set. */
class FailingDevice implements BlockDevice {
  failing = false;
  constructor(readonly inner: MemoryBlockDevice) {}
  get path(): string { return this.inner.path; }
  get sizeBytes(): bigint { return this.inner.sizeBytes; }
  read(off: bigint, len: number): Promise<Uint8Array> { return this.inner.read(off, len); }
  async write(off: bigint, data: Uint8Array): Promise<void> {
    if (this.failing) throw new FsError('EIO', 'injected write error');
    return this.inner.write(off, data);
  }
  async flush(): Promise<void> {
    if (this.failing) throw new FsError('EIO', 'injected flush error');
    return this.inner.flush();
  }
  close(): Promise<void> { return this.inner.close(); }
}

test('concurrent GETs share one commit and each resolves only once durable', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(21n);
  const s = await openServer(dev, rnd.fork('server'));
  const open = await s.lts.getLogTrees(0x100n); // an already open transaction
  const commits0 = s.vol.counters.commits;
  const seen: number[] = [];
  const rids = [1n, 2n, 3n, 4n, 5n, 6n];
  const gets = rids.map((rid) => s.lts.getLogTrees(rid).then((lt) => {
    seen.push(s.vol.counters.commits);
    return lt;
  }));
  // A resent GET queued behind them: it changes nothing but must not reveal their state early.
  const resend = s.lts.getLogTrees(0x100n).then((lt) => {
    seen.push(s.vol.counters.commits);
    return lt;
  });
  const lts = await Promise.all(gets);
  const again = await resend;
  assert.deepEqual(again, open);
  assert.equal(s.lts.counters.getsResent, 1);
  assert.equal(s.vol.counters.commits - commits0, 1, 'one commit for all');
  assert.ok(seen.every((c) => c === commits0 + 1), `every response after the commit: ${seen}`);
  assert.equal(s.commitq.counters.maxBatch, 7);
  assert.equal(s.commitq.counters.appliesClean, 0, 'the resend waited: the volume was dirty');
  const seqs = new Set(lts.map((lt) => lt.get_trans_seq));
  assert.equal(seqs.size, rids.length, 'distinct seqs');
  assert.equal((await readMetaSuper(dev)).seq, s.seq.current);
  await checkAndClose(s);
  await assertFsckClean(dev, 'after concurrent GETs');
});

test('a commit error fails all its waiters; the volume must be reopened', async () => {
  const mem = mkfsMem();
  const dev = new FailingDevice(mem);
  const rnd = new SeededRandom(22n);
  let s = await openServer(dev, rnd.fork('server'));
  const c = new ClientSim(dev, s, 0x10n, rnd.fork('client'));
  await c.get();
  await c.writeItems(50);
  const sent = await c.commit();
  const durable = await logItems(s);
  const superSeq = (await readMetaSuper(mem)).hdr.seq;

  dev.failing = true;
  const results = await Promise.allSettled([1n, 2n, 3n].map((rid) => s.lts.getLogTrees(rid)));
  for (const r of results) assert.equal(r.status, 'rejected');
  assert.equal(s.commitq.counters.failedCommits, 1, 'one failed commit failed all three');
  assert.ok(s.vol.failure !== null);
  await assert.rejects(s.lts.getLogTrees(0x10n), isFs('EIO'));
  await assert.rejects(s.lts.getLastSeq(), isFs('EIO'));
  assert.equal((await readMetaSuper(mem)).hdr.seq, superSeq, 'nothing reached the super');
  await checkAndClose(s);

  dev.failing = false;
  s = await openServer(dev, rnd.fork('server2'));
  assert.deepEqual(await logItems(s), durable, 'the last durable state');
  // The resends: the new GETs, and the client's COMMIT (already durable).
  for (const rid of [1n, 2n, 3n]) assert.equal((await s.lts.getLogTrees(rid)).nr, 1n);
  await s.lts.commitLogTrees(0x10n, sent);
  assert.equal(s.lts.counters.commitsDuplicate, 1);
  c.destroy();
  await checkAndClose(s);
  await assertFsckClean(mem, 'after reopening');
});

test('an error after a handler\'s first change fails the volume; nothing half-done is committed', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(23n);
  let s = await openServer(dev, rnd.fork('server'));
  const c = new ClientSim(dev, s, 0x20n, rnd.fork('client'));
  await c.get();
  await c.writeItems(20);
  // The client sends a meta_freed list head naming a block that is no list block.
  c.lt!.meta_freed = { ref: { blkno: 4000n, seq: 0x1234n }, total_nr: 5n, first_nr: 5, flags: 0 };
  await c.commit();
  const durable = await logItems(s);
  const before = (await readMetaSuper(dev)).hdr.seq;
  await assert.rejects(s.lts.getLogTrees(0x20n));
  assert.equal(s.lts.counters.failures, 1);
  assert.equal(s.commitq.counters.handlerFailures, 1);
  assert.ok(s.vol.failure !== null);
  await assert.rejects(s.lts.getLogTrees(0x21n), isFs('EIO'));
  assert.equal((await readMetaSuper(dev)).hdr.seq, before, 'no commit');
  await checkAndClose(s);
  s = await openServer(dev, rnd.fork('server2'));
  assert.deepEqual(await logItems(s), durable);
  assert.equal((await s.lts.getLogTrees(0x21n)).nr, 1n, 'other mounts are served');
  c.destroy();
  await checkAndClose(s);
});

test('hold() commits first when the server allocator is low and the volume is dirty', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(24n);
  const vol = await ServerVolume.open(dev, { ...VOL_OPTS, random: rnd });
  const q = new CommitQueue(vol, { holdLowMargin: 1_000_000 });
  const seq = await SeqCounter.open(vol, q);
  assert.throws(() => seq.nextSeq(), /outside a commit hold/);
  // Clean: a low allocator alone does not commit.
  const h0 = await q.hold();
  assert.equal(q.counters.lowCommits, 0);
  await btreeForce(vol.store, vol.sb.fs_root, key(4, 5000n, 1), new Uint8Array(160));
  const s1 = seq.nextSeq();
  q.release(h0); // changed, not applied: rides along
  assert.equal(vol.counters.commits, 0);
  const h1 = await q.hold();
  assert.equal(q.counters.lowCommits, 1);
  assert.equal(vol.counters.commits, 1, 'committed before the hold was granted');
  assert.equal((await readMetaSuper(dev)).seq, s1, 'the seq rode along');
  await q.apply(h1);
  assert.equal(q.counters.appliesClean, 1);
  await q.commitNow();
  assert.equal(vol.counters.commits, 1, 'commitNow on a clean volume is a no-op');
  q.destroy();
  await assert.rejects(q.hold(), /destroyed/);
  vol.close();
  await assertFsckClean(dev, 'after forced commit');
});

test('the mutex hands over in FIFO order', async () => {
  const m = new AsyncMutex('t');
  const order: number[] = [];
  const unlock = await m.lock();
  const ps = [1, 2, 3].map((i) => m.run(async () => {
    order.push(i);
    await Promise.resolve();
  }));
  assert.ok(m.isLocked);
  unlock();
  await Promise.all(ps);
  assert.deepEqual(order, [1, 2, 3]);
  assert.ok(!m.isLocked);
  assert.throws(() => unlock(), /released twice/);
});

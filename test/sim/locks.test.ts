/*
 * Goal: the cluster locks end to end in the simulated cluster (cluster.ts:
 * the real Trans, ItemCache, ForestReader/Writer, NetClient/NetServer,
 * LockClient/LockServer, log trees server and server volume over
 * FaultDevices), one scripted scenario per path, each with a fixed seed,
 * each proving its path by a counter:
 *   1. (5.5, 4.4) a write on one mount is read at once by another: the
 *      writer's lock is invalidated WRITE -> READ, which commits the
 *      transaction the lock dirtied; the reader's kernel cache then serves
 *      the value, and the next write on the first mount drops that kernel
 *      cache entry (kernel hook) so the reader sees the new value;
 *   2. (6.5) the server dies while mounts hold locks: the next server
 *      recovers every lock before it grants anything, its seq counter is
 *      raised past the recovered write seqs, and the conflicting request a
 *      mount resent is served after recovery with a newer write seq;
 *   3. (1.6, 6.6) a mount that crashes holding a WRITE lock holds the
 *      others off until it is fenced; then they see what it committed and
 *      not what it had not;
 *   4. (3.10) a mount that never comes back to a new server stalls all
 *      locking until the recovery timer fences it.
 * Every scenario ends with the cluster checker: no stale read, the lock
 * oracle quiet, fsck clean, every mount's items and the shared keys'
 * durable values as the models say.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FS_TYPE, ZONE } from '../../src/format/items.js';
import { key, type Key } from '../../src/format/key.js';
import { inodeLockRange } from '../../src/format/lock.js';
import { QUIET_LINK } from '../../src/net/sim.js';
import { Cluster, type ClientNode } from './cluster.js';

const LINK = { ...QUIET_LINK, latencyMs: [1, 3] as const, breakDetectMs: [5, 20] as const };
const K1 = key(ZONE.FS, (1n << 24n) + 3n, FS_TYPE.SYMLINK, 0n);
const K2 = key(ZONE.FS, (1n << 24n) + 2000n, FS_TYPE.SYMLINK, 0n);

async function scenario(seed: bigint, fn: (cl: Cluster) => Promise<void>): Promise<void> {
  const cl = new Cluster({ seed, link: LINK, trace: true, reconnectWaitMs: 3000, recoveryWaitMs: 3000 });
  try {
    await fn(cl);
    assert.deepEqual(cl.errors, [], 'harness errors, stale reads, lock oracle');
    cl.stop();
    assert.deepEqual(await cl.verify(), [], 'end-of-run checker');
  } catch (e) {
    console.error(`lock scenario seed ${seed} failed; last trace lines:\n${cl.sim.trace.slice(-50).join('\n')}`);
    throw e;
  } finally {
    cl.destroy();
  }
}

async function settle<T>(cl: Cluster, p: Promise<T>, limitMs = 30_000): Promise<T> {
  let done = false;
  let val: T | undefined;
  let err: unknown = null;
  p.then((v) => { done = true; val = v; }, (e: unknown) => { done = true; err = e; });
  assert.ok(await cl.runUntil(() => done, limitMs), `did not settle within ${limitMs} simulated ms`);
  if (err !== null) throw err;
  return val as T;
}

async function mounted(cl: Cluster, name: string): Promise<ClientNode> {
  const c = cl.mountClient(name);
  await settle(cl, c.mount());
  return c;
}

const counter = (cl: Cluster, k: Key): string | null => cl.shared.candidates(k)[0]?.slice(0, 16) ?? null;

test('a write on one mount is read at once on another; the invalidation commits it; kernel caches are dropped', async () => {
  await scenario(11n, async (cl) => {
    await cl.startServer();
    const a = await mounted(cl, 'c1');
    const b = await mounted(cl, 'c2');
    await settle(cl, a.increment(K1));
    const commits = a.trans.counters.commitsOk;
    await settle(cl, b.read(K1));
    assert.equal(a.locks.counters.invalidationSyncs, 1, 'the invalidation committed the writer\'s transaction');
    assert.ok(a.trans.counters.commitsOk > commits);
    assert.equal(a.locks.modeOf(inodeLockRange(K1.first).start), 'READ', 'WRITE -> READ: the writer keeps reading');
    assert.equal(cl.counters.itemReads, 2);
    await settle(cl, b.read(K1));
    assert.equal(cl.counters.kernelCacheReads, 1, 'the second read came from the kernel cache');
    await settle(cl, a.increment(K1));
    assert.ok(cl.counters.kernelCacheDropped >= 1, 'the reader\'s kernel cache entry was dropped');
    await settle(cl, b.read(K1));
    assert.equal(cl.counters.kernelCacheReads, 1, 'and the read went to the item cache again');
    assert.equal(counter(cl, K1), '0200000000000000');
    assert.ok(cl.counters.oracleChecks >= 4);
    await settle(cl, Promise.all([a.sync(), b.sync()]));
  });
});

test('a new server recovers every held lock before granting, raises its seq, then serves the resent request', async () => {
  await scenario(12n, async (cl) => {
    await cl.startServer();
    const a = await mounted(cl, 'c1');
    const b = await mounted(cl, 'c2');
    await settle(cl, a.increment(K1));
    await settle(cl, b.increment(K2));
    const aSeq = a.locks.held().find((h) => h.start.first === inodeLockRange(K1.first).start.first)!.writeSeq;
    assert.ok(aSeq > 0n);
    cl.crashServer('scripted', null);
    const p = b.increment(K1); // needs a's lock: resent to the next server
    await cl.runUntil(() => false, 300);
    const s2 = await settle(cl, cl.startServer());
    await settle(cl, p);
    assert.equal(s2.locks.counters.recoveriesFinished, 2);
    assert.ok(s2.locks.counters.recoveredLocks >= 2, `recovered ${s2.locks.counters.recoveredLocks}`);
    assert.ok(s2.seq.current >= aSeq, 'the new counter is past the recovered write seq');
    const bSeq = b.locks.held().find((h) => h.start.first === inodeLockRange(K1.first).start.first)!.writeSeq;
    assert.ok(bSeq > aSeq, `the new grant's write seq ${bSeq} is newer than the recovered ${aSeq}`);
    assert.equal(counter(cl, K1), '0200000000000000', 'b read a\'s increment and added its own');
    await settle(cl, Promise.all([a.sync(), b.sync()]));
  });
});

test('a mount that crashes holding WRITE holds the others off until fenced; its committed write stays, the rest is lost', async () => {
  await scenario(13n, async (cl) => {
    await cl.startServer();
    const a = await mounted(cl, 'c1');
    const b = await mounted(cl, 'c2');
    await settle(cl, a.increment(K1));
    await settle(cl, a.sync());
    await settle(cl, a.increment(K1)); // 2, never committed
    cl.crashClient(a, 'scripted');
    const t0 = cl.sim.clock.nowMs();
    await settle(cl, b.read(K1));
    assert.ok(cl.sim.clock.nowMs() - t0 >= 3000, 'the read waited for the reconnect wait and the fence');
    assert.equal(cl.counters.fences, 1);
    assert.ok(cl.servers[0]!.locks.counters.forgets >= 1);
    assert.equal(counter(cl, K1), '0100000000000000', 'the committed increment, not the lost one');
    assert.equal(cl.shared.stats.settledLost, 1);
    await settle(cl, b.sync());
  });
});

test('a mount that never comes back to a new server stalls locking until the recovery timer fences it', async () => {
  await scenario(14n, async (cl) => {
    await cl.startServer();
    const a = await mounted(cl, 'c1');
    const b = await mounted(cl, 'c2');
    await settle(cl, a.read(K1));
    await settle(cl, b.increment(K2));
    cl.crashServer('scripted', null);
    cl.crashClient(a, 'scripted');
    const s2 = await settle(cl, cl.startServer());
    const t0 = cl.sim.clock.nowMs();
    await settle(cl, b.increment(K1));
    assert.ok(cl.sim.clock.nowMs() - t0 >= 2900, 'nothing was granted before the recovery timer');
    assert.equal(cl.counters.lockRecoveryFences, 1);
    assert.equal(s2.locks.counters.recoveriesFinished, 1, 'b recovered, a never did');
    await settle(cl, b.sync());
  });
});

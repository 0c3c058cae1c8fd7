/*
 * Goal: the transaction protocol holds under random faults, seed after
 * seed (STYLE.md 7, PROTOCOL.md 4.13).  Each seed (sweep.ts) runs a small
 * random item workload on one to three mounts against one server over the
 * simulated network, with drops, duplicates, delays, socket breaks,
 * partitions, server crashes (some exactly between a durable GET or COMMIT
 * and its reply, some in the middle of a commit's flushes), mount crashes
 * with fencing and reclaim, torn and lost unflushed writes, transient read
 * corruption, and GETs failing ENOSPC; and every seed must end with:
 *   - fsck clean (every metadata block referenced, free or listed exactly
 *     once: nothing freed twice, nothing leaked);
 *   - the log trees invariants, and every crashed mount's lt reclaimed;
 *   - every mount's items, read back through a freshly opened forest
 *     reader over the device, and its srch entries equal to its model (a
 *     live mount: everything; a crashed one: at least what it synced);
 *   - GET_LAST_SEQ never going back and staying below an open transaction;
 *   - liveness: once the faults stop, every workload and its final sync
 *     completes.
 * Across the sweep, counters prove the interesting paths ran: resent
 * COMMITs acknowledged as duplicates, resent GETs answered with the open
 * lt, COMMITs re-sent by the commit worker after a failed GET, writers
 * blocked on it, srch rotations, fences and reclaims.
 *
 * And the cluster locks (the shared-key lock workers of sweep.ts): the
 * lock oracle never sees two mounts holding incompatible modes of a lock,
 * every read of a shared key (through the item cache under a lock, or
 * from a mount's model kernel cache) returns the latest write or one a
 * crash may have lost, the durable state of every shared key is one of
 * those too, and counters prove invalidations committed and dropped
 * caches, new servers recovered locks, silent rids were fenced and
 * forgotten, idle locks were dropped.
 *
 * 300 seeds by default (about a minute on two cores); SCOUTFS_SWEEP_SEEDS=N
 * runs N (the issue asks for 1,000 or more before a release).  A failing seed
 * prints itself and the command that replays it alone:
 *   SCOUTFS_SEED=N node --test dist/test/sim/sweep.test.js
 * and `node dist/test/sim/replay.js N` prints its whole event trace.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sweepSeeds, withSeed } from '../../src/net/sim.js';
import { runSweepSeed, type SweepResult } from './sweep.js';

const DEFAULT_SEEDS = 300;

function seedCount(): number {
  const v = process.env.SCOUTFS_SWEEP_SEEDS;
  if (v === undefined || v === '') return DEFAULT_SEEDS;
  const n = Number(v);
  assert.ok(Number.isSafeInteger(n) && n >= 1, `SCOUTFS_SWEEP_SEEDS=${v}: want a positive integer`);
  return n;
}

const replay = (seed: bigint): string =>
  `node --test dist/test/sim/sweep.test.js   (trace: node dist/test/sim/replay.js ${seed})`;

test('random sweep: faults and crashes, fsck clean, synced items present, liveness', async (t) => {
  const seeds = sweepSeeds(seedCount());
  const sum: Record<string, number> = {};
  const add = (prefix: string, o: object): void => {
    for (const [k, v] of Object.entries(o)) if (typeof v === 'number') sum[prefix + k] = (sum[prefix + k] ?? 0) + v;
  };
  const t0 = performance.now();
  for (const seed of seeds) {
    const r: SweepResult = await withSeed(seed, replay(seed), async () => {
      const res = await runSweepSeed(seed);
      if (res.errors.length > 0) throw new Error(res.errors.join('\n'));
      return res;
    });
    add('', r.cluster);
    add('lt.', r.lt);
    add('trans.', r.trans);
    add('verify.', r.verify);
    add('disk.', r.disk);
    add('lockServer.', r.lockServer);
    add('lockClient.', r.lockClient);
    add('shared.', r.shared);
    add('', { ops: r.ops, mounts: r.mounts, events: r.events });
  }
  const secs = (performance.now() - t0) / 1000;
  t.diagnostic(`${seeds.length} seeds in ${secs.toFixed(1)} s (${(1000 * secs / seeds.length).toFixed(0)} ms each)`);
  t.diagnostic(JSON.stringify(sum));
  if (seeds.length < 100) return; // a replay of one seed proves nothing about coverage
  const ran = (what: string, n: number | undefined): void => assert.ok((n ?? 0) > 0, `the sweep never ran: ${what}`);
  ran('a COMMIT whose reply was lost with the server (crashesAfterCommit)', sum.crashesAfterCommit);
  ran('a resent COMMIT acknowledged as already committed (commitsDuplicate)', sum['lt.commitsDuplicate']);
  ran('a GET whose reply was lost with the server (crashesAfterGet)', sum.crashesAfterGet);
  ran('a resent GET answered with the open lt (getsResent)', sum['lt.getsResent']);
  ran('a COMMIT re-sent by the commit worker after a failed GET (commitResends)', sum['trans.commitResends']);
  ran('a writer blocked by the commit worker (holdsBlocked)', sum['trans.holdsBlocked']);
  ran('srch rotation at COMMIT (srchRotations)', sum['lt.srchRotations']);
  ran('a fenced mount whose lt was reclaimed (reclaims)', sum['lt.reclaims']);
  ran('a crashed mount that lost unsynced operations (crashedLostOps)', sum['verify.crashedLostOps']);
  ran('GET_LAST_SEQ checks', sum.lastSeqChecks);
  ran('a crash that lost unflushed writes (disk.writesLost)', sum['disk.writesLost']);
  ran('a crash that landed unflushed writes (disk.writesLanded)', sum['disk.writesLanded']);
  ran('a crash that tore an unflushed write (disk.writesTorn)', sum['disk.writesTorn']);
  ran('a transiently corrupt read (disk.readsCorrupted)', sum['disk.readsCorrupted']);
  // Cluster locks.
  ran('grants checked by the lock oracle (oracleChecks)', sum.oracleChecks);
  ran('an invalidation that committed the transaction its lock dirtied (invalidationSyncs)', sum['lockClient.invalidationSyncs']);
  ran('an invalidation that dropped item cache pages (itemPagesInvalidated)', sum['lockClient.itemPagesInvalidated']);
  ran('kernel cache entries dropped by invalidations (kernelCacheDropped)', sum.kernelCacheDropped);
  ran('a read served by the kernel cache model (kernelCacheReads)', sum.kernelCacheReads);
  ran('a WRITE -> READ downgrade or READ sharing (grants > writeGrants)', (sum['lockServer.grants'] ?? 0) - (sum['lockServer.writeGrants'] ?? 0));
  ran('locks recovered by a new server (recoveredLocks)', sum['lockServer.recoveredLocks']);
  ran('a rid fenced for not recovering its locks (lockRecoveryFences)', sum.lockRecoveryFences);
  ran('a rid forgotten by the lock server (forgets)', sum['lockServer.forgets']);
  ran('idle locks dropped with NULL requests (nullGrants)', sum['lockServer.nullGrants']);
  ran('an invalidation from a server we had left, skipped (invalidationsStale)', sum['lockClient.invalidationsStale']);
  ran('a crashed writer\'s version lost and settled by a read (settledLost)', sum['shared.settledLost']);
  assert.equal(sum['lockServer.brokenGrants'] ?? 0, 0, 'the correct lock server never takes the broken path');
  assert.equal(sum['lockClient.grantConsistencyErrors'] ?? 0, 0, 'no grant found dirty items in a range it could not write');
  assert.equal(sum['lt.brokenResentCommitsProcessed'] ?? 0, 0, 'the correct server never takes the broken path');
});

test('the same seed replays the same run exactly', async () => {
  const a = await runSweepSeed(3n, { trace: true });
  const b = await runSweepSeed(3n, { trace: true });
  assert.deepEqual(a.errors, []);
  assert.ok(a.trace.length > 100, `a real run: ${a.trace.length} trace lines`);
  assert.ok(a.cluster.serverCrashes > 0, 'with faults in it');
  assert.deepEqual(b.trace, a.trace, 'event for event');
  assert.deepEqual(b.lt, a.lt);
});

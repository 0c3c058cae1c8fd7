/*
 * Goal: tests of the test.
 *
 * 1. The random sweep (sweep.ts) must catch the
 * bug the seed commit fixed (PROTOCOL.md 4.12): a server that processes a
 * resent COMMIT_LOG_TREES again instead of acknowledging it.
 * LogTreesServer's `brokenProcessResentCommit: true` is exactly that
 * server; run against it, the very same sweep must fail for at least one
 * seed of a small range.  How it shows: a COMMIT whose reply was lost with
 * the server carried a srch file that was rotated into srch_root; the
 * resend to the next server tries to rotate it again, collides (EEXIST),
 * and the mount retries it forever, so the workload never completes
 * (liveness), or its synced items are not there.
 *
 * For every seed that catches it we also check that it is caught for the
 * right reason: the broken path ran (brokenResentCommitsProcessed), and the
 * same seed passes against the correct server.
 *
 * 2. The same sweep must catch a broken lock server: one whose first
 * grant that needs invalidations (per server incarnation) skips them and
 * grants at once (LockServer brokenGrants), leaving a holder with a mode
 * the new grant conflicts with.  The lock oracle sees two incompatible
 * holders; the shared-key reads see a value older than the latest write
 * (the old holder's newest version was never committed or its cache was
 * never dropped).  Each catching seed must show the broken grant ran and
 * pass against the correct lock server.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSweepSeed } from './sweep.js';

const SEEDS = 20;
const LOCK_SEEDS = 10;

test('the sweep catches a server that re-processes resent COMMITs (brokenProcessResentCommit)', async (t) => {
  const caught: { seed: bigint; why: string; processed: number }[] = [];
  let processed = 0;
  for (let s = 1n; s <= BigInt(SEEDS); s++) {
    const r = await runSweepSeed(s, { broken: true });
    processed += r.lt.brokenResentCommitsProcessed;
    if (r.errors.length > 0) caught.push({ seed: s, why: r.errors[0]!.split('\n')[0]!, processed: r.lt.brokenResentCommitsProcessed });
  }
  t.diagnostic(`caught by ${caught.length} of ${SEEDS} seeds: ${caught.map((c) => `${c.seed} (${c.why.slice(0, 80)})`).join('; ')}`);
  assert.ok(processed > 0, 'the broken server processed resent COMMITs');
  assert.ok(caught.length >= 1, `the sweep caught the broken server in none of seeds 1..${SEEDS}`);
  for (const c of caught) {
    assert.ok(c.processed > 0, `seed ${c.seed} failed without taking the broken path: ${c.why}`);
    const ok = await runSweepSeed(c.seed);
    assert.deepEqual(ok.errors, [], `seed ${c.seed} must pass against the correct server`);
  }
});

test('the sweep catches a lock server that grants without invalidating (brokenGrants)', async (t) => {
  const caught: { seed: bigint; why: string; all: string[]; broken: number }[] = [];
  let broken = 0;
  for (let s = 1n; s <= BigInt(LOCK_SEEDS); s++) {
    const r = await runSweepSeed(s, { brokenLocks: 1 });
    broken += r.lockServer.brokenGrants;
    if (r.errors.length > 0) caught.push({ seed: s, why: r.errors[0]!.split('\n')[0]!, all: r.errors, broken: r.lockServer.brokenGrants });
  }
  t.diagnostic(`caught by ${caught.length} of ${LOCK_SEEDS} seeds: ${caught.map((c) => `${c.seed} (${c.why.slice(0, 100)})`).join('; ')}`);
  assert.ok(broken > 0, 'the broken lock server skipped invalidations');
  assert.ok(caught.length >= 1, `the sweep caught the broken lock server in none of seeds 1..${LOCK_SEEDS}`);
  assert.ok(caught.some((c) => c.why.startsWith('lock oracle')), 'the lock oracle caught it');
  assert.ok(caught.some((c) => c.all.some((e) => e.startsWith('stale read'))), 'and a read saw a stale value, without the oracle\'s help');
  for (const c of caught) {
    assert.ok(c.broken > 0, `seed ${c.seed} failed without a broken grant: ${c.why}`);
    assert.match(c.why, /^(lock oracle|stale read|shared key lost or stale)/, `seed ${c.seed} caught for another reason`);
    const ok = await runSweepSeed(c.seed);
    assert.deepEqual(ok.errors, [], `seed ${c.seed} must pass against the correct lock server`);
  }
});

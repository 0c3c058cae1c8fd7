/*
 * Goal: a test of the test.  The random sweep (sweep.ts) must catch the
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
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSweepSeed } from './sweep.js';

const SEEDS = 20;

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

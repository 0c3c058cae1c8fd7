/*
 * Goal: the quorum holds its promises under random faults, seed after
 * seed (sweep.ts): at most one leader per term (3+ slots), never two
 * servers serving (the new leader fences the old through the quorum
 * blocks before it serves), and one leader followed by all and advertised
 * in the quorum blocks once the faults stop.  Across the sweep, counters
 * prove the interesting paths ran: live leaders fenced, failed fences and
 * failed server starts, leader crashes, shutdowns, abandons, drops,
 * duplicates, delays, stale and invalid messages.
 *
 * 300 seeds by default; SCOUTFS_QUORUM_SWEEP_SEEDS=N runs N.  A failing
 * seed prints itself and the command that replays it alone:
 *   SCOUTFS_SEED=N node --test dist/test/sim/quorum/sweep.test.js
 * and `node dist/test/sim/quorum/replay.js N` prints its whole trace.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sweepSeeds, withSeed } from '../../../src/net/sim.js';
import { runQuorumSeed } from './sweep.js';

const DEFAULT_SEEDS = 300;

function seedCount(): number {
  const v = process.env.SCOUTFS_QUORUM_SWEEP_SEEDS;
  if (v === undefined || v === '') return DEFAULT_SEEDS;
  const n = Number(v);
  assert.ok(Number.isSafeInteger(n) && n >= 1, `SCOUTFS_QUORUM_SWEEP_SEEDS=${v}: want a positive integer`);
  return n;
}

const replay = (seed: bigint): string =>
  `node --test dist/test/sim/quorum/sweep.test.js   (trace: node dist/test/sim/quorum/replay.js ${seed})`;

test('quorum sweep: one leader per term, one server at a time, a leader once faults stop', async (t) => {
  const seeds = sweepSeeds(seedCount());
  const sum: Record<string, number> = {};
  const t0 = performance.now();
  for (const seed of seeds) {
    const r = await withSeed(seed, replay(seed), async () => {
      const res = await runQuorumSeed(seed);
      if (res.errors.length > 0) throw new Error(res.errors.join('\n'));
      return res;
    });
    for (const [k, v] of Object.entries(r.counters)) sum[k] = (sum[k] ?? 0) + v;
  }
  const secs = (performance.now() - t0) / 1000;
  t.diagnostic(`${seeds.length} seeds in ${secs.toFixed(1)} s (${(1000 * secs / seeds.length).toFixed(0)} ms each)`);
  t.diagnostic(JSON.stringify(sum));
  if (seeds.length < 100) return; // a replay of one seed proves nothing about coverage
  const ran = (what: string, n: number | undefined): void => assert.ok((n ?? 0) > 0, `the sweep never ran: ${what}`);
  for (const m of [1, 2, 3, 5]) ran(`a quorum of ${m}`, sum[`members${m}`]);
  ran('a live leader fenced by a newer one (liveFenced)', sum.liveFenced);
  ran('a fence that failed (fencesFailed)', sum.fencesFailed);
  ran('a server start that failed (serverStartsFailed)', sum.serverStartsFailed);
  ran('a crashed leader (leaderCrashes)', sum.leaderCrashes);
  ran('a clean shutdown (shutdowns)', sum.shutdowns);
  ran('an abandoned member (abandons)', sum.abandons);
  ran('a resignation (resignations)', sum.resignations);
  ran('a stale message ignored (staleMessages)', sum.staleMessages);
  ran('dropped, duplicated and delayed datagrams', Math.min(sum.dgramDropped ?? 0, sum.dgramDuplicated ?? 0, sum.dgramDelayed ?? 0));
});

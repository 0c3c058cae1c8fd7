/*
 * Replay one seed of the quorum sweep (sweep.ts) with the simulator trace
 * on and print the trace, the counters and the outcome.  Not a test file;
 * after the build:
 *
 *   node dist/test/sim/quorum/replay.js 1234          (or SCOUTFS_SEED=1234)
 *   node dist/test/sim/quorum/replay.js 1234 --quiet  (summary only)
 *
 * Exit status 1 when the seed fails.
 */
import { parseSeed, seedFromEnv } from '../../../src/net/sim.js';
import { runQuorumSeed } from './sweep.js';

const args = process.argv.slice(2);
const positional = args.find((a) => /^(0x[0-9a-fA-F]+|\d+)$/.test(a));
const seed = positional !== undefined ? parseSeed(positional) : seedFromEnv();
if (seed === null) {
  console.error('usage: replay.js SEED [--quiet]   (or SCOUTFS_SEED=SEED)');
  process.exit(2);
}
const r = await runQuorumSeed(seed, { trace: true });
if (!args.includes('--quiet')) for (const line of r.trace) console.log(line);
console.log(`seed ${seed}: ${r.members} members, ${r.events} events, ${r.simMs} simulated ms`);
console.log(`counters ${JSON.stringify(r.counters)}`);
if (r.errors.length === 0) {
  console.log('ok');
} else {
  console.log(`FAILED:\n${r.errors.join('\n')}`);
  process.exitCode = 1;
}

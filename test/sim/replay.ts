/*
 * Replay one seed of the random sweep (sweep.ts) with the simulator trace
 * on, and print the trace, the counters and the outcome.  Not a test file;
 * run after the build:
 *
 *   node dist/test/sim/replay.js 1234            (or --seed=1234, or SCOUTFS_SEED=1234)
 *   node dist/test/sim/replay.js 1234 --broken   (the broken-resend server of broken.test.ts)
 *   node dist/test/sim/replay.js 1234 --broken-locks   (the lock server that skips invalidations)
 *   node dist/test/sim/replay.js 1234 --quiet    (summary only)
 *
 * The same seed gives the same run, event for event, so a failure the
 * sweep reports can be studied here.  Exit status 1 when the seed fails.
 */
import { parseSeed, seedFromEnv } from '../../src/net/sim.js';
import { runSweepSeed } from './sweep.js';

const args = process.argv.slice(2);
const positional = args.find((a) => /^(0x[0-9a-fA-F]+|\d+)$/.test(a));
const seed = positional !== undefined ? parseSeed(positional) : seedFromEnv();
if (seed === null) {
  console.error('usage: replay.js SEED [--broken] [--broken-locks] [--quiet]   (or SCOUTFS_SEED=SEED)');
  process.exit(2);
}
const r = await runSweepSeed(seed, { trace: true, broken: args.includes('--broken'), brokenLocks: args.includes('--broken-locks') ? 1 : 0 });
if (!args.includes('--quiet')) for (const line of r.trace) console.log(line);
console.log(`seed ${seed}: ${r.events} events, ${r.simMs} simulated ms, ${r.mounts} mounts, ${r.ops} ops`);
console.log(`cluster ${JSON.stringify(r.cluster)}`);
console.log(`log trees ${JSON.stringify(r.lt)}`);
console.log(`trans ${JSON.stringify(r.trans)}`);
console.log(`verify ${JSON.stringify(r.verify)}`);
console.log(`lock server ${JSON.stringify(r.lockServer)}`);
console.log(`lock clients ${JSON.stringify(r.lockClient)}`);
console.log(`shared keys ${JSON.stringify(r.shared)}`);
if (r.errors.length === 0) {
  console.log('ok');
} else {
  console.log(`FAILED:\n${r.errors.join('\n')}`);
  process.exitCode = 1;
}

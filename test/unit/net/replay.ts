/*
 * Replay one seed of the message-layer scenario (scenario.ts) and print its
 * trace and outcome.  Not a test file; run after the build:
 *
 *   node dist/test/unit/net/replay.js 1234          (or --seed=1234)
 *   SCOUTFS_SEED=1234 node dist/test/unit/net/replay.js
 *
 * Flags: --no-crashes runs the variant without server crashes, --quiet
 * prints only the summary.  Exit status 1 when the seed fails its checks.
 */
import { parseSeed, seedFromEnv } from '../../../src/net/sim.js';
import { check, runScenario } from './scenario.js';

const args = process.argv.slice(2);
const positional = args.find((a) => /^(0x[0-9a-fA-F]+|\d+)$/.test(a));
const seed = positional !== undefined ? parseSeed(positional) : seedFromEnv();
if (seed === null) {
  console.error('usage: replay.js SEED [--no-crashes] [--quiet]   (or SCOUTFS_SEED=SEED)');
  process.exit(2);
}
const r = await runScenario(seed, { crashes: !args.includes('--no-crashes') });
if (!args.includes('--quiet')) for (const line of r.trace) console.log(line);
console.log(`seed ${seed}: ${r.events} events, ${r.simMs} simulated ms, ${r.crashes} server crashes`);
console.log(`faults ${JSON.stringify(r.faults)}`);
console.log(`server stats ${JSON.stringify(r.stats.server)}`);
console.log(`client stats ${JSON.stringify(r.stats.clients)}`);
try {
  check(r);
  console.log('ok');
} catch (e) {
  console.log(`FAILED: ${e instanceof Error ? e.message : String(e)}`);
  process.exitCode = 1;
}

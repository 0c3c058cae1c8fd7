/*
 * One seed of the quorum sweep (sweep.test.ts, replay.ts): a random
 * quorum of 1, 2, 3 or 5 members (3 and 5 most often) over the simulated
 * datagram network with random drops, duplicates and delays, through a
 * fault phase of random events (crash a member, the leader preferred;
 * restart one; partition a pair or isolate a member; heal; a clean
 * shutdown or an abandon; a spell of failing fences), then a quiet phase:
 * faults off, everything healed and restarted.  Checked:
 *   - at most one leader per term, all run long (3+ slots; PROTOCOL.md
 *     2.1 does not promise it with fewer);
 *   - never two servers serving: when a server becomes ready no other
 *     live member's server is (fencing through the quorum blocks);
 *   - eventually (within 120 s of quiet) one leader whose server is
 *     ready, followed by every member in its term, and advertised by the
 *     quorum blocks.
 * Everything comes from the seed; the same seed replays the same run.
 */
import { QuorumSim } from './cluster.js';
import type { DatagramFaults } from '../../../src/net/dgramsim.js';
import { QUIET_DATAGRAMS } from '../../../src/net/dgramsim.js';
import { SeededRandom } from '../../../src/runtime/random.js';

export interface QuorumSweepResult {
  seed: bigint;
  members: number;
  errors: string[];
  trace: string[];
  simMs: number;
  events: number;
  counters: Record<string, number>;
}

export async function runQuorumSeed(seed: bigint, opts: { trace?: boolean } = {}): Promise<QuorumSweepResult> {
  const r = new SeededRandom(seed).fork('quorum-sweep');
  const members = [1, 2, 3, 3, 3, 5, 5, 5][r.int(8)]!;
  const faults: DatagramFaults = {
    latencyMs: [0, 1 + r.int(30)],
    dropRate: r.float() * 0.3,
    dupRate: r.float() * 0.3,
    delayRate: r.float() * 0.3,
    delayMs: [10, 10 + r.int(2000)],
  };
  const qs = await QuorumSim.create(seed, {
    members, faults, oneLeaderPerTerm: members >= 3, trace: opts.trace ?? false, startWorkMs: [1, 1 + r.int(300)],
  });
  const errors: string[] = [];
  const c: Record<string, number> = {
    crashes: 0, leaderCrashes: 0, restarts: 0, partitions: 0, heals: 0, shutdowns: 0, abandons: 0, fenceFailSpells: 0,
  };
  try {
    await qs.startAll();
    const phaseEnd = qs.sim.clock.nowMs() + 20_000 + r.int(40_000);
    let fenceFailUntil = -1;
    while (qs.sim.clock.nowMs() < phaseEnd) {
      await qs.run(50 + r.int(4000));
      if (fenceFailUntil >= 0 && qs.sim.clock.nowMs() >= fenceFailUntil) {
        qs.failFences = false;
        fenceFailUntil = -1;
      }
      const live = qs.live();
      const dead = qs.current.filter((i) => !live.includes(i));
      const x = r.float();
      if (x < 0.2 && live.length > 0) {
        const leaders = live.filter((i) => i.quorum!.role === 'LEADER');
        const victim = leaders.length > 0 && r.float() < 0.6 ? leaders[r.int(leaders.length)]! : live[r.int(live.length)]!;
        if (victim.quorum!.role === 'LEADER') c.leaderCrashes!++;
        c.crashes!++;
        qs.crash(victim.slot, 'sweep');
      } else if (x < 0.45 && dead.length > 0) {
        const i = dead[r.int(dead.length)]!;
        if (qs.alive(i)) qs.crash(i.slot, 'sweep: the stopped daemon exits');
        c.restarts!++;
        qs.restart(i.slot);
      } else if (x < 0.6 && members > 1) {
        const a = r.int(members);
        if (r.float() < 0.5) {
          for (let b = 0; b < members; b++) if (b !== a) qs.sim.partition(qs.name(a), qs.name(b));
        } else {
          const b = (a + 1 + r.int(members - 1)) % members;
          qs.sim.partition(qs.name(a), qs.name(b));
        }
        c.partitions!++;
      } else if (x < 0.72) {
        qs.sim.healAll();
        c.heals!++;
      } else if (x < 0.77 && live.length > 0) {
        const i = live[r.int(live.length)]!;
        c.shutdowns!++;
        void i.quorum!.shutdown().catch((e: Error) => errors.push(`shutdown of ${i.name}: ${e.message}`));
      } else if (x < 0.8 && live.length > 0) {
        const i = live[r.int(live.length)]!;
        c.abandons!++;
        i.quorum!.abandon();
      } else if (x < 0.84 && fenceFailUntil < 0) {
        qs.failFences = true;
        fenceFailUntil = qs.sim.clock.nowMs() + 1000 + r.int(20_000);
        c.fenceFailSpells!++;
      }
    }
    // Quiet: faults stop, everything heals and comes back.
    qs.failFences = false;
    qs.sim.healAll();
    qs.dnet.defaultFaults = QUIET_DATAGRAMS;
    await qs.run(1000);
    for (let s = 0; s < members; s++) {
      const i = qs.current[s]!;
      if (qs.live().includes(i)) continue;
      if (qs.alive(i)) qs.crash(s, 'quiet phase: the stopped daemon exits');
      qs.restart(s);
    }
    const ok = await qs.runUntil(() => qs.live().length === members && qs.stable() !== null, 120_000);
    if (!ok) {
      errors.push(`no stable leader 120 s after the faults stopped: ${JSON.stringify(qs.live().map((i) => {
        const st = i.quorum!.status();
        return [st.slot, st.role, st.term, st.leaderSlot, st.server];
      }))} (${qs.live().length} of ${members} live)`);
    } else {
      const l = qs.stable()!;
      const adv = await qs.serverInBlocks();
      if (adv === null || adv.slot !== l.slot || adv.term !== l.quorum!.term) {
        errors.push(`the quorum blocks advertise ${JSON.stringify(adv, (_k, v) => typeof v === 'bigint' ? v.toString() : v)}, ` +
          `the leader is slot ${l.slot} term ${l.quorum!.term}`);
      }
    }
  } catch (e) {
    errors.push(`exception: ${e instanceof Error ? e.stack ?? e.message : String(e)}`);
  }
  errors.push(...qs.violations);
  const q = { candidacies: 0, elected: 0, duplicateVotes: 0, twoLeaders: 0, stepDowns: 0, staleMessages: 0, invalid: 0, resignations: 0 };
  for (const i of qs.all) {
    if (i.quorum === null) continue;
    const k = i.quorum.counters;
    q.candidacies += k.candidacies;
    q.elected += k.elected;
    q.duplicateVotes += k.duplicateVotes;
    q.twoLeaders += k.twoLeaders;
    q.stepDowns += k.stepDowns;
    q.staleMessages += k.staleMessages;
    q.resignations += k.resignations;
    q.invalid += Object.values(k.invalid).reduce((a, b) => a + b, 0);
  }
  const counters = {
    ...c, ...qs.counters, ...q,
    liveFenced: qs.fenceCalls.filter((f) => f.killed).length,
    dgramDropped: qs.dnet.counters.dropped, dgramDuplicated: qs.dnet.counters.duplicated, dgramDelayed: qs.dnet.counters.delayed,
    [`members${members}`]: 1,
  };
  return {
    seed, members, errors, trace: qs.sim.trace.concat(errors.length > 0 ? qs.logs.slice(-200) : []),
    simMs: qs.sim.clock.nowMs(), events: qs.sim.events, counters,
  };
}

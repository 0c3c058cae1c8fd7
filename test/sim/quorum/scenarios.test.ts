/*
 * Goal: the quorum election (PROTOCOL.md 2) and the server-start fencing
 * (2.6) behave as specified in scripted scenarios, with real Quorum
 * services over the simulated datagram network, the FakeClock and one
 * shared metadata device (cluster.ts):
 *   - 1, 2, 3 and 5 members elect exactly one leader that everyone
 *     follows, one leader per term, and the quorum blocks advertise it;
 *   - when the leader dies (its heartbeats stop), another is elected after
 *     the 5 s heartbeat timeout plus election rounds, and it fences the
 *     dead leader, found through the quorum blocks, before it serves;
 *   - a partitioned leader is fenced by the majority's new leader; a
 *     minority (3+ slots) never elects; healing converges;
 *   - drops, duplicates and delays never give two leaders one term, and a
 *     leader follows once they stop;
 *   - two mounts on one slot are detected through the quorum block;
 *   - a failing fence blocks every server start, with a log line naming
 *     the rid, the reason and the agent's output, until fencing works;
 *   - a clean shutdown resigns (STOP, RESIGNATION, END) so the others
 *     elect at once; an abandoned member writes and sends nothing more;
 *   - garbage datagrams are counted and change nothing.
 * Every scenario runs under a seed; a failure prints it, and
 * SCOUTFS_SEED=N replays that seed (node dist/test/sim/quorum/replay.js N
 * prints the trace of the random sweep's seeds).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { withSeed } from '../../../src/net/sim.js';
import { QUORUM_EVENT } from '../../../src/format/quorum.js';
import { readQuorumBlock } from '../../../src/quorum/blocks.js';
import { QuorumSim, type Incarnation } from './cluster.js';

const HB_TIMEOUT = 5000;
const ELECTION_MAX = 349;
const replay = 'node --test dist/test/sim/quorum/scenarios.test.js';

async function stableLeader(qs: QuorumSim, limitMs = 30_000): Promise<Incarnation> {
  const ok = await qs.runUntil(() => qs.stable() !== null, limitMs);
  assert.ok(ok, `no stable leader within ${limitMs} ms: ${JSON.stringify(qs.live().map((i) => i.quorum!.status()).map((s) => [s.slot, s.role, s.term, s.server]))}`);
  qs.assertNoViolations();
  return qs.stable()!;
}

async function assertBlocksAdvertise(qs: QuorumSim, l: Incarnation): Promise<void> {
  assert.deepEqual(await qs.serverInBlocks(), { slot: l.slot, term: l.quorum!.term }, 'the quorum blocks advertise the leader');
}

for (const n of [1, 2, 3, 5]) {
  test(`${n} member${n > 1 ? 's' : ''}: one leader, followed by all, one leader per term, advertised in the blocks`, async () => {
    for (let seed = 1n; seed <= 12n; seed++) {
      await withSeed(seed, replay, async () => {
        const qs = await QuorumSim.create(seed, { members: n, oneLeaderPerTerm: true });
        await qs.startAll();
        const l = await stableLeader(qs);
        await assertBlocksAdvertise(qs, l);
        const st = l.quorum!.status();
        assert.equal(st.role, 'LEADER');
        assert.equal(st.leaderSlot, l.slot);
        assert.equal(st.votesNeeded, n < 3 ? 1 : Math.floor(n / 2) + 1);
        assert.deepEqual(st.server, { term: st.term, state: 'running' });
        assert.equal(st.counters.elected, 1);
        assert.equal(st.failed, null);
        // It stays that way: heartbeats keep followers from elections.
        const term = l.quorum!.term;
        const stood = qs.live().map((i) => i.quorum!.counters.candidacies);
        await qs.run(20_000);
        assert.equal(qs.stable(), l);
        assert.equal(l.quorum!.term, term);
        qs.live().forEach((i, k) => assert.equal(i.quorum!.counters.candidacies, stood[k], `${i.name} never stood again`));
        assert.ok(l.quorum!.counters.heartbeatsSent >= 200 || n === 1);
        qs.assertNoViolations();
      });
    }
  });
}

for (const n of [2, 3, 5]) {
  test(`${n} members: the leader dies, another is elected after the heartbeat timeout and fences it before serving`, async () => {
    for (let seed = 1n; seed <= 8n; seed++) {
      await withSeed(seed, replay, async () => {
        const qs = await QuorumSim.create(seed, { members: n, oneLeaderPerTerm: true });
        await qs.startAll();
        const old = await stableLeader(qs);
        await qs.run(1000);
        const t0 = qs.sim.clock.nowMs();
        qs.crash(old.slot, 'test kills the leader');
        const l = await stableLeader(qs);
        const elapsed = qs.sim.clock.nowMs() - t0;
        assert.notEqual(l, old);
        // Followers wait out the heartbeat timeout, then a few election rounds at most.
        assert.ok(elapsed >= HB_TIMEOUT - 100, `elected after ${elapsed} ms, before the heartbeat timeout`);
        assert.ok(elapsed <= HB_TIMEOUT + 6 * ELECTION_MAX + 200, `elected after ${elapsed} ms`);
        const fence = qs.fenceCalls.find((f) => f.target.rid === old.rid);
        assert.ok(fence, 'the dead leader was fenced');
        assert.equal(fence.target.reason, 'quorum_block_leader');
        assert.equal(fence.target.addr, `127.0.0.${old.slot + 1}`);
        assert.equal(fence.byName, l.name);
        assert.ok(fence.atMs <= l.server!.readyAtMs!, 'fenced before the new server was ready');
        await assertBlocksAdvertise(qs, l);
        // After reclaiming the old leader, the new one wrote FENCE with its term.
        const blk = await readQuorumBlock(qs.medium, qs.sb.hdr.fsid, l.slot);
        assert.equal(blk.events[QUORUM_EVENT.FENCE]!.term, l.quorum!.term);
        qs.assertNoViolations();
      });
    }
  });
}

test('a lone member restarted after a crash fences its previous incarnation, then serves', async () => {
  await withSeed(3n, replay, async () => {
    const qs = await QuorumSim.create(3n, { members: 1, oneLeaderPerTerm: true });
    await qs.startAll();
    const first = await stableLeader(qs);
    qs.crash(0, 'power cut');
    await qs.run(100);
    qs.restart(0);
    const second = await stableLeader(qs);
    assert.notEqual(second.rid, first.rid);
    assert.ok(second.quorum!.term > first.quorum!.term, 'the starting term comes from the blocks');
    const fence = qs.fenceCalls.find((f) => f.target.rid === first.rid);
    assert.ok(fence && !fence.killed, 'the previous incarnation was fenced (already dead)');
  });
});

test('3 members: a partitioned leader is fenced by the new leader of the majority before it serves', async () => {
  for (let seed = 1n; seed <= 8n; seed++) {
    await withSeed(seed, replay, async () => {
      const qs = await QuorumSim.create(seed, { members: 3, oneLeaderPerTerm: true });
      await qs.startAll();
      const old = await stableLeader(qs);
      for (let s = 0; s < 3; s++) if (s !== old.slot) qs.sim.partition(old.name, qs.name(s));
      const ok = await qs.runUntil(() => qs.readyLog.some((r) => r.inc !== old), 20_000);
      assert.ok(ok, 'the majority elected and started a server');
      const l = qs.readyLog.find((r) => r.inc !== old)!.inc;
      const fence = qs.fenceCalls.find((f) => f.target.rid === old.rid);
      assert.ok(fence && fence.killed, 'the old leader was alive, serving, and was fenced');
      assert.ok(fence.atMs <= l.server!.readyAtMs!);
      assert.ok(!qs.alive(old));
      qs.sim.healAll();
      qs.restart(old.slot);
      const after = await stableLeader(qs);
      await assertBlocksAdvertise(qs, after);
      qs.assertNoViolations();
    });
  }
});

test('3 and 5 members: a minority partition never elects; healing converges', async () => {
  for (const [n, minority] of [[3, [2]], [5, [0, 1]]] as const) {
    for (let seed = 1n; seed <= 5n; seed++) {
      await withSeed(seed, replay, async () => {
        const qs = await QuorumSim.create(seed, { members: n, oneLeaderPerTerm: true });
        await qs.startAll();
        // Partition before anyone leads.
        for (const a of minority) for (let b = 0; b < n; b++) if (!(minority as readonly number[]).includes(b)) qs.sim.partition(qs.name(a), qs.name(b));
        await qs.run(30_000);
        for (const a of minority) {
          const q = qs.current[a]!.quorum!;
          assert.equal(q.counters.elected, 0, `minority member q${a} elected itself`);
          assert.ok(q.counters.candidacies > 10, `minority member q${a} kept standing (${q.counters.candidacies})`);
        }
        const majorityLeaders = qs.leaders().filter((i) => !(minority as readonly number[]).includes(i.slot));
        assert.equal(majorityLeaders.length, 1, 'the majority has one leader');
        assert.ok(majorityLeaders[0]!.quorum!.serverReady);
        qs.sim.healAll();
        const l = await stableLeader(qs);
        await assertBlocksAdvertise(qs, l);
        qs.assertNoViolations();
      });
    }
  }
});

test('3 and 5 members: drops, duplicates and delays never elect two leaders in a term; a leader follows once they stop', async () => {
  for (const n of [3, 5]) {
    for (let seed = 1n; seed <= 6n; seed++) {
      await withSeed(seed, replay, async () => {
        const qs = await QuorumSim.create(seed, {
          members: n, oneLeaderPerTerm: true,
          faults: { latencyMs: [0, 30], dropRate: 0.3, dupRate: 0.3, delayRate: 0.3, delayMs: [50, 3000] },
        });
        await qs.startAll();
        await qs.run(40_000);
        assert.ok(qs.dnet.counters.dropped > 0 && qs.dnet.counters.duplicated > 0 && qs.dnet.counters.delayed > 0);
        qs.dnet.defaultFaults = { latencyMs: [1, 1], dropRate: 0, dupRate: 0, delayRate: 0, delayMs: [0, 0] };
        const l = await stableLeader(qs, 60_000);
        await assertBlocksAdvertise(qs, l);
        qs.assertNoViolations();
      });
    }
  }
});

test('two mounts on one slot: the first one to write after the other began fails with EIO, the rest go on', async () => {
  await withSeed(7n, replay, async () => {
    const qs = await QuorumSim.create(7n, { members: 3, oneLeaderPerTerm: true });
    await qs.startAll();
    const l = await stableLeader(qs);
    const slot = (l.slot + 1) % 3;
    const orig = qs.current[slot]!;
    // A second mount configured with the same slot, on another host with the same address.
    const dup = qs.startMember(slot, { host: `q${slot}dup` });
    await qs.runUntil(() => dup.quorum !== null, 1000);
    // The next election makes the original write TERM: its BEGIN was overwritten.
    qs.crash(l.slot, 'leader dies');
    await qs.runUntil(() => orig.failed !== null, 20_000);
    assert.match(orig.failed!.message, new RegExp(`another mount is using quorum slot ${slot}`));
    assert.equal(orig.quorum!.status().failed, orig.failed!.message);
    assert.ok(qs.logs.some((line) => line.includes(`q${slot}: quorum slot ${slot}: worker failed:`)), 'logged');
    // The new mount of that slot and the third member elect a leader.
    qs.current[slot] = dup;
    const next = await stableLeader(qs);
    assert.notEqual(next, orig);
  });
});

test('a failing fence blocks the server start and says so, until fencing works again', async () => {
  await withSeed(11n, replay, async () => {
    const qs = await QuorumSim.create(11n, { members: 3, oneLeaderPerTerm: true });
    await qs.startAll();
    const old = await stableLeader(qs);
    const oldTerm = old.quorum!.term;
    const readyBefore = qs.counters.serversReady;
    qs.failFences = true;
    qs.crash(old.slot, 'leader dies');
    await qs.run(30_000);
    assert.equal(qs.counters.serversReady, readyBefore, 'no server started while the fence fails');
    assert.ok(qs.counters.fencesFailed >= 2 && qs.counters.serverStartsFailed >= 2, JSON.stringify(qs.counters));
    const rid = old.rid.toString(16).padStart(16, '0');
    const line = qs.logs.find((x) => x.includes(`FAILED to fence rid ${rid}`));
    assert.ok(line, 'the failure is logged');
    assert.match(line, new RegExp(`reason quorum_block_leader, addr 127\\.0\\.0\\.${old.slot + 1}\\) with sim power switch: sim power switch for 127\\.0\\.0\\.${old.slot + 1} unreachable`));
    assert.ok(qs.logs.some((x) => /server start for term \d+ failed: fence: FAILED to fence rid/.test(x)));
    // Every failed start wrote STOP: only the dead leader's ELECT is left
    // advertising a server (until a new one is elected and serves).
    assert.deepEqual(await qs.serverInBlocks(), { slot: old.slot, term: oldTerm });
    assert.ok(qs.live().some((i) => i.quorum!.counters.resignations > 0), 'failed leaders resigned');
    qs.failFences = false;
    const l = await stableLeader(qs);
    assert.ok(qs.fenceCalls.some((f) => f.target.rid === old.rid));
    await assertBlocksAdvertise(qs, l);
  });
});

test('clean shutdown: STOP, RESIGNATION and END; the others elect without waiting out the heartbeat timeout', async () => {
  await withSeed(5n, replay, async () => {
    const qs = await QuorumSim.create(5n, { members: 3, oneLeaderPerTerm: true });
    await qs.startAll();
    const old = await stableLeader(qs);
    const term = old.quorum!.term;
    const t0 = qs.sim.clock.nowMs();
    let done = false;
    void old.quorum!.shutdown().then(() => { done = true; });
    await qs.runUntil(() => done, 5000);
    assert.ok(done);
    const blk = await readQuorumBlock(qs.medium, qs.sb.hdr.fsid, old.slot);
    assert.equal(blk.events[QUORUM_EVENT.STOP]!.term, term);
    assert.equal(blk.events[QUORUM_EVENT.END]!.term, term);
    assert.equal(blk.events[QUORUM_EVENT.END]!.rid, old.rid);
    assert.equal(old.server!.state, 'stopped');
    // The others got the resignation: a new leader well before 5 s.
    const others = () => qs.live().filter((i) => i !== old);
    const ok = await qs.runUntil(() => others().some((i) => i.quorum!.serverReady), 10_000);
    assert.ok(ok);
    assert.ok(qs.sim.clock.nowMs() - t0 < HB_TIMEOUT, `re-elected after ${qs.sim.clock.nowMs() - t0} ms`);
    assert.ok(others().some((i) => i.quorum!.counters.resignationsReceived > 0));
    // The shut-down leader ended cleanly: nothing to fence.
    assert.ok(!qs.fenceCalls.some((f) => f.target.rid === old.rid));
  });
});

test('abandon (forced unmount): nothing more is written or sent; the others wait out the heartbeat timeout', async () => {
  await withSeed(6n, replay, async () => {
    const qs = await QuorumSim.create(6n, { members: 3, oneLeaderPerTerm: true });
    await qs.startAll();
    const old = await stableLeader(qs);
    const before = await readQuorumBlock(qs.medium, qs.sb.hdr.fsid, old.slot);
    const sent = old.quorum!.counters.heartbeatsSent;
    const t0 = qs.sim.clock.nowMs();
    old.quorum!.abandon();
    const ok = await qs.runUntil(() => qs.readyLog.some((r) => r.inc !== old), 20_000);
    assert.ok(ok);
    assert.ok(qs.sim.clock.nowMs() - t0 >= HB_TIMEOUT - 100);
    assert.equal(old.quorum!.counters.heartbeatsSent, sent);
    const after = await readQuorumBlock(qs.medium, qs.sb.hdr.fsid, old.slot);
    assert.equal(after.write_nr, before.write_nr, 'the abandoned member wrote nothing');
    assert.ok(qs.fenceCalls.some((f) => f.target.rid === old.rid), 'and it was fenced');
  });
});

test('garbage datagrams are counted by reason and change nothing', async () => {
  await withSeed(9n, replay, async () => {
    const qs = await QuorumSim.create(9n, { members: 3, oneLeaderPerTerm: true });
    await qs.startAll();
    const l = await stableLeader(qs);
    const term = l.quorum!.term;
    const rogue = await qs.dnet.transport('rogue').bind('127.0.0.99:9');
    const r = qs.sim.fork('rogue');
    for (let k = 0; k < 300; k++) {
      for (let s = 0; s < 3; s++) {
        const len = k % 3 === 0 ? 32 : r.int(64);
        rogue.send(`127.0.0.${s + 1}:7000`, r.bytes(len));
      }
      await qs.run(10);
    }
    assert.equal(qs.stable(), l);
    assert.equal(l.quorum!.term, term);
    for (const i of qs.live()) {
      const inv = i.quorum!.counters.invalid;
      assert.ok(inv.size > 0 && inv.crc > 0, JSON.stringify(inv));
    }
  });
});

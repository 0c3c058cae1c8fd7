/*
 * Goal: the pure election state machine does what PROTOCOL.md 2.5 says,
 * step by step, and our documented additions (no vote in the starting
 * term, a candidate has voted for itself, the two-slot rule, the two-leader
 * tie-break) do what election.ts's comment promises.  Time is a number
 * passed in; randomness a SeededRandom; so every expectation is exact.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeededRandom } from '../../../src/runtime/random.js';
import { QUORUM_MSG } from '../../../src/format/quorum.js';
import { Election, type ElectionAction } from '../../../src/quorum/election.js';

const { REQUEST_VOTE: RV, VOTE, HEARTBEAT: HB, RESIGNATION: RES } = QUORUM_MSG;

function member(slot: number, present: number[], votesNeeded: number, seed = 1): Election {
  return new Election({ slot, present, votesNeeded, random: new SeededRandom(seed) });
}

const kinds = (a: ElectionAction[]): string[] => a.map((x) => {
  switch (x.kind) {
    case 'broadcast': return `bcast ${['RV', 'VOTE', 'HB', 'RES'][x.type]} ${x.term}`;
    case 'send': return `send ${['RV', 'VOTE', 'HB', 'RES'][x.type]} ${x.term} to ${x.to}`;
    case 'write': return `write ${x.event} ${x.term}`;
    case 'startServer': return `start ${x.term}`;
    case 'stopServer': return 'stop';
    case 'warn': return `warn ${x.what}`;
  }
});

test('one slot: the election timeout elects us at once, then heartbeats every 100 ms', () => {
  const e = member(0, [0], 1);
  e.init(0, 4n, false);
  assert.ok(e.timeoutMs >= 250 && e.timeoutMs <= 349, `election timeout ${e.timeoutMs}`);
  assert.deepEqual(kinds(e.step(100, null, false)), [], 'nothing before the timeout');
  const t = e.timeoutMs;
  assert.deepEqual(kinds(e.step(t, null, false)), ['bcast RV 5', 'write TERM 5', 'bcast HB 5', 'write ELECT 5', 'start 5']);
  assert.equal(e.role, 'LEADER');
  assert.equal(e.timeoutMs, t + 100);
  assert.deepEqual(kinds(e.step(t + 50, null, true)), []);
  assert.deepEqual(kinds(e.step(t + 100, null, true)), ['bcast HB 5']);
  assert.equal(e.timeoutMs, t + 200);
  // Server stopped (start failed or it aborted): resign, election timeout.
  assert.deepEqual(kinds(e.step(t + 120, null, false)), ['bcast RES 5']);
  assert.equal(e.role, 'FOLLOWER');
  assert.ok(e.timeoutMs >= t + 120 + 250 && e.timeoutMs <= t + 120 + 349);
});

test('an advertised server makes the first timeout the 5 s heartbeat timeout', () => {
  const e = member(1, [0, 1, 2], 2);
  e.init(1000, 9n, true);
  assert.equal(e.timeoutMs, 6000);
  assert.equal(e.term, 9n);
});

test('three slots: followers vote once per term, candidates never, a majority elects', () => {
  const a = member(0, [0, 1, 2], 2, 1);
  const b = member(1, [0, 1, 2], 2, 2);
  a.init(0, 0n, false);
  b.init(0, 0n, false);
  const acts = a.step(a.timeoutMs, null, false);
  assert.deepEqual(kinds(acts), ['bcast RV 1', 'write TERM 1']);
  assert.equal(a.role, 'CANDIDATE');
  // b adopts term 1 (durably: TERM before VOTE) and votes.
  assert.deepEqual(kinds(b.step(10, { type: RV, term: 1n, from: 0 }, false)), ['write TERM 1', 'send VOTE 1 to 0']);
  assert.equal(b.voteFor, 0);
  // One vote per term: slot 2's request of the same term gets nothing.
  assert.deepEqual(kinds(b.step(11, { type: RV, term: 1n, from: 2 }, false)), []);
  // Granting a vote does not reset b's timeout (still the election timeout from term adoption).
  const bt = b.timeoutMs;
  assert.deepEqual(kinds(b.step(12, { type: RV, term: 1n, from: 0 }, false)), []);
  assert.equal(b.timeoutMs, bt);
  // A candidate does not vote.
  assert.deepEqual(kinds(a.step(a.timeoutMs - 1, { type: RV, term: 1n, from: 2 }, false)), []);
  // The vote elects a: HEARTBEAT, ELECT, start, in that order.
  assert.deepEqual(kinds(a.step(20, { type: VOTE, term: 1n, from: 1 }, false)), ['bcast HB 1', 'write ELECT 1', 'start 1']);
  assert.equal(a.role, 'LEADER');
  assert.equal(a.counters.elected, 1);
  // b hears the heartbeat: timeout = now + 5 s, leader noted.
  assert.deepEqual(kinds(b.step(21, { type: HB, term: 1n, from: 0 }, false)), []);
  assert.equal(b.timeoutMs, 5021);
  assert.equal(b.leaderSlot, 0);
});

test('stale terms are ignored; a greater term demotes a leader and stops its server', () => {
  const a = member(0, [0, 1, 2], 2);
  a.init(0, 0n, false);
  a.step(a.timeoutMs, null, false);
  a.step(400, { type: VOTE, term: 1n, from: 2 }, false);
  assert.equal(a.role, 'LEADER');
  assert.deepEqual(kinds(a.step(401, { type: HB, term: 0n, from: 1 }, true)), []);
  assert.equal(a.counters.staleMessages, 1);
  assert.equal(a.role, 'LEADER');
  // A request for a greater term: stop the server, adopt, vote.
  assert.deepEqual(kinds(a.step(402, { type: RV, term: 3n, from: 1 }, true)), ['stop', 'write TERM 3', 'send VOTE 3 to 1']);
  assert.equal(a.role, 'FOLLOWER');
  assert.equal(a.term, 3n);
  // A heartbeat of a greater term: timeout is the heartbeat timeout.
  assert.deepEqual(kinds(a.step(500, { type: HB, term: 4n, from: 2 }, false)), ['write TERM 4']);
  assert.equal(a.timeoutMs, 5500);
});

test('a resignation of our term starts an election timeout; of another term it is ignored', () => {
  const b = member(1, [0, 1, 2], 2);
  b.init(0, 0n, false);
  b.step(1, { type: HB, term: 2n, from: 0 }, false);
  assert.equal(b.timeoutMs, 5001);
  b.step(2, { type: RES, term: 1n, from: 0 }, false);
  assert.equal(b.timeoutMs, 5001, 'stale resignation ignored');
  b.step(3, { type: RES, term: 2n, from: 0 }, false);
  assert.ok(b.timeoutMs >= 253 && b.timeoutMs <= 352);
  assert.equal(b.leaderSlot, -1);
});

test('a second vote from one slot warns that two mounts use it', () => {
  const a = member(0, [0, 1, 2, 3, 4], 3);
  a.init(0, 0n, false);
  a.step(a.timeoutMs, null, false);
  assert.deepEqual(kinds(a.step(300, { type: VOTE, term: 1n, from: 1 }, false)), []);
  assert.deepEqual(kinds(a.step(301, { type: VOTE, term: 1n, from: 1 }, false)), ['warn duplicateVote']);
  assert.equal(a.counters.duplicateVotes, 1);
  assert.equal(a.role, 'CANDIDATE', 'a duplicate is not a second vote');
});

test('no vote in the starting term (a restarted member cannot vote twice in one term)', () => {
  const b = member(1, [0, 1, 2], 2);
  b.init(0, 6n, false);
  assert.deepEqual(kinds(b.step(5, { type: RV, term: 6n, from: 0 }, false)), []);
  assert.deepEqual(kinds(b.step(6, { type: RV, term: 7n, from: 0 }, false)), ['write TERM 7', 'send VOTE 7 to 0']);
});

test('a candidate that falls back in its term does not vote in it', () => {
  const a = member(0, [0, 1, 2], 2);
  a.init(0, 0n, false);
  a.step(a.timeoutMs, null, false);
  a.step(400, { type: VOTE, term: 1n, from: 1 }, false);
  a.step(410, null, false); // leader whose server stopped: resigns
  assert.equal(a.role, 'FOLLOWER');
  assert.deepEqual(kinds(a.step(420, { type: RV, term: 1n, from: 2 }, false)), []);
});

test('two slots: the other member\'s vote elects at once; alone, the uncontested timeout does', () => {
  const a = member(0, [0, 1], 1, 3);
  const b = member(1, [0, 1], 1, 4);
  a.init(0, 0n, false);
  b.init(0, 0n, false);
  const t = a.timeoutMs;
  assert.deepEqual(kinds(a.step(t, null, false)), ['bcast RV 1', 'write TERM 1'], 'own vote alone does not elect yet');
  assert.equal(a.role, 'CANDIDATE');
  assert.deepEqual(kinds(b.step(t + 1, { type: RV, term: 1n, from: 0 }, false)), ['write TERM 1', 'send VOTE 1 to 0']);
  assert.deepEqual(kinds(a.step(t + 2, { type: VOTE, term: 1n, from: 1 }, false)), ['bcast HB 1', 'write ELECT 1', 'start 1']);

  // Alone (the peer is dead): the candidacy's own timeout elects it.
  const c = member(0, [0, 1], 1, 5);
  c.init(0, 0n, false);
  c.step(c.timeoutMs, null, false);
  const t2 = c.timeoutMs;
  assert.deepEqual(kinds(c.step(t2 - 1, null, false)), []);
  assert.deepEqual(kinds(c.step(t2, null, false)), ['bcast HB 1', 'write ELECT 1', 'start 1']);
});

test('two slots: a contested candidacy does not elect itself; the next term settles it', () => {
  const a = member(0, [0, 1], 1, 6);
  const b = member(1, [0, 1], 1, 7);
  a.init(0, 0n, false);
  b.init(0, 0n, false);
  a.step(400, null, false);
  b.step(400, null, false);
  assert.equal(a.term, 1n);
  assert.equal(b.term, 1n);
  a.step(401, { type: RV, term: 1n, from: 1 }, false);
  b.step(401, { type: RV, term: 1n, from: 0 }, false);
  assert.ok(a.contested && b.contested);
  // a's timeout: a new candidacy in term 2 instead of electing itself.
  assert.deepEqual(kinds(a.step(a.timeoutMs, null, false)), ['bcast RV 2', 'write TERM 2']);
  assert.deepEqual(kinds(b.step(a.timeoutMs + 1, { type: RV, term: 2n, from: 0 }, false)), ['write TERM 2', 'send VOTE 2 to 0']);
  assert.deepEqual(kinds(a.step(a.timeoutMs - 1, { type: VOTE, term: 2n, from: 1 }, false)), ['bcast HB 2', 'write ELECT 2', 'start 2']);
});

test('two leaders of one term: the greater slot steps down', () => {
  const a = member(0, [0, 1], 1, 8);
  const b = member(1, [0, 1], 1, 9);
  for (const m of [a, b]) {
    m.init(0, 0n, false);
    m.step(m.timeoutMs, null, false);
    m.step(m.timeoutMs, null, false);
    assert.equal(m.role, 'LEADER');
  }
  const ta = a.timeoutMs - 1;
  const tb = b.timeoutMs - 1;
  assert.deepEqual(kinds(a.step(ta, { type: HB, term: 1n, from: 1 }, true)), ['warn twoLeaders']);
  assert.equal(a.role, 'LEADER');
  assert.deepEqual(kinds(b.step(tb, { type: HB, term: 1n, from: 0 }, true)), ['warn twoLeaders', 'stop']);
  assert.equal(b.role, 'FOLLOWER');
  assert.equal(b.timeoutMs, tb + 5000);
});

/*
 * The election state machine of one quorum member (PROTOCOL.md 2.5), pure:
 * no I/O, no timers.  The service (quorum.ts) feeds it one input at a time,
 * (now, at most one received message, whether our server is running), and
 * executes the actions it returns, in order.  Time comes in as a number,
 * randomness from the injected Random, so a FakeClock and a SeededRandom
 * replay it exactly.
 *
 * State: role (FOLLOWER, CANDIDATE, LEADER), term, voteFor (a slot or -1),
 * voteBits (a bitmap of the slots that voted for us), timeoutMs (absolute
 * time of the next timeout).  Timers (PROTOCOL.md 2.3): election timeout =
 * now + 250 ms + random(0..99) ms; heartbeat interval 100 ms; heartbeat
 * timeout 5 s.
 *
 * init(): FOLLOWER, term = the starting term read from the quorum blocks,
 * timeout = heartbeat timeout if the blocks advertise a server, else an
 * election timeout.  (The service writes BEGIN.)
 *
 * step(), in the reference's order:
 *   1. a message with term < ours is ignored;
 *   2. LEADER whose server stopped: FOLLOWER, election timeout, broadcast
 *      RESIGNATION(term);
 *   3. a message with term > ours: a LEADER stops its server; FOLLOWER,
 *      adopt the term, clear votes, timeout = heartbeat timeout if it was a
 *      HEARTBEAT else an election timeout; write TERM;
 *   4. not LEADER and the timeout passed: CANDIDATE, term + 1, voteBits =
 *      our own bit, broadcast REQUEST_VOTE, election timeout, write TERM
 *      (voteFor: see below);
 *   5. CANDIDATE receiving VOTE: set the sender's bit (a bit already set
 *      is a warning: two mounts use one slot, or the network duplicated
 *      the datagram; the two cannot be told apart);
 *   6. CANDIDATE with enough votes: LEADER, broadcast HEARTBEAT, timeout =
 *      heartbeat interval, write ELECT, start the server with this term;
 *   7. LEADER whose timeout passed: broadcast HEARTBEAT, re-arm;
 *   8. any HEARTBEAT: timeout = heartbeat timeout (and a CANDIDATE of
 *      that term becomes FOLLOWER: see below);
 *   9. FOLLOWER receiving RESIGNATION of our term: election timeout;
 *  10. FOLLOWER receiving REQUEST_VOTE while voteFor == -1: vote for the
 *      sender (unicast VOTE of our term); granting a vote does not reset
 *      our timeout.  Candidates never vote.
 * Actions are returned in this order, so a TERM write always precedes the
 * VOTE it allows, and an ELECT write precedes the server start.
 *
 * Decisions beyond the reference (listed in the report):
 *   - A candidate has voted for itself (voteFor = our slot, where the
 *     reference clears it), so a candidate or leader that falls back to
 *     FOLLOWER in the same term (a resignation, a lost two-leader
 *     tie-break) cannot vote for a second leader of that term.
 *   - A CANDIDATE that hears a HEARTBEAT of its own term (it lost the
 *     election) becomes a FOLLOWER of that leader.  The reference leaves
 *     it a candidate, deaf to a RESIGNATION of that term (step 9 is for
 *     followers), until its 5 s timeout; as a follower its status names
 *     the leader and a resignation starts the next election at once.  It
 *     still cannot vote in that term (it voted for itself).
 *   - No vote in the starting term.  The reference forgets voteFor on
 *     restart, so a member that voted in term T, crashed and came back at
 *     starting term T could vote again in T and elect a second leader of
 *     T.  Terms a member was in are on disk (TERM is durable before it
 *     votes), so starting with voteFor = our own slot closes that hole; a
 *     candidate of that term times out and tries term + 1, where we vote.
 *   - Two present slots (votes_needed 1 with another member): the
 *     reference lets each candidate elect itself at once, so two members
 *     whose election timeouts fall within one message latency both lead
 *     the same term and fence each other.  Here such a candidate wins at
 *     once only with the other member's vote; with its own vote alone it
 *     wins when its election timeout passes and nobody contested the term
 *     (no REQUEST_VOTE or HEARTBEAT of our term from another slot).  A
 *     contested candidacy times out into a new one (term + 1), which the
 *     other member, now behind, votes for.  A dead peer costs one election
 *     timeout; a partition still lets both sides lead (inherent with two,
 *     the fence decides).  One member alone elects itself at once.
 *   - Two leaders of one term (possible only with two slots) that hear
 *     each other: the one with the greater slot number steps down (stops
 *     its server, FOLLOWER with heartbeat timeout), so the pair converges
 *     instead of both leading forever.
 * The reference's loop sends no heartbeats while the server starts (13.3);
 * that is the service's business: ours keeps running this machine while
 * the server starts (quorum.ts).
 *
 * Owner: the service's loop; one call at a time.
 */
import assert from 'node:assert/strict';
import type { Random } from '../runtime/random.js';
import { QUORUM_MSG } from '../format/quorum.js';
import type { QMsg, QuorumMsgType } from './message.js';

export interface QuorumTiming {
  electionMinMs: number;
  electionRandMs: number;
  heartbeatIntervalMs: number;
  heartbeatTimeoutMs: number;
}

/** PROTOCOL.md 2.3. */
export const QUORUM_TIMING: Readonly<QuorumTiming> = Object.freeze({
  electionMinMs: 250,
  electionRandMs: 100,
  heartbeatIntervalMs: 100,
  heartbeatTimeoutMs: 5000,
});

export type Role = 'FOLLOWER' | 'CANDIDATE' | 'LEADER';

export type ElectionAction =
  | { kind: 'broadcast'; type: QuorumMsgType; term: bigint }
  | { kind: 'send'; to: number; type: QuorumMsgType; term: bigint }
  | { kind: 'write'; event: 'TERM' | 'ELECT'; term: bigint }
  | { kind: 'stopServer' }
  | { kind: 'startServer'; term: bigint }
  | { kind: 'warn'; what: 'duplicateVote' | 'twoLeaders'; text: string };

export interface ElectionCounters {
  candidacies: number;
  elected: number;
  termsAdopted: number;
  votesGranted: number;
  votesReceived: number;
  duplicateVotes: number;
  heartbeatsSent: number;
  heartbeatsReceived: number;
  resignations: number;
  resignationsReceived: number;
  staleMessages: number;
  twoLeaders: number;
  stepDowns: number;
}

export interface ElectionConfig {
  slot: number;
  present: readonly number[];
  votesNeeded: number;
  random: Random;
  timing?: Partial<QuorumTiming>;
}

function popcount(x: number): number {
  let n = 0;
  for (let v = x; v !== 0; v &= v - 1) n++;
  return n;
}

export class Election {
  role: Role = 'FOLLOWER';
  term = 0n;
  voteFor = -1;
  voteBits = 0;
  timeoutMs = 0;
  /** The slot we believe leads our term, or -1. */
  leaderSlot = -1;
  /** Two-slot rule: another slot is also after our term. */
  contested = false;
  readonly counters: ElectionCounters = {
    candidacies: 0, elected: 0, termsAdopted: 0, votesGranted: 0, votesReceived: 0, duplicateVotes: 0,
    heartbeatsSent: 0, heartbeatsReceived: 0, resignations: 0, resignationsReceived: 0, staleMessages: 0,
    twoLeaders: 0, stepDowns: 0,
  };
  readonly timing: QuorumTiming;
  private readonly slot: number;
  private readonly votesNeeded: number;
  private readonly soloElect: boolean;
  private readonly random: Random;
  private inited = false;

  constructor(c: ElectionConfig) {
    assert(c.present.includes(c.slot), `slot ${c.slot} is not present`);
    assert(c.votesNeeded >= 1 && c.votesNeeded <= c.present.length);
    this.slot = c.slot;
    this.votesNeeded = c.votesNeeded;
    this.soloElect = c.votesNeeded === 1 && c.present.length > 1;
    this.random = c.random;
    this.timing = { ...QUORUM_TIMING, ...c.timing };
  }

  electionTimeout(now: number): number {
    return now + this.timing.electionMinMs + this.random.int(this.timing.electionRandMs);
  }

  init(now: number, startTerm: bigint, serverAdvertised: boolean): void {
    assert(!this.inited);
    this.inited = true;
    this.role = 'FOLLOWER';
    this.term = startTerm;
    this.voteFor = this.slot; // no vote in the starting term: see the top comment
    this.voteBits = 0;
    this.timeoutMs = serverAdvertised ? now + this.timing.heartbeatTimeoutMs : this.electionTimeout(now);
  }

  step(now: number, input: QMsg | null, serverRunning: boolean): ElectionAction[] {
    assert(this.inited, 'step before init');
    const out: ElectionAction[] = [];
    let msg = input;
    const bit = (s: number): number => 1 << s;

    // 1
    if (msg !== null && msg.term < this.term) {
      this.counters.staleMessages++;
      msg = null;
    }
    // 2
    if (this.role === 'LEADER' && !serverRunning) {
      this.role = 'FOLLOWER';
      this.leaderSlot = -1;
      this.timeoutMs = this.electionTimeout(now);
      this.counters.resignations++;
      out.push({ kind: 'broadcast', type: QUORUM_MSG.RESIGNATION, term: this.term });
    }
    // 3
    if (msg !== null && msg.term > this.term) {
      if (this.role === 'LEADER') out.push({ kind: 'stopServer' });
      this.role = 'FOLLOWER';
      this.term = msg.term;
      this.voteFor = -1;
      this.voteBits = 0;
      this.contested = false;
      this.leaderSlot = -1;
      this.timeoutMs = msg.type === QUORUM_MSG.HEARTBEAT ? now + this.timing.heartbeatTimeoutMs : this.electionTimeout(now);
      this.counters.termsAdopted++;
      out.push({ kind: 'write', event: 'TERM', term: this.term });
    }
    // 4
    const soloWaiting = this.soloElect && this.role === 'CANDIDATE' && !this.contested;
    if (this.role !== 'LEADER' && now >= this.timeoutMs && !soloWaiting) {
      this.role = 'CANDIDATE';
      this.term += 1n;
      this.voteFor = this.slot;
      this.voteBits = bit(this.slot);
      this.contested = false;
      this.leaderSlot = -1;
      this.timeoutMs = this.electionTimeout(now);
      this.counters.candidacies++;
      out.push({ kind: 'broadcast', type: QUORUM_MSG.REQUEST_VOTE, term: this.term });
      out.push({ kind: 'write', event: 'TERM', term: this.term });
    }
    // 5, and the two-slot rule's contest
    if (this.role === 'CANDIDATE' && msg !== null && msg.term === this.term) {
      if (msg.type === QUORUM_MSG.VOTE) {
        this.counters.votesReceived++;
        if ((this.voteBits & bit(msg.from)) !== 0) {
          this.counters.duplicateVotes++;
          out.push({
            kind: 'warn', what: 'duplicateVote',
            text: `second vote from slot ${msg.from} in term ${this.term}: a duplicated datagram, or two mounts using quorum slot ${msg.from}`,
          });
        }
        this.voteBits |= bit(msg.from);
      } else if (msg.type === QUORUM_MSG.REQUEST_VOTE || msg.type === QUORUM_MSG.HEARTBEAT) {
        this.contested = true;
      }
    }
    // 6
    if (this.role === 'CANDIDATE') {
      const votes = popcount(this.voteBits);
      const won = this.soloElect
        ? votes >= 2 || (now >= this.timeoutMs && !this.contested)
        : votes >= this.votesNeeded;
      if (won) {
        this.role = 'LEADER';
        this.leaderSlot = this.slot;
        this.timeoutMs = now + this.timing.heartbeatIntervalMs;
        this.counters.elected++;
        this.counters.heartbeatsSent++;
        out.push({ kind: 'broadcast', type: QUORUM_MSG.HEARTBEAT, term: this.term });
        out.push({ kind: 'write', event: 'ELECT', term: this.term });
        out.push({ kind: 'startServer', term: this.term });
      }
    }
    // 7
    if (this.role === 'LEADER' && now >= this.timeoutMs) {
      this.timeoutMs = now + this.timing.heartbeatIntervalMs;
      this.counters.heartbeatsSent++;
      out.push({ kind: 'broadcast', type: QUORUM_MSG.HEARTBEAT, term: this.term });
    }
    // 8
    if (msg !== null && msg.type === QUORUM_MSG.HEARTBEAT) {
      this.counters.heartbeatsReceived++;
      if (this.role === 'LEADER') {
        // Two leaders of one term (two slots only): the greater slot steps down.
        this.counters.twoLeaders++;
        out.push({ kind: 'warn', what: 'twoLeaders', text: `slot ${msg.from} also leads term ${this.term}` });
        if (this.slot > msg.from) {
          this.counters.stepDowns++;
          out.push({ kind: 'stopServer' });
          this.role = 'FOLLOWER';
          this.leaderSlot = msg.from;
          this.timeoutMs = now + this.timing.heartbeatTimeoutMs;
        }
      } else {
        // A candidate that hears the leader of its term follows it.
        if (this.role === 'CANDIDATE') this.role = 'FOLLOWER';
        this.leaderSlot = msg.from;
        this.timeoutMs = now + this.timing.heartbeatTimeoutMs;
      }
    }
    // 9
    if (this.role === 'FOLLOWER' && msg !== null && msg.type === QUORUM_MSG.RESIGNATION && msg.term === this.term) {
      this.counters.resignationsReceived++;
      if (this.leaderSlot === msg.from) this.leaderSlot = -1;
      this.timeoutMs = this.electionTimeout(now);
    }
    // 10
    if (this.role === 'FOLLOWER' && msg !== null && msg.type === QUORUM_MSG.REQUEST_VOTE && this.voteFor === -1) {
      assert(msg.term === this.term);
      this.voteFor = msg.from;
      this.counters.votesGranted++;
      out.push({ kind: 'send', to: msg.from, type: QUORUM_MSG.VOTE, term: this.term });
    }
    return out;
  }
}

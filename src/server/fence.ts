/*
 * Fencing in the server (PROTOCOL.md 1.6, 1.7, 2.6 step 1, 3.10, 3.11).
 *
 * FenceRequests: the server's fence requests, one per rid, each with the
 * rid, the mount's IPv4 address and a reason (client_recovery: it did not
 * recover within the recovery timeout; client_reconnect: its connection
 * did not come back within the reconnect wait; quorum_block_leader: an
 * older leader found in the quorum blocks).  A request is created pending
 * and runs the configured FenceAgent (src/runtime/fenceagent.ts) at once;
 * it becomes fenced when the agent says ok, error when the agent fails or
 * when 30 s pass without an answer (the agent is then aborted).  Only the
 * agent and the timeout change a request's state, once.  An error is
 * logged in one line naming the rid, the reason, the address and the
 * agent's output.  Requests are the reference's sysfs fence directories
 * (3.11) without sysfs: the agent is called directly; status() lists them
 * for the mount's status output (rid, reason, addr, state, elapsed).
 * Starting a request for a rid that has one returns the existing request.
 * destroy() (the server stops) drops every request and aborts running
 * agents.
 *
 * ServerFencing: what one server instance (one term) owns.
 *   fenceOldLeaders(): 2.6 step 1, the first thing a new server does.
 *     Read every present slot's quorum block (an unreadable or invalid one
 *     fails the start); take the old leaders to fence (src/quorum/blocks.ts
 *     oldLeaders); a leader of a greater term than ours fails the start
 *     (someone newer leads: we must not serve).  None to fence: write our
 *     FENCE event now.  Else start a quorum_block_leader request for each
 *     and wait, up to 15 s, until all are fenced.  An error or the timeout
 *     fails the start (FenceError, whose message is the log line): unlike
 *     the reference (13.20), an errored fence never lets a server start.
 *     The fenced requests stay, for the reclaim worker.
 *   reclaimed(rid): the reclaim worker (3.10) ran reclaim_rid for a fenced
 *     request: free it, and when it was the last quorum_block_leader
 *     request, write our FENCE event (older leaders fenced and reclaimed).
 *   nextCompleted(): the reclaim worker's next fenced or errored request
 *     (an error means the server must abort: 1.6).
 *   request(rid, addr, reason): a fence for recovery or reconnect (1.6, 3.10).
 *
 * Time: the 30 s and 15 s bounds run on the injected Clock, so the
 * simulator drives them; the agent itself may use real time (a process).
 *
 * Owner: the server's main thread.
 */
import assert from 'node:assert/strict';
import { LifecycleError } from '../format/errors.js';
import type { BlockDevice } from '../runtime/device.js';
import type { Clock, Timer } from '../runtime/clock.js';
import { ridHex, type FenceAgent, type FenceReason } from '../runtime/fenceagent.js';
import type { QuorumConfig } from '../quorum/config.js';
import { oldLeaders, readQuorumBlocks, type OldLeader } from '../quorum/blocks.js';

export const FENCE_REQUEST_TIMEOUT_MS = 30_000;
export const LEADER_FENCE_WAIT_MS = 15_000;

export type FenceState = 'pending' | 'fenced' | 'error';

export interface FenceRequest {
  readonly rid: bigint;
  readonly addr: string;
  readonly reason: FenceReason;
  readonly startedMs: number;
  state: FenceState;
  /** The agent's output, or why the request errored. */
  output: string;
  /** Resolves when the state leaves pending. */
  readonly settled: Promise<void>;
}

export interface FenceCounters {
  started: number;
  fenced: number;
  errors: number;
  timeouts: number;
}

/** A fence that failed: its message is the log line (rid, reason, agent output). */
export class FenceError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FenceError';
  }
}

interface Live {
  req: FenceRequest;
  abort: AbortController;
  timer: Timer;
  settle: () => void;
}

export class FenceRequests {
  readonly counters: FenceCounters = { started: 0, fenced: 0, errors: 0, timeouts: 0 };
  private readonly clock: Clock;
  private readonly agent: FenceAgent;
  private readonly log: (line: string) => void;
  private readonly timeoutMs: number;
  private readonly reqs = new Map<bigint, Live>();
  private destroyed = false;

  constructor(o: { clock: Clock; agent: FenceAgent; log?: (line: string) => void; timeoutMs?: number }) {
    this.clock = o.clock;
    this.agent = o.agent;
    this.log = o.log ?? (() => {});
    this.timeoutMs = o.timeoutMs ?? FENCE_REQUEST_TIMEOUT_MS;
  }

  start(rid: bigint, addr: string, reason: FenceReason): FenceRequest {
    assert(!this.destroyed, 'fence request after the server stopped');
    const had = this.reqs.get(rid);
    if (had !== undefined) return had.req;
    let settle!: () => void;
    const settled = new Promise<void>((r) => { settle = r; });
    const req: FenceRequest = { rid, addr, reason, startedMs: this.clock.nowMs(), state: 'pending', output: '', settled };
    const abort = new AbortController();
    const live: Live = {
      req, abort, settle,
      timer: this.clock.setTimer(this.timeoutMs, () => {
        this.counters.timeouts++;
        this.finish(live, false, `no answer from the fence agent (${this.agent.name}) within ${this.timeoutMs / 1000} s`);
        abort.abort();
      }),
    };
    this.reqs.set(rid, live);
    this.counters.started++;
    this.log(`fence: fencing rid ${ridHex(rid)} (reason ${reason}, addr ${addr}) with ${this.agent.name}`);
    let p: Promise<{ ok: boolean; output: string }>;
    try {
      p = this.agent.fence({ rid, addr, reason }, abort.signal);
    } catch (e) {
      p = Promise.resolve({ ok: false, output: e instanceof Error ? e.message : String(e) });
    }
    p.then(
      (r) => this.finish(live, r.ok, r.output),
      (e: unknown) => this.finish(live, false, e instanceof Error ? e.message : String(e)),
    );
    return req;
  }

  private finish(live: Live, ok: boolean, output: string): void {
    const req = live.req;
    if (req.state !== 'pending') return;
    live.timer.cancel();
    req.output = output;
    req.state = ok ? 'fenced' : 'error';
    if (ok) {
      this.counters.fenced++;
      this.log(`fence: rid ${ridHex(req.rid)} fenced (reason ${req.reason})`);
    } else {
      this.counters.errors++;
      this.log(describeFailure(req, this.agent.name));
    }
    live.settle();
  }

  get(rid: bigint): FenceRequest | null {
    return this.reqs.get(rid)?.req ?? null;
  }

  list(): FenceRequest[] {
    return [...this.reqs.values()].map((l) => l.req);
  }

  /** The oldest request that is fenced or errored, for the reclaim worker. */
  nextCompleted(): FenceRequest | null {
    for (const l of this.reqs.values()) if (l.req.state !== 'pending') return l.req;
    return null;
  }

  /** Forget a completed request (after its rid was reclaimed). */
  free(rid: bigint): void {
    const l = this.reqs.get(rid);
    assert(l !== undefined && l.req.state !== 'pending', `free of rid ${ridHex(rid)} that is not a completed fence request`);
    this.reqs.delete(rid);
  }

  status(): { rid: string; reason: FenceReason; addr: string; state: FenceState; elapsedSecs: number }[] {
    const now = this.clock.nowMs();
    return this.list().map((r) => ({
      rid: ridHex(r.rid), reason: r.reason, addr: r.addr, state: r.state, elapsedSecs: Math.floor((now - r.startedMs) / 1000),
    }));
  }

  /** The server stopped: drop everything, abort running agents. */
  destroy(): void {
    this.destroyed = true;
    for (const l of this.reqs.values()) {
      l.timer.cancel();
      l.abort.abort();
      if (l.req.state === 'pending') {
        l.req.state = 'error';
        l.req.output = 'dropped: the server stopped';
        l.settle();
      }
    }
    this.reqs.clear();
  }
}

export function describeFailure(req: FenceRequest, agentName: string): string {
  const out = req.output.trim().replace(/\n/g, ' | ');
  return `fence: FAILED to fence rid ${ridHex(req.rid)} (reason ${req.reason}, addr ${req.addr}) with ${agentName}: ${out || '(no output)'}`;
}

export interface ServerFencingOptions {
  metaDev: BlockDevice;
  fsid: bigint;
  config: QuorumConfig;
  /** Our rid and the term we lead. */
  rid: bigint;
  term: bigint;
  clock: Clock;
  agent: FenceAgent;
  /** Writes our FENCE quorum event (Quorum.writeFenceEvent). */
  writeFence: (term: bigint) => Promise<void>;
  log?: (line: string) => void;
  requestTimeoutMs?: number;
  leaderWaitMs?: number;
}

export class ServerFencing {
  readonly requests: FenceRequests;
  readonly term: bigint;
  private readonly o: ServerFencingOptions;
  private readonly log: (line: string) => void;
  private fenceWritten = false;
  /** What fenceOldLeaders found and fenced, for tests and status. */
  oldLeaders: OldLeader[] = [];

  constructor(o: ServerFencingOptions) {
    this.o = o;
    this.term = o.term;
    this.log = o.log ?? (() => {});
    this.requests = new FenceRequests({ clock: o.clock, agent: o.agent, log: this.log, timeoutMs: o.requestTimeoutMs });
  }

  /** PROTOCOL.md 2.6 step 1; throws FenceError (or the block error) when the start must fail. */
  async fenceOldLeaders(signal?: AbortSignal): Promise<void> {
    const { metaDev, fsid, config, rid, term } = this.o;
    const blocks = await readQuorumBlocks(metaDev, fsid, config);
    const ol = oldLeaders(blocks, config, rid, term);
    if (ol.newer !== null) {
      throw new FenceError(`slot ${ol.newer.slot} (rid ${ridHex(ol.newer.rid)}) leads term ${ol.newer.term}, ` +
        `newer than our term ${term}: not starting a server`);
    }
    this.oldLeaders = ol.fence;
    if (ol.fence.length === 0) {
      this.log(`fence: no older leader to fence for term ${term} (fenced up to term ${ol.fencedTerm})`);
      await this.writeFence();
      return;
    }
    const reqs = ol.fence.map((l) => {
      this.log(`fence: slot ${l.slot} rid ${ridHex(l.rid)} led term ${l.term} (${l.event} event) and never stopped`);
      return this.requests.start(l.rid, config.ipv4[l.slot]!, 'quorum_block_leader');
    });
    const waitMs = this.o.leaderWaitMs ?? LEADER_FENCE_WAIT_MS;
    let timer: Timer | null = null;
    let onAbort: (() => void) | null = null;
    const outcome = await new Promise<'done' | 'timeout' | 'aborted'>((resolve) => {
      timer = this.o.clock.setTimer(waitMs, () => resolve('timeout'));
      if (signal !== undefined) {
        onAbort = () => resolve('aborted');
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      }
      void Promise.all(reqs.map((r) => r.settled)).then(() => resolve('done'));
      // An error settles the wait at once: no need to wait for the others.
      for (const r of reqs) void r.settled.then(() => { if (r.state === 'error') resolve('done'); });
    });
    (timer as Timer | null)?.cancel();
    if (onAbort !== null && signal !== undefined) signal.removeEventListener('abort', onAbort);
    if (outcome === 'aborted') throw new LifecycleError('shutdown', `server start of term ${term} abandoned while fencing old leaders`);
    const failed = reqs.find((r) => r.state === 'error');
    if (failed !== undefined) throw new FenceError(describeFailure(failed, this.o.agent.name));
    if (outcome === 'timeout') {
      const left = reqs.filter((r) => r.state !== 'fenced').map((r) => ridHex(r.rid)).join(', ');
      throw new FenceError(`fence: old leaders not fenced within ${waitMs / 1000} s (rid ${left}, reason quorum_block_leader): not starting a server`);
    }
  }

  /** A fence for a client that did not recover or reconnect (1.6, 3.10). */
  request(rid: bigint, addr: string, reason: 'client_recovery' | 'client_reconnect'): FenceRequest {
    return this.requests.start(rid, addr, reason);
  }

  nextCompleted(): FenceRequest | null {
    return this.requests.nextCompleted();
  }

  /** reclaim_rid is done for a fenced request: free it; the last old leader's reclaim writes FENCE. */
  async reclaimed(rid: bigint): Promise<void> {
    const req = this.requests.get(rid);
    assert(req !== null && req.state === 'fenced', `reclaimed rid ${ridHex(rid)} without a fenced request`);
    this.requests.free(rid);
    if (req.reason === 'quorum_block_leader' && !this.requests.list().some((r) => r.reason === 'quorum_block_leader')) {
      await this.writeFence();
    }
  }

  private async writeFence(): Promise<void> {
    if (this.fenceWritten) return;
    await this.o.writeFence(this.term);
    this.fenceWritten = true;
    this.log(`fence: older leaders fenced, FENCE event written for term ${this.term}`);
  }

  destroy(): void {
    this.requests.destroy();
  }
}

/*
 * The quorum service of one member mount (PROTOCOL.md 2): the UDP election
 * loop on its slot's address, its quorum block events, and the server it
 * starts when elected.  The mount composition creates it with
 * Quorum.start() and ends it with shutdown() (clean unmount) or abandon()
 * (forced unmount); the server it runs is the composition's, reached
 * through two hooks.
 *
 *   Quorum.start(opts)
 *     verify the slot config (2.1, EINVAL), bind UDP on our slot address,
 *     read every present slot's block: starting term and whether a server
 *     is advertised (2.4), write BEGIN, init the election (election.ts),
 *     run the loop.  Any failure here fails start() (the mount fails).
 *   loop: receive at most one datagram, waiting until the election's
 *     timeout (an invalid datagram counts and is "no message"); feed it to
 *     the election; execute its actions in order: sends (best effort),
 *     TERM/ELECT writes (awaited: durable before the next action), server
 *     stop (awaited), server start (NOT awaited, see below), warnings.
 *   shutdown(): stop the loop; if our server runs, stop it (STOP written);
 *     a leader broadcasts RESIGNATION; write END; close the socket.
 *   abandon(): what a forced unmount or a crash leaves: the loop stops, the
 *     socket closes, nothing more is written or sent.  The server of a
 *     forcibly unmounted mount is the caller's to stop; peers treat us as
 *     dead (heartbeats stop; the next leader fences us).
 *
 * The server (hooks.startServer / hooks.stopServer).  When elected, after
 * ELECT is durable and any earlier server instance has fully stopped, the
 * loop calls startServer({term, signal, ...}) and marks the server running
 * but keeps looping: heartbeats go on while the server fences old leaders
 * and recovers (the reference blocks its loop for up to 15 s here and lets
 * followers' 5 s heartbeat timeout expire, PROTOCOL.md 13.3).  The server
 * instance then ends one of three ways, and each writes STOP (with the
 * instance's term) once it has fully stopped, clears the running flag and
 * wakes the loop, whose step 2 then resigns (RESIGNATION):
 *   - startServer rejects: the start failed (a fence that failed, a newer
 *     leader, I/O); logged with the reason;
 *   - the loop stops it (a greater term, the two-leader tie-break,
 *     shutdown, our own failure): the start's signal is aborted, then
 *     stopServer(term) is awaited, then the start's promise is awaited to
 *     settle: stopServer must make a start in progress give up promptly;
 *   - the server stops on its own (a fence error, a failed commit) and
 *     tells us with serverStopped(term).
 *
 * Failure: an error from our block I/O (a corrupt or unreadable block,
 * another mount on our slot: EIO) or from the socket ends the worker:
 * logged, our server stopped, the socket closed, hooks.onFailed(err)
 * called, status() shows it.  The mount decides what follows (the
 * reference keeps the mount as a plain client).  Garbage datagrams never
 * end it: they are counted by reason (size, crc, fsid, type, from, self)
 * and the first of each reason is logged.
 *
 * Threads: everything on the main thread; the loop is one async task, and
 * the hooks and public methods only set flags and wake it, except the
 * server instance's end, which writes STOP through the slot writer that
 * serializes every write of our block.
 *
 * Determinism: time only from the injected Clock (timers included),
 * randomness from the injected Random, datagrams from the injected
 * transport: under the simulator one seed replays a run exactly.
 */
import assert from 'node:assert/strict';
import { LifecycleError } from '../format/errors.js';
import { QUORUM_MSG } from '../format/quorum.js';
import type { Super } from '../format/super.js';
import type { BlockDevice } from '../runtime/device.js';
import type { Clock, Timer } from '../runtime/clock.js';
import type { Random } from '../runtime/random.js';
import type { DatagramSocket, DatagramTransport } from '../net/datagram.js';
import { verifyQuorumConfig, type QuorumConfig } from './config.js';
import {
  QuorumSlotWriter, hexRid, readQuorumBlocks, serverFromBlocks, startingTerm,
} from './blocks.js';
import { Election, type ElectionAction, type ElectionCounters, type QuorumTiming, type Role } from './election.js';
import {
  checkQuorumMessage, encodeQMsg, DROP_REASONS, QUORUM_MSG_NAMES, type DropReason, type QMsg, type QuorumMsgType,
} from './message.js';

export interface ServerStartContext {
  /** The term we lead; the server's greeting carries it. */
  readonly term: bigint;
  readonly rid: bigint;
  readonly slot: number;
  /** Our slot address "a.b.c.d:port": the server listens on it (TCP). */
  readonly addr: string;
  /** Aborted when the loop abandons this start (a greater term, shutdown). */
  readonly signal: AbortSignal;
}

export interface QuorumServerHooks {
  /**
   * Start the server for ctx.term: fence old leaders first (src/server/
   * fence.ts ServerFencing.fenceOldLeaders), then listen and recover.
   * Resolve when it serves; reject when the start failed (the reason is
   * logged, STOP written, and we resign).
   */
  startServer(ctx: ServerStartContext): Promise<void>;
  /**
   * Stop the server of this term, also one still starting (its signal is
   * aborted first); resolve once it is fully stopped.
   */
  stopServer(term: bigint): Promise<void>;
  /** The quorum worker ended on an error; our server has been stopped. */
  onFailed?(err: Error): void;
}

export interface QuorumOptions {
  metaDev: BlockDevice;
  /** The metadata super read at mount: fsid and the slot config. */
  sb: Super;
  /** quorum_slot_nr. */
  slot: number;
  rid: bigint;
  clock: Clock;
  random: Random;
  transport: DatagramTransport;
  hooks: QuorumServerHooks;
  log?: (line: string) => void;
  /** Tests only; production uses PROTOCOL.md 2.3. */
  timing?: Partial<QuorumTiming>;
  /** Datagrams waiting for the loop beyond this are dropped (counted). Default 1024. */
  queueLimit?: number;
}

export interface QuorumCounters extends ElectionCounters {
  received: number;
  invalid: Record<DropReason, number>;
  queueDrops: number;
  sent: Record<string, number>;
  blockWrites: number;
  serverStarts: number;
  serverReady: number;
  serverStartFailures: number;
  serverStops: number;
  serverSelfStops: number;
}

type ServerState = 'starting' | 'running' | 'stopping' | 'stopped';

interface ServerInstance {
  readonly term: bigint;
  readonly abort: AbortController;
  start: Promise<void>;
  state: ServerState;
  stopping: Promise<void> | null;
}

export interface QuorumStatus {
  slot: number;
  rid: string;
  role: Role;
  term: string;
  voteFor: number;
  votes: number[];
  leaderSlot: number;
  votesNeeded: number;
  present: number[];
  server: { term: string; state: ServerState } | null;
  failed: string | null;
  stopped: boolean;
  counters: QuorumCounters;
}

export class Quorum {
  readonly slot: number;
  readonly rid: bigint;
  readonly fsid: bigint;
  readonly config: QuorumConfig;
  readonly metaDev: BlockDevice;
  private readonly clock: Clock;
  private readonly hooks: QuorumServerHooks;
  private readonly log: (line: string) => void;
  private readonly election: Election;
  private readonly writer: QuorumSlotWriter;
  private readonly sock: DatagramSocket;
  private readonly queueLimit: number;
  private readonly presentMask: boolean[];
  private readonly queue: Uint8Array[] = [];
  private waiter: (() => void) | null = null;
  private timer: Timer | null = null;
  private woken = false;
  private stopping = false;
  private abandoned = false;
  private failedWith: Error | null = null;
  private loopDone: Promise<void> = Promise.resolve();
  private shutdownDone: Promise<void> | null = null;
  private server: ServerInstance | null = null;
  private readonly extra = {
    received: 0, queueDrops: 0, blockWrites: 0, serverStarts: 0, serverReady: 0,
    serverStartFailures: 0, serverStops: 0, serverSelfStops: 0,
  };
  private readonly invalid: Record<DropReason, number> = { size: 0, crc: 0, fsid: 0, type: 0, from: 0, self: 0 };
  private readonly sent: Record<string, number> = Object.fromEntries(QUORUM_MSG_NAMES.map((n) => [n, 0]));

  private constructor(o: QuorumOptions, cfg: QuorumConfig, sock: DatagramSocket) {
    this.slot = o.slot;
    this.rid = o.rid;
    this.fsid = o.sb.hdr.fsid;
    this.config = cfg;
    this.metaDev = o.metaDev;
    this.clock = o.clock;
    this.hooks = o.hooks;
    const log = o.log ?? (() => {});
    this.log = (line) => log(`quorum slot ${o.slot}: ${line}`);
    this.sock = sock;
    this.queueLimit = o.queueLimit ?? 1024;
    this.presentMask = cfg.addrs.map((a) => a !== undefined);
    this.election = new Election({ slot: o.slot, present: cfg.present, votesNeeded: cfg.votesNeeded, random: o.random, timing: o.timing });
    this.writer = new QuorumSlotWriter(o.metaDev, this.fsid, o.slot, o.rid, o.clock);
  }

  /** See the top comment.  Rejects (and leaves nothing running) if setup fails. */
  static async start(o: QuorumOptions): Promise<Quorum> {
    assert(o.rid !== 0n && o.rid !== 0xffff_ffff_ffff_ffffn, 'a rid is never 0 or all ones');
    const cfg = verifyQuorumConfig(o.sb, o.slot);
    const sock = await o.transport.bind(cfg.addrs[o.slot]!);
    const q = new Quorum(o, cfg, sock);
    try {
      await q.init();
    } catch (e) {
      sock.close();
      throw e;
    }
    // The loop starts now and first waits for a timeout of at least the
    // election minimum, so no hook runs before the caller has q in hand.
    q.loopDone = q.loop();
    return q;
  }

  private async init(): Promise<void> {
    const blocks = await readQuorumBlocks(this.metaDev, this.fsid, this.config);
    const term = startingTerm(blocks, this.config);
    const server = serverFromBlocks(blocks, this.config);
    this.sock.onMessage((bytes) => this.receiveDatagram(bytes));
    this.sock.onError((e) => {
      void this.fail(new Error(`quorum socket ${this.sock.addr}: ${e.message}`));
    });
    await this.write('BEGIN', term);
    this.election.init(this.clock.nowMs(), term, server !== null);
    this.log(`started, rid ${hexRid(this.rid)}, starting term ${term}, ${this.config.present.length} slots, ` +
      `votes needed ${this.config.votesNeeded}, ` +
      (server === null ? 'no server advertised' : `server advertised at slot ${server.slot} term ${server.term}`));
  }

  /* ---- public API --------------------------------------------------------------- */

  /** The server stopped on its own (fence error, failed commit): STOP, then we resign. */
  serverStopped(term: bigint, why?: string): void {
    const inst = this.server;
    if (inst === null || inst.term !== term || inst.stopping !== null) return;
    this.extra.serverSelfStops++;
    this.log(`server of term ${term} stopped${why ? `: ${why}` : ''}`);
    inst.state = 'stopping';
    inst.abort.abort();
    inst.stopping = (async () => {
      await inst.start.catch(() => {});
      await this.endInstance(inst);
    })();
    inst.stopping.catch((e) => this.fail(e));
  }

  /**
   * Record our FENCE event (PROTOCOL.md 2.4): all older leaders are
   * fenced and reclaimed.  The server's fencing (src/server/fence.ts)
   * calls it.
   */
  async writeFenceEvent(term: bigint): Promise<void> {
    await this.write('FENCE', term);
  }

  /** Clean unmount: see the top comment.  Idempotent. */
  shutdown(): Promise<void> {
    if (this.shutdownDone === null) this.shutdownDone = this.doShutdown();
    return this.shutdownDone;
  }

  /** Forced unmount or death: no more I/O, no resignation.  Idempotent. */
  abandon(): void {
    if (this.abandoned) return;
    this.abandoned = true;
    this.stopping = true;
    this.server?.abort.abort();
    this.sock.close();
    this.wake();
    this.log('abandoned (no resignation, no END)');
  }

  get role(): Role {
    return this.election.role;
  }

  get term(): bigint {
    return this.election.term;
  }

  /** The server's term while our server is starting or running, else null. */
  get serverTerm(): bigint | null {
    const s = this.server;
    return s !== null && (s.state === 'starting' || s.state === 'running') ? s.term : null;
  }

  /** PROTOCOL.md 2.5's "server running" flag: cleared only once the server has fully stopped. */
  private serverRunning(): boolean {
    return this.server !== null && this.server.state !== 'stopped';
  }

  get serverReady(): boolean {
    return this.server?.state === 'running';
  }

  /** shutdown(), abandon() or a failure stopped the loop. */
  get stopped(): boolean {
    return this.stopping;
  }

  get leaderSlot(): number {
    return this.election.leaderSlot;
  }

  get failed(): Error | null {
    return this.failedWith;
  }

  get counters(): QuorumCounters {
    return { ...this.election.counters, ...this.extra, invalid: { ...this.invalid }, sent: { ...this.sent } };
  }

  status(): QuorumStatus {
    const e = this.election;
    const votes: number[] = [];
    for (let i = 0; i < 15; i++) if (e.voteBits & (1 << i)) votes.push(i);
    return {
      slot: this.slot, rid: hexRid(this.rid), role: e.role, term: e.term.toString(), voteFor: e.voteFor, votes,
      leaderSlot: e.leaderSlot, votesNeeded: this.config.votesNeeded, present: [...this.config.present],
      server: this.server === null ? null : { term: this.server.term.toString(), state: this.server.state },
      failed: this.failedWith?.message ?? null, stopped: this.stopping, counters: this.counters,
    };
  }

  /* ---- the loop ------------------------------------------------------------------- */

  private receiveDatagram(bytes: Uint8Array): void {
    if (this.stopping) return;
    this.extra.received++;
    if (this.queue.length >= this.queueLimit) {
      this.extra.queueDrops++;
      return;
    }
    this.queue.push(bytes);
    this.waiter?.();
  }

  private wake(): void {
    this.woken = true;
    this.waiter?.();
  }

  private check(bytes: Uint8Array): QMsg | null {
    const r = checkQuorumMessage(bytes, this.fsid, this.presentMask, this.slot);
    if ('msg' in r) return r.msg;
    const n = ++this.invalid[r.drop];
    if (n === 1) {
      this.log(r.drop === 'self'
        ? `a datagram claims to come from our own slot ${this.slot}: another mount is configured with quorum slot ${this.slot}`
        : `dropped an invalid datagram (bad ${r.drop}); further ones are only counted`);
    }
    return null;
  }

  /** At most one message, or null at the timeout (or an invalid one, or a wake-up). */
  private async receive(): Promise<QMsg | null> {
    for (;;) {
      if (this.stopping) return null;
      const raw = this.queue.shift();
      if (raw !== undefined) return this.check(raw);
      if (this.woken) {
        this.woken = false;
        return null;
      }
      const now = this.clock.nowMs();
      const wait = this.election.timeoutMs - now;
      if (wait <= 0) return null;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        this.timer = this.clock.setTimer(wait, resolve);
      });
      this.waiter = null;
      this.timer?.cancel();
      this.timer = null;
    }
  }

  private async loop(): Promise<void> {
    try {
      while (!this.stopping) {
        const msg = await this.receive();
        if (this.stopping) break;
        const actions = this.election.step(this.clock.nowMs(), msg, this.serverRunning());
        for (const a of actions) {
          if (this.abandoned) return;
          await this.execute(a);
        }
      }
    } catch (e) {
      await this.fail(e instanceof Error ? e : new Error(String(e)));
    }
  }

  private send(to: number, type: QuorumMsgType, term: bigint): void {
    if (this.abandoned) return;
    this.sent[QUORUM_MSG_NAMES[type]]!++;
    this.sock.send(this.config.addrs[to]!, encodeQMsg(this.fsid, { type, term, from: this.slot }));
  }

  private broadcast(type: QuorumMsgType, term: bigint): void {
    for (const s of this.config.present) if (s !== this.slot) this.send(s, type, term);
  }

  private async write(event: 'BEGIN' | 'TERM' | 'ELECT' | 'FENCE' | 'STOP' | 'END', term: bigint): Promise<void> {
    if (this.abandoned) throw new LifecycleError('shutdown', `quorum slot ${this.slot} abandoned: not writing ${event}`);
    await this.writer.writeEvent(event, term);
    this.extra.blockWrites++;
  }

  private async execute(a: ElectionAction): Promise<void> {
    switch (a.kind) {
      case 'broadcast':
        this.broadcast(a.type, a.term);
        return;
      case 'send':
        this.send(a.to, a.type, a.term);
        return;
      case 'write':
        await this.write(a.event, a.term);
        if (a.event === 'ELECT') this.log(`elected leader of term ${a.term}`);
        return;
      case 'warn':
        this.log(`warning: ${a.text}`);
        return;
      case 'stopServer':
        if (this.server !== null) await this.stopInstance(this.server);
        return;
      case 'startServer':
        await this.startInstance(a.term);
        return;
    }
  }

  /* ---- the server instance ---------------------------------------------------------- */

  private async startInstance(term: bigint): Promise<void> {
    const prev = this.server;
    if (prev !== null && prev.state !== 'stopped') await this.stopInstance(prev);
    if (this.stopping) return;
    const abort = new AbortController();
    const inst: ServerInstance = { term, abort, start: Promise.resolve(), state: 'starting', stopping: null };
    this.server = inst;
    this.extra.serverStarts++;
    this.log(`starting the server for term ${term}`);
    const ctx: ServerStartContext = { term, rid: this.rid, slot: this.slot, addr: this.config.addrs[this.slot]!, signal: abort.signal };
    let started: Promise<void>;
    try {
      started = this.hooks.startServer(ctx);
    } catch (e) {
      started = Promise.reject(e);
    }
    inst.start = started.then(
      () => {
        if (inst.state !== 'starting') return;
        inst.state = 'running';
        this.extra.serverReady++;
        this.log(`server of term ${term} is ready`);
      },
      (e: unknown) => {
        if (inst.stopping !== null) return; // we were stopping it anyway
        this.extra.serverStartFailures++;
        this.log(`server start for term ${term} failed: ${e instanceof Error ? e.message : String(e)}`);
        inst.stopping = this.endInstance(inst);
        inst.stopping.catch((err) => this.fail(err));
      },
    );
  }

  /** The loop stops our server: abort the start, stopServer, wait for the start to settle, STOP. */
  private stopInstance(inst: ServerInstance): Promise<void> {
    if (inst.stopping !== null) return inst.stopping;
    inst.state = 'stopping';
    inst.abort.abort();
    this.log(`stopping the server of term ${inst.term}`);
    inst.stopping = (async () => {
      try {
        await this.hooks.stopServer(inst.term);
      } catch (e) {
        this.log(`stopping the server of term ${inst.term} failed: ${e instanceof Error ? e.message : String(e)}`);
      }
      await inst.start.catch(() => {});
      await this.endInstance(inst);
    })();
    return inst.stopping;
  }

  /** The instance has fully stopped: clear the flag, write STOP, wake the loop. */
  private async endInstance(inst: ServerInstance): Promise<void> {
    if (inst.state === 'stopped') return;
    inst.state = 'stopped';
    this.extra.serverStops++;
    this.wake();
    if (!this.abandoned) await this.write('STOP', inst.term);
  }

  /* ---- ends ------------------------------------------------------------------------- */

  private async fail(err: Error): Promise<void> {
    if (this.failedWith !== null || this.abandoned) return;
    this.failedWith = err;
    this.stopping = true;
    this.wake();
    this.log(`worker failed: ${err.message}`);
    const inst = this.server;
    if (inst !== null && inst.state !== 'stopped') {
      try {
        await this.stopInstance(inst);
      } catch (e) {
        // The STOP write failed too (the block is what failed, or another
        // mount owns the slot now): the next leader fences us.
        this.log(`could not write STOP for term ${inst.term}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    this.sock.close();
    this.timer?.cancel();
    this.hooks.onFailed?.(err);
  }

  private async doShutdown(): Promise<void> {
    this.stopping = true;
    this.wake();
    await this.loopDone;
    try {
      if (this.abandoned || this.failedWith !== null) return;
      const wasLeader = this.election.role === 'LEADER';
      const inst = this.server;
      if (inst !== null && inst.state !== 'stopped') await this.stopInstance(inst);
      if (wasLeader) this.broadcast(QUORUM_MSG.RESIGNATION, this.election.term);
      await this.write('END', this.election.term);
      this.log(`stopped in term ${this.election.term}`);
    } finally {
      this.timer?.cancel();
      this.sock.close();
    }
  }
}

export { DROP_REASONS };

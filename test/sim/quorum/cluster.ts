/*
 * A simulated quorum: N members of one volume in one process, each a real
 * Quorum service (src/quorum/quorum.ts) on its own simulator endpoint
 * ("q0", "q1", ...), over the seeded datagram network (src/net/dgramsim.ts)
 * and the simulator's FakeClock, with one shared in-memory metadata device
 * made by mkfs with N slots.  Not a test file: scenarios.test.ts and the
 * sweep build on it.
 *
 *          medium: one MemoryBlockDevice (mkfs -Q x N), the quorum blocks
 *     +--------------+--------------+--------------+
 *   MemberDisk(q0)  MemberDisk(q1)  MemberDisk(q2)     per incarnation: latency, dies with it
 *   Quorum(slot 0)  Quorum(slot 1)  Quorum(slot 2)
 *   SimServer       SimServer       SimServer          hooks: fence old leaders, then serve
 *      \________ simulated datagrams (drops, dups, delays, partitions) ________/
 *
 * Disks.  Each member incarnation reads and writes the medium through a
 * MemberDisk: every read or write completes after a random 0..3 ms of
 * simulated time and acts on the medium when it completes (so two members'
 * block I/O interleaves as on a shared disk, and the races between a new
 * leader's ELECT and another's fence read are exercised).  I/O issued by a
 * crashed incarnation never completes, so its dead code never touches the
 * medium again; I/O already in flight when it crashed still lands, as it
 * would on a real disk.
 *
 * Servers.  A SimServer is what the mount composition will do in
 * startServer: a ServerFencing (src/server/fence.ts) for the term,
 * fenceOldLeaders() through the quorum blocks, then some simulated start
 * work, then ready; after ready it "reclaims" the fenced old leaders (the
 * reclaim worker's job), which writes our FENCE event.  The fence agent of
 * the simulation (SimFenceAgent) is the power switch: it crashes the
 * endpoint of the live member incarnation with that rid, if any, and says
 * fenced after a few ms; failFences makes it fail instead.
 *
 * The checker, run as things happen:
 *   - at most one leader per term (by rid), over the whole run: recorded
 *     when a member starts its server for a term (right after ELECT);
 *     optional, since two slots cannot promise it (PROTOCOL.md 2.1);
 *   - at most one server serving: when a server becomes ready, no other
 *     live member's server is ready (what fencing guarantees);
 *   - no server becomes ready before its fences completed (by construction
 *     of SimServer; counted).
 * stable() says whether the live members agree on one leader whose server
 * is ready; checkBlocksAgree() that the quorum blocks advertise it.
 */
import assert from 'node:assert/strict';
import { Simulator } from '../../../src/net/sim.js';
import { SimDatagramNet, type DatagramFaults } from '../../../src/net/dgramsim.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';
import { checkRange, type BlockDevice } from '../../../src/runtime/device.js';
import { LifecycleError } from '../../../src/format/errors.js';
import { Quorum } from '../../../src/quorum/quorum.js';
import { describeQMsg } from '../../../src/quorum/message.js';
import { findServerAddress, hexRid } from '../../../src/quorum/blocks.js';
import { quorumConfig } from '../../../src/quorum/config.js';
import type { QuorumTiming } from '../../../src/quorum/election.js';
import { ServerFencing } from '../../../src/server/fence.js';
import type { FenceAgent, FenceOutcome, FenceTarget } from '../../../src/runtime/fenceagent.js';
import type { Super } from '../../../src/format/super.js';
import type { SeededRandom } from '../../../src/runtime/random.js';
import { quorumVolume, slotSpecs } from '../../unit/quorum/util.js';

/* ---- disks ---------------------------------------------------------------------- */

class MemberDisk implements BlockDevice {
  readonly path: string;
  readonly sizeBytes: bigint;

  constructor(
    private readonly qs: QuorumSim,
    private readonly medium: MemoryBlockDevice,
    private readonly inc: Incarnation,
    private readonly random: SeededRandom,
  ) {
    this.path = `meta(${inc.name})`;
    this.sizeBytes = medium.sizeBytes;
  }

  private op<T>(what: string, fn: () => T): Promise<T> {
    if (!this.qs.alive(this.inc)) return new Promise<T>(() => {}); // dead code never completes I/O
    return new Promise<T>((resolve, reject) => {
      this.qs.sim.schedule(this.random.int(4), '', () => {
        try {
          resolve(fn());
        } catch (e) {
          reject(e);
        }
      }, false);
      void what;
    });
  }

  read(off: bigint, len: number): Promise<Uint8Array> {
    checkRange(this.path, this.sizeBytes, 'read', off, len);
    return this.op('read', () => this.medium.readSync(off, len));
  }

  write(off: bigint, data: Uint8Array): Promise<void> {
    checkRange(this.path, this.sizeBytes, 'write', off, data.length);
    const copy = data.slice();
    return this.op('write', () => this.medium.writeSync(off, copy));
  }

  flush(): Promise<void> {
    return this.op('flush', () => undefined);
  }

  async close(): Promise<void> {}
}

/* ---- fencing ---------------------------------------------------------------------- */

export interface FenceCall {
  byName: string;
  byTerm: bigint;
  target: FenceTarget;
  /** The target incarnation was alive and was crashed. */
  killed: boolean;
  atMs: number;
}

class SimFenceAgent implements FenceAgent {
  readonly name = 'sim power switch';
  constructor(private readonly qs: QuorumSim, private readonly by: Incarnation, private readonly term: bigint) {}

  fence(t: FenceTarget, signal: AbortSignal): Promise<FenceOutcome> {
    const qs = this.qs;
    return new Promise((resolve) => {
      qs.sim.schedule(2 + qs.testRandom.int(20), `fence rid ${hexRid(t.rid).slice(0, 6)} by ${this.by.name}`, () => {
        if (signal.aborted) return;
        if (qs.failFences) {
          qs.counters.fencesFailed++;
          resolve({ ok: false, output: `sim power switch for ${t.addr} unreachable` });
          return;
        }
        const target = qs.byRid.get(t.rid);
        let killed = false;
        if (target !== undefined && qs.alive(target)) {
          qs.crash(target.slot, `fenced by ${this.by.name} (term ${this.term})`);
          killed = true;
        }
        qs.fenceCalls.push({ byName: this.by.name, byTerm: this.term, target: t, killed, atMs: qs.sim.clock.nowMs() });
        qs.counters.fences++;
        resolve({ ok: true, output: killed ? `power cycled ${target!.name}` : 'nothing alive with that rid' });
      });
    });
  }
}

/* ---- servers ------------------------------------------------------------------------ */

type ServerState = 'fencing' | 'starting' | 'ready' | 'stopped';

export interface SimServerInstance {
  term: bigint;
  state: ServerState;
  fencing: ServerFencing;
  readyAtMs: number | null;
}

/* ---- members ------------------------------------------------------------------------ */

export interface Incarnation {
  slot: number;
  name: string;
  epInc: number;
  rid: bigint;
  quorum: Quorum | null;
  startError: Error | null;
  failed: Error | null;
  server: SimServerInstance | null;
}

export interface QuorumSimOptions {
  members: number;
  faults?: DatagramFaults;
  timing?: Partial<QuorumTiming>;
  /** Check "at most one leader per term" (not promised with two slots). */
  oneLeaderPerTerm?: boolean;
  trace?: boolean;
  /** Simulated server start work after fencing, ms range. */
  startWorkMs?: readonly [number, number];
}

export interface QuorumSimCounters {
  elections: number;
  serversReady: number;
  serverStartsFailed: number;
  fences: number;
  fencesFailed: number;
  crashes: number;
  restarts: number;
}

export class QuorumSim {
  readonly sim: Simulator;
  readonly dnet: SimDatagramNet;
  readonly testRandom: SeededRandom;
  readonly n: number;
  medium!: MemoryBlockDevice;
  sb!: Super;
  readonly current: Incarnation[] = [];
  readonly all: Incarnation[] = [];
  readonly byRid = new Map<bigint, Incarnation>();
  readonly leadersByTerm = new Map<bigint, Incarnation>();
  readonly fenceCalls: FenceCall[] = [];
  /** Every server that became ready, in order. */
  readonly readyLog: { inc: Incarnation; term: bigint; atMs: number }[] = [];
  readonly violations: string[] = [];
  readonly logs: string[] = [];
  failFences = false;
  readonly counters: QuorumSimCounters = {
    elections: 0, serversReady: 0, serverStartsFailed: 0, fences: 0, fencesFailed: 0, crashes: 0, restarts: 0,
  };
  private readonly opts: QuorumSimOptions;

  private constructor(seed: bigint, opts: QuorumSimOptions) {
    this.opts = opts;
    this.n = opts.members;
    this.sim = new Simulator(seed);
    this.sim.traceEnabled = opts.trace ?? true;
    this.dnet = new SimDatagramNet(this.sim, { faults: opts.faults });
    this.dnet.describe = describeQMsg;
    this.testRandom = this.sim.fork('quorum-test');
  }

  static async create(seed: bigint, opts: QuorumSimOptions): Promise<QuorumSim> {
    const qs = new QuorumSim(seed, opts);
    const vol = await quorumVolume(slotSpecs(opts.members));
    qs.medium = vol.meta;
    qs.sb = vol.sb;
    return qs;
  }

  name(slot: number): string {
    return `q${slot}`;
  }

  alive(inc: Incarnation): boolean {
    const ep = this.sim.endpoint(inc.name);
    return ep.up && ep.incarnation === inc.epInc;
  }

  /** The live incarnations whose quorum service runs. */
  live(): Incarnation[] {
    return this.current.filter((i) => this.alive(i) && i.quorum !== null && i.failed === null && i.quorum.failed === null &&
      !i.quorum.stopped);
  }

  /** Start (or restart after a crash) the member of a slot; its Quorum starts asynchronously. */
  startMember(slot: number, opts: { host?: string } = {}): Incarnation {
    const host = opts.host ?? this.name(slot);
    const ep = this.sim.endpoint(host);
    if (!ep.up) this.sim.restart(host);
    let rid = 0n;
    while (rid === 0n || rid === 0xffff_ffff_ffff_ffffn) rid = ep.random.u64();
    const inc: Incarnation = {
      slot, name: host, epInc: ep.incarnation, rid, quorum: null, startError: null, failed: null, server: null,
    };
    if (host === this.name(slot)) this.current[slot] = inc;
    this.all.push(inc);
    this.byRid.set(rid, inc);
    const log = (line: string): void => {
      if (this.sim.traceEnabled) this.sim.note(`log ${host}: ${line}`);
      if (this.logs.length < 5000) this.logs.push(`${this.sim.clock.nowMs()} ${host}: ${line}`);
    };
    const disk = new MemberDisk(this, this.medium, inc, ep.random.fork('disk'));
    Quorum.start({
      metaDev: disk, sb: this.sb, slot, rid, clock: ep.clock, random: ep.random, transport: this.dnet.transport(host),
      log, timing: this.opts.timing,
      hooks: {
        startServer: (ctx) => this.startServer(inc, ctx.term, ctx.signal),
        stopServer: async (term) => this.stopServer(inc, term),
        onFailed: (e) => { inc.failed = e; },
      },
    }).then((q) => { inc.quorum = q; }, (e: Error) => { inc.startError = e; });
    return inc;
  }

  crash(slot: number, why: string): void {
    const inc = this.current[slot];
    assert(inc !== undefined && this.alive(inc), `crash of q${slot}, which is not alive`);
    this.sim.note(`crash q${slot}: ${why}`);
    if (inc.server !== null) inc.server.state = 'stopped';
    this.sim.crash(inc.name);
    this.counters.crashes++;
  }

  restart(slot: number): Incarnation {
    this.counters.restarts++;
    return this.startMember(slot);
  }

  /* ---- the server hooks ---- */

  private async startServer(inc: Incarnation, term: bigint, signal: AbortSignal): Promise<void> {
    this.counters.elections++;
    if (this.opts.oneLeaderPerTerm) {
      const had = this.leadersByTerm.get(term);
      if (had !== undefined && had.rid !== inc.rid) {
        this.violations.push(`two leaders of term ${term}: ${had.name} rid ${hexRid(had.rid)} and ${inc.name} rid ${hexRid(inc.rid)}`);
      }
    }
    if (!this.leadersByTerm.has(term)) this.leadersByTerm.set(term, inc);
    const q = inc.quorum;
    assert(q !== null);
    const ep = this.sim.endpoint(inc.name);
    const fencing = new ServerFencing({
      metaDev: q.metaDev, fsid: q.fsid, config: q.config, rid: inc.rid, term, clock: ep.clock,
      agent: new SimFenceAgent(this, inc, term), writeFence: (t) => q.writeFenceEvent(t),
      log: (line) => { if (this.sim.traceEnabled) this.sim.note(`log ${inc.name}: ${line}`); this.logs.push(`${this.sim.clock.nowMs()} ${inc.name}: ${line}`); },
    });
    const srv: SimServerInstance = { term, state: 'fencing', fencing, readyAtMs: null };
    inc.server = srv;
    try {
      await fencing.fenceOldLeaders(signal);
      if (srv.state !== 'fencing' || signal.aborted) throw new LifecycleError('shutdown', 'stopped while fencing');
      srv.state = 'starting';
      const [lo, hi] = this.opts.startWorkMs ?? [5, 50];
      await new Promise<void>((resolve, reject) => {
        const t = ep.clock.setTimer(lo + this.testRandom.int(hi - lo + 1), resolve);
        signal.addEventListener('abort', () => { t.cancel(); reject(new LifecycleError('shutdown', 'stopped while starting')); }, { once: true });
      });
      if (srv.state !== 'starting') throw new LifecycleError('shutdown', 'stopped while starting');
    } catch (e) {
      srv.state = 'stopped';
      fencing.destroy();
      this.counters.serverStartsFailed++;
      throw e;
    }
    // Ready: nobody else may be serving.
    for (const other of this.current) {
      if (other === inc || other === undefined || !this.alive(other)) continue;
      if (other.server?.state === 'ready') {
        this.violations.push(`${inc.name} (term ${term}) became ready while ${other.name} (term ${other.server.term}) serves`);
      }
    }
    srv.state = 'ready';
    srv.readyAtMs = this.sim.clock.nowMs();
    this.readyLog.push({ inc, term, atMs: srv.readyAtMs });
    this.counters.serversReady++;
    this.sim.note(`server ready ${inc.name} term ${term}`);
    // The reclaim worker: reclaim every fenced old leader, which writes FENCE.
    for (let r = fencing.nextCompleted(); r !== null; r = fencing.nextCompleted()) {
      if (r.state !== 'fenced' || srv.state !== 'ready') break;
      await fencing.reclaimed(r.rid);
    }
  }

  private stopServer(inc: Incarnation, term: bigint): void {
    const s = inc.server;
    if (s === null || s.term !== term) return;
    s.state = 'stopped';
    s.fencing.destroy();
  }

  /* ---- observations ---- */

  leaders(): Incarnation[] {
    return this.live().filter((i) => i.quorum!.role === 'LEADER');
  }

  /** One live leader with a ready server; every other live member follows its term. */
  stable(): Incarnation | null {
    const live = this.live();
    const leaders = live.filter((i) => i.quorum!.role === 'LEADER');
    if (leaders.length !== 1) return null;
    const l = leaders[0]!;
    if (l.server?.state !== 'ready' || !l.quorum!.serverReady) return null;
    for (const i of live) {
      if (i === l) continue;
      if (i.quorum!.role !== 'FOLLOWER' || i.quorum!.term !== l.quorum!.term || i.quorum!.leaderSlot !== l.slot) return null;
    }
    return l;
  }

  async serverInBlocks(): Promise<{ slot: number; term: bigint } | null> {
    const s = await findServerAddress(this.medium, this.sb);
    return s === null ? null : { slot: s.slot, term: s.term };
  }

  async run(ms: number): Promise<void> {
    await this.sim.runFor(ms);
  }

  async runUntil(pred: () => boolean, limitMs: number): Promise<boolean> {
    return this.sim.runUntil(pred, limitMs);
  }

  /** Start every member and run until they have all started. */
  async startAll(): Promise<void> {
    for (let s = 0; s < this.n; s++) this.startMember(s);
    const ok = await this.runUntil(() => this.current.every((i) => i.quorum !== null || i.startError !== null), 1000);
    assert(ok, 'members did not start');
    for (const i of this.current) if (i.startError) throw i.startError;
  }

  present(): number[] {
    return [...quorumConfig(this.sb).present];
  }

  assertNoViolations(): void {
    assert.deepEqual(this.violations, [], 'invariant violations');
  }
}

/*
 * A lock world for the lock tests: one NetServer with a LockServer and any
 * number of mounts, each a NetClient with a LockClient, on the simulated
 * network (quiet links unless a test sets faults).  Not a test file.
 *
 * The mounts' transaction, item cache and kernel hook are small recorders
 * of the calls the lock client makes (transSeq is a settable number;
 * syncForLock bumps it as a commit would; the item cache records the
 * ranges dropped and answers hasDirty from a set of dirty keys the test
 * sets).  They stand in for interfaces only, so each protocol path can be
 * asserted exactly; the simulated cluster (test/sim/) runs the same lock
 * client and server over the real transaction, item cache and server
 * volume.  The seq counter here is an in-memory number for the same
 * reason: the cluster uses the server's SeqCounter through lockSeqsOf.
 */
import { compareKeys, type Key } from '../../../src/format/key.js';
import { keyInRange } from '../../../src/format/lock.js';
import { NetClient } from '../../../src/net/client.js';
import { newNetStats, type NetStats } from '../../../src/net/connection.js';
import { NetServer, type NetServerHooks } from '../../../src/net/server.js';
import { Simulator, QUIET_LINK, type LinkFaults } from '../../../src/net/sim.js';
import { LockClient, type KernelInvalidation, type LockEvent } from '../../../src/lock/client.js';
import { LockServer, type LockSeqs } from '../../../src/server/lock.js';

export const FSID = 0x10c10c10c10cn;
export const SERVER_ADDR = 'server:7000';

export class MemSeqs implements LockSeqs {
  constructor(public value = 100n) {}
  async nextWriteSeq(): Promise<bigint> {
    return ++this.value;
  }
  async raise(s: bigint): Promise<void> {
    if (s > this.value) this.value = s;
  }
}

export class Mount {
  transSeq = 5n;
  readonly syncs: bigint[] = [];
  readonly dropped: { start: Key; end: Key }[] = [];
  readonly kernel: KernelInvalidation[] = [];
  readonly dirty = new Set<Key>();
  readonly events: LockEvent[] = [];
  readonly logs: string[] = [];
  readonly locks: LockClient;
  /** Simulated commit latency (ms) of syncForLock. */
  syncMs = 5;

  constructor(readonly name: string, readonly net: NetClient, readonly world: LockWorld) {
    const self = this;
    this.locks = new LockClient({
      net,
      trans: {
        get transSeq() {
          return self.transSeq;
        },
        async syncForLock(d: bigint) {
          if (d !== self.transSeq) return;
          self.syncs.push(d);
          await new Promise<void>((r) => world.sim.endpoint(name).clock.setTimer(self.syncMs, r));
          // The commit wrote every dirty item and opened the next transaction.
          self.dirty.clear();
          self.transSeq++;
        },
      },
      items: {
        invalidate: (start, end) => {
          this.dropped.push({ start, end });
          return 1;
        },
        hasDirty: (start, end) => [...this.dirty].some((k) => keyInRange(k, { start, end })),
      },
      kernel: { invalidate: (inv) => void this.kernel.push(inv) },
      log: (l) => this.logs.push(l),
      observe: (ev) => this.events.push(ev),
    }).register();
  }

  get rid(): bigint {
    return this.net.rid;
  }
}

export class LockWorld {
  readonly sim: Simulator;
  readonly seqs = new MemSeqs();
  readonly serverStats: NetStats = newNetStats();
  readonly logs: string[] = [];
  readonly mounts: Mount[] = [];
  net!: NetServer;
  server!: LockServer;
  term = 0n;
  private nextRid = 0x100n;

  constructor(seed = 1n, link: LinkFaults = QUIET_LINK) {
    this.sim = new Simulator(seed, { defaultLink: link });
  }

  /** A new server incarnation; recover these rids first (mounted_clients). */
  async startServer(opts: { recover?: bigint[]; hooks?: NetServerHooks; reconnectWaitMs?: number; brokenGrants?: number } = {}): Promise<LockServer> {
    const ep = this.sim.endpoint('server');
    if (!ep.up) this.sim.restart('server');
    const term = ++this.term;
    const log = (l: string): void => void this.logs.push(`server${term}: ${l}`);
    let server!: LockServer;
    const net = new NetServer({
      transport: ep.transport, clock: ep.clock, random: ep.random.fork(`net${term}`), fsid: FSID, term, listenAddr: SERVER_ADDR,
      log, onBug: this.sim.onBug, stats: this.serverStats, reconnectWaitMs: opts.reconnectWaitMs ?? 60_000,
      hooks: { ...opts.hooks, clientUp: (rid) => server.clientUp(rid) },
    });
    server = new LockServer({ net, seqs: this.seqs, log, brokenGrants: opts.brokenGrants }).register();
    server.beginRecovery(opts.recover ?? []);
    this.net = net;
    this.server = server;
    await net.listen();
    return server;
  }

  crashServer(): void {
    this.server.shutdown();
    this.sim.crash('server');
  }

  mount(name: string): Mount {
    const ep = this.sim.endpoint(name);
    const net = new NetClient({
      transport: ep.transport, clock: ep.clock, random: ep.random.fork('net'), fsid: FSID, rid: this.nextRid++,
      findServer: () => SERVER_ADDR, name, log: (l) => this.logs.push(`${name}: ${l}`), onBug: this.sim.onBug,
    });
    const m = new Mount(name, net, this);
    net.start();
    this.mounts.push(m);
    return m;
  }

  async connected(): Promise<void> {
    await this.sim.runUntil(() => this.mounts.every((m) => m.net.connected), 5000);
  }

  /** Run until p settles (or limitMs of simulated time); returns its value or throws. */
  async settle<T>(p: Promise<T>, limitMs = 5000): Promise<T> {
    let done = false;
    let val: T | undefined;
    let err: unknown = null;
    p.then((v) => { done = true; val = v; }, (e: unknown) => { done = true; err = e; });
    await this.sim.runUntil(() => done, limitMs);
    if (!done) throw new Error(`did not settle within ${limitMs} ms of simulated time`);
    if (err !== null) throw err;
    return val as T;
  }

  /** Two different mounts hold incompatible modes of one lock (by their own view). */
  incompatibleHolders(): string[] {
    const out: string[] = [];
    const all = this.mounts.flatMap((m) => m.locks.held().map((h) => ({ m, ...h })));
    for (let i = 0; i < all.length; i++) {
      for (let j = i + 1; j < all.length; j++) {
        const a = all[i]!;
        const b = all[j]!;
        if (a.m === b.m || compareKeys(a.start, b.start) !== 0) continue;
        const ok = a.mode === b.mode && (a.mode === 'READ' || a.mode === 'WRITE_ONLY');
        if (!ok) out.push(`${a.m.name} ${a.mode} / ${b.m.name} ${b.mode}`);
      }
    }
    return out;
  }
}

/*
 * Simulated network: a whole cluster's sockets in one process, driven by
 * one seeded event queue on a FakeClock (STYLE.md s7).
 *
 * One Simulator owns time (a FakeClock), the event queue and the random
 * stream.  Everything that happens is an event at a time: a frame delivered,
 * a stream noticing it broke, a connect completing or timing out, an
 * endpoint's timer.  step() takes the earliest event (ties in the order they
 * were scheduled), moves the clock to it, runs it, and then lets every
 * promise continuation it caused run to completion before the next event
 * (one setImmediate: the microtask queue always drains first, and nothing
 * in a simulation does real I/O).  So the same seed gives the same event
 * order, byte for byte; `trace` records it and tests compare traces.
 *
 * Endpoints are named hosts ("server", "c1").  Each has a Transport
 * (addresses "name:port"), a Clock whose timers go through the simulator's
 * queue, and a Random forked from the seed by name and incarnation.
 *
 * Faults, per directed link (setLink), each decided per send from the
 * network's random stream:
 *   - latency: uniform in [min, max] ms;
 *   - drop: the send is lost and the stream breaks at that point: nothing
 *     after it on that socket arrives, both ends notice after a detection
 *     delay (keepalive, user timeout, RST).  What was sent before still
 *     arrives if it gets there before the receiver notices: the receiver
 *     always sees a prefix of the stream, as with TCP;
 *   - duplicate: the same bytes are delivered again, later, on the same
 *     socket (never before the original).  TCP would not do this; it
 *     exercises receiver dedup, and a duplicated greeting exercises the
 *     "second greeting" fatal path;
 *   - delay: an extra delay on one send, holding back everything after it
 *     on that socket (head-of-line blocking).  With per-send latency jitter
 *     this reorders messages across sockets and links and against timers:
 *     a stale socket's frames can reach a server after the client's new
 *     socket has greeted, a response can arrive after a reconnect-wait
 *     timer, and so on.
 * Messages are NOT reordered within one socket: the Transport contract
 * (transport.ts) says why the protocol cannot survive that.
 *
 * Scripted faults: partition(a, b) breaks every socket between a and b and
 * makes connects time out until heal(a, b); breakLink(a, b) breaks the
 * sockets once; crash(name) kills an endpoint: its sockets vanish without
 * running any handler (the code is dead), peers notice after a detection
 * delay, its listeners disappear, its timers and pending connects never
 * fire.  The test drops its objects; what survives a crash (a durable
 * store, say) is the test's choice.  restart(name) brings the host back
 * with a new incarnation; the test builds new objects on it.
 *
 * Failures and seeds: endpoints built for the simulator pass sim.onBug as
 * their bug hook; step() rethrows the first bug.  withSeed() wraps a run so
 * any failure names its seed and how to replay it; seedFromEnv() reads
 * SCOUTFS_SEED or --seed=N so a single seed can be rerun.
 *
 * Owner: the thread that runs the simulation; nothing here is shared.
 */
import assert from 'node:assert/strict';
import { FsError } from '../format/errors.js';
import { NET_HEADER_SIZE, readNetHeader, netCmdName } from '../format/net.js';
import { FakeClock, type Clock, type Timer } from '../runtime/clock.js';
import { SeededRandom } from '../runtime/random.js';
import { LazyHeap } from '../runtime/heap.js';
import { SocketHandlers, splitAddr, type NetListener, type NetSocket, type Transport } from './transport.js';

export interface LinkFaults {
  /** One-way latency of every send, uniform integer ms in [min, max]. */
  readonly latencyMs: readonly [number, number];
  /** Per send: lost, and the stream breaks there. */
  readonly dropRate: number;
  /** Per send: delivered a second time, later, on the same socket. */
  readonly dupRate: number;
  /** Per send: an extra delay that also holds back the rest of the socket. */
  readonly delayRate: number;
  readonly delayMs: readonly [number, number];
  /** How long each end takes to notice a broken stream. */
  readonly breakDetectMs: readonly [number, number];
}

export const QUIET_LINK: LinkFaults = Object.freeze({
  latencyMs: [1, 1] as const,
  dropRate: 0,
  dupRate: 0,
  delayRate: 0,
  delayMs: [0, 0] as const,
  breakDetectMs: [1, 1] as const,
});

interface SimEvent {
  readonly t: number;
  readonly seq: number;
  readonly label: string;
  readonly fn: () => void;
  live: boolean;
}

/** Events ordered by (t, seq): the seq breaks ties in scheduling order. */
function less(a: SimEvent, b: SimEvent): boolean {
  return a.t < b.t || (a.t === b.t && a.seq < b.seq);
}

const drain = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/* ---- sockets ------------------------------------------------------------- */

class SimSocket implements NetSocket {
  readonly id: number;
  readonly ep: SimEndpoint;
  readonly peer: string;
  other!: SimSocket;
  readonly h = new SocketHandlers();
  /** Delivery time of the last send on this side: per-socket FIFO. */
  lastAt = 0;
  /** The outgoing stream is broken: later sends vanish. */
  cut = false;
  private readonly sim: Simulator;

  constructor(sim: Simulator, id: number, ep: SimEndpoint, peer: string) {
    this.sim = sim;
    this.id = id;
    this.ep = ep;
    this.peer = peer;
  }

  get closed(): boolean {
    return this.h.closed;
  }

  send(bytes: Uint8Array): void {
    this.sim.transmit(this, bytes);
  }

  close(): void {
    if (this.h.close()) this.sim.localClose(this);
  }

  onData(fn: (chunk: Uint8Array) => void): void {
    this.h.onData(fn);
  }

  onClose(fn: () => void): void {
    this.h.onClose(fn);
  }

  toString(): string {
    return `${this.ep.name}#${this.id}`;
  }
}

/* ---- endpoints ------------------------------------------------------------ */

export class SimEndpoint {
  readonly name: string;
  incarnation = 0;
  up = true;
  random: SeededRandom;
  readonly clock: Clock;
  readonly transport: Transport;
  readonly sockets = new Set<SimSocket>();
  readonly listeners = new Map<number, (s: NetSocket) => void>();
  private nextPort = 1;

  constructor(sim: Simulator, name: string) {
    this.name = name;
    this.random = sim.rootRandom.fork(`endpoint:${name}:0`);
    const ep = this;
    this.clock = {
      nowMs: () => sim.clock.nowMs(),
      wallTime: () => sim.clock.wallTime(),
      setTimer(ms: number, fn: () => void): Timer {
        const inc = ep.incarnation;
        return sim.schedule(ms, `${ep.name} timer`, () => {
          if (ep.up && ep.incarnation === inc) fn();
        }, false);
      },
    };
    this.transport = {
      connect: (addr, timeoutMs) => sim.connect(ep, addr, timeoutMs),
      listen: (addr, onAccept) => {
        const { host, port } = splitAddr(addr);
        if (host !== ep.name) return Promise.reject(new FsError('EINVAL', `${ep.name} cannot listen on ${addr}`));
        const p = port === 0 ? 10000 + ep.nextPort++ : port;
        if (!ep.up) return Promise.reject(new FsError('ESHUTDOWN', `${ep.name} is down`));
        if (ep.listeners.has(p)) return Promise.reject(new FsError('EBUSY', `${host}:${p} in use`));
        ep.listeners.set(p, onAccept);
        const inc = ep.incarnation;
        const l: NetListener = {
          addr: `${ep.name}:${p}`,
          close: () => {
            if (ep.incarnation === inc && ep.listeners.get(p) === onAccept) ep.listeners.delete(p);
          },
        };
        return Promise.resolve(l);
      },
    };
  }
}

/* ---- the simulator ----------------------------------------------------------- */

export class Simulator {
  readonly seed: bigint;
  readonly clock = new FakeClock();
  /** The root stream; fork it, never draw from it directly. */
  readonly rootRandom: SeededRandom;
  private readonly net: SeededRandom;
  readonly trace: string[] = [];
  traceEnabled = true;
  readonly bugs: unknown[] = [];
  readonly onBug = (e: unknown): void => {
    this.bugs.push(e);
  };
  events = 0;

  private readonly heap = new LazyHeap<SimEvent>(less);
  private nextEventSeq = 0;
  private nextSocketId = 1;
  private readonly endpoints = new Map<string, SimEndpoint>();
  private readonly links = new Map<string, LinkFaults>();
  private readonly partitions = new Set<string>();
  defaultLink: LinkFaults;

  constructor(seed: bigint | number, opts: { defaultLink?: LinkFaults } = {}) {
    this.seed = BigInt(seed);
    this.rootRandom = new SeededRandom(this.seed);
    this.net = this.rootRandom.fork('net');
    this.defaultLink = opts.defaultLink ?? QUIET_LINK;
  }

  /** An independent random stream for the test's own decisions. */
  fork(label: string): SeededRandom {
    return this.rootRandom.fork(`test:${label}`);
  }

  note(line: string): void {
    if (this.traceEnabled) this.trace.push(`${this.clock.nowMs()} ${line}`);
  }

  /** A log function for endpoints: lines go to the trace, not the console. */
  logger(name: string): (line: string) => void {
    return (line) => this.note(`log ${name}: ${line}`);
  }

  endpoint(name: string): SimEndpoint {
    let ep = this.endpoints.get(name);
    if (ep === undefined) {
      assert(!name.includes(':'), 'endpoint names cannot contain ":"');
      ep = new SimEndpoint(this, name);
      this.endpoints.set(name, ep);
    }
    return ep;
  }

  setLink(from: string, to: string, f: LinkFaults): void {
    this.links.set(`${from}>${to}`, f);
  }

  /** Same faults both ways. */
  setLinks(a: string, b: string, f: LinkFaults): void {
    this.setLink(a, b, f);
    this.setLink(b, a, f);
  }

  /** Forget every per-link setting; the default applies again. */
  clearLinks(): void {
    this.links.clear();
  }

  link(from: string, to: string): LinkFaults {
    return this.links.get(`${from}>${to}`) ?? this.defaultLink;
  }

  private pairKey(a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`;
  }

  partitioned(a: string, b: string): boolean {
    return this.partitions.has(this.pairKey(a, b));
  }

  partition(a: string, b: string): void {
    this.note(`partition ${a} ${b}`);
    this.partitions.add(this.pairKey(a, b));
    this.breakLink(a, b);
  }

  heal(a: string, b: string): void {
    this.note(`heal ${a} ${b}`);
    this.partitions.delete(this.pairKey(a, b));
  }

  healAll(): void {
    this.note('heal all');
    this.partitions.clear();
  }

  /** Break every open socket between a and b (a socket-break fault). */
  breakLink(a: string, b: string): void {
    for (const s of [...this.endpoint(a).sockets]) {
      if (s.other.ep.name === b && !s.cut) this.breakPair(s, 'break');
    }
  }

  /** Kill an endpoint: see the top comment. */
  crash(name: string): void {
    const ep = this.endpoint(name);
    assert(ep.up, `${name} is already down`);
    this.note(`crash ${name}`);
    ep.up = false;
    ep.incarnation++;
    ep.listeners.clear();
    for (const s of [...ep.sockets]) {
      s.h.abandon();
      s.cut = true;
      ep.sockets.delete(s);
      const o = s.other;
      if (!o.h.closed && !o.cut) {
        o.cut = true;
        this.scheduleClose(o, this.uniform(this.link(o.ep.name, name).breakDetectMs), 'peer crashed');
      }
    }
  }

  restart(name: string): SimEndpoint {
    const ep = this.endpoint(name);
    assert(!ep.up, `${name} is up`);
    ep.up = true;
    ep.random = this.rootRandom.fork(`endpoint:${name}:${ep.incarnation}`);
    this.note(`restart ${name} incarnation ${ep.incarnation}`);
    return ep;
  }

  /* ---- the event queue -------------------------------------------------------- */

  schedule(delayMs: number, label: string, fn: () => void, traced = true): Timer {
    assert(Number.isFinite(delayMs) && delayMs >= 0, `bad delay ${delayMs}`);
    const e: SimEvent = {
      t: this.clock.nowMs() + delayMs, seq: this.nextEventSeq++, label: traced ? label : '', fn, live: true,
    };
    this.heap.push(e);
    return { cancel: () => { e.live = false; } };
  }

  /** Time of the next event (queue or FakeClock timer), or null. */
  nextEventMs(): number | null {
    const e = this.heap.peek();
    const c = this.clock.nextDueMs();
    if (e === undefined) return c;
    return c === null ? e.t : Math.min(c, e.t);
  }

  /** Run the earliest event and everything it set off.  false = nothing left. */
  async step(): Promise<boolean> {
    const e = this.heap.peek();
    const c = this.clock.nextDueMs();
    if (e === undefined && c === null) return false;
    const now = this.clock.nowMs();
    if (c !== null && (e === undefined || c <= e.t)) {
      this.clock.advance(c - now);
    } else {
      this.heap.pop();
      if (e!.t > now) this.clock.advance(e!.t - now);
      if (e!.label !== '') this.note(e!.label);
      this.events++;
      e!.fn();
    }
    await drain();
    this.throwBugs();
    return true;
  }

  /** Run until pred() holds (true) or time passes limitMs more (false). */
  async runUntil(pred: () => boolean, limitMs: number): Promise<boolean> {
    const deadline = this.clock.nowMs() + limitMs;
    await drain();
    this.throwBugs();
    for (;;) {
      if (pred()) return true;
      const t = this.nextEventMs();
      if (t === null || t > deadline) {
        if (deadline > this.clock.nowMs()) this.clock.advance(deadline - this.clock.nowMs());
        return pred();
      }
      await this.step();
    }
  }

  /** Run every event due in the next ms milliseconds. */
  async runFor(ms: number): Promise<void> {
    await this.runUntil(() => false, ms);
  }

  private throwBugs(): void {
    if (this.bugs.length > 0) {
      const e = this.bugs[0];
      throw e instanceof Error ? e : new Error(String(e));
    }
  }

  /* ---- the network ----------------------------------------------------------- */

  private uniform([lo, hi]: readonly [number, number]): number {
    assert(lo <= hi && lo >= 0);
    return lo + this.net.int(hi - lo + 1);
  }

  private chance(p: number): boolean {
    return p > 0 && this.net.float() < p;
  }

  connect(from: SimEndpoint, addr: string, timeoutMs: number): Promise<NetSocket> {
    return new Promise((resolve, reject) => {
      const inc = from.incarnation;
      const { host, port } = splitAddr(addr);
      const to = this.endpoints.get(host);
      let done = false;
      let pair: SimSocket | null = null;
      const alive = (): boolean => from.up && from.incarnation === inc;
      const timeout = this.schedule(timeoutMs, `connect ${from.name}->${addr} timeout`, () => {
        if (done || !alive()) return;
        done = true;
        if (pair !== null && !pair.cut) this.breakPair(pair, 'connect timed out');
        reject(new FsError('ETIMEDOUT', `connect to ${addr}`));
      });
      if (!from.up) return;
      if (to === undefined) return; // nobody there: the timeout fires
      const f = this.link(from.name, host);
      this.schedule(this.uniform(f.latencyMs), `syn ${from.name}->${addr}`, () => {
        if (done || !alive() || !to.up || this.partitioned(from.name, host)) return;
        if (this.chance(f.dropRate)) return;
        const accept = to.listeners.get(port);
        const back = this.link(host, from.name);
        if (accept === undefined) {
          this.schedule(this.uniform(back.latencyMs), `refused ${from.name}->${addr}`, () => {
            if (done || !alive()) return;
            done = true;
            timeout.cancel();
            reject(new FsError('ECONNREFUSED', `connect to ${addr}`));
          });
          return;
        }
        const local = new SimSocket(this, this.nextSocketId++, from, addr);
        const remote = new SimSocket(this, this.nextSocketId++, to, `${from.name}:${local.id}`);
        local.other = remote;
        remote.other = local;
        from.sockets.add(local);
        to.sockets.add(remote);
        pair = local;
        this.note(`accept ${remote} from ${local}`);
        accept(remote);
        this.schedule(this.uniform(back.latencyMs), `connected ${local}`, () => {
          if (done || !alive()) return;
          done = true;
          timeout.cancel();
          if (local.h.closed || local.cut) {
            reject(new FsError('ETIMEDOUT', `connect to ${addr}: broke while connecting`));
            return;
          }
          resolve(local);
        });
      });
    });
  }

  transmit(s: SimSocket, bytes: Uint8Array): void {
    if (s.h.closed) return;
    const d = s.other;
    const what = this.traceEnabled ? describeBytes(bytes) : '';
    if (s.cut) {
      this.note(`lost ${s}->${d} ${what}`);
      return;
    }
    if (this.partitioned(s.ep.name, d.ep.name)) {
      this.note(`lost ${s}->${d} ${what} (partition)`);
      this.breakPair(s, 'partition');
      return;
    }
    const f = this.link(s.ep.name, d.ep.name);
    if (this.chance(f.dropRate)) {
      this.note(`drop ${s}->${d} ${what}`);
      this.breakPair(s, 'drop');
      return;
    }
    let t = this.clock.nowMs() + this.uniform(f.latencyMs);
    if (this.chance(f.delayRate)) t += this.uniform(f.delayMs);
    t = Math.max(t, s.lastAt);
    s.lastAt = t;
    const copy = bytes.slice();
    this.deliverAt(t, s, d, copy, what);
    if (this.chance(f.dupRate)) {
      const t2 = Math.max(t + this.uniform(f.latencyMs), s.lastAt);
      s.lastAt = t2;
      this.deliverAt(t2, s, d, copy.slice(), `${what} (dup)`);
    }
  }

  private deliverAt(t: number, s: SimSocket, d: SimSocket, bytes: Uint8Array, what: string): void {
    this.schedule(t - this.clock.nowMs(), `deliver ${s}->${d} ${what}`, () => {
      if (d.h.closed) {
        this.note(`discard at closed ${d}`);
        return;
      }
      d.h.data(bytes);
    });
  }

  /** The stream between s and its peer broke: see drop in the top comment. */
  private breakPair(s: SimSocket, why: string): void {
    this.note(`break ${s}<->${s.other} (${why})`);
    for (const x of [s, s.other]) {
      if (x.cut) continue;
      x.cut = true;
      if (!x.h.closed) this.scheduleClose(x, this.uniform(this.link(x.other.ep.name, x.ep.name).breakDetectMs), why);
    }
  }

  /** A local close(): the peer gets what was already sent, then the close. */
  localClose(s: SimSocket): void {
    s.ep.sockets.delete(s);
    const o = s.other;
    const wasCut = s.cut;
    s.cut = true;
    if (o.h.closed || o.cut) return;
    o.cut = true;
    if (wasCut) {
      // The stream was already broken: the peer learns by its own detection.
      this.scheduleClose(o, this.uniform(this.link(o.ep.name, s.ep.name).breakDetectMs), 'peer closed');
      return;
    }
    const t = Math.max(this.clock.nowMs() + this.uniform(this.link(s.ep.name, o.ep.name).latencyMs), s.lastAt);
    this.scheduleClose(o, t - this.clock.nowMs(), 'peer closed');
  }

  private scheduleClose(x: SimSocket, delayMs: number, why: string): void {
    this.schedule(delayMs, `close ${x} (${why})`, () => {
      x.ep.sockets.delete(x);
      x.h.close();
    });
  }
}

function describeBytes(b: Uint8Array): string {
  if (b.length < NET_HEADER_SIZE) return `${b.length} bytes`;
  const h = readNetHeader(b, 0);
  return `${netCmdName(h.cmd)}${h.flags & 1 ? ' resp' : ''} seq ${h.seq} ack ${h.recv_seq} id ${h.id}` +
    (h.error ? ` err ${h.error}` : '') + ` len ${h.data_len}`;
}

/* ---- seeds ------------------------------------------------------------------ */

export function parseSeed(s: string): bigint {
  const t = s.trim();
  if (!/^(0x[0-9a-fA-F]+|\d+)$/.test(t)) throw new Error(`bad seed "${s}": decimal or 0x hex`);
  const v = BigInt(t);
  if (v > 0xffffffffffffffffn) throw new Error(`seed ${s} is not a u64`);
  return v;
}

/** SCOUTFS_SEED=N, or --seed=N / --seed N on the command line; else null. */
export function seedFromEnv(argv: readonly string[] = process.argv, env = process.env): bigint | null {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.startsWith('--seed=')) return parseSeed(a.slice('--seed='.length));
    if (a === '--seed' && argv[i + 1] !== undefined) return parseSeed(argv[i + 1]!);
  }
  const e = env.SCOUTFS_SEED;
  return e !== undefined && e !== '' ? parseSeed(e) : null;
}

/** The seeds a sweep runs: the one from the environment, or count from base. */
export function sweepSeeds(count: number, base = 1n): bigint[] {
  const one = seedFromEnv();
  if (one !== null) return [one];
  return Array.from({ length: count }, (_, i) => base + BigInt(i));
}

export class SeedFailure extends Error {
  readonly seed: bigint;
  override readonly cause: unknown;
  constructor(seed: bigint, cause: unknown, replay: string) {
    const msg = cause instanceof Error ? cause.message : String(cause);
    super(`seed ${seed} failed: ${msg}\n  replay: SCOUTFS_SEED=${seed} ${replay}`);
    this.name = 'SeedFailure';
    this.seed = seed;
    this.cause = cause;
    if (cause instanceof Error && cause.stack) this.stack = `${this.message}\n${cause.stack}`;
  }
}

/** Run fn(seed); on failure print the seed and rethrow as SeedFailure. */
export async function withSeed<T>(seed: bigint, replay: string, fn: (seed: bigint) => Promise<T>): Promise<T> {
  try {
    return await fn(seed);
  } catch (e) {
    const f = new SeedFailure(seed, e, replay);
    console.error(f.message);
    throw f;
  }
}

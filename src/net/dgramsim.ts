/*
 * Simulated datagrams: a DatagramTransport per simulator endpoint, inside
 * the seeded Simulator of sim.ts (its event queue, FakeClock, partitions
 * and crashes), so a quorum of members runs in one process from one seed.
 *
 * Addresses are what the members bind, normally their quorum slot
 * addresses "a.b.c.d:port" from the super block.  A bind belongs to the
 * endpoint (host) that made it and to that endpoint's incarnation: after
 * sim.crash(host) the socket is dead (nothing is delivered to it, its sends
 * vanish, its handlers never run again) and the address is free for the
 * restarted host.  Two different hosts may bind the same address (two
 * machines misconfigured with one address: what a quorum slot used by two
 * mounts looks like on a network); a datagram to that address then reaches
 * each of them.  One host binding an address twice is EADDRINUSE, as on
 * Linux.
 *
 * Faults, per directed host pair (setLink) or the default, each decided per
 * datagram from the 'dgram' fork of the simulator's seed:
 *   - latency: uniform integer ms in [min, max];
 *   - drop: the datagram is lost;
 *   - duplicate: delivered a second time, later;
 *   - delay: an extra delay on this datagram only, so later datagrams
 *     overtake it (datagrams have no order to keep, unlike streams).
 * A partition between the two hosts (sim.partition) loses datagrams sent
 * while it lasts and datagrams in flight when it is delivered.  Datagrams
 * to an address nobody has bound are lost (counted as noListener).
 *
 * Every datagram is one event in the simulator's queue, so a seed replays
 * exactly; sends and deliveries are noted in the simulator trace (when it
 * is enabled) with a describe() the owner may set.
 *
 * Owner: the thread that runs the simulation.
 */
import assert from 'node:assert/strict';
import { FsError } from '../format/errors.js';
import type { SeededRandom } from '../runtime/random.js';
import type { Simulator } from './sim.js';
import { splitAddr } from './transport.js';
import type { DatagramSocket, DatagramTransport } from './datagram.js';

export interface DatagramFaults {
  readonly latencyMs: readonly [number, number];
  readonly dropRate: number;
  readonly dupRate: number;
  readonly delayRate: number;
  readonly delayMs: readonly [number, number];
}

export const QUIET_DATAGRAMS: DatagramFaults = Object.freeze({
  latencyMs: [1, 1] as const,
  dropRate: 0,
  dupRate: 0,
  delayRate: 0,
  delayMs: [0, 0] as const,
});

export interface DatagramSimCounters {
  sent: number;
  delivered: number;
  dropped: number;
  duplicated: number;
  delayed: number;
  partitionLost: number;
  noListener: number;
  deadSender: number;
}

class SimDatagramSocket implements DatagramSocket {
  readonly msgFns: ((b: Uint8Array, from: string) => void)[] = [];
  readonly errFns: ((e: Error) => void)[] = [];
  closed = false;

  constructor(
    private readonly net: SimDatagramNet,
    readonly host: string,
    readonly incarnation: number,
    readonly addr: string,
  ) {}

  send(to: string, bytes: Uint8Array): void {
    this.net.transmit(this, to, bytes);
  }

  onMessage(fn: (bytes: Uint8Array, from: string) => void): void {
    this.msgFns.push(fn);
  }

  onError(fn: (err: Error) => void): void {
    this.errFns.push(fn);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.msgFns.length = 0;
    this.errFns.length = 0;
    this.net.unbind(this);
  }
}

export class SimDatagramNet {
  readonly counters: DatagramSimCounters = {
    sent: 0, delivered: 0, dropped: 0, duplicated: 0, delayed: 0, partitionLost: 0, noListener: 0, deadSender: 0,
  };
  defaultFaults: DatagramFaults;
  /** How the trace names a datagram's bytes; the quorum tests set it. */
  describe: (bytes: Uint8Array) => string = (b) => `${b.length} bytes`;
  private readonly sim: Simulator;
  private readonly random: SeededRandom;
  private readonly links = new Map<string, DatagramFaults>();
  private readonly bound = new Map<string, SimDatagramSocket[]>();

  constructor(sim: Simulator, opts: { faults?: DatagramFaults } = {}) {
    this.sim = sim;
    this.random = sim.rootRandom.fork('dgram');
    this.defaultFaults = opts.faults ?? QUIET_DATAGRAMS;
  }

  setLink(from: string, to: string, f: DatagramFaults): void {
    this.links.set(`${from}>${to}`, f);
  }

  clearLinks(): void {
    this.links.clear();
  }

  faults(from: string, to: string): DatagramFaults {
    return this.links.get(`${from}>${to}`) ?? this.defaultFaults;
  }

  /** The datagram transport of one simulator endpoint (host). */
  transport(host: string): DatagramTransport {
    const ep = this.sim.endpoint(host);
    return {
      bind: (addr: string): Promise<DatagramSocket> => {
        splitAddr(addr);
        if (!ep.up) return Promise.reject(new FsError('ESHUTDOWN', `${host} is down`));
        const list = this.live(addr);
        if (list.some((s) => s.host === host)) return Promise.reject(new FsError('EBUSY', `${host}: EADDRINUSE ${addr}`));
        const s = new SimDatagramSocket(this, host, ep.incarnation, addr);
        list.push(s);
        this.bound.set(addr, list);
        return Promise.resolve(s);
      },
    };
  }

  /** The live sockets bound to addr (dropping those of crashed incarnations). */
  private live(addr: string): SimDatagramSocket[] {
    const list = (this.bound.get(addr) ?? []).filter((s) => !s.closed && this.alive(s));
    if (list.length === 0) this.bound.delete(addr);
    else this.bound.set(addr, list);
    return list;
  }

  private alive(s: SimDatagramSocket): boolean {
    const ep = this.sim.endpoint(s.host);
    return ep.up && ep.incarnation === s.incarnation;
  }

  unbind(s: SimDatagramSocket): void {
    const list = this.bound.get(s.addr);
    if (list === undefined) return;
    const rest = list.filter((x) => x !== s);
    if (rest.length === 0) this.bound.delete(s.addr);
    else this.bound.set(s.addr, rest);
  }

  private uniform([lo, hi]: readonly [number, number]): number {
    assert(lo <= hi && lo >= 0);
    return lo + this.random.int(hi - lo + 1);
  }

  private chance(p: number): boolean {
    return p > 0 && this.random.float() < p;
  }

  transmit(s: SimDatagramSocket, to: string, bytes: Uint8Array): void {
    if (s.closed) return;
    if (!this.alive(s)) {
      this.counters.deadSender++;
      return;
    }
    this.counters.sent++;
    const copy = bytes.slice();
    const what = this.sim.traceEnabled ? this.describe(copy) : '';
    const dests = this.live(to).filter((d) => d !== s);
    if (dests.length === 0) this.counters.noListener++;
    for (const d of dests) {
      if (this.sim.partitioned(s.host, d.host)) {
        this.counters.partitionLost++;
        this.sim.note(`dgram lost ${s.addr}->${to} ${what} (partition)`);
        continue;
      }
      const f = this.faults(s.host, d.host);
      if (this.chance(f.dropRate)) {
        this.counters.dropped++;
        this.sim.note(`dgram drop ${s.addr}->${to} ${what}`);
        continue;
      }
      let t = this.uniform(f.latencyMs);
      if (this.chance(f.delayRate)) {
        this.counters.delayed++;
        t += this.uniform(f.delayMs);
      }
      this.deliverAfter(t, s, d, copy, what);
      if (this.chance(f.dupRate)) {
        this.counters.duplicated++;
        this.deliverAfter(t + this.uniform(f.latencyMs), s, d, copy.slice(), `${what} (dup)`);
      }
    }
  }

  private deliverAfter(delayMs: number, s: SimDatagramSocket, d: SimDatagramSocket, bytes: Uint8Array, what: string): void {
    this.sim.schedule(delayMs, `dgram ${s.addr}->${d.addr} ${what}`, () => {
      if (d.closed || !this.alive(d)) return;
      if (this.sim.partitioned(s.host, d.host)) {
        this.counters.partitionLost++;
        return;
      }
      this.counters.delivered++;
      for (const fn of d.msgFns) fn(bytes, s.addr);
    }, this.sim.traceEnabled);
  }
}

/*
 * Helpers for the message-layer tests: a simulated server and clients with
 * quiet links, raw frames that skip encodeFrame's assertions (to play a
 * broken peer), and a raw peer socket that records what it receives.
 * Not a test file.
 */
import { NET_HEADER_SIZE, encodeNetGreeting, writeNetHeader, type NetHeader } from '../../../src/format/net.js';
import { NetClient, type NetClientOptions } from '../../../src/net/client.js';
import { newNetStats, type NetStats } from '../../../src/net/connection.js';
import { FrameReader, type NetFrame } from '../../../src/net/frame.js';
import { NetServer, type NetServerOptions } from '../../../src/net/server.js';
import { Simulator } from '../../../src/net/sim.js';
import type { NetSocket } from '../../../src/net/transport.js';
import { FSID, SERVER_ADDR } from './scenario.js';

export { FSID, SERVER_ADDR };

/** Any header, valid or not, followed by data. */
export function rawFrame(h: Partial<NetHeader>, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const full: NetHeader = {
    clock_sync_id: 0n, seq: 1n, recv_seq: 0n, id: 1n, data_len: data.length, cmd: 1, flags: 0, error: 0, ...h,
  };
  const b = new Uint8Array(NET_HEADER_SIZE + data.length);
  writeNetHeader(b, 0, full);
  b.set(data, NET_HEADER_SIZE);
  return b;
}

export function greetingPayload(over: { fsid?: bigint; term?: bigint; rid?: bigint; flags?: bigint; fmt?: bigint } = {}): Uint8Array {
  return encodeNetGreeting({
    fsid: over.fsid ?? FSID, fmt_vers: over.fmt ?? 0n, server_term: over.term ?? 0n, rid: over.rid ?? 0x77n,
    flags: over.flags ?? 0n,
  });
}

export interface SimWorld {
  sim: Simulator;
  server: NetServer;
  serverStats: NetStats;
  client(name: string, extra?: Partial<NetClientOptions>): NetClient;
  /** Start a (new) server on the "server" endpoint. */
  startServer(extra?: Partial<NetServerOptions>): Promise<NetServer>;
  logs: string[];
}

export async function simWorld(seed = 1n, serverExtra: Partial<NetServerOptions> = {}): Promise<SimWorld> {
  const sim = new Simulator(seed);
  const logs: string[] = [];
  const serverStats = newNetStats();
  let nextRid = 0x100n;
  const w: SimWorld = {
    sim,
    server: null as unknown as NetServer,
    serverStats,
    logs,
    client(name, extra = {}) {
      const ep = sim.endpoint(name);
      return new NetClient({
        transport: ep.transport, clock: ep.clock, random: ep.random, fsid: FSID, rid: nextRid++,
        findServer: () => SERVER_ADDR, name, log: (l) => logs.push(`${name}: ${l}`), onBug: sim.onBug, ...extra,
      });
    },
    async startServer(extra = {}) {
      const ep = sim.endpoint('server');
      const s = new NetServer({
        transport: ep.transport, clock: ep.clock, random: ep.random, fsid: FSID, term: 1n, listenAddr: SERVER_ADDR,
        log: (l) => logs.push(`server: ${l}`), onBug: sim.onBug, stats: serverStats, ...serverExtra, ...extra,
      });
      w.server = s;
      return s;
    },
  };
  return w;
}

/** A peer that speaks raw bytes and records the frames it gets back. */
export class RawPeer {
  readonly sock: NetSocket;
  readonly frames: NetFrame[] = [];
  closed = false;
  private readonly reader: FrameReader;

  constructor(sock: NetSocket) {
    this.sock = sock;
    this.reader = new FrameReader(`raw peer of ${sock.peer}`);
    sock.onData((c) => {
      for (const f of this.reader.push(c)) this.frames.push(f);
    });
    sock.onClose(() => {
      this.closed = true;
    });
  }

  send(b: Uint8Array): void {
    this.sock.send(b);
  }
}

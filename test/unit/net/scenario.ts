/*
 * The randomized message-layer scenario shared by the seed sweep, the
 * determinism test and the replay tool (replay.ts).  Not a test file.
 *
 * One server and a few clients on the simulated network.  Everything is
 * drawn from the seed: the link faults (latency, drops that break streams,
 * duplicates, delays that reorder across sockets), scripted socket breaks,
 * short partitions and, when enabled, server crashes followed by a restart
 * with the next term.  Each client submits ALLOC_INODES requests carrying a
 * unique token; the server handler records every delivery of a token in a
 * map that survives server crashes (the "durable side effect"), waits a
 * little, and answers with the token, ESTALE (token % 11 == 0, inside the
 * extended wire table) or EDQUOT (token % 13 == 0, outside it: must arrive
 * as EIO).  The server also sends SYNC_LOG_TREES to every client now and
 * then.  After the fault window the network goes quiet and the run must
 * reach the state where every request's callback ran.
 *
 * check() states what must hold for every seed:
 *   - every request's callback ran exactly once, with the right result;
 *   - every request reached a handler at least once; a second handling is
 *     always flagged 'maybe-resent'; without a server crash nothing is
 *     handled twice (same-server resends are deduplicated by seq);
 *   - a client handles each server request at most once per server term,
 *     and each server request callback runs at most once;
 *   - once quiet, no client request is pending and acknowledgements keep
 *     the resend queues short;
 *   - no bug surfaced (the simulator rethrows them).
 */
import assert from 'node:assert/strict';
import { FsError } from '../../../src/format/errors.js';
import {
  NET_CMD, decodeNetInodeAlloc, decodeNetU64, encodeNetInodeAlloc, encodeNetU64,
} from '../../../src/format/net.js';
import type { Clock } from '../../../src/runtime/clock.js';
import { NetClient } from '../../../src/net/client.js';
import { newNetStats, type Delivery, type NetResult, type NetStats } from '../../../src/net/connection.js';
import { NetServer } from '../../../src/net/server.js';
import { Simulator, QUIET_LINK, type LinkFaults } from '../../../src/net/sim.js';

export const FSID = 0x5c0f5c0f5c0f5c0fn;
export const SERVER_ADDR = 'server:7000';

export const sleep = (clock: Clock, ms: number): Promise<void> =>
  new Promise((resolve) => clock.setTimer(ms, resolve));

export interface ScenarioOptions {
  clients?: number;
  requestsPerClient?: number;
  /** Allow server crashes (then a request may be handled twice). */
  crashes?: boolean;
  trace?: boolean;
  /** Multiplies the fault rates (1 = the sweep's default). */
  intensity?: number;
}

export interface ScenarioResult {
  seed: bigint;
  trace: string[];
  faults: LinkFaults;
  crashes: number;
  stats: { server: NetStats; clients: NetStats };
  /** token -> delivery flag of every handling, across server incarnations. */
  handled: Map<bigint, Delivery[]>;
  callbacks: Map<bigint, NetResult[]>;
  tokens: bigint[];
  simMs: number;
  events: number;
  errors: string[];
  /** Queue lengths at the end, after the quiet period. */
  queues: { name: string; send: number; resend: number; live: number }[];
}

function drawFaults(sim: Simulator, k: number): LinkFaults {
  const r = sim.fork('faults');
  const lat = 1 + r.int(20);
  return {
    latencyMs: [1, lat],
    dropRate: Math.min(0.5, r.float() * 0.03 * k),
    dupRate: Math.min(0.5, r.float() * 0.05 * k),
    delayRate: Math.min(0.5, r.float() * 0.1 * k),
    delayMs: [20, 20 + r.int(800)],
    breakDetectMs: [1, 1 + r.int(2000)],
  };
}

export async function runScenario(seed: bigint, opts: ScenarioOptions = {}): Promise<ScenarioResult> {
  const nClients = opts.clients ?? 2;
  const perClient = opts.requestsPerClient ?? 12;
  const sim = new Simulator(seed);
  sim.traceEnabled = opts.trace ?? true;
  const rnd = sim.fork('scenario');
  const k = opts.intensity ?? 1;
  const faults = drawFaults(sim, k);
  sim.defaultLink = faults;

  const handled = new Map<bigint, Delivery[]>();
  const callbacks = new Map<bigint, NetResult[]>();
  const serverStats = newNetStats();
  const clientStats = newNetStats();
  const errors: string[] = [];
  const syncSeen = new Set<string>();
  let term = 1n;
  let crashes = 0;
  let server: NetServer | null = null;

  const startServer = async (): Promise<void> => {
    const ep = sim.endpoint('server');
    const srv = new NetServer({
      transport: ep.transport, clock: ep.clock, random: ep.random, fsid: FSID, term, listenAddr: SERVER_ADDR,
      log: sim.logger('server'), onBug: sim.onBug, stats: serverStats,
      hooks: { greeting: () => sleep(ep.clock, rnd.int(4)) },
    });
    srv.register(NET_CMD.ALLOC_INODES, async (req) => {
      const token = decodeNetU64(req.data);
      const seen = handled.get(token) ?? [];
      seen.push(req.delivery);
      handled.set(token, seen);
      await sleep(ep.clock, rnd.int(30));
      if (token % 11n === 0n) throw new FsError('ESTALE', `token ${token}`);
      if (token % 13n === 0n) throw new FsError('EDQUOT', `token ${token}`);
      return encodeNetInodeAlloc({ ino: token, nr: BigInt(seen.length) });
    });
    await srv.listen();
    // Server requests: SYNC_LOG_TREES to every client now and then.
    const tick = (): void => {
      if (server !== srv) return;
      for (const rid of srv.rids()) {
        let ran = false;
        srv.submitRequestToRid(rid, NET_CMD.SYNC_LOG_TREES, new Uint8Array(0), () => {
          if (ran) errors.push(`server request callback ran twice (rid ${rid})`);
          ran = true;
        });
      }
      ep.clock.setTimer(150 + rnd.int(200), tick);
    };
    server = srv;
    ep.clock.setTimer(rnd.int(200), tick);
  };
  await startServer();

  const clients: NetClient[] = [];
  for (let i = 0; i < nClients; i++) {
    const name = `c${i + 1}`;
    const ep = sim.endpoint(name);
    const c = new NetClient({
      transport: ep.transport, clock: ep.clock, random: ep.random, fsid: FSID, rid: 0x1000n + BigInt(i),
      findServer: () => SERVER_ADDR, name, log: sim.logger(name), onBug: sim.onBug, stats: clientStats,
    });
    c.register(NET_CMD.SYNC_LOG_TREES, (req) => {
      const k = `${name}:${c.serverTerm}:${req.id}`;
      if (syncSeen.has(k)) errors.push(`client ${name} handled server request ${k} twice`);
      syncSeen.add(k);
      return new Uint8Array(0);
    });
    c.start();
    clients.push(c);
  }

  // The workload: unique tokens submitted at random times.
  const windowMs = 3000;
  const tokens: bigint[] = [];
  clients.forEach((c, ci) => {
    for (let k = 0; k < perClient; k++) {
      const token = BigInt((ci + 1) * 1000 + k);
      tokens.push(token);
      sim.schedule(rnd.int(windowMs), `submit ${token}`, () => {
        c.submitRequest(NET_CMD.ALLOC_INODES, encodeNetU64(token), (r) => {
          const list = callbacks.get(token) ?? [];
          list.push(r);
          callbacks.set(token, list);
        });
      });
    }
  });

  // Scripted faults inside the window.
  for (let i = 0, n = rnd.int(Math.ceil(4 * k)); i < n; i++) {
    const c = `c${1 + rnd.int(nClients)}`;
    sim.schedule(rnd.int(windowMs), `fault: break ${c}`, () => sim.breakLink(c, 'server'));
  }
  for (let i = 0, n = rnd.int(Math.ceil(3 * k)); i < n; i++) {
    const c = `c${1 + rnd.int(nClients)}`;
    const at = rnd.int(windowMs);
    const len = 100 + rnd.int(2500);
    sim.schedule(at, `fault: partition ${c}`, () => sim.partition(c, 'server'));
    sim.schedule(at + len, `fault: heal ${c}`, () => sim.heal(c, 'server'));
  }
  if (opts.crashes ?? true) {
    for (let i = 0, n = rnd.int(3); i < n; i++) {
      const at = rnd.int(windowMs);
      const down = 50 + rnd.int(1500);
      sim.schedule(at, 'fault: crash server', () => {
        if (!sim.endpoint('server').up) return;
        crashes++;
        server = null;
        sim.crash('server');
        sim.schedule(down, 'fault: restart server', () => {
          sim.restart('server');
          term++;
          void startServer();
        });
      });
    }
  }

  // Fault window, then a quiet network until every callback ran.
  await sim.runFor(windowMs + 2000);
  sim.note('quiesce');
  sim.defaultLink = { ...QUIET_LINK, latencyMs: faults.latencyMs };
  sim.healAll();
  const done = (): boolean => tokens.every((t) => (callbacks.get(t)?.length ?? 0) >= 1);
  const live = await sim.runUntil(done, 120_000);
  if (!live) {
    const missing = tokens.filter((t) => !callbacks.has(t));
    errors.push(`liveness: no callback for ${missing.length} requests (${missing.slice(0, 5).join(', ')}...)`);
  }
  // Let stragglers (late duplicates, late responses) arrive, then stop.
  await sim.runFor(3000);
  const queues = clients.map((c) => ({ name: c.name, ...c.queued() }));
  for (const conn of (server as NetServer | null)?.connections() ?? []) {
    if (conn.sock !== null) queues.push({ name: `server rid ${conn.rid}`, ...conn.queued() });
  }
  for (const c of clients) c.shutdown();
  (server as NetServer | null)?.shutdown();

  return {
    seed, trace: sim.trace, faults, crashes, stats: { server: serverStats, clients: clientStats }, handled,
    callbacks, tokens, simMs: sim.clock.nowMs(), events: sim.events, errors, queues,
  };
}

/** Throws (AssertionError) if anything check() promises was violated. */
export function check(r: ScenarioResult): void {
  assert.deepEqual(r.errors, [], 'scenario errors');
  // Quiet and connected: no client request is pending, and acknowledgement
  // keeps the resend queues short (at most the latest unacknowledged
  // responses to server requests).
  for (const q of r.queues) {
    if (!q.name.startsWith('server')) assert.equal(q.live, 0, `${q.name}: requests still pending`);
    assert.equal(q.send, 0, `${q.name}: send queue not flushed`);
    assert(q.resend - q.live <= 2, `${q.name}: ${q.resend - q.live} unacknowledged responses`);
  }
  for (const t of r.tokens) {
    const cbs = r.callbacks.get(t) ?? [];
    assert.equal(cbs.length, 1, `token ${t}: ${cbs.length} callbacks`);
    const res = cbs[0]!;
    if (t % 11n === 0n) {
      assert(!res.ok && res.error instanceof FsError && res.error.code === 'ESTALE', `token ${t}: want ESTALE`);
    } else if (t % 13n === 0n) {
      assert(!res.ok && res.error instanceof FsError && res.error.code === 'EIO', `token ${t}: want EIO`);
    } else {
      assert(res.ok, `token ${t}: want success, got ${res.ok ? '' : res.error.message}`);
      assert.equal(decodeNetInodeAlloc(res.data).ino, t);
    }
    const h = r.handled.get(t) ?? [];
    assert(h.length >= 1, `token ${t} never reached a handler`);
    for (const d of h.slice(1)) assert.equal(d, 'maybe-resent', `token ${t}: a second handling must be maybe-resent`);
    if (r.crashes === 0) assert.equal(h.length, 1, `token ${t} handled ${h.length} times without a server crash`);
  }
}

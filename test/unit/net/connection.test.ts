/*
 * Goal: the connection state machine does what PROTOCOL.md 3.5-3.7 and our
 * rules say, one scripted scenario per path, on the simulator (quiet links,
 * so each scenario is exact) and once over the in-process transport:
 *   - request/response, every errno across the wire (table or EIO);
 *   - garbage and protocol violations from a peer: the socket is shut down,
 *     a CorruptionError is counted, nothing crashes, others keep working;
 *   - wrong request size -> EINVAL without the handler; wrong response size
 *     -> CorruptionError to the caller;
 *   - lost response, same server: the resent request is deduplicated (the
 *     handler ran once) and the response comes from the resend queue;
 *   - lost response, server crash: the request reaches the next server's
 *     handler again, flagged maybe-resent, and the callback runs once;
 *   - reconnect-wait expiry fences, and the same-term client is refused;
 *   - farewell, shutdown, destroyed connections, stale responses to a
 *     previous server, ordered handlers, the bug hook.
 * Each scenario proves its path ran through a counter.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CorruptionError, ERRNO, FsError, LifecycleError, type ErrnoName } from '../../../src/format/errors.js';
import {
  NET_CMD, WIRE_ERRORS, decodeNetInodeAlloc, decodeNetU64, encodeNetInodeAlloc, encodeNetU64, encodeNetLock,
  readNetLock, type NetCmd,
} from '../../../src/format/net.js';
import { key } from '../../../src/format/key.js';
import { NetClient } from '../../../src/net/client.js';
import { DEFERRED, type DeferredReply, type Delivery, type IncomingRequest, type NetResult } from '../../../src/net/connection.js';
import { NetServer } from '../../../src/net/server.js';
import { InProcNetwork } from '../../../src/net/inproc.js';
import { RealClock } from '../../../src/runtime/clock.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { QUIET_LINK } from '../../../src/net/sim.js';
import { FSID, RawPeer, greetingPayload, rawFrame, simWorld, SERVER_ADDR } from './util.js';
import { sleep } from './scenario.js';

const EMPTY = new Uint8Array(0);
const u64 = encodeNetU64;

/** A server with an echoing ALLOC_INODES handler that counts calls. */
async function echoWorld(seed = 1n) {
  const w = await simWorld(seed);
  const server = await w.startServer();
  const calls: { token: bigint; delivery: Delivery }[] = [];
  server.register(NET_CMD.ALLOC_INODES, (req) => {
    const token = decodeNetU64(req.data);
    calls.push({ token, delivery: req.delivery });
    return encodeNetInodeAlloc({ ino: token, nr: 1n });
  });
  await server.listen();
  return { ...w, server, calls };
}

async function connectRaw(w: { sim: import('../../../src/net/sim.js').Simulator }, name: string): Promise<RawPeer> {
  let sock: import('../../../src/net/transport.js').NetSocket | null = null;
  let err: unknown = null;
  w.sim.endpoint(name).transport.connect(SERVER_ADDR, 1000).then((s) => { sock = s; }, (e: unknown) => { err = e; });
  await w.sim.runUntil(() => sock !== null || err !== null, 2000);
  if (sock === null) throw err;
  return new RawPeer(sock);
}

function collect(client: NetClient, cmd: NetCmd, data: Uint8Array): NetResult[] {
  const out: NetResult[] = [];
  client.submitRequest(cmd, data, (r) => out.push(r));
  return out;
}

test('request and response; every errno crosses the wire as itself or as EIO', async () => {
  const w = await simWorld();
  const server = await w.startServer();
  const names = Object.keys(ERRNO) as ErrnoName[];
  server.register(NET_CMD.ALLOC_INODES, (req) => {
    const i = Number(decodeNetU64(req.data));
    if (i === names.length) return encodeNetInodeAlloc({ ino: 42n, nr: 1n });
    throw new FsError(names[i]!, 'from the handler');
  });
  await server.listen();
  const c = w.client('c1');
  c.start();
  const ok = c.request(NET_CMD.ALLOC_INODES, u64(BigInt(names.length)));
  const errs = names.map((_, i) => c.request(NET_CMD.ALLOC_INODES, u64(BigInt(i))).then(
    () => assert.fail('must reject'),
    (e: unknown) => e,
  ));
  await w.sim.runUntil(() => w.serverStats.requestsHandled === names.length + 1, 10_000);
  await w.sim.runFor(100);
  assert.equal(decodeNetInodeAlloc(await ok).ino, 42n);
  const got = await Promise.all(errs);
  names.forEach((n, i) => {
    const e = got[i];
    assert(e instanceof FsError, `${n}: ${String(e)}`);
    assert.equal(e.code, WIRE_ERRORS.includes(n) ? n : 'EIO', n);
  });
  assert.equal(w.serverStats.errorResponsesSent, names.length);
  c.shutdown();
  server.shutdown();
});

test('garbage from a peer: clean shutdown, CorruptionError counted, the server keeps serving', async () => {
  const cases: [string, (p: RawPeer) => void][] = [
    ['random bytes', (p) => p.send(Uint8Array.from({ length: 64 }, (_, i) => (i * 37 + 11) & 0xff))],
    ['seq 0', (p) => p.send(rawFrame({ seq: 0n, cmd: 0 }, greetingPayload()))],
    ['id 0', (p) => p.send(rawFrame({ id: 0n, cmd: 0 }, greetingPayload()))],
    ['cmd >= UNKNOWN', (p) => p.send(rawFrame({ cmd: 20 }))],
    ['unknown flag', (p) => p.send(rawFrame({ cmd: 0, flags: 4 }, greetingPayload()))],
    ['error >= UNKNOWN', (p) => p.send(rawFrame({ flags: 1, error: 200 }))],
    ['data_len > 1100', (p) => p.send(rawFrame({ data_len: 1101 }))],
    ['request with error', (p) => p.send(rawFrame({ cmd: 0, error: 1 }, greetingPayload()))],
    ['greeting response to a server', (p) => p.send(rawFrame({ cmd: 0, flags: 1 }, greetingPayload()))],
    ['message before the greeting', (p) => p.send(rawFrame({ cmd: NET_CMD.ALLOC_INODES }, u64(1n)))],
    ['second greeting on a socket', (p) => {
      p.send(rawFrame({ cmd: 0, seq: 1n, id: 1n }, greetingPayload()));
      p.send(rawFrame({ cmd: 0, seq: 2n, id: 2n }, greetingPayload()));
    }],
    ['request with no handler', (p) => {
      p.send(rawFrame({ cmd: 0, seq: 1n, id: 1n }, greetingPayload()));
      p.send(rawFrame({ cmd: NET_CMD.STATFS, seq: 2n, id: 2n }));
    }],
    ['request the server never handles (server-to-client command)', (p) => {
      p.send(rawFrame({ cmd: 0, seq: 1n, id: 1n }, greetingPayload()));
      p.send(rawFrame({ cmd: NET_CMD.SYNC_LOG_TREES, seq: 2n, id: 2n }));
    }],
  ];
  const w = await echoWorld();
  const c = w.client('good');
  c.start();
  let i = 0;
  for (const [what, act] of cases) {
    const before = w.serverStats.corruption;
    const p = await connectRaw(w, `raw${i++}`);
    act(p);
    assert(await w.sim.runUntil(() => p.closed, 5000), `${what}: the server shut the socket down`);
    assert.equal(w.serverStats.corruption, before + 1, `${what}: one corruption counted`);
    const res = collect(c, NET_CMD.ALLOC_INODES, u64(BigInt(i)));
    assert(await w.sim.runUntil(() => res.length === 1, 5000), `${what}: a good client is still served`);
    assert(res[0]!.ok);
  }
  assert(w.logs.some((l) => /corruption: raw\d+:\d+: structure check failed/.test(l)), 'one log line names the peer');
  c.shutdown();
  w.server.shutdown();
});

test('garbage from a server: the client counts it, shuts the socket and reconnects', async () => {
  const w = await echoWorld();
  // A fake server on another port that answers the greeting with a request.
  let evil = 0;
  const ep = w.sim.endpoint('evil');
  await ep.transport.listen('evil:1', (s) => {
    const p = new RawPeer(s);
    evil++;
    s.onData(() => {
      if (p.frames.length === 1) p.send(rawFrame({ cmd: 0, flags: 0, seq: 1n, id: 1n }, greetingPayload()));
    });
  });
  let target = 'evil:1';
  const c = w.client('c1', { findServer: () => target });
  c.start();
  await w.sim.runUntil(() => c.stats.corruption >= 1, 5000);
  assert.equal(c.stats.corruption, 1, 'greeting request sent to a client is fatal');
  assert.equal(evil, 1);
  target = SERVER_ADDR;
  const res = collect(c, NET_CMD.ALLOC_INODES, u64(5n));
  assert(await w.sim.runUntil(() => res.length === 1, 5000));
  assert(res[0]!.ok);
  c.shutdown();
  w.server.shutdown();
});

test('request payload of the wrong size: EINVAL, the handler is not called', async () => {
  const w = await echoWorld();
  const p = await connectRaw(w, 'raw');
  p.send(rawFrame({ cmd: 0, seq: 1n, id: 1n }, greetingPayload()));
  p.send(rawFrame({ cmd: NET_CMD.ALLOC_INODES, seq: 2n, id: 2n }, new Uint8Array(9)));
  await w.sim.runUntil(() => p.frames.length === 2, 1000);
  const r = p.frames[1]!;
  assert.equal(r.flags, 1);
  assert.equal(r.id, 2n);
  assert.equal(WIRE_ERRORS[r.error], 'EINVAL');
  assert.equal(w.calls.length, 0);
  assert.equal(w.serverStats.badRequestSize, 1);
  assert(!p.closed, 'not fatal');
  w.server.shutdown();
});

test('response of the wrong size: the caller gets a CorruptionError; unknown responses are dropped', async () => {
  const w = await simWorld();
  const ep = w.sim.endpoint('server');
  let peer: RawPeer | null = null;
  await ep.transport.listen(SERVER_ADDR, (s) => {
    const p = new RawPeer(s);
    peer = p;
    s.onData(() => {
      const f = p.frames[p.frames.length - 1]!;
      if (f.cmd === 0) {
        p.send(rawFrame({ cmd: 0, flags: 1, seq: 1n, id: f.id }, greetingPayload({ term: 3n, rid: 0x100n })));
      } else if (f.cmd === NET_CMD.ALLOC_INODES) {
        p.send(rawFrame({ cmd: NET_CMD.ALLOC_INODES, flags: 1, seq: 2n, id: f.id + 100n }, new Uint8Array(16)));
        p.send(rawFrame({ cmd: NET_CMD.STATFS, flags: 1, seq: 3n, id: f.id }, new Uint8Array(56)));
        p.send(rawFrame({ cmd: NET_CMD.ALLOC_INODES, flags: 1, seq: 4n, id: f.id }, new Uint8Array(15)));
      }
    });
  });
  const c = w.client('c1');
  c.start();
  const res = collect(c, NET_CMD.ALLOC_INODES, u64(1n));
  assert(await w.sim.runUntil(() => res.length === 1, 5000));
  const r = res[0]!;
  assert(!r.ok && r.error instanceof CorruptionError, 'wrongly sized response');
  assert.equal(c.stats.badResponseSize, 1);
  assert.equal(c.stats.unknownResponses, 2, 'unknown id, and known id with another cmd');
  assert(peer !== null);
  c.shutdown();
});

test('lost response, same server: dedup keeps the handler at one call, the resend queue delivers the answer', async () => {
  const w = await echoWorld();
  const c = w.client('c1');
  c.start();
  await w.sim.runUntil(() => c.connected, 1000);
  // Slow server->client link so the response is still in flight when the stream breaks.
  w.sim.setLink('server', 'c1', { ...QUIET_LINK, latencyMs: [50, 50] });
  const res = collect(c, NET_CMD.ALLOC_INODES, u64(7n));
  await w.sim.runUntil(() => w.calls.length === 1, 1000);
  w.sim.breakLink('c1', 'server');
  w.sim.clearLinks();
  assert(await w.sim.runUntil(() => res.length === 1, 10_000));
  await w.sim.runFor(100);
  assert(res[0]!.ok);
  assert.equal(decodeNetInodeAlloc((res[0] as { data: Uint8Array }).data).ino, 7n);
  assert.equal(w.calls.length, 1, 'the handler ran once');
  assert.equal(w.serverStats.takeovers, 1, 'the new socket took the old connection over');
  assert(w.serverStats.dupDropped >= 1, 'the resent request was dropped as a duplicate');
  assert(w.serverStats.resent >= 1, 'the response was retransmitted');
  assert.equal(c.stats.newServer, 1, 'only the first contact was a new server');
  assert.equal(res.length, 1, 'the callback ran once');
  c.shutdown();
  w.server.shutdown();
});

test('lost response, server crash: the next server handles the request again (maybe-resent), one callback', async () => {
  const w = await simWorld();
  let handled = 0; // durable side effect: survives the crash
  const deliveries: Delivery[] = [];
  let term = 1n;
  const start = async () => {
    const s = await w.startServer({ term });
    s.register(NET_CMD.ALLOC_INODES, (req: IncomingRequest) => {
      handled++;
      deliveries.push(req.delivery);
      if (handled === 1) {
        // Die with the response still in flight.
        w.sim.schedule(0, 'crash', () => w.sim.crash('server'));
      }
      return encodeNetInodeAlloc({ ino: BigInt(handled), nr: 1n });
    });
    await s.listen();
    return s;
  };
  await start();
  const c = w.client('c1');
  c.start();
  await w.sim.runUntil(() => c.connected, 1000);
  w.sim.setLink('server', 'c1', { ...QUIET_LINK, latencyMs: [50, 50] });
  const res = collect(c, NET_CMD.ALLOC_INODES, u64(1n));
  await w.sim.runUntil(() => !w.sim.endpoint('server').up, 1000);
  assert.equal(handled, 1);
  await w.sim.runFor(500);
  assert.equal(res.length, 0, 'no answer while the server is down');
  w.sim.restart('server');
  w.sim.clearLinks();
  term = 2n;
  await start();
  assert(await w.sim.runUntil(() => res.length === 1, 10_000));
  assert.equal(handled, 2, 'the resent request reached a handler again: handlers must be idempotent');
  assert.deepEqual(deliveries, ['first', 'maybe-resent']);
  const r = res[0]!;
  assert(r.ok);
  assert.equal(decodeNetInodeAlloc(r.data).ino, 2n, 'the answer of the new server');
  assert.equal(c.serverTerm, 2n);
  assert.equal(c.stats.newServer, 2);
  await w.sim.runFor(1000);
  assert.equal(res.length, 1, 'the callback ran exactly once');
  c.shutdown();
  w.server.shutdown();
});

test('reconnect-wait expiry: fence hook, client down, and the same-term client is refused', async () => {
  const fenced: bigint[] = [];
  const down: bigint[] = [];
  const up: bigint[] = [];
  const w = await simWorld(1n, {
    hooks: { reconnectTimeout: (rid) => fenced.push(rid), clientDown: (rid) => down.push(rid), clientUp: (rid) => void up.push(rid) },
  });
  const server = await w.startServer();
  server.register(NET_CMD.ALLOC_INODES, (req) => encodeNetInodeAlloc({ ino: decodeNetU64(req.data), nr: 1n }));
  await server.listen();
  const c = w.client('c1');
  c.start();
  await w.sim.runUntil(() => c.connected, 1000);
  assert.deepEqual(up, [c.rid]);
  w.sim.partition('c1', 'server');
  await w.sim.runFor(19_000);
  assert.deepEqual(fenced, [], 'still inside the 20 s reconnect wait');
  assert.equal(server.rids().length, 1, 'a reconnect-wait connection still counts for its rid');
  await w.sim.runFor(2_000);
  assert.deepEqual(fenced, [c.rid]);
  assert.deepEqual(down, [c.rid]);
  assert.equal(w.serverStats.reconnectTimeouts, 1);
  w.sim.heal('c1', 'server');
  await w.sim.runFor(2_000);
  assert(w.serverStats.refused >= 1, 'a client that comes back to the same server after its state was discarded is refused');
  assert(!c.connected);
  c.shutdown();
  server.shutdown();
});

test('client crash: reconnect-wait, fence, down; the restarted mount (new rid) starts fresh', async () => {
  const fenced: bigint[] = [];
  const down: bigint[] = [];
  const w = await simWorld(1n, { hooks: { reconnectTimeout: (rid) => fenced.push(rid), clientDown: (rid) => down.push(rid) } });
  const server = await w.startServer();
  server.register(NET_CMD.ALLOC_INODES, (req) => encodeNetInodeAlloc({ ino: decodeNetU64(req.data), nr: 1n }));
  await server.listen();
  const c1 = w.client('c1');
  c1.start();
  await w.sim.runUntil(() => c1.connected, 1000);
  const lost = collect(c1, NET_CMD.ALLOC_INODES, u64(1n));
  w.sim.crash('c1');
  await w.sim.runFor(25_000);
  assert.deepEqual(fenced, [c1.rid]);
  assert.deepEqual(down, [c1.rid]);
  assert.equal(lost.length, 0, 'a dead client runs no callback');
  w.sim.restart('c1');
  const again = w.client('c1');
  again.start();
  const res = collect(again, NET_CMD.ALLOC_INODES, u64(2n));
  assert(await w.sim.runUntil(() => res.length === 1, 5000));
  assert(res[0]!.ok);
  assert.equal(again.serverTerm, 1n);
  again.shutdown();
  server.shutdown();
});

test('a socket that never completed a greeting is destroyed at once (no reconnect-wait, no fence of rid 0)', async () => {
  const fenced: bigint[] = [];
  const w = await simWorld(1n, { hooks: { reconnectTimeout: (rid) => fenced.push(rid) } });
  const server = await w.startServer();
  await server.listen();
  const p = await connectRaw(w, 'raw');
  p.sock.close();
  await w.sim.runFor(30_000);
  assert.equal(w.serverStats.reconnectWaits, 0);
  assert.deepEqual(fenced, []);
  assert.equal(server.connections().length, 0);
  server.shutdown();
});

test('a greeting from a stale socket, delayed past the reconnect, is dropped (found by seed 5974)', async () => {
  const w = await echoWorld();
  const old = await connectRaw(w, 'raw-old');
  const cur = await connectRaw(w, 'raw-new');
  const rid = 0x99n;
  // The client's newer socket greets first (greeting id 5)...
  cur.send(rawFrame({ cmd: 0, seq: 5n, id: 5n }, greetingPayload({ rid })));
  await w.sim.runUntil(() => cur.frames.length === 1, 1000);
  // ...then its older socket's greeting (id 1) finally arrives.
  old.send(rawFrame({ cmd: 0, seq: 1n, id: 1n }, greetingPayload({ rid })));
  assert(await w.sim.runUntil(() => old.closed, 1000), 'the stale socket is shut down');
  assert.equal(old.frames.length, 0, 'and never answered');
  assert.equal(w.serverStats.staleGreetings, 1);
  assert.equal(w.server.connections().filter((c) => c.rid === rid).length, 1, 'one connection per rid');
  let got = false;
  w.server.submitRequestToRid(rid, NET_CMD.SYNC_LOG_TREES, EMPTY, () => {});
  await w.sim.runUntil(() => (got = cur.frames.some((f) => f.cmd === NET_CMD.SYNC_LOG_TREES)), 1000);
  assert(got, 'server requests go to the live socket');
  w.server.shutdown();
});

test('greeting with a wrong fsid is refused with EINVAL and retried; nothing else is sent', async () => {
  const w = await echoWorld();
  const c = w.client('c1', { fsid: FSID + 1n });
  c.start();
  const res = collect(c, NET_CMD.ALLOC_INODES, u64(1n));
  await w.sim.runFor(1000);
  assert(w.serverStats.greetingRejected >= 3, 'the server refuses every attempt');
  assert(c.stats.greetingRejected >= 3, 'the client keeps retrying');
  assert.equal(w.calls.length, 0);
  assert.equal(res.length, 0);
  c.shutdown();
  assert.equal(res.length, 1, 'shutdown completes the pending request');
  assert(!res[0]!.ok && res[0]!.error instanceof LifecycleError);
  w.server.shutdown();
});

test('greeting hook failure is answered through the error table and the socket is shut', async () => {
  let fail = 2;
  const w = await simWorld(1n, {
    hooks: {
      greeting: () => {
        if (fail-- > 0) throw new FsError('ENOSPC', 'mounted_clients insert');
      },
    },
  });
  const server = await w.startServer();
  await server.listen();
  const c = w.client('c1');
  c.start();
  assert(await w.sim.runUntil(() => c.connected, 5000));
  assert.equal(c.stats.greetingRejected, 2);
  assert(w.logs.some((l) => /rejected our greeting: ENOSPC/.test(l)));
  c.shutdown();
  server.shutdown();
});

test('server requests: delivered to the client by rid, answered once; ENOTCONN is a false return', async () => {
  const w = await echoWorld();
  const c = w.client('c1');
  let syncs = 0;
  c.register(NET_CMD.SYNC_LOG_TREES, () => {
    syncs++;
    return EMPTY;
  });
  c.start();
  await w.sim.runUntil(() => c.connected, 1000);
  const p = w.server.requestRid(c.rid, NET_CMD.SYNC_LOG_TREES, EMPTY);
  assert(p !== null);
  await w.sim.runFor(20);
  assert.deepEqual(await p, EMPTY);
  assert.equal(syncs, 1);
  assert.equal(w.server.requestRid(0xdeadn, NET_CMD.SYNC_LOG_TREES, EMPTY), null, 'no connection for the rid');
  assert.equal(w.server.submitRequestToRid(0xdeadn, NET_CMD.SYNC_LOG_TREES, EMPTY, () => assert.fail('no callback')), false);
  c.shutdown();
  w.server.shutdown();
});

test('a handler finishing after the client moved to a new server drops its stale response', async () => {
  const w = await simWorld();
  const c = w.client('c1');
  const held: (() => void)[] = [];
  c.register(NET_CMD.SYNC_LOG_TREES, () => new Promise<Uint8Array>((resolve) => {
    held.push(() => resolve(EMPTY));
  }));
  const s1 = await w.startServer({ term: 1n });
  await s1.listen();
  c.start();
  await w.sim.runUntil(() => c.connected, 1000);
  const old: NetResult[] = [];
  s1.submitRequestToRid(c.rid, NET_CMD.SYNC_LOG_TREES, EMPTY, (r) => old.push(r));
  assert(await w.sim.runUntil(() => held.length === 1, 1000));
  w.sim.crash('server');
  w.sim.restart('server');
  const s2 = await w.startServer({ term: 2n });
  await s2.listen();
  assert(await w.sim.runUntil(() => c.serverTerm === 2n && c.connected, 5000));
  // The new server's first request has the same cmd and id as the old one.
  const fresh: NetResult[] = [];
  s2.submitRequestToRid(c.rid, NET_CMD.SYNC_LOG_TREES, EMPTY, (r) => fresh.push(r));
  assert(await w.sim.runUntil(() => held.length === 2, 1000));
  held[0]!(); // the old server's handler finishes now
  await w.sim.runFor(50);
  assert.equal(c.stats.staleResponses, 1, 'the stale response was dropped');
  assert.equal(fresh.length, 0, 'it did not answer the new request with the same id');
  held[1]!();
  await w.sim.runFor(50);
  assert.equal(fresh.length, 1);
  assert(fresh[0]!.ok);
  assert.equal(old.length, 0, 'the crashed server is gone; its callback never runs');
  c.shutdown();
  s2.shutdown();
});

test('farewell: after a FAREWELL response the connection is destroyed when its socket dies', async () => {
  const down: bigint[] = [];
  const w = await simWorld(1n, { hooks: { clientDown: (rid) => down.push(rid) } });
  const server = await w.startServer();
  server.register(NET_CMD.FAREWELL, () => EMPTY);
  await server.listen();
  const c = w.client('c1');
  c.start();
  c.setFarewell();
  const res = collect(c, NET_CMD.FAREWELL, EMPTY);
  assert(await w.sim.runUntil(() => res.length === 1, 1000));
  c.shutdown();
  await w.sim.runFor(100);
  assert.equal(w.serverStats.reconnectWaits, 0);
  assert.deepEqual(down, [c.rid]);
  assert.equal(server.connections().length, 0);
  server.shutdown();
});

test('farewell response lost with its socket: the reconnect gets fresh state, the resend is answered', async () => {
  const w = await simWorld();
  const server = await w.startServer();
  let farewells = 0;
  server.register(NET_CMD.FAREWELL, () => {
    farewells++; // idempotent: a reclaimed mount is answered "done" again
    return EMPTY;
  });
  server.register(NET_CMD.ALLOC_INODES, (req) => encodeNetInodeAlloc({ ino: decodeNetU64(req.data), nr: 1n }));
  await server.listen();
  const c = w.client('c1');
  c.start();
  // Some traffic first, so the client's last received seq is well above 1.
  for (let i = 0n; i < 5n; i++) collect(c, NET_CMD.ALLOC_INODES, u64(i));
  await w.sim.runFor(100);
  c.setFarewell();
  w.sim.setLink('server', 'c1', { ...QUIET_LINK, latencyMs: [50, 50] });
  const res = collect(c, NET_CMD.FAREWELL, EMPTY);
  await w.sim.runUntil(() => farewells === 1, 1000);
  w.sim.breakLink('c1', 'server');
  w.sim.clearLinks();
  assert(await w.sim.runUntil(() => res.length === 1, 5000), 'the farewell is answered after the reconnect');
  assert(res[0]!.ok);
  assert.equal(farewells, 2, 'the server had destroyed the connection: the resend is processed again');
  assert.equal(c.stats.peerLostState, 1, 'the client saw the server had no state for it');
  assert.equal(w.serverStats.takeovers, 0);
  c.shutdown();
  server.shutdown();
});

test('destroying a server connection fails its pending server requests once with LifecycleError', async () => {
  const w = await echoWorld();
  const c = w.client('c1');
  c.register(NET_CMD.SYNC_LOG_TREES, () => new Promise<Uint8Array>(() => {}));
  c.start();
  await w.sim.runUntil(() => c.connected, 1000);
  const res: NetResult[] = [];
  w.server.submitRequestToRid(c.rid, NET_CMD.SYNC_LOG_TREES, EMPTY, (r) => res.push(r));
  await w.sim.runFor(10);
  w.server.shutdown();
  assert.equal(res.length, 1);
  assert(!res[0]!.ok && res[0]!.error instanceof LifecycleError);
  c.shutdown();
  const after = collect(c, NET_CMD.ALLOC_INODES, u64(1n));
  assert.equal(after.length, 1, 'a request after shutdown completes at once');
  assert(!after[0]!.ok && after[0]!.error instanceof LifecycleError);
});

test('a handler throwing a non-FsError is a bug: it reaches the bug hook, no response is sent', async () => {
  const w = await simWorld();
  const bugs: unknown[] = [];
  const server = await w.startServer({ onBug: (e) => bugs.push(e) });
  server.register(NET_CMD.ALLOC_INODES, () => {
    throw new TypeError('oops');
  });
  server.register(NET_CMD.STATFS, () => new Uint8Array(3));
  await server.listen();
  const c = w.client('c1');
  c.start();
  const r1 = collect(c, NET_CMD.ALLOC_INODES, u64(1n));
  const r2 = collect(c, NET_CMD.STATFS, EMPTY);
  await w.sim.runFor(100);
  assert.equal(bugs.length, 2);
  assert(bugs[0] instanceof TypeError);
  assert(bugs[1] instanceof assert.AssertionError, 'a response of the wrong size is our bug');
  assert.equal(r1.length + r2.length, 0);
  c.shutdown();
  server.shutdown();
});

test('CorruptionError in a handler answers EIO; LifecycleError shuts the socket without an answer', async () => {
  const w = await simWorld();
  const server = await w.startServer();
  server.register(NET_CMD.ALLOC_INODES, () => {
    throw new CorruptionError('/dev/meta', 77n, 'crc', 'bad block');
  });
  server.register(NET_CMD.STATFS, () => {
    throw new LifecycleError('shutdown', 'server stopping');
  });
  await server.listen();
  const c = w.client('c1');
  c.start();
  const r1 = collect(c, NET_CMD.ALLOC_INODES, u64(1n));
  assert(await w.sim.runUntil(() => r1.length === 1, 5000));
  assert(!r1[0]!.ok && r1[0]!.error instanceof FsError && r1[0]!.error.code === 'EIO');
  const closedBefore = w.serverStats.socketsClosed;
  const r2 = collect(c, NET_CMD.STATFS, EMPTY);
  await w.sim.runFor(500);
  assert.equal(w.serverStats.socketsClosed, closedBefore + 1, 'the socket was shut down');
  assert.equal(r2.length, 0, 'no answer: a LifecycleError means this server is going away');
  // The next server answers the resent request.
  server.shutdown();
  w.sim.crash('server');
  w.sim.restart('server');
  const s2 = await w.startServer({ term: 2n });
  s2.register(NET_CMD.STATFS, () => new Uint8Array(56));
  await s2.listen();
  assert(await w.sim.runUntil(() => r2.length === 1, 5000));
  assert(r2[0]!.ok);
  c.shutdown();
  s2.shutdown();
});

test('ordered handlers see messages in receive order, one at a time', async () => {
  const w = await echoWorld();
  const c = w.client('c1');
  const log: string[] = [];
  c.register(NET_CMD.LOCK, async (req) => {
    const l = readNetLock(req.data, 0);
    log.push(`start ${l.write_seq}`);
    await sleep(w.sim.endpoint('c1').clock, 10 - Number(l.write_seq));
    log.push(`end ${l.write_seq}`);
    return req.data;
  }, { ordered: true });
  c.start();
  await w.sim.runUntil(() => c.connected, 1000);
  for (let i = 1n; i <= 3n; i++) {
    w.server.submitRequestToRid(c.rid, NET_CMD.LOCK, encodeNetLock({ key: key(5, 1n, 0), write_seq: i, old_mode: 0, new_mode: 1 }), () => {});
  }
  await w.sim.runFor(200);
  assert.deepEqual(log, ['start 1', 'end 1', 'start 2', 'end 2', 'start 3', 'end 3']);
  c.shutdown();
  w.server.shutdown();
});

test('deferred responses: answered later through the reply, after a take-over too; twice is a bug', async () => {
  const w = await simWorld();
  const server = await w.startServer();
  const replies: DeferredReply[] = [];
  server.register(NET_CMD.ALLOC_INODES, (req) => {
    replies.push(req.defer());
    return DEFERRED;
  });
  await server.listen();
  const c = w.client('c1');
  c.start();
  await w.sim.runUntil(() => c.connected, 1000);
  const a = collect(c, NET_CMD.ALLOC_INODES, u64(1n));
  const b = collect(c, NET_CMD.ALLOC_INODES, u64(2n));
  await w.sim.runUntil(() => replies.length === 2, 1000);
  await w.sim.runFor(50);
  assert.equal(a.length + b.length, 0, 'nothing answered yet');
  replies[1]!.fail(new FsError('ENOSPC'));
  await w.sim.runFor(20);
  assert.equal(b.length, 1);
  assert.ok(!b[0]!.ok && b[0]!.error instanceof FsError && b[0]!.error.code === 'ENOSPC');
  // The socket breaks; the client reconnects and its connection is taken
  // over: the deferred answer still finds its way.
  c.disconnect();
  await w.sim.runUntil(() => w.serverStats.takeovers === 1 && c.connected, 2000);
  assert.equal(replies[0]!.stale, false);
  replies[0]!.send(encodeNetInodeAlloc({ ino: 9n, nr: 1n }));
  await w.sim.runUntil(() => a.length === 1, 1000);
  assert.ok(a[0]!.ok && decodeNetInodeAlloc(a[0]!.data).ino === 9n);
  assert.throws(() => replies[0]!.send(EMPTY), /sent twice/);
  c.shutdown();
  await w.sim.runFor(20);
  server.shutdown();
  assert.equal(replies[0]!.stale, true, 'the connection is gone');
});

test('a sizeFatal handler: a request of the wrong size shuts the socket down, no answer, no call', async () => {
  const w = await simWorld();
  const server = await w.startServer();
  let calls = 0;
  server.register(NET_CMD.LOCK, (req) => {
    calls++;
    return req.data;
  }, { sizeFatal: true });
  await server.listen();
  const p = await connectRaw(w, 'raw');
  p.send(rawFrame({ cmd: 0, seq: 1n, id: 1n }, greetingPayload()));
  p.send(rawFrame({ cmd: NET_CMD.LOCK, seq: 2n, id: 2n }, new Uint8Array(47)));
  await w.sim.runUntil(() => p.closed, 1000);
  assert.ok(p.closed, 'shut down');
  assert.equal(p.frames.length, 1, 'only the greeting response');
  assert.equal(calls, 0);
  assert.equal(w.serverStats.badRequestSize, 1);
  assert.equal(w.serverStats.corruption, 1);
  server.shutdown();
});

test('disconnectRid shuts a client\'s socket; the client reconnects and is taken over', async () => {
  const w = await echoWorld();
  const c = w.client('c1');
  c.start();
  await w.sim.runUntil(() => c.connected, 1000);
  assert.equal(w.server.disconnectRid(0xdeadn), false);
  assert.equal(w.server.disconnectRid(c.rid), true);
  await w.sim.runUntil(() => w.serverStats.takeovers === 1 && c.connected, 2000);
  assert.equal(w.serverStats.takeovers, 1);
  c.shutdown();
  w.server.shutdown();
});

test('in-process transport: request, response, server request, disconnect and resend', async () => {
  const net = new InProcNetwork();
  const clock = new RealClock();
  const server = new NetServer({
    transport: net, clock, random: new SeededRandom(1), fsid: FSID, term: 1n, listenAddr: 'local:0', log: () => {},
  });
  let calls = 0;
  server.register(NET_CMD.ALLOC_INODES, (req) => {
    calls++;
    return encodeNetInodeAlloc({ ino: decodeNetU64(req.data), nr: 1n });
  });
  const addr = await server.listen();
  const c = new NetClient({
    transport: net, clock, random: new SeededRandom(2), fsid: FSID, rid: 0x42n, findServer: () => addr, log: () => {},
  });
  c.register(NET_CMD.SYNC_LOG_TREES, () => EMPTY);
  c.start();
  assert.equal(decodeNetInodeAlloc(await c.request(NET_CMD.ALLOC_INODES, u64(9n))).ino, 9n);
  assert.deepEqual(await server.requestRid(0x42n, NET_CMD.SYNC_LOG_TREES, EMPTY), EMPTY);
  c.disconnect();
  const again = await c.request(NET_CMD.ALLOC_INODES, u64(10n));
  assert.equal(decodeNetInodeAlloc(again).ino, 10n);
  assert.equal(calls, 2);
  assert.equal(server.stats.takeovers, 1);
  c.shutdown();
  server.shutdown();
});

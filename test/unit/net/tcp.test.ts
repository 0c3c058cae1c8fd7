/*
 * Goal: the message layer works over real TCP on 127.0.0.1 (ephemeral
 * port): request/response, error responses, a server request, a broken
 * socket followed by reconnect and resend (the handler runs once, the
 * callback once), and garbage from a raw TCP peer that is counted as a
 * CorruptionError and shuts only that socket down.  Everything opened is
 * closed in after().
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { FsError } from '../../../src/format/errors.js';
import { NET_CMD, decodeNetInodeAlloc, decodeNetU64, encodeNetInodeAlloc, encodeNetU64 } from '../../../src/format/net.js';
import { RealClock } from '../../../src/runtime/clock.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { NetClient } from '../../../src/net/client.js';
import { NetServer } from '../../../src/net/server.js';
import { TcpTransport } from '../../../src/net/tcp.js';
import { splitAddr } from '../../../src/net/transport.js';
import { FSID, rawFrame } from './util.js';

const clock = new RealClock();
const transport = new TcpTransport(clock);
const logs: string[] = [];
let server: NetServer;
let addr: string;
const clients: NetClient[] = [];
const rawSockets: net.Socket[] = [];
let handled = 0;

before(async () => {
  server = new NetServer({
    transport, clock, random: new SeededRandom(1), fsid: FSID, term: 1n, listenAddr: '127.0.0.1:0',
    log: (l) => logs.push(l),
  });
  server.register(NET_CMD.ALLOC_INODES, async (req) => {
    handled++;
    const token = decodeNetU64(req.data);
    if (token === 0n) throw new FsError('ENOSPC', 'no inodes');
    if (token === 1n) throw new FsError('EXDEV', 'outside the wire table');
    await new Promise((r) => setTimeout(r, 5));
    return encodeNetInodeAlloc({ ino: token, nr: 1n });
  });
  addr = await server.listen();
});

after(() => {
  for (const c of clients) c.shutdown();
  for (const s of rawSockets) s.destroy();
  server.shutdown();
});

function newClient(rid: bigint): NetClient {
  const c = new NetClient({
    transport, clock, random: new SeededRandom(rid), fsid: FSID, rid, findServer: () => addr, log: (l) => logs.push(l),
  });
  clients.push(c);
  return c;
}

async function until(pred: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
}

test('request/response and errors over TCP on 127.0.0.1', async () => {
  assert.match(addr, /^127\.0\.0\.1:\d+$/);
  assert.notEqual(splitAddr(addr).port, 0);
  const c = newClient(0x1001n);
  c.start();
  const r = await c.request(NET_CMD.ALLOC_INODES, encodeNetU64(1234n));
  assert.equal(decodeNetInodeAlloc(r).ino, 1234n);
  await assert.rejects(c.request(NET_CMD.ALLOC_INODES, encodeNetU64(0n)), (e: unknown) => e instanceof FsError && e.code === 'ENOSPC');
  await assert.rejects(c.request(NET_CMD.ALLOC_INODES, encodeNetU64(1n)), (e: unknown) => e instanceof FsError && e.code === 'EIO');
  // Many in flight at once.
  const many = await Promise.all(Array.from({ length: 50 }, (_, i) => c.request(NET_CMD.ALLOC_INODES, encodeNetU64(BigInt(100 + i)))));
  many.forEach((b, i) => assert.equal(decodeNetInodeAlloc(b).ino, BigInt(100 + i)));
});

test('server request over TCP', async () => {
  const c = newClient(0x1002n);
  let syncs = 0;
  c.register(NET_CMD.SYNC_LOG_TREES, () => {
    syncs++;
    return new Uint8Array(0);
  });
  c.start();
  await until(() => c.connected);
  const p = server.requestRid(0x1002n, NET_CMD.SYNC_LOG_TREES, new Uint8Array(0));
  assert(p !== null);
  assert.equal((await p).length, 0);
  assert.equal(syncs, 1);
});

test('socket break: the pending request is resent and answered once, handled once', async () => {
  const c = newClient(0x1003n);
  c.start();
  await until(() => c.connected);
  const takeovers = server.stats.takeovers;
  const before = handled;
  let callbacks = 0;
  const p = new Promise<Uint8Array>((resolve, reject) => {
    c.submitRequest(NET_CMD.ALLOC_INODES, encodeNetU64(77n), (r) => {
      callbacks++;
      if (r.ok) resolve(r.data);
      else reject(r.error);
    });
  });
  // Break the socket while the handler is still sleeping.
  await until(() => handled === before + 1);
  c.disconnect();
  assert.equal(decodeNetInodeAlloc(await p).ino, 77n);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(callbacks, 1);
  assert.equal(handled, before + 1, 'same server: the resend was deduplicated');
  assert.equal(server.stats.takeovers, takeovers + 1);
});

test('garbage from a raw TCP peer: counted, that socket shut, the others keep working', async () => {
  const c = newClient(0x1004n);
  c.start();
  await until(() => c.connected);
  const before = server.stats.corruption;
  const { host, port } = splitAddr(addr);
  const s = net.createConnection({ host, port });
  rawSockets.push(s);
  const closed = new Promise<void>((resolve) => s.on('close', () => resolve()));
  s.on('error', () => {});
  await new Promise<void>((resolve) => s.once('connect', () => resolve()));
  s.write(rawFrame({ seq: 0n }));
  await closed;
  await until(() => server.stats.corruption === before + 1);
  assert(logs.some((l) => /zero-seq/.test(l)), 'one log line');
  const r = await c.request(NET_CMD.ALLOC_INODES, encodeNetU64(5n));
  assert.equal(decodeNetInodeAlloc(r).ino, 5n);
});

test('connect to a closed port fails and is retried, then succeeds when the server appears', async () => {
  // Grab a free port, release it, point a client at it.
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', () => resolve()));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const late = new NetServer({
    transport, clock, random: new SeededRandom(9), fsid: FSID, term: 1n, listenAddr: `127.0.0.1:${port}`, log: () => {},
  });
  late.register(NET_CMD.ALLOC_INODES, (req) => encodeNetInodeAlloc({ ino: decodeNetU64(req.data), nr: 1n }));
  const c = new NetClient({
    transport, clock, random: new SeededRandom(10), fsid: FSID, rid: 0x1005n, findServer: () => `127.0.0.1:${port}`,
    log: () => {},
  });
  clients.push(c);
  c.start();
  const p = c.request(NET_CMD.ALLOC_INODES, encodeNetU64(6n));
  await until(() => c.stats.connectFailures >= 2);
  await late.listen();
  try {
    assert.equal(decodeNetInodeAlloc(await p).ino, 6n);
  } finally {
    c.shutdown();
    late.shutdown();
  }
});

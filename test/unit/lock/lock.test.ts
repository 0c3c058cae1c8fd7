/*
 * Goal: the lock client (src/lock/client.ts) and the lock server
 * (src/server/lock.ts) speak PROTOCOL.md 6.3-6.6 over the message layer,
 * one scripted path per test, on the simulated network (world.ts):
 *   - READ is shared; WRITE invalidates every other holder to NULL and is
 *     granted with a fresh write seq; the losers drop their item cache and
 *     tell the kernel hook the inode span; WRITE_ONLY is shared and a READ
 *     request invalidates all of them;
 *   - a holder whose lock dirtied the current transaction commits before
 *     answering (4.4), one that did not does not; WRITE -> READ keeps the
 *     cache; a READ holder's upgrade to WRITE keeps its own cache;
 *   - users block an invalidation until they unlock, a queued invalidation
 *     blocks new users it conflicts with, a grant wakes its waiters in the
 *     same step (two mounts ping-ponging WRITE both finish); NONBLOCK gets
 *     EAGAIN;
 *   - a new server recovers every lock in batches of at most 22, processes
 *     nothing until every rid recovered, raises its seq past the recovered
 *     write seqs, and then serves the request the client resent;
 *   - forget(rid) releases a silent holder; purgeIdle() drops idle locks
 *     with NULL requests without disturbing other holders;
 *   - bad messages shut connections down (3.3): a LOCK request of the wrong
 *     size, with a bad mode or a key that starts no lock, an invalidation
 *     to a mode other than NULL or READ, an error answer to an
 *     invalidation or to a LOCK request, a recovery batch out of key order
 *     (each sent again after the reconnect);
 *   - the deliberately broken server (breakNextGrants) leaves incompatible
 *     holders, and both the server's invariant check and the holders' own
 *     view say so.
 * And once over the in-process transport on real time.  Counters prove
 * each path ran.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FsError } from '../../../src/format/errors.js';
import { INDEX_TYPE, inodeKey } from '../../../src/format/items.js';
import { key } from '../../../src/format/key.js';
import { inodeLockRange, indexLockRange, renameLockRange } from '../../../src/format/lock.js';
import { NET_CMD, encodeNetLock, encodeNetLockRecover } from '../../../src/format/net.js';
import { DEFERRED, type IncomingRequest } from '../../../src/net/connection.js';
import { greetingPayload, rawFrame, RawPeer } from '../net/util.js';
import { FSID, LockWorld, MemSeqs, SERVER_ADDR, type Mount } from './world.js';
import { LockClient, type LockHandle } from '../../../src/lock/client.js';
import { LockServer } from '../../../src/server/lock.js';
import { NetClient } from '../../../src/net/client.js';
import { NetServer } from '../../../src/net/server.js';
import { InProcNetwork } from '../../../src/net/inproc.js';
import { RealClock } from '../../../src/runtime/clock.js';
import { SeededRandom } from '../../../src/runtime/random.js';

const G1 = inodeLockRange(1500n); // inodes 1024..2047
const G2 = inodeLockRange(5000n);

async function world(n: number, seed = 1n): Promise<{ w: LockWorld; m: Mount[] }> {
  const w = new LockWorld(seed);
  await w.startServer();
  const m = Array.from({ length: n }, (_, i) => w.mount(`c${i + 1}`));
  await w.connected();
  return { w, m };
}

test('READ is shared; WRITE invalidates the readers, who drop their caches; the write seq is fresh', async () => {
  const { w, m } = await world(3);
  const [a, b, c] = m as [Mount, Mount, Mount];
  const ra = await w.settle(a.locks.lock('READ', G1));
  const rb = await w.settle(b.locks.lock('READ', G1));
  a.locks.unlock(ra);
  b.locks.unlock(rb);
  assert.equal(w.server.counters.invalidationsSent, 0, 'readers share');
  const wc = await w.settle(c.locks.lock('WRITE', G1));
  assert.equal(wc.item.mode, 'WRITE');
  assert.ok(wc.writeSeq > 100n, `write seq ${wc.writeSeq} from the counter`);
  assert.equal(w.server.counters.invalidationsSent, 2);
  for (const x of [a, b]) {
    assert.equal(x.locks.modeOf(G1.start), 'NULL');
    assert.deepEqual(x.dropped, [{ start: G1.start, end: G1.end }]);
    assert.equal(x.kernel.length, 1);
    assert.deepEqual(x.kernel[0]!.inodes, { first: 1024n, last: 2047n });
    assert.equal(x.kernel[0]!.kind, 'inode');
    assert.deepEqual([x.kernel[0]!.oldMode, x.kernel[0]!.newMode], ['READ', 'NULL']);
    assert.equal(x.syncs.length, 0, 'a READ lock never commits');
  }
  assert.deepEqual(w.incompatibleHolders(), []);
  assert.deepEqual(w.server.checkInvariants(), []);
  c.locks.unlock(wc);
});

test('a lock that dirtied the current transaction commits before it is given up; WRITE -> READ keeps the cache', async () => {
  const { w, m } = await world(2);
  const [a, b] = m as [Mount, Mount];
  const h = await w.settle(a.locks.lock('WRITE', G1));
  a.dirty.add(inodeKey(1500n));
  a.locks.unlock(h);
  const seqBefore = a.transSeq;
  const r = await w.settle(b.locks.lock('READ', G1));
  assert.deepEqual(a.syncs, [seqBefore], 'committed the transaction the lock dirtied');
  assert.equal(a.locks.modeOf(G1.start), 'READ', 'the writer was downgraded to READ, not NULL');
  assert.equal(a.dropped.length, 0, 'WRITE -> READ keeps the item cache');
  assert.equal(a.kernel.length, 0, 'and the kernel cache');
  assert.equal(a.locks.counters.invalidationSyncs, 1);
  b.locks.unlock(r);

  // A write lock whose dirtying was in an earlier (committed) transaction does not commit again.
  const h2 = await w.settle(a.locks.lock('WRITE', G2));
  a.locks.unlock(h2);
  a.transSeq += 3n; // three commits happened since
  const r2 = await w.settle(b.locks.lock('WRITE', G2));
  assert.equal(a.syncs.length, 1, 'no commit for a transaction already committed');
  assert.equal(a.dropped.length, 1, 'WRITE -> NULL drops the cache');
  b.locks.unlock(r2);
});

test('a READ holder upgrades to WRITE keeping its cache; WRITE_ONLY is shared and READ invalidates it', async () => {
  const { w, m } = await world(3);
  const [a, b, c] = m as [Mount, Mount, Mount];
  a.locks.unlock(await w.settle(a.locks.lock('READ', G1)));
  b.locks.unlock(await w.settle(b.locks.lock('READ', G1)));
  const up = await w.settle(a.locks.lock('WRITE', G1));
  assert.equal(a.dropped.length, 0, 'the upgrading holder keeps its cache');
  assert.equal(b.dropped.length, 1, 'the other reader lost its lock');
  assert.equal(w.server.counters.invalidationsSent, 1);
  a.locks.unlock(up);

  const ix = indexLockRange(INDEX_TYPE.META_SEQ, 77n);
  const wa = await w.settle(a.locks.lock('WRITE_ONLY', ix));
  const wb = await w.settle(b.locks.lock('WRITE_ONLY', ix));
  assert.equal(w.server.counters.invalidationsSent, 1, 'WRITE_ONLY holders share');
  assert.deepEqual(w.incompatibleHolders(), []);
  const pr = c.locks.lock('READ', ix);
  await w.sim.runFor(50);
  a.locks.unlock(wa);
  b.locks.unlock(wb);
  const rc = await w.settle(pr);
  assert.equal(a.locks.modeOf(ix.start), 'NULL');
  assert.equal(b.locks.modeOf(ix.start), 'NULL');
  assert.equal(a.kernel.at(-1)!.inodes, null, 'an index lock covers no inodes');
  assert.equal(a.syncs.length, 1, 'the WRITE_ONLY holder that unlocked in this transaction committed');
  c.locks.unlock(rc);
});

test('users hold an invalidation off; a queued one blocks conflicting new users; NONBLOCK gets EAGAIN', async () => {
  const { w, m } = await world(2);
  const [a, b] = m as [Mount, Mount];
  const h = await w.settle(a.locks.lock('WRITE', G1));
  const pb = b.locks.lock('WRITE', G1);
  await w.sim.runFor(100);
  assert.equal(a.locks.status().invalidating, 1, 'the invalidation is queued behind the user');
  await assert.rejects(a.locks.lock('READ', G1, { nonblock: true }), (e: unknown) => e instanceof FsError && e.code === 'EAGAIN');
  let second: LockHandle | null = null;
  void a.locks.lock('READ', G1).then((x) => { second = x; });
  await w.sim.runFor(100);
  assert.equal(second, null, 'a new user waits behind the invalidation');
  a.locks.unlock(h);
  const hb = await w.settle(pb);
  assert.equal(a.locks.counters.downgrades, 1);
  b.locks.unlock(hb);
  await w.sim.runUntil(() => second !== null, 2000);
  assert.ok(second !== null, 'the waiting reader got the lock back');
  a.locks.unlock(second);
  assert.equal(a.locks.counters.nonblockEagain, 1);
});

test('two mounts ping-pong WRITE on one lock: every operation finishes, never both at once', async () => {
  const { w, m } = await world(2);
  let ops = 0;
  let inside = 0;
  const run = async (x: Mount): Promise<void> => {
    for (let i = 0; i < 40; i++) {
      const h = await x.locks.lock('WRITE', G1);
      inside++;
      assert.equal(inside, 1, 'two writers at once');
      x.dirty.add(inodeKey(1024n + BigInt(i)));
      await new Promise<void>((r) => w.sim.endpoint(x.name).clock.setTimer(1, r));
      inside--;
      ops++;
      x.locks.unlock(h);
    }
  };
  await w.settle(Promise.all(m.map(run)), 60_000);
  assert.equal(ops, 80);
  assert.ok(w.server.counters.grants >= 2 && w.server.counters.invalidationsSent >= 1);
  assert.ok(m[0]!.syncs.length + m[1]!.syncs.length >= 1, 'lock hand-overs committed');
  assert.deepEqual(w.server.checkInvariants(), []);
});

test('a new server recovers every lock in batches of 22, serves nothing before, raises its seq, then serves the resent request', async () => {
  const w = new LockWorld(3n);
  await w.startServer();
  const a = w.mount('a');
  const b = w.mount('b');
  await w.connected();
  // a holds 50 locks: READ on 49 inode groups, WRITE on one more.
  for (let g = 100n; g < 149n; g++) a.locks.unlock(await w.settle(a.locks.lock('READ', inodeLockRange(g * 1024n))));
  const wa = await w.settle(a.locks.lock('WRITE', G2));
  a.locks.unlock(wa);
  const topSeq = wa.writeSeq;
  b.locks.unlock(await w.settle(b.locks.lock('READ', renameLockRange())));

  w.crashServer();
  w.seqs.value = 50n; // the new server's counter is behind the write seq it never committed
  const s2 = await w.startServer({ recover: [a.rid, b.rid] });
  // b wants the WRITE lock a holds: its request is queued until recovery ends.
  const pb = b.locks.lock('WRITE', G2);
  await w.sim.runUntil(() => !s2.recovering, 5000);
  assert.equal(s2.counters.recoveredLocks, 51);
  assert.equal(s2.counters.recoveriesFinished, 2);
  assert.ok(s2.counters.recoveryRequests >= 1 + Math.ceil(50 / 22) + 1, `batches: ${s2.counters.recoveryRequests}`);
  assert.ok(w.seqs.value >= topSeq, 'the seq counter went past every recovered write seq');
  assert.equal(s2.heldBy(a.rid, G2.start), 'WRITE');
  const hb = await w.settle(pb);
  assert.ok(hb.writeSeq > topSeq, 'the next write grant is newer than anything recovered');
  assert.equal(a.locks.modeOf(G2.start), 'NULL');
  assert.equal(a.locks.modeOf(inodeLockRange(100n * 1024n).start), 'READ', 'the other locks stay');
  assert.deepEqual(s2.checkInvariants(), []);
  b.locks.unlock(hb);
});

test('while a rid has not recovered no lock is granted; forgetting it lets the rest go on', async () => {
  const w = new LockWorld(4n);
  await w.startServer();
  const a = w.mount('a');
  await w.connected();
  w.crashServer();
  const s2 = await w.startServer({ recover: [a.rid, 0x999n] });
  let got = false;
  void a.locks.lock('READ', G1).then((h) => { got = true; a.locks.unlock(h); });
  await w.sim.runFor(2000);
  assert.equal(got, false, 'rid 999 never recovered: everything stalls');
  let recovered = false;
  void s2.whenRecovered().then(() => { recovered = true; });
  s2.forget(0x999n); // fenced and reclaimed
  await w.sim.runUntil(() => got, 2000);
  assert.ok(got && recovered);
});

test('forget(rid) takes the locks of a silent holder; purgeIdle drops idle locks without touching others', async () => {
  const { w, m } = await world(3);
  const [a, b, c] = m as [Mount, Mount, Mount];
  a.locks.unlock(await w.settle(a.locks.lock('WRITE', G1)));
  w.sim.partition('c1', 'server');
  const pb = b.locks.lock('READ', G1);
  await w.sim.runFor(1000);
  assert.equal(b.locks.status().requests, 1, 'b waits for a, which cannot answer');
  w.server.forget(a.rid); // a was fenced
  const hb = await w.settle(pb);
  b.locks.unlock(hb);
  c.locks.unlock(await w.settle(c.locks.lock('READ', G1)));
  assert.equal(b.locks.purgeIdle(), 1);
  await w.sim.runUntil(() => b.locks.status().locks === 0, 2000);
  assert.equal(b.locks.counters.freed, 1);
  assert.equal(c.locks.modeOf(G1.start), 'READ', 'another holder keeps its lock (not 13.6)');
  assert.equal(w.server.heldBy(b.rid, G1.start), 'NULL');
  assert.equal(w.server.counters.nullGrants, 1);
});

test('bad messages shut connections down (3.3); an error answer to an invalidation is asked again', async () => {
  const { w, m } = await world(2);
  const [a, b] = m as [Mount, Mount];
  // A raw peer sends a LOCK request of 47 bytes, then one with mode 9.
  for (const [data, reason] of [[new Uint8Array(47), 'size'], [encodeNetLock({ key: G1.start, write_seq: 0n, old_mode: 0, new_mode: 9 }), 'mode'],
    [encodeNetLock({ key: key(4, 1n, 0), write_seq: 0n, old_mode: 0, new_mode: 1 }), 'key']] as const) {
    let sock: import('../../../src/net/transport.js').NetSocket | null = null;
    void w.sim.endpoint(`raw-${reason}`).transport.connect(SERVER_ADDR, 1000).then((s) => { sock = s; });
    await w.sim.runUntil(() => sock !== null, 1000);
    const p = new RawPeer(sock!);
    p.send(rawFrame({ cmd: 0, seq: 1n, id: 1n }, greetingPayload({ fsid: FSID, rid: 0x7777n + BigInt(reason.length) })));
    p.send(rawFrame({ cmd: NET_CMD.LOCK, seq: 2n, id: 2n }, data));
    await w.sim.runUntil(() => p.closed, 1000);
    assert.ok(p.closed, `${reason}: shut down`);
    assert.equal(p.frames.length, 1, `${reason}: no answer`);
  }
  assert.equal(w.server.counters.badRequests, 2);

  // The server asks a's client to "invalidate" to WRITE: a's connection goes down and comes back, no answer.
  const connects = a.net.stats.connects;
  let answered = false;
  w.net.submitRequestToRid(a.rid, NET_CMD.LOCK, encodeNetLock({ key: G1.start, write_seq: 0n, old_mode: 1, new_mode: 2 }), (r) => {
    answered = r.ok;
  });
  await w.sim.runUntil(() => a.net.stats.connects > connects && a.net.connected, 3000);
  assert.ok(a.net.stats.corruption >= 1);
  assert.equal(a.locks.counters.badMessages, 1);
  assert.equal(answered, false);

  // b answers an invalidation with an error: the server shuts b down and asks again.
  b.locks.unlock(await w.settle(b.locks.lock('READ', G1)));
  misbehave(b.net.handlers, NET_CMD.LOCK, 1, () => {
    throw new FsError('EIO', 'answering the invalidation with an error');
  });
  const ha = await w.settle(a.locks.lock('WRITE', G1));
  assert.equal(w.server.counters.badResponses, 1);
  assert.ok(w.server.counters.invalidationsSent >= 2, 'sent again');
  assert.equal(b.locks.modeOf(G1.start), 'NULL');
  a.locks.unlock(ha);
});

test('the deliberately broken server grants without invalidating: incompatible holders, and checks say so', async () => {
  const w = new LockWorld(5n);
  await w.startServer({ brokenGrants: 1 });
  const a = w.mount('a');
  const b = w.mount('b');
  await w.connected();
  a.locks.unlock(await w.settle(a.locks.lock('WRITE', G1)));
  b.locks.unlock(await w.settle(b.locks.lock('WRITE', G1)));
  assert.equal(w.server.counters.brokenGrants, 1);
  assert.equal(a.locks.modeOf(G1.start), 'WRITE', 'a was never asked to give its lock up');
  assert.equal(w.incompatibleHolders().length, 1);
  assert.equal(w.server.checkInvariants().length, 1);
});

test('in-process transport: two mounts take turns on a WRITE lock, committing and invalidating at each hand-over', async () => {
  const net = new InProcNetwork();
  const clock = new RealClock();
  const server = new NetServer({
    transport: net, clock, random: new SeededRandom(1), fsid: FSID, term: 1n, listenAddr: 'local:0', log: () => {},
    hooks: { clientUp: (rid) => locks.clientUp(rid) },
  });
  const seqs = new MemSeqs();
  const locks: LockServer = new LockServer({ net: server, seqs, log: () => {} }).register();
  const addr = await server.listen();
  const mounts = [0x41n, 0x42n].map((rid) => {
    const c = new NetClient({ transport: net, clock, random: new SeededRandom(rid), fsid: FSID, rid, findServer: () => addr, log: () => {} });
    const st = { seq: 1n, syncs: 0, dropped: 0 };
    const lc = new LockClient({
      net: c,
      trans: {
        get transSeq() {
          return st.seq;
        },
        async syncForLock(d) {
          if (d === st.seq) {
            st.syncs++;
            st.seq++;
          }
        },
      },
      items: { invalidate: () => ++st.dropped, hasDirty: () => false },
      log: () => {},
    }).register();
    c.start();
    return { c, lc, st };
  });
  let inside = 0;
  await Promise.all(mounts.map(async ({ lc }) => {
    for (let i = 0; i < 25; i++) {
      const h = await lc.lock('WRITE', G1);
      inside++;
      assert.equal(inside, 1);
      await new Promise((r) => setImmediate(r));
      inside--;
      lc.unlock(h);
    }
  }));
  assert.ok(locks.counters.grants >= 2 && locks.counters.invalidationsSent >= 1);
  assert.ok(mounts.every((m) => m.st.syncs >= 1 && m.st.dropped >= 1), 'each hand-over committed and dropped the cache');
  for (const m of mounts) m.c.shutdown();
  server.shutdown();
});

/** Replace a registered handler for the next `times` calls (a peer that misbehaves). */
function misbehave(table: { get(cmd: number): unknown }, cmd: number, times: number,
  bad: (req: IncomingRequest) => Uint8Array | typeof DEFERRED): void {
  const reg = table.get(cmd) as { fn: (req: IncomingRequest) => unknown; ordered: boolean; sizeFatal: boolean };
  let left = times;
  (table as unknown as { map: Map<number, unknown> }).map.set(cmd, {
    ...reg,
    fn: (req: IncomingRequest) => (left-- > 0 ? bad(req) : reg.fn(req)),
  });
}

test('a grant answered with an error, and a recovery batch out of order, shut the connection down and are asked again', async () => {
  const w = new LockWorld(6n);
  await w.startServer();
  const a = w.mount('a');
  await w.connected();
  // The server answers a's first LOCK request with an error (3.3: shut down; we ask again).
  misbehave(w.net.handlers, NET_CMD.LOCK, 1, () => {
    throw new FsError('EIO', 'a server that answers LOCK with an error');
  });
  const connects = a.net.stats.connects;
  const h = await w.settle(a.locks.lock('WRITE', G1));
  assert.equal(a.locks.counters.badMessages, 1);
  assert.ok(a.net.stats.connects > connects, 'the connection was shut down and came back');
  assert.equal(a.locks.counters.requests, 2, 'the request was sent again');
  a.locks.unlock(h);
  a.locks.unlock(await w.settle(a.locks.lock('READ', G2)));

  // After a server crash, a's first recovery answer is out of key order: the server shuts it down and asks again.
  w.crashServer();
  misbehave(a.net.handlers, NET_CMD.LOCK_RECOVER, 1, () => encodeNetLockRecover([
    { key: G2.start, write_seq: 0n, old_mode: 1, new_mode: 1 }, { key: G1.start, write_seq: 200n, old_mode: 2, new_mode: 2 },
  ]));
  const s2 = await w.startServer({ recover: [a.rid] });
  await w.sim.runUntil(() => !s2.recovering, 5000);
  assert.equal(s2.counters.badResponses, 1);
  assert.equal(s2.heldBy(a.rid, G1.start), 'WRITE');
  assert.equal(s2.heldBy(a.rid, G2.start), 'READ');
  assert.deepEqual(s2.checkInvariants(), []);
});

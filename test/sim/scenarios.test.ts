/*
 * Goal: the failure scenarios of PROTOCOL.md 4.14 that apply to one server
 * run end to end, through the real pieces (Trans, ItemCache, ForestWriter,
 * NetTransServer, NetClient, the simulated network, NetServer, the
 * transaction handlers, LogTreesServer, CommitQueue, ServerVolume over
 * FaultDevices), each with a fixed seed, and each proves its path ran by a
 * counter that moved:
 *
 *   1. (4.14 (2)) the server dies after committing a GET, before replying:
 *      the resent GET returns the identical lt (getsResent on the new
 *      server, byte-identical lt, same trans seq);
 *   2. (4.14 (1)) the server dies after committing a COMMIT, before
 *      replying: the resent COMMIT is acknowledged as already committed
 *      (commitsDuplicate), the srch file is rotated once (srchRotations
 *      summed over both servers is 1), the next GET splices the committed
 *      meta_freed once, fsck is clean (no block freed twice), and the srch
 *      entries committed in that transaction are in the rotated file,
 *      each exactly once;
 *   3. (4.14 (3)) COMMIT succeeds, GET fails twice then succeeds: writers
 *      stay blocked (holdsBlocked, and the blocked write lands in the next
 *      transaction), the same COMMIT is re-sent every 2 s and acknowledged
 *      as already committed (commitResends, commitsDuplicate);
 *   4. (4.14 (4)) sync while the mount is blocked before its first GET
 *      succeeds at once with no COMMIT sent (commitsWithoutTrans, no
 *      COMMIT reached the server);
 *   5. (4.14 (5)) a COMMIT with an unknown get_trans_seq, a stale one, or
 *      another rid's lt gets EIO over the wire (commitsMismatch,
 *      commitsWrongRid) and changes nothing; one for the last committed
 *      transaction is acknowledged with no change (commitsDuplicate: the
 *      server checks "already committed" first, logtrees.ts);
 *   6. (4.14 (6)) a departed mount's open transaction is reclaimed after
 *      its reconnect wait (reclaims): its lt is finalized with commit ==
 *      get, the stable seq (GET_LAST_SEQ from another mount) moves past
 *      it, its committed items stay visible and its uncommitted ones are
 *      lost.
 * And a test of the checker: a synced write or srch entry that is not on
 * disk is reported by verify().  And a regression test of a race the
 * sweep found in src/srch/file.ts: two holders appending srch entries at
 * once both allocated a leaf for the same logical block.  SrchLogWriter
 * now serializes appends; with that removed the test fails (the checker
 * finds a lost entry or a leaked block).
 *
 * Every scenario ends with the cluster checker (cluster.ts verify): fsck
 * clean, log trees invariants, every mount's durable items and srch
 * entries equal to its model.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { btreeIterate, btreeLookup } from '../../src/btree/btree.js';
import { readSrchLogEntries } from '../../src/srch/file.js';
import { FsError } from '../../src/format/errors.js';
import { SRCH_TYPE, ZONE, logTreesKey } from '../../src/format/items.js';
import { key } from '../../src/format/key.js';
import { U64_MAX } from '../../src/format/layout.js';
import { LOG_TREES_FLAG_FINALIZED, decodeLogTrees, encodeLogTrees, type LogTrees } from '../../src/format/logtrees.js';
import { readSrchFile, type SrchEntry } from '../../src/format/srch.js';
import { QUIET_LINK } from '../../src/net/sim.js';
import { Cluster, type ClientNode, type ServerNode } from './cluster.js';

const LINK = { ...QUIET_LINK, latencyMs: [1, 3] as const, breakDetectMs: [5, 20] as const };
const ltHex = (lt: LogTrees): string => Buffer.from(encodeLogTrees(lt)).toString('hex');
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const isFs = (code: string) => (e: unknown): boolean => e instanceof FsError && e.code === code;

/** Build a cluster, run the scenario, stop, verify, always free the caches. */
async function scenario(
  seed: bigint, fn: (cl: Cluster) => Promise<void>, opts: { reconnectWaitMs?: number; serializeSrch?: boolean } = {},
): Promise<void> {
  const cl = new Cluster({ seed, link: LINK, trace: true, srchRotateBlocks: 1n, ...opts });
  try {
    await fn(cl);
    assert.deepEqual(cl.errors, [], 'harness errors');
    cl.stop();
    assert.deepEqual(await cl.verify(), [], 'end-of-run checker');
  } catch (e) {
    console.error(`scenario seed ${seed} failed (fixed seed: rerun with node --test dist/test/sim/scenarios.test.js); ` +
      `last trace lines:\n${cl.sim.trace.slice(-40).join('\n')}`);
    throw e;
  } finally {
    cl.destroy();
  }
}

/** Run until the promise settled; returns its value (or throws its error). */
async function settle<T>(cl: Cluster, p: Promise<T>, limitMs = 30_000): Promise<T> {
  let done = false;
  let val: T | undefined;
  let err: unknown = null;
  p.then((v) => { done = true; val = v; }, (e: unknown) => { done = true; err = e; });
  assert.ok(await cl.runUntil(() => done, limitMs), `did not settle within ${limitMs} simulated ms`);
  if (err !== null) throw err;
  return val as T;
}

async function mounted(cl: Cluster, name: string): Promise<ClientNode> {
  const c = cl.mountClient(name);
  await settle(cl, c.mount());
  assert.ok(c.mounted && c.trans.transSeq > 0n);
  return c;
}

/** Every srch_root LOG file of a server's committed state, with its entries. */
async function rotatedFiles(s: ServerNode): Promise<{ blkno: bigint; entries: SrchEntry[] }[]> {
  const files: { blkno: bigint; f: ReturnType<typeof readSrchFile> }[] = [];
  await btreeIterate(s.vol.store, s.vol.sb.srch_root, key(ZONE.SRCH, 0n, SRCH_TYPE.LOG), key(ZONE.SRCH, 0n, SRCH_TYPE.LOG, U64_MAX, U64_MAX, 0xff), (it) => {
    files.push({ blkno: it.key.second, f: readSrchFile(it.val, 0) });
  });
  const out: { blkno: bigint; entries: SrchEntry[] }[] = [];
  for (const { blkno, f } of files) out.push({ blkno, entries: await readSrchLogEntries(s.vol.store, f) });
  return out;
}

async function storedLt(s: ServerNode, rid: bigint, nr = 1n): Promise<LogTrees> {
  const v = await btreeLookup(s.vol.store, s.vol.sb.logs_root, logTreesKey(rid, nr));
  assert.ok(v !== null, `no lt ${rid}.${nr}`);
  return decodeLogTrees(v.val);
}

test('4.14 (2): the server dies after committing a GET; the resent GET returns the identical lt', async () => {
  await scenario(1401n, async (cl) => {
    const first = await cl.startServer();
    cl.crashAfterNext.get = 0n; // the first GET applied, by anyone
    const c = await mounted(cl, 'c1');
    assert.equal(cl.counters.crashesAfterGet, 1, 'the server crashed inside the window');
    const second = cl.servers[1]!;
    assert.ok(second !== undefined && second !== first && !second.dead);
    assert.equal(first.lts.counters.getsOpened, 1, 'the first server opened the transaction and made it durable');
    assert.equal(second.lts.counters.getsResent, 1, 'the new server answered the resend with the open lt');
    assert.equal(second.lts.counters.getsOpened, 0, 'and opened nothing');
    assert.ok(second.handlers.counters.maybeResent >= 1, 'the connection flagged the GET maybe-resent');
    const applied = first.gotLts.get(c.rid)![0]!;
    const resent = second.gotLts.get(c.rid)![0]!;
    assert.equal(ltHex(resent), ltHex(applied), 'byte-identical: same get_trans_seq, same allocator heads');
    assert.equal(ltHex(c.trans.openLt!), ltHex(applied), 'the mount installed that lt');
    assert.equal(c.trans.transSeq, applied.get_trans_seq);
    assert.equal(c.trans.counters.getRpcs, 1, 'one GET call: the network layer resent it');
    // The mount works on: its transaction commits on the new server.
    await settle(cl, c.set(c.key(1), text('after failover')));
    await settle(cl, c.sync());
    assert.equal(second.lts.counters.commitsApplied, 1);
  });
});

test('4.14 (1): COMMIT applied, its reply lost with the server, resent: acknowledged, srch rotated once, nothing freed twice', async () => {
  await scenario(1402n, async (cl) => {
    const first = await cl.startServer();
    const c = await mounted(cl, 'c1');
    // A first transaction, so the second one COWs committed blocks and frees them (meta_freed).
    for (let i = 0; i < 8; i++) await settle(cl, c.set(c.key(i), text(`v1 ${i}`)));
    await settle(cl, c.sync());
    assert.equal(first.lts.counters.srchRotations, 0);
    // The transaction whose reply is lost: items and three srch entries.
    for (let i = 0; i < 8; i++) await settle(cl, c.set(c.key(i), text(`v2 ${i}`)));
    const entries: SrchEntry[] = [];
    for (let i = 0; i < 3; i++) entries.push(await settle(cl, c.srch(0x5eed0000n + BigInt(i))));
    const g = c.trans.transSeq;
    cl.crashAfterNext.commit = c.rid;
    await settle(cl, c.sync());
    const second = cl.servers[1]!;
    assert.equal(cl.counters.crashesAfterCommit, 1);
    assert.equal(first.lts.counters.commitsApplied, 2, 'the first server applied both COMMITs');
    assert.equal(first.lts.counters.srchRotations, 1, '...and rotated the srch file with the second');
    assert.equal(second.lts.counters.commitsDuplicate, 1, 'the resend was acknowledged as already committed');
    assert.equal(second.lts.counters.commitsApplied, 0);
    assert.equal(second.lts.counters.srchRotations, 0, 'no second rotation');
    assert.equal(cl.ltCounters().srchRotations, 1, 'rotated exactly once in all');
    assert.equal(second.lts.counters.listsSpliced, 1, 'the next GET spliced the committed meta_freed, once');
    assert.equal(cl.ltCounters().listsSpliced, 2, 'one splice per committed transaction');
    assert.equal(c.trans.counters.commitRpcs, 2, 'one COMMIT call per transaction: the network layer resent it');
    assert.ok(c.trans.transSeq > g, 'the next transaction is open');
    const lt = await storedLt(second, c.rid);
    assert.equal(lt.commit_trans_seq, g);
    assert.equal(lt.srch_file.ref.blkno, 0n, 'the lt no longer references the rotated file');
    // The rotated file holds exactly the transaction's entries, once each.
    const files = await rotatedFiles(second);
    assert.equal(files.length, 1, 'one LOG file in srch_root');
    const ids = files[0]!.entries.map((e) => e.id).sort();
    assert.deepEqual(ids, entries.map((e) => e.id).sort(), 'the committed srch entries are still found');
    // verify() (in scenario()) runs fsck: no block is referenced, listed or free twice.
  });
});

test('4.14 (3): COMMIT succeeds, GET fails then succeeds: writers blocked, the same COMMIT resent and acknowledged', async () => {
  await scenario(1403n, async (cl) => {
    const s = await cl.startServer();
    const c = await mounted(cl, 'c1');
    await settle(cl, c.set(c.key(1), text('one')));
    const g1 = c.trans.transSeq;
    s.handlers.failNextGets(2, 'ENOSPC');
    let synced = false;
    const syncing = c.sync().then(() => { synced = true; });
    // Wait until the COMMIT was applied and the first GET failed; then a writer arrives.
    assert.ok(await cl.runUntil(() => s.handlers.counters.getsFailedByTrigger === 1, 10_000));
    assert.equal(s.lts.counters.commitsApplied, 1);
    let wroteAt = -1;
    let seqAtWrite = 0n;
    const writing = c.set(c.key(2), text('two')).then(() => {
      wroteAt = cl.sim.clock.nowMs();
      seqAtWrite = c.trans.transSeq;
    });
    const t0 = cl.sim.clock.nowMs();
    await cl.runUntil(() => synced && wroteAt >= 0, 20_000);
    await syncing;
    await writing;
    assert.equal(s.handlers.counters.getsFailedByTrigger, 2, 'two GETs failed');
    assert.equal(c.trans.counters.getFailures, 2);
    assert.equal(c.trans.counters.commitResends, 2, 'each retry re-sent the COMMIT');
    assert.equal(s.lts.counters.commitsDuplicate, 2, '...and the server acknowledged it as already committed');
    assert.equal(s.lts.counters.commitsApplied, 1, 'applied once');
    const commits = c.trace.filter((l) => / COMMIT /.test(l)).map((l) => l.replace(/^\d+ /, ''));
    assert.deepEqual(commits, [`COMMIT ${g1}`, `COMMIT ${g1}`, `COMMIT ${g1}`], 'the same transaction every time');
    assert.ok(c.trans.counters.holdsBlocked >= 1, 'the writer waited on the WRITER bit');
    assert.ok(seqAtWrite > g1, 'the blocked write was granted only once the next transaction was open');
    assert.ok(wroteAt - t0 >= 2 * 2000 - 50, `retries every 2 s: the writer waited ${wroteAt - t0} ms`);
    assert.equal(c.trans.counters.warnings, 1, 'warned once');
    assert.equal(c.trans.counters.recoveries, 1, '"retried transaction commit succeeded" once');
    await settle(cl, c.sync());
  });
});

test('4.14 (4): sync while the mount is blocked before its first GET succeeds with no COMMIT sent', async () => {
  await scenario(1404n, async (cl) => {
    // No server yet: the mount's first GET waits in the resend queue.
    const c = cl.mountClient('c1');
    let isMounted = false;
    const mounting = c.mount().then(() => { isMounted = true; });
    await cl.runUntil(() => false, 500);
    assert.equal(isMounted, false);
    await settle(cl, c.trans.sync(), 1000);
    await settle(cl, c.trans.sync(), 1000);
    assert.equal(c.trans.counters.commitsWithoutTrans, 2, 'both syncs finished at once, no transaction open');
    assert.equal(c.trans.counters.commitRpcs, 0);
    assert.equal(c.ts.counters.commits, 0, 'no COMMIT_LOG_TREES request was made');
    await assert.rejects(c.trans.hold(), isFs('EINVAL'), 'nothing may be modified before the first transaction');
    // The server comes up; the queued GET opens the first transaction; still no COMMIT.
    const s = await cl.startServer();
    assert.ok(await cl.runUntil(() => isMounted, 5000));
    await mounting;
    assert.equal(s.handlers.counters.gets, 1);
    assert.equal(s.handlers.counters.commits, 0, 'the server never saw a COMMIT');
    await settle(cl, c.set(c.key(1), text('first')));
    await settle(cl, c.sync());
    assert.equal(s.lts.counters.commitsApplied, 1);
  });
});

test('4.14 (5): a COMMIT with an unknown, stale or foreign transaction gets EIO and changes nothing', async () => {
  await scenario(1405n, async (cl) => {
    const s = await cl.startServer();
    const c = await mounted(cl, 'c1');
    await settle(cl, c.set(c.key(1), text('one')));
    const g1 = c.trans.transSeq;
    await settle(cl, c.sync());
    await settle(cl, c.set(c.key(2), text('two')));
    const g2 = c.trans.transSeq;
    await settle(cl, c.sync());
    const open = c.trans.openLt!; // G1 and G2 committed, G3 open
    assert.ok(open.get_trans_seq > g2 && g2 > g1);
    const commits = s.vol.counters.commits;
    const before = ltHex(await storedLt(s, c.rid));
    await assert.rejects(settle(cl, c.ts.commitLogTrees({ ...open, get_trans_seq: open.get_trans_seq + 5n })), isFs('EIO'));
    assert.equal(s.lts.counters.commitsMismatch, 1, 'a get_trans_seq the server never issued');
    await assert.rejects(settle(cl, c.ts.commitLogTrees({ ...open, get_trans_seq: g1 })), isFs('EIO'));
    assert.equal(s.lts.counters.commitsMismatch, 2, 'a stale one (older than the last committed transaction)');
    await assert.rejects(settle(cl, c.ts.commitLogTrees({ ...open, rid: c.rid + 1n })), isFs('EIO'));
    assert.equal(s.lts.counters.commitsWrongRid, 1, 'another rid\'s lt on this connection');
    assert.equal(s.handlers.counters.errors, 3, 'three error answers through the wire table');
    // The last committed transaction is the one exception: logtrees.ts checks
    // "already committed" first (a resend whose next GET was processed), so
    // it is acknowledged, with no side effects.
    await settle(cl, c.ts.commitLogTrees({ ...open, get_trans_seq: g2 }));
    assert.equal(s.lts.counters.commitsDuplicate, 1);
    assert.equal(s.lts.counters.commitsApplied, 2);
    assert.equal(s.vol.counters.commits, commits, 'no server commit');
    assert.equal(ltHex(await storedLt(s, c.rid)), before, 'the lt is unchanged');
    // The real transaction still commits.
    await settle(cl, c.set(c.key(3), text('three')));
    await settle(cl, c.sync());
    assert.equal(s.lts.counters.commitsApplied, 3);
  });
});

test('4.14 (6): a departed mount\'s open transaction is reclaimed and the stable seq moves past it', async () => {
  await scenario(1406n, async (cl) => {
    const s = await cl.startServer();
    const a = await mounted(cl, 'c1');
    const b = await mounted(cl, 'c2');
    for (let i = 0; i < 4; i++) await settle(cl, a.set(a.key(i), text(`committed ${i}`)));
    await settle(cl, a.sync());
    await settle(cl, a.set(a.key(9), text('never committed')));
    await settle(cl, a.srch(0xdeadn));
    const ga = a.trans.transSeq;
    const gb = b.trans.transSeq;
    const lastBefore = await settle(cl, b.ts.getLastSeq());
    assert.equal(lastBefore, (ga < gb ? ga : gb) - 1n, 'one less than the smallest open transaction');
    cl.crashClient(a, 'departed');
    // B goes on; A's open transaction still holds the stable seq back.
    await settle(cl, b.set(b.key(1), text('b')));
    await settle(cl, b.sync());
    assert.ok(b.trans.transSeq > ga);
    assert.equal(await settle(cl, b.ts.getLastSeq()), ga - 1n, 'held back by the departed mount');
    // Its reconnect wait expires: fenced and reclaimed.
    assert.ok(await cl.runUntil(() => cl.reclaimed.has(a.rid), 10_000), 'reclaimed');
    assert.equal(s.lts.counters.reclaims, 1);
    const lt = await storedLt(s, a.rid);
    assert.equal(lt.flags & LOG_TREES_FLAG_FINALIZED, LOG_TREES_FLAG_FINALIZED);
    assert.equal(lt.commit_trans_seq, lt.get_trans_seq, 'the open transaction was closed');
    assert.equal(lt.get_trans_seq, ga);
    const lastAfter = await settle(cl, b.ts.getLastSeq());
    assert.ok(lastAfter >= ga, `the stable seq ${lastAfter} moved past ${ga}`);
    assert.equal(lastAfter, b.trans.transSeq - 1n, 'only B\'s transaction is open now');
    assert.equal(s.lts.counters.srchRotations, 0, 'A\'s srch entry was never committed: nothing to rotate');
    // verify(): A's committed items visible, the uncommitted one (and its srch entry) lost.
    assert.equal(a.model.synced, 4);
    assert.equal(a.model.ops.length, 6);
  }, { reconnectWaitMs: 3000 });
});

test('the checker catches a synced write or srch entry that is not on disk', async () => {
  const cl = new Cluster({ seed: 1407n, link: LINK });
  try {
    await cl.startServer();
    const c = await mounted(cl, 'c1');
    await settle(cl, c.set(c.key(1), text('kept')));
    await settle(cl, c.sync());
    // The model claims a later synced write and srch entry that never happened.
    c.model.record({ kind: 'set', key: c.key(1), val: text('lost') });
    c.model.record({ kind: 'srch', entry: { hash: 1n, ino: c.inoBase, id: 0xbadn } });
    c.model.synced = c.model.ops.length;
    cl.stop();
    const problems = await cl.verify();
    assert.equal(problems.length, 1, problems.join('\n'));
    assert.match(problems[0]!, /c1 .*live.*matches no allowed prefix.*key 4\.\d+\.6\.1: want 6c6f7374, disk has 6b657074/);
    // Without the false write, the srch entry alone is caught too.
    c.model.ops.splice(1, 1);
    c.model.synced = c.model.ops.length;
    const p2 = await cl.verify();
    assert.equal(p2.length, 1, p2.join('\n'));
    assert.match(p2[0]!, /srch entry bad \(op 1\) found 0 times, want 1/);
  } finally {
    cl.destroy();
  }
});

test('two holders appending srch entries at once keep both entries and leak no block', async () => {
  await scenario(1408n, async (cl) => {
    await cl.startServer();
    const c = await mounted(cl, 'c1');
    await settle(cl, Promise.all([c.srch(1n), c.srch(2n)]));
    await settle(cl, c.sync());
  }, { serializeSrch: false });
});

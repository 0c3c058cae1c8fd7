/*
 * Goal: the server side of mount transactions does exactly what
 * PROTOCOL.md 4.6-4.9 say, and every handler is idempotent under resends
 * (4.13, 4.14).  Each scenario proves its path ran by a counter, and the
 * volume is fsck-clean (every metadata block referenced, free or listed
 * exactly once) after every commit:
 *   - first GET: nr 1, get_trans_seq > 0, filled meta_avail and data_avail;
 *   - resent GET (same server, and after a failover): the identical lt,
 *     no seq drawn, no commit, the super unchanged;
 *   - COMMIT, then a resend (same server and after a failover):
 *     acknowledged, srch rotated once, nothing spliced or changed twice;
 *   - COMMIT with an unknown get_trans_seq, from the wrong rid, of a
 *     missing lt: EIO, EIO, ENOENT, nothing changed;
 *   - the GET after a COMMIT splices the committed meta_freed and moves
 *     data_freed exactly once;
 *   - reclaimRid finalizes an open lt (commit == get, finalize_seq), gives
 *     back its lists and data, rotates its srch file; the stable seq is
 *     one less than the smallest open get_trans_seq and moves past the
 *     reclaimed one; a second reclaim does nothing;
 *   - reopening restores the seq counter (raised to max_item_seq) and
 *     every item;
 *   - GET of an lt with get < commit is EINVAL; a GET the server cannot
 *     fill is ENOSPC with nothing changed;
 *   - the deliberately broken mode processes a resent COMMIT and is caught.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeededRandom } from '../../../src/runtime/random.js';
import { CorruptionError, FsError } from '../../../src/format/errors.js';
import { LOG_TREES_FLAG_FINALIZED, encodeLogTrees, type LogTrees } from '../../../src/format/logtrees.js';
import { ALLOC_FLAG_LOW } from '../../../src/format/common.js';
import { logTreesKey } from '../../../src/format/items.js';
import { btreeDelete, btreeForce, btreeLookup } from '../../../src/btree/btree.js';
import { readMetaSuper } from '../../../src/server/volume.js';
import { srchLogKey, decodeCommitLogTreesPayload, checkGetLogTreesPayload } from '../../../src/server/logtrees.js';
import {
  ClientSim, assertFsckClean, checkAndClose, closeServer, dataBlocks, fsckProblems, logItem, logItems, ltBytes, mkfsMem, openServer, superBytes,
  LT_OPTS,
} from './ltutil.js';

const isFs = (code: string) => (e: unknown) => e instanceof FsError && e.code === code;

test('first GET opens nr 1 with a seq and filled allocators', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(1n);
  const s = await openServer(dev, rnd.fork('server'));
  const data0 = await dataBlocks(s);
  const seq0 = s.seq.current;
  const lt = await s.lts.getLogTrees(0x1234n);
  assert.equal(lt.rid, 0x1234n);
  assert.equal(lt.nr, 1n);
  assert.ok(lt.get_trans_seq > 0n && lt.get_trans_seq === seq0 + 1n, `get_trans_seq ${lt.get_trans_seq}`);
  assert.equal(lt.commit_trans_seq, 0n);
  assert.equal(lt.meta_avail.first_nr, LT_OPTS.metaFillTarget);
  assert.equal(lt.meta_avail.total_nr, BigInt(LT_OPTS.metaFillTarget!));
  assert.equal(lt.meta_avail.flags & ALLOC_FLAG_LOW, 0, 'meta_avail not LOW on an empty volume');
  assert.equal(lt.data_avail.total_len, LT_OPTS.dataFillTarget);
  assert.equal(lt.data_avail.flags & ALLOC_FLAG_LOW, 0);
  assert.equal(s.lts.counters.getsOpened, 1);
  assert.equal(s.lts.counters.getsNewLt, 1);
  assert.equal(s.lts.counters.metaFills, 1);
  assert.equal(s.lts.counters.dataFills, 1);
  assert.equal(s.vol.counters.commits, 1, 'the GET was committed before it returned');
  // Durable: the super on disk carries the seq, logs_root the item.
  assert.equal((await readMetaSuper(dev)).seq, lt.get_trans_seq);
  assert.equal(ltBytes((await logItem(s, 0x1234n, 1n))!), ltBytes(lt));
  assert.equal(await dataBlocks(s), data0, 'data blocks conserved');
  await checkAndClose(s);
  await assertFsckClean(dev, 'after the first GET');
});

test('resent GET returns the identical lt and changes nothing, also after a failover', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(2n);
  let s = await openServer(dev, rnd.fork('server'));
  const lt1 = await s.lts.getLogTrees(7n);
  const sup = superBytes(s);
  const commits = s.vol.counters.commits;
  const seq = s.seq.current;
  const lt2 = await s.lts.getLogTrees(7n);
  assert.equal(ltBytes(lt2), ltBytes(lt1), 'byte-identical lt');
  assert.equal(s.lts.counters.getsResent, 1);
  assert.equal(s.lts.counters.getsOpened, 1);
  assert.equal(s.seq.current, seq, 'no seq drawn');
  assert.equal(s.vol.counters.commits, commits, 'no commit');
  assert.equal(s.commitq.counters.appliesClean, 1);
  assert.equal(superBytes(s), sup, 'super and allocators unchanged');
  // Failover: a new server over the same device answers the resend the same way.
  await checkAndClose(s);
  s = await openServer(dev, rnd.fork('server2'));
  const sup2 = superBytes(s);
  const lt3 = await s.lts.getLogTrees(7n);
  assert.equal(ltBytes(lt3), ltBytes(lt1));
  assert.equal(s.lts.counters.getsResent, 1);
  assert.equal(s.vol.counters.commits, 0);
  assert.equal(superBytes(s), sup2);
  await checkAndClose(s);
  await assertFsckClean(dev, 'after resent GETs');
});

test('COMMIT then resent COMMIT: acknowledged, srch rotated once, nothing spliced twice', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(3n);
  let s = await openServer(dev, rnd.fork('server'));
  const data0 = await dataBlocks(s);
  const c = new ClientSim(dev, s, 0xabcn, rnd.fork('client'));
  await c.get();
  await c.writeItems(200);
  await c.writeSrchFile(5);
  await c.freeData(10n);
  const srchBlkno = c.lt!.srch_file.ref.blkno;
  const sent = await c.commit();
  assert.equal(s.lts.counters.commitsApplied, 1);
  assert.equal(s.lts.counters.srchRotations, 1);
  const rotated = await btreeLookup(s.vol.store, s.vol.sb.srch_root, srchLogKey(srchBlkno));
  assert.ok(rotated !== null, 'srch file is a LOG item in srch_root');
  const stored = (await logItem(s, 0xabcn, 1n))!;
  assert.equal(stored.commit_trans_seq, stored.get_trans_seq);
  assert.equal(stored.srch_file.ref.blkno, 0n, 'the stored lt no longer references the rotated file');
  await assertFsckClean(dev, 'after COMMIT');

  // The response was lost: the client resends the same COMMIT.
  const sup = superBytes(s);
  const commits = s.vol.counters.commits;
  await s.lts.commitLogTrees(0xabcn, sent);
  assert.equal(s.lts.counters.commitsDuplicate, 1);
  assert.equal(s.lts.counters.commitsApplied, 1);
  assert.equal(s.lts.counters.srchRotations, 1, 'rotated once');
  assert.equal(s.vol.counters.commits, commits, 'no commit for the duplicate');
  assert.equal(superBytes(s), sup, 'nothing changed');
  await assertFsckClean(dev, 'after the resent COMMIT');

  // ... and once more to a new server after a failover.
  await checkAndClose(s);
  s = await openServer(dev, rnd.fork('server2'));
  const sup2 = superBytes(s);
  await s.lts.commitLogTrees(0xabcn, sent);
  assert.equal(s.lts.counters.commitsDuplicate, 1);
  assert.equal(s.lts.counters.srchRotations, 0);
  assert.equal(superBytes(s), sup2);
  assert.equal(s.vol.counters.commits, 0);

  // The next GET splices the committed meta_freed and moves data_freed, once.
  const c2 = new ClientSim(dev, s, 0xabcn, rnd.fork('client2'));
  assert.ok(stored.meta_freed.total_nr > 0n, 'the transaction freed metadata blocks');
  const lt2 = await c2.get();
  assert.equal(s.lts.counters.listsSpliced, 1);
  assert.equal(s.lts.counters.listEntriesSpliced, Number(stored.meta_freed.total_nr));
  assert.equal(s.lts.counters.dataRootsMoved, 1);
  assert.equal(s.lts.counters.dataBlocksMoved, 10);
  assert.equal(lt2.meta_freed.total_nr, 0n);
  assert.equal(lt2.data_freed.total_len, 0n);
  assert.equal(lt2.srch_file.ref.blkno, 0n, 'the client learns of the rotation');
  assert.ok(lt2.get_trans_seq > stored.get_trans_seq);
  await assertFsckClean(dev, 'after the next GET');
  // Resends of that GET and of the old COMMIT splice nothing again: the
  // old COMMIT is still recognised as committed after the next GET opened
  // a new transaction (its G equals commit_trans_seq), and acknowledged.
  await s.lts.getLogTrees(0xabcn);
  const dups = s.lts.counters.commitsDuplicate;
  await s.lts.commitLogTrees(0xabcn, sent);
  assert.equal(s.lts.counters.commitsDuplicate, dups + 1);
  assert.equal(s.lts.counters.listsSpliced, 1);
  assert.equal(s.lts.counters.dataRootsMoved, 1);
  assert.equal(s.lts.counters.commitsMismatch, 0);
  assert.equal(await dataBlocks(s), data0, 'data blocks conserved');

  // A second transaction on the same lt: COW of committed blocks, commit, clean.
  await c2.writeItems(50);
  await c2.writeSrchFile(2);
  await c2.commit();
  assert.equal(s.lts.counters.srchRotations, 0, 'a 2-block file is below the rotation threshold');
  await assertFsckClean(dev, 'after the second COMMIT');
  c.destroy();
  c2.destroy();
  await checkAndClose(s);
});

test('bad COMMITs: unknown get_trans_seq and wrong rid are EIO, missing lt ENOENT, nothing changes', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(4n);
  const s = await openServer(dev, rnd.fork('server'));
  const c = new ClientSim(dev, s, 0x55n, rnd.fork('client'));
  const lt = await c.get();
  const sup = superBytes(s);
  const items = await logItems(s);
  const forged: LogTrees = { ...lt, get_trans_seq: lt.get_trans_seq + 5n };
  await assert.rejects(s.lts.commitLogTrees(0x55n, forged), isFs('EIO'));
  assert.equal(s.lts.counters.commitsMismatch, 1);
  await assert.rejects(s.lts.commitLogTrees(0x66n, lt), isFs('EIO'));
  assert.equal(s.lts.counters.commitsWrongRid, 1);
  await assert.rejects(s.lts.commitLogTrees(0x55n, { ...lt, nr: 9n }), isFs('ENOENT'));
  assert.equal(s.lts.counters.commitsNotFound, 1);
  assert.equal(s.lts.counters.commitsApplied, 0);
  assert.equal(superBytes(s), sup);
  assert.deepEqual(await logItems(s), items);
  // Payload checks for the network layer.
  assert.throws(() => checkGetLogTreesPayload(new Uint8Array(1)), isFs('EINVAL'));
  assert.throws(() => decodeCommitLogTreesPayload(new Uint8Array(471)), isFs('EINVAL'));
  assert.equal(ltBytes(decodeCommitLogTreesPayload(encodeLogTrees(lt))), ltBytes(lt));
  // The real transaction still commits.
  await c.writeItems(10);
  await c.commit();
  assert.equal(s.lts.counters.commitsApplied, 1);
  c.destroy();
  await checkAndClose(s);
  await assertFsckClean(dev, 'after bad COMMITs');
});

test('reclaimRid finalizes an open lt and the stable seq moves past it', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(5n);
  const s = await openServer(dev, rnd.fork('server'));
  const data0 = await dataBlocks(s);
  const a = new ClientSim(dev, s, 0xan, rnd.fork('a'));
  const b = new ClientSim(dev, s, 0xbn, rnd.fork('b'));
  await a.get();
  await a.writeItems(100);
  await a.writeSrchFile(2); // below the rotation threshold: stays in the lt
  await a.freeData(3n);
  await a.commit();
  assert.equal(s.lts.counters.srchRotations, 0);
  const a2 = await a.get(); // A's second transaction is open
  const bl = await b.get(); // and B's
  assert.ok(bl.get_trans_seq > a2.get_trans_seq);
  assert.equal(await s.lts.getLastSeq(), a2.get_trans_seq - 1n, 'one less than the smallest open seq');
  await a.writeItems(20); // uncommitted: lost at reclaim
  const committed = (await logItem(s, 0xan, 1n))!;

  await s.lts.reclaimRid(0xan);
  assert.equal(s.lts.counters.reclaims, 1);
  const r = (await logItem(s, 0xan, 1n))!;
  assert.equal(r.flags & LOG_TREES_FLAG_FINALIZED, LOG_TREES_FLAG_FINALIZED);
  assert.equal(r.commit_trans_seq, r.get_trans_seq, 'the open transaction is closed');
  assert.ok(r.finalize_seq > bl.get_trans_seq, `finalize_seq ${r.finalize_seq}`);
  assert.deepEqual(r.item_root, committed.item_root, 'committed items stay readable');
  assert.equal(r.meta_avail.total_nr + r.meta_freed.total_nr, 0n, 'lists given back');
  assert.equal(r.data_avail.total_len + r.data_freed.total_len, 0n, 'data given back');
  assert.equal(r.srch_file.ref.blkno, 0n);
  assert.equal(s.lts.counters.srchRotations, 1, 'any non-empty srch file is rotated at reclaim');
  assert.equal(s.lts.counters.listsSpliced, 2, 'meta_freed at the second GET, meta_avail at reclaim (the open lt\'s meta_freed is empty)');
  assert.equal(s.lts.counters.dataRootsMoved, 2, 'data_freed at the second GET, data_avail at reclaim');
  assert.equal(await s.lts.getLastSeq(), bl.get_trans_seq - 1n, 'the stable seq moved past the reclaimed transaction');
  assert.equal(await dataBlocks(s), data0);
  await assertFsckClean(dev, 'after reclaim');

  // Reclaim again: nothing.  A's resent COMMIT of its last committed transaction: acknowledged.
  await s.lts.reclaimRid(0xan);
  assert.equal(s.lts.counters.reclaimsNothing, 1);
  // A GET from that rid (a mount that lived on, PROTOCOL 13.16) starts nr 2.
  const a3 = await s.lts.getLogTrees(0xan);
  assert.equal(a3.nr, 2n);
  assert.equal(s.lts.counters.getsNewLt, 3);
  // B commits: nothing open except A's nr 2, so the stable seq is behind it.
  await b.writeItems(5);
  await b.commit();
  assert.equal(await s.lts.getLastSeq(), a3.get_trans_seq - 1n);
  await s.lts.reclaimRid(0xan);
  assert.equal(await s.lts.getLastSeq(), s.seq.current - 1n, 'nothing open: last issued seq - 1');
  await s.lts.reclaimRid(0x999n);
  assert.equal(s.lts.counters.reclaimsNothing, 2, 'unknown rid: nothing');
  a.destroy();
  b.destroy();
  await checkAndClose(s);
  await assertFsckClean(dev, 'end');
});

test('reopening restores the seq counter (raised to max_item_seq) and the items', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(6n);
  let s = await openServer(dev, rnd.fork('server'));
  const c = new ClientSim(dev, s, 0x77n, rnd.fork('client'));
  for (let i = 0; i < 3; i++) {
    await c.get();
    await c.writeItems(40);
    await c.commit();
  }
  await c.get();
  await c.writeItems(5);
  // An item seq above the counter (a lock write seq, say) raises it at the next start.
  c.lt!.max_item_seq = s.seq.current + 100n;
  await c.commit();
  const items = await logItems(s);
  const seq = s.seq.current;
  await checkAndClose(s);
  s = await openServer(dev, rnd.fork('server2'));
  assert.equal(s.seq.counters.raisedAtStart, 1);
  assert.equal(s.seq.current, seq + 100n);
  assert.deepEqual(await logItems(s), items, 'every item restored');
  const c2 = new ClientSim(dev, s, 0x77n, rnd.fork('client2'));
  const lt = await c2.get();
  assert.equal(lt.get_trans_seq, seq + 101n, 'new transactions are above every item seq');
  await checkAndClose(s);
  s = await openServer(dev, rnd.fork('server3'));
  assert.equal(s.seq.current, seq + 101n);
  assert.equal(s.seq.counters.raisedAtStart, 0);
  assert.equal(await s.lts.getLastSeq(), seq + 100n);
  c.destroy();
  c2.destroy();
  await checkAndClose(s);
  await assertFsckClean(dev, 'after reopening');
});

test('GET of an lt with get < commit is EINVAL; an unfillable GET is ENOSPC with nothing changed', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(7n);
  const s = await openServer(dev, rnd.fork('server'));
  const lt = await s.lts.getLogTrees(0x42n);
  // Corrupt the stored lt's seqs (under a hold, and commit it).
  const h = await s.commitq.hold();
  await btreeForce(s.vol.store, s.vol.sb.logs_root, logTreesKey(0x42n, 1n), encodeLogTrees({ ...lt, commit_trans_seq: lt.get_trans_seq + 1n }));
  await s.commitq.apply(h);
  await assert.rejects(s.lts.getLogTrees(0x42n), isFs('EINVAL'));
  assert.equal(s.lts.counters.getsInvalid, 1);
  assert.match((await s.lts.checkInvariants()).join('\n'), /commit_trans_seq \d+ > get_trans_seq/);
  closeServer(s);
  // A server start refuses such an lt: its commit_trans_seq is above super.seq.
  await assert.rejects(openServer(dev, rnd.fork('server1')), (e: unknown) => e instanceof CorruptionError);

  // A server whose mounts want more than meta_avail holds.
  const dev2 = mkfsMem();
  const s2 = await openServer(dev2, rnd.fork('server2'), { metaFillLo: 8185, metaFillTarget: 8185 });
  const sup = superBytes(s2);
  await assert.rejects(s2.lts.getLogTrees(0x43n), isFs('ENOSPC'));
  assert.equal(s2.lts.counters.getsEnospc, 1);
  assert.equal(superBytes(s2), sup, 'nothing changed');
  assert.equal(s2.vol.images.dirtyCount, 0);
  await checkAndClose(s2);
  await assertFsckClean(dev2, 'after ENOSPC');
});

test('deliberately broken mode: a resent COMMIT is processed again, and the damage is visible', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(8n);
  const s = await openServer(dev, rnd.fork('server'), { brokenProcessResentCommit: true });
  assert.ok(s.lts.isBroken);
  // With a rotated srch file the resend tries to rotate it again: EEXIST, forever.
  const c = new ClientSim(dev, s, 0x88n, rnd.fork('client'));
  await c.get();
  await c.writeItems(30);
  await c.writeSrchFile(4);
  const sent = await c.commit();
  assert.equal(s.lts.counters.srchRotations, 1);
  await assert.rejects(s.lts.commitLogTrees(0x88n, sent), isFs('EEXIST'));
  assert.equal(s.lts.counters.brokenResentCommitsProcessed, 1);
  assert.equal(s.lts.counters.srchCollisions, 1);
  assert.equal(s.lts.counters.commitsDuplicate, 0);
  // Once the first rotation's item is gone (compacted), the same file is rotated a second time.
  const h = await s.commitq.hold();
  await btreeDelete(s.vol.store, s.vol.sb.srch_root, srchLogKey(sent.srch_file.ref.blkno));
  await s.commitq.apply(h);
  await s.lts.commitLogTrees(0x88n, sent);
  assert.equal(s.lts.counters.srchRotations, 2, 'the same srch file rotated twice');

  // A mount that committed, lost the response, was reclaimed, and resends:
  // the broken server un-finalizes the lt and re-adopts lists it gave back.
  const d = new ClientSim(dev, s, 0x99n, rnd.fork('d'));
  await d.get();
  await d.writeItems(30);
  const dsent = await d.commit();
  await s.lts.reclaimRid(0x99n);
  await assertFsckClean(dev, 'after reclaim');
  await s.lts.commitLogTrees(0x99n, dsent);
  assert.equal(s.lts.counters.brokenResentCommitsProcessed, 3);
  const problems = await fsckProblems(dev);
  assert.ok(problems.some((p) => /listed twice|both/.test(p)), `fsck sees doubly owned blocks: ${problems.join('\n')}`);
  c.destroy();
  d.destroy();
  closeServer(s);

  // The correct server acknowledges the same resend after reclaim and changes nothing.
  const dev2 = mkfsMem();
  const s2 = await openServer(dev2, rnd.fork('server2'));
  const e = new ClientSim(dev2, s2, 0x99n, rnd.fork('e'));
  await e.get();
  await e.writeItems(30);
  const esent = await e.commit();
  await s2.lts.reclaimRid(0x99n);
  const sup = superBytes(s2);
  await s2.lts.commitLogTrees(0x99n, esent);
  assert.equal(s2.lts.counters.commitsDuplicate, 1);
  assert.equal(superBytes(s2), sup);
  e.destroy();
  await checkAndClose(s2);
  await assertFsckClean(dev2, 'correct server after reclaim and resend');
});

test('GET sets the LOW flags when the server runs short', async () => {
  const dev = mkfsMem();
  const rnd = new SeededRandom(9n);
  // meta_avail at or below the reserved blocks; data_alloc smaller than the data fill threshold.
  const s = await openServer(dev, rnd.fork('server'), { dataFillLo: 5000n, dataFillTarget: 6000n }, { reserved: () => 1_000_000n });
  const data0 = s.vol.sb.data_alloc.total_len;
  const lt = await s.lts.getLogTrees(0x31n);
  assert.equal(lt.meta_avail.flags & ALLOC_FLAG_LOW, ALLOC_FLAG_LOW, 'meta_avail LOW');
  assert.equal(lt.meta_avail.first_nr, LT_OPTS.metaFillTarget, 'still filled');
  assert.equal(lt.data_avail.total_len, data0, 'all of data_alloc moved');
  assert.equal(lt.data_avail.flags & ALLOC_FLAG_LOW, ALLOC_FLAG_LOW, 'data_avail LOW');
  assert.equal(s.vol.sb.data_alloc.total_len, 0n);
  // A second mount gets no data at all, and LOW.
  const lt2 = await s.lts.getLogTrees(0x32n);
  assert.equal(lt2.data_avail.total_len, 0n);
  assert.equal(lt2.data_avail.flags & ALLOC_FLAG_LOW, ALLOC_FLAG_LOW);
  assert.equal(s.lts.counters.dataFills, 1);
  await checkAndClose(s);
  await assertFsckClean(dev, 'after LOW GETs');
});

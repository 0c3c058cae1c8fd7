/*
 * Goal: quorum blocks are read verified and written as PROTOCOL.md 2.4
 * says, and the rules others apply to them hold:
 *   - each of the six events lands at its FORMAT.md offset with write_nr,
 *     rid, term and time; write_nr counts every write; header seq kept;
 *   - a block whose BEGIN rid is not ours refuses every other event (EIO:
 *     another mount uses the slot); BEGIN itself takes the slot over;
 *   - bad crc, magic, fsid or blkno are CorruptionErrors naming the block,
 *     a transient bad read is retried once;
 *   - the slot config checks of 2.1 (EINVAL with the reason);
 *   - "server address", "starting term" and the old leaders a new leader
 *     must fence (2.6), including findServerAddress from a device.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FakeClock } from '../../../src/runtime/clock.js';
import { FaultDevice } from '../../../src/runtime/faultdevice.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { CorruptionError, FsError } from '../../../src/format/errors.js';
import { QUORUM_BLOCK } from '../../../src/format/quorum.js';
import { encodeSuper } from '../../../src/format/super.js';
import {
  QuorumSlotWriter, findServerAddress, oldLeaders, quorumBlockOffset, readQuorumBlock, readQuorumBlocks,
  serverFromBlocks, startingTerm,
} from '../../../src/quorum/blocks.js';
import { quorumConfig, verifyQuorumConfig, votesNeeded } from '../../../src/quorum/config.js';
import { quorumVolume, slotSpecs } from './util.js';

const FSID = 0xfeedn;
const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

test('votes_needed is 1 below three slots, else a majority', () => {
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 15].map(votesNeeded), [1, 1, 2, 3, 3, 4, 4, 8]);
});

test('slot config checks (2.1): own slot present, unicast, ports, no duplicates', async () => {
  const { sb } = await quorumVolume(slotSpecs(3));
  const cfg = verifyQuorumConfig(sb, 1);
  assert.deepEqual(cfg.present, [0, 1, 2]);
  assert.equal(cfg.addrs[2], '127.0.0.3:7000');
  assert.equal(cfg.ipv4[0], '127.0.0.1');
  assert.equal(cfg.votesNeeded, 2);
  assert.throws(() => verifyQuorumConfig(sb, 3), (e: unknown) => e instanceof FsError && e.code === 'EINVAL' &&
    /quorum_slot_nr=3 is not a configured slot \(configured: 0: 127.0.0.1:7000, 1: 127.0.0.2:7000, 2: 127.0.0.3:7000\)/.test(e.message));
  assert.throws(() => verifyQuorumConfig(sb, 15), /not a slot number/);
  const edit = (i: number, a: Partial<{ family: number; port: number; addr: number }>): typeof sb => {
    const s = structuredClone(sb);
    s.qconf.slots[i] = { ...s.qconf.slots[i]!, ...a };
    return s;
  };
  assert.throws(() => verifyQuorumConfig(edit(2, { addr: 0xe0000001 }), 0), /224.0.0.1 is multicast/);
  assert.throws(() => verifyQuorumConfig(edit(2, { addr: 0xffffffff }), 0), /broadcast/);
  assert.throws(() => verifyQuorumConfig(edit(2, { addr: 0 }), 0), /0.0.0.0\/8/);
  assert.throws(() => verifyQuorumConfig(edit(2, { port: 65535 }), 0), /port 65535/);
  assert.throws(() => verifyQuorumConfig(edit(2, { port: 0 }), 0), /port 0/);
  assert.throws(() => verifyQuorumConfig(edit(2, { addr: 0x7f000001 }), 0), /slots 0 and 2 share the address 127.0.0.1:7000/);
  const none = structuredClone(sb);
  for (const s of none.qconf.slots) s.family = 0;
  assert.throws(() => verifyQuorumConfig(none, 0), /configures no quorum slot/);
});

test('events land at their offsets; write_nr counts writes; header seq is kept', async () => {
  const { meta } = await quorumVolume(slotSpecs(2));
  const clock = new FakeClock({ startMs: 1500 });
  const w = new QuorumSlotWriter(meta, FSID, 1, 0xabcn, clock);
  await w.writeEvent('BEGIN', 3n);
  await w.writeEvent('TERM', 4n);
  const blk = await w.writeEvent('ELECT', 4n);
  assert.equal(blk.write_nr, 3n);
  const raw = meta.readSync(quorumBlockOffset(1), 4096);
  assert.equal(dv(raw).getBigUint64(16, true), 1n, 'mkfs header seq 1 is kept');
  assert.equal(dv(raw).getBigUint64(24, true), 18n, 'blkno 17 + slot');
  assert.equal(dv(raw).getBigUint64(QUORUM_BLOCK.o('write_nr'), true), 3n);
  const e = (i: number, f: number): bigint => dv(raw).getBigUint64(QUORUM_BLOCK.o(`events[${i}]`) + f, true);
  assert.deepEqual([e(0, 0), e(0, 8), e(0, 16)], [1n, 0xabcn, 3n], 'BEGIN: write_nr 1, rid, term');
  assert.deepEqual([e(1, 0), e(1, 8), e(1, 16)], [2n, 0xabcn, 4n], 'TERM');
  assert.deepEqual([e(2, 0), e(2, 8), e(2, 16)], [3n, 0xabcn, 4n], 'ELECT');
  assert.equal(e(2, 24), 1_600_000_001n, 'timestamp seconds from the clock');
  assert.equal(dv(raw).getUint32(QUORUM_BLOCK.o('events[2]') + 32, true), 500_000_000, 'nanoseconds');
  for (const i of [3, 4, 5]) assert.equal(e(i, 8), 0n, 'untouched events stay zero');
  assert.ok(raw.subarray(280).every((x) => x === 0), 'zero fill to 4 KiB');
  // The other slot's block is untouched.
  assert.equal((await readQuorumBlock(meta, FSID, 0)).write_nr, 0n);
  assert.equal(meta.flushes >= 3, true, 'each event is flushed');
});

test('another mount on our slot: every event but BEGIN is refused with EIO', async () => {
  const { meta } = await quorumVolume(slotSpecs(3));
  const clock = new FakeClock();
  const a = new QuorumSlotWriter(meta, FSID, 0, 0xaaan, clock);
  const b = new QuorumSlotWriter(meta, FSID, 0, 0xbbbn, clock);
  await a.writeEvent('BEGIN', 0n);
  await a.writeEvent('TERM', 1n);
  await b.writeEvent('BEGIN', 1n);
  for (const ev of ['TERM', 'ELECT', 'FENCE', 'STOP', 'END'] as const) {
    await assert.rejects(a.writeEvent(ev, 2n), (e: unknown) => e instanceof FsError && e.code === 'EIO' &&
      /another mount is using quorum slot 0/.test(e.message));
  }
  // The writer's chain survives a refused write: b goes on.
  await b.writeEvent('TERM', 2n);
  const blk = await readQuorumBlock(meta, FSID, 0);
  assert.equal(blk.events[0]!.rid, 0xbbbn);
  assert.equal(blk.events[1]!.term, 2n);
  // A writer that never wrote BEGIN is refused too (BEGIN rid is someone else's).
  await assert.rejects(new QuorumSlotWriter(meta, FSID, 1, 0xcccn, clock).writeEvent('TERM', 1n), /BEGIN was written by rid 0000000000000000/);
});

test('verified reads: crc, magic, fsid, blkno failures are corruption; a transient bad read is retried', async () => {
  const { meta } = await quorumVolume(slotSpecs(3));
  const off = quorumBlockOffset(2);
  const good = meta.readSync(off, 4096);
  const corrupt = async (at: number, check: string): Promise<void> => {
    const b = good.slice();
    b[at]! ^= 1;
    meta.writeSync(off, b);
    await assert.rejects(readQuorumBlock(meta, FSID, 2), (e: unknown) => e instanceof CorruptionError && e.check === check && e.blkno === 19n);
    meta.writeSync(off, good);
  };
  await corrupt(100, 'crc');
  await assert.rejects(readQuorumBlock(meta, FSID + 1n, 2), (e: unknown) => e instanceof CorruptionError && e.check === 'fsid');
  // A block copied to the wrong place: right crc, wrong blkno.
  meta.writeSync(quorumBlockOffset(1), good);
  await assert.rejects(readQuorumBlock(meta, FSID, 1), (e: unknown) => e instanceof CorruptionError && e.check === 'blkno');
  // A super block where a quorum block should be: wrong magic.
  meta.writeSync(quorumBlockOffset(1), meta.readSync(16n * 4096n, 4096));
  await assert.rejects(readQuorumBlock(meta, FSID, 1), (e: unknown) => e instanceof CorruptionError && e.check === 'magic');
  // Locating the server fails on any invalid present block.
  await assert.rejects(findServerAddress(meta), CorruptionError);

  const fd = new FaultDevice(meta, new SeededRandom(1));
  fd.corruptNextRead(off);
  const blk = await readQuorumBlock(fd, FSID, 2);
  assert.equal(blk.hdr.blkno, 19n);
  assert.equal(fd.counters.readsCorrupted, 1, 'the first read was corrupted and the retry succeeded');
});

test('server address, starting term and old leaders follow 2.4 and 2.6', async () => {
  const { meta, sb } = await quorumVolume(slotSpecs(5));
  const cfg = quorumConfig(sb);
  const clock = new FakeClock();
  const w = (slot: number, rid: bigint): QuorumSlotWriter => new QuorumSlotWriter(meta, FSID, slot, rid, clock);
  const blocks = (): ReturnType<typeof readQuorumBlocks> => readQuorumBlocks(meta, FSID, cfg);

  assert.equal(serverFromBlocks(await blocks(), cfg), null, 'fresh volume: no server');
  assert.equal(startingTerm(await blocks(), cfg), 0n);
  assert.equal(await findServerAddress(meta), null);

  const s0 = w(0, 0xa0n);
  const s1 = w(1, 0xa1n);
  const s3 = w(3, 0xa3n);
  await s0.writeEvent('BEGIN', 0n);
  await s1.writeEvent('BEGIN', 0n);
  await s3.writeEvent('BEGIN', 0n);
  await s0.writeEvent('ELECT', 2n);
  await s0.writeEvent('FENCE', 2n);
  assert.deepEqual(await findServerAddress(meta), { slot: 0, term: 2n, addr: '127.0.0.1:7000' });
  await s1.writeEvent('TERM', 5n);
  await s1.writeEvent('ELECT', 5n);
  assert.deepEqual(serverFromBlocks(await blocks(), cfg), { slot: 1, term: 5n, addr: '127.0.0.2:7000' }, 'greatest running ELECT');
  // A tie (two slots on both sides of a partition): the later ELECT wins.
  clock.advance(1000);
  await s3.writeEvent('ELECT', 5n);
  assert.deepEqual(serverFromBlocks(await blocks(), cfg), { slot: 3, term: 5n, addr: '127.0.0.4:7000' }, 'later ELECT of the same term');
  await s3.writeEvent('STOP', 5n);
  assert.deepEqual(serverFromBlocks(await blocks(), cfg), { slot: 1, term: 5n, addr: '127.0.0.2:7000' });
  assert.equal(startingTerm(await blocks(), cfg), 5n);

  // Slot 1 leads term 5: it must fence slot 0 (ELECT 2 > STOP 0, >= fenced 2).
  let ol = oldLeaders(await blocks(), cfg, 0xa1n, 5n);
  assert.equal(ol.fencedTerm, 2n);
  assert.deepEqual(ol.fence, [{ slot: 0, rid: 0xa0n, term: 2n, event: 'ELECT' }]);
  assert.equal(ol.newer, null);
  // Slot 0, still thinking it leads term 2, sees a newer leader and must not serve.
  ol = oldLeaders(await blocks(), cfg, 0xa0n, 2n);
  assert.deepEqual(ol.newer, { slot: 1, rid: 0xa1n, term: 5n, event: 'ELECT' });

  // Slot 1 fenced and reclaimed slot 0, then wrote FENCE 5; slot 0 then stopped.
  await s1.writeEvent('FENCE', 5n);
  await s0.writeEvent('STOP', 2n);
  await s1.writeEvent('STOP', 5n);
  assert.equal(await findServerAddress(meta), null, 'every ELECT <= STOP: no server');
  // A new mount takes slot 1 over (BEGIN rid 0xb1): the FENCE 5 record of the old
  // rid stays, but STOP 5 is not below it, so nothing is left to fence.
  await s3.writeEvent('TERM', 7n);
  await s3.writeEvent('ELECT', 7n);
  ol = oldLeaders(await blocks(), cfg, 0xa3n, 7n);
  assert.deepEqual(ol.fence, []);
  assert.equal(ol.fencedTerm, 5n);

  // A previous server that never stopped, recorded only by its FENCE event:
  // rid 0xa3 led term 7 and wrote FENCE 7, crashed; a new mount 0xb3 took
  // slot 3 over and was elected in term 9 (ELECT 9 overwrote ELECT 7).
  await s3.writeEvent('FENCE', 7n);
  const s3b = w(3, 0xb3n);
  await s3b.writeEvent('BEGIN', 7n);
  await s3b.writeEvent('ELECT', 9n);
  // Slot 4's new leader of term 11 must fence rid 0xa3 (the FENCE record)
  // and rid 0xb3 (the running ELECT of slot 3).
  const s4 = w(4, 0xa4n);
  await s4.writeEvent('BEGIN', 9n);
  await s4.writeEvent('ELECT', 11n);
  ol = oldLeaders(await blocks(), cfg, 0xa4n, 11n);
  assert.equal(ol.fencedTerm, 7n);
  assert.deepEqual(ol.fence, [
    { slot: 3, rid: 0xb3n, term: 9n, event: 'ELECT' },
    { slot: 3, rid: 0xa3n, term: 7n, event: 'FENCE' },
  ].sort((a, b) => a.slot - b.slot || (a.term < b.term ? -1 : 1)));
  // Records older than the greatest FENCE term were fenced already.
  await s4.writeEvent('FENCE', 8n);
  ol = oldLeaders(await blocks(), cfg, 0xa4n, 11n);
  assert.deepEqual(ol.fence.map((r) => r.rid), [0xb3n]);
  assert.equal(startingTerm(await blocks(), cfg), 11n);
});

test('findServerAddress reads the super itself and refuses a data device', async () => {
  const { meta, sb } = await quorumVolume(slotSpecs(1));
  const w = new QuorumSlotWriter(meta, FSID, 0, 1n, new FakeClock());
  await w.writeEvent('BEGIN', 0n);
  await w.writeEvent('ELECT', 1n);
  assert.deepEqual(await findServerAddress(meta), { slot: 0, term: 1n, addr: '127.0.0.1:7000' });
  assert.deepEqual(await findServerAddress(meta, sb), { slot: 0, term: 1n, addr: '127.0.0.1:7000' });
  const data = structuredClone(sb);
  data.flags = 0n;
  meta.writeSync(16n * 4096n, encodeSuper(data));
  await assert.rejects(findServerAddress(meta), /this is a data device \(META_BDEV flag clear\)/);
});

/*
 * Quorum blocks (PROTOCOL.md 2.4, FORMAT.md 6): one 4 KiB block per slot
 * at SM blocks 17..31 of the metadata device, each with a write_nr and six
 * event records (write_nr, rid, term, timestamp): BEGIN, TERM, ELECT,
 * FENCE, STOP, END.
 *
 *   SM 17+slot:  hdr(32) | write_nr | BEGIN | TERM | ELECT | FENCE | STOP | END | zeros..4096
 *
 * Reads are verified as the kernel reads them: crc over the 4 KiB, magic,
 * fsid equal to the super's, blkno equal to 17+slot (the header seq is
 * whatever mkfs wrote and is never checked).  A failed check is retried
 * once from the device (a transient bad read must not fail an election);
 * a second failure is a CorruptionError naming the device, the blkno and
 * the check: the caller's operation fails with it (EIO to users).
 *
 * Writing an event (QuorumSlotWriter) = read our own block verified; for
 * every event but BEGIN check that BEGIN.rid is our rid, else another
 * mount has started on our slot since we did, and the write is refused
 * with FsError('EIO') saying so (the two mounts would corrupt each other's
 * elections); bump write_nr; set the event to (write_nr, rid, term, wall
 * time); rewrite the whole block (header seq unchanged, new crc); flush.
 * The flush makes each event durable before the caller acts on it: a TERM
 * before the vote it allows, an ELECT before the server starts.  Writes of
 * one slot are serialized through a promise chain, so the read-modify-write
 * never interleaves within this process (the server's FENCE write and the
 * election loop's writes share the writer).
 *
 * The rules others apply to the blocks (pure functions over decoded blocks):
 *   - serverFromBlocks ("server address", 2.4): among present slots, the
 *     one whose ELECT term is greatest among those with ELECT.term >
 *     STOP.term (a tie, possible with two slots only, goes to the later
 *     ELECT); none means no server (clients retry later);
 *   - startingTerm (2.4): the greatest term of any event with a non-zero
 *     rid in any present slot's block;
 *   - oldLeaders (2.6 step 1): the records a new leader must fence, see
 *     there.
 * findServerAddress(metaDev) is the client's entry point: it reads the
 * super (verified) and every present slot's block; any invalid block fails
 * the lookup (FORMAT.md 6.2), as in the reference.
 *
 * Owner: the mount's main thread.  No caching: every call reads the device.
 */
import assert from 'node:assert/strict';
import { checkBlock } from '../format/block.js';
import { CorruptionError, FsError } from '../format/errors.js';
import { SM_BLOCK_SIZE } from '../format/constants.js';
import {
  decodeQuorumBlock, encodeQuorumBlock, quorumBlkno, QUORUM_EVENT, QUORUM_EVENT_NAMES,
  type QuorumBlock, type QuorumEvent,
} from '../format/quorum.js';
import type { Super } from '../format/super.js';
import { readMetaSuper } from '../block/super.js';
import type { BlockDevice } from '../runtime/device.js';
import type { Clock } from '../runtime/clock.js';
import { quorumConfig, type QuorumConfig } from './config.js';

export type QuorumEventName = keyof typeof QUORUM_EVENT;

export function quorumBlockOffset(slot: number): bigint {
  return quorumBlkno(slot) * BigInt(SM_BLOCK_SIZE);
}

/** Read and verify one slot's block (crc, magic, fsid, blkno), retrying a failed check once. */
export async function readQuorumBlock(dev: BlockDevice, fsid: bigint, slot: number): Promise<QuorumBlock> {
  const blkno = quorumBlkno(slot);
  const off = quorumBlockOffset(slot);
  let b = await dev.read(off, SM_BLOCK_SIZE);
  let fail = checkBlock(b, { kind: 'quorum', fsid, blkno, seq: null });
  if (fail !== null) {
    b = await dev.read(off, SM_BLOCK_SIZE);
    fail = checkBlock(b, { kind: 'quorum', fsid, blkno, seq: null });
  }
  if (fail !== null) throw new CorruptionError(dev.path, blkno, fail.check, `quorum block of slot ${slot}: ${fail.detail}`);
  return decodeQuorumBlock(b);
}

/** Every present slot's block, indexed by slot (undefined for absent slots). */
export async function readQuorumBlocks(dev: BlockDevice, fsid: bigint, cfg: QuorumConfig): Promise<(QuorumBlock | undefined)[]> {
  const out: (QuorumBlock | undefined)[] = [];
  for (let i = 0; i < cfg.addrs.length; i++) out.push(undefined);
  for (const slot of cfg.present) out[slot] = await readQuorumBlock(dev, fsid, slot);
  return out;
}

const ev = (blk: QuorumBlock, e: QuorumEventName): QuorumEvent => blk.events[QUORUM_EVENT[e]]!;

export function eventTerm(blk: QuorumBlock, e: QuorumEventName): bigint {
  return ev(blk, e).term;
}

/**
 * Writes the events of one slot for one mount (rid).  See the top comment.
 */
export class QuorumSlotWriter {
  private chain: Promise<unknown> = Promise.resolve();
  writes = 0;

  constructor(
    private readonly dev: BlockDevice,
    private readonly fsid: bigint,
    readonly slot: number,
    readonly rid: bigint,
    private readonly clock: Clock,
  ) {
    assert(rid !== 0n, 'rid 0 is never a mount');
  }

  /** Record event e with term; resolves once the block is durable. */
  writeEvent(e: QuorumEventName, term: bigint): Promise<QuorumBlock> {
    assert(term >= 0n);
    const p = this.chain.then(() => this.writeNow(e, term));
    this.chain = p.catch(() => {});
    return p;
  }

  private async writeNow(e: QuorumEventName, term: bigint): Promise<QuorumBlock> {
    const blk = await readQuorumBlock(this.dev, this.fsid, this.slot);
    if (e !== 'BEGIN') {
      const begin = ev(blk, 'BEGIN');
      if (begin.rid !== this.rid) {
        throw new FsError('EIO', `quorum slot ${this.slot}: BEGIN was written by rid ${hexRid(begin.rid)}, not ours ` +
          `(${hexRid(this.rid)}): another mount is using quorum slot ${this.slot}; not writing ${e}`);
      }
    }
    const writeNr = blk.write_nr + 1n;
    const ts = this.clock.wallTime();
    const events = blk.events.map((x) => ({ ...x }));
    events[QUORUM_EVENT[e]] = { write_nr: writeNr, rid: this.rid, term, ts: { sec: ts.sec, nsec: ts.nsec } };
    const image = encodeQuorumBlock({ fsid: this.fsid, seq: blk.hdr.seq, slot: this.slot, write_nr: writeNr, events });
    await this.dev.write(quorumBlockOffset(this.slot), image);
    await this.dev.flush();
    this.writes++;
    return decodeQuorumBlock(image);
  }
}

export function hexRid(rid: bigint): string {
  return rid.toString(16).padStart(16, '0');
}

/* ---- the rules over the blocks ------------------------------------------------ */

export interface ServerLocation {
  slot: number;
  term: bigint;
  addr: string;
}

/**
 * PROTOCOL.md 2.4 "server address".  Two running ELECT events of one term
 * happen only with two slots (both sides of a partition elect themselves);
 * then the later ELECT (by its timestamp) wins: the later leader read the
 * blocks after its ELECT and fenced the earlier one, unless both fenced
 * each other.  The reference leaves the tie to slot order, which can point
 * clients at the fenced leader for good.
 */
export function serverFromBlocks(blocks: readonly (QuorumBlock | undefined)[], cfg: QuorumConfig): ServerLocation | null {
  let best: ServerLocation | null = null;
  let bestTs = { sec: 0n, nsec: 0 };
  for (const slot of cfg.present) {
    const blk = blocks[slot];
    assert(blk !== undefined, `no block read for present slot ${slot}`);
    const elect = ev(blk, 'ELECT');
    if (elect.term <= eventTerm(blk, 'STOP')) continue;
    const later = elect.ts.sec > bestTs.sec || (elect.ts.sec === bestTs.sec && elect.ts.nsec > bestTs.nsec);
    if (best === null || elect.term > best.term || (elect.term === best.term && later)) {
      best = { slot, term: elect.term, addr: cfg.addrs[slot]! };
      bestTs = elect.ts;
    }
  }
  return best;
}

/** PROTOCOL.md 2.4 "starting term". */
export function startingTerm(blocks: readonly (QuorumBlock | undefined)[], cfg: QuorumConfig): bigint {
  let t = 0n;
  for (const slot of cfg.present) {
    const blk = blocks[slot];
    assert(blk !== undefined, `no block read for present slot ${slot}`);
    for (const e of blk.events) if (e.rid !== 0n && e.term > t) t = e.term;
  }
  return t;
}

export interface OldLeader {
  slot: number;
  rid: bigint;
  term: bigint;
  /** Which event recorded it: a running leader (ELECT) or a previous server that never stopped (FENCE). */
  event: 'ELECT' | 'FENCE';
}

export interface OldLeaders {
  /** Greatest FENCE term over all slots: leaders before it were fenced already. */
  fencedTerm: bigint;
  /** What to fence, one entry per rid (the greatest term kept). */
  fence: OldLeader[];
  /** A leader elected in a greater term than ours that has not stopped, if any. */
  newer: OldLeader | null;
}

/**
 * PROTOCOL.md 2.6 step 1, for a leader of ourTerm with rid ourRid.  Per
 * present slot, a leader record is its ELECT event when ELECT.term >
 * STOP.term (a leader that has not stopped) and its FENCE event when
 * STOP.term < FENCE.term < ELECT.term (the FENCE event was written by an
 * earlier server of that slot that never stopped, perhaps by another rid
 * whose ELECT was overwritten since).  A record is fenced when its term is
 * non-zero, >= fencedTerm (a FENCE of term F says leaders of terms < F were
 * fenced by the leader of term F), <= ourTerm, and its rid is not ours.
 *
 * Ours, beyond the reference: a record with term > ourTerm is a newer
 * leader; it is reported (newer) and the caller fails the start.  Because
 * each leader writes ELECT durably before it reads the blocks, of two
 * leaders racing one always sees the other: the older one fences nobody
 * and steps aside, the newer one fences the older.
 */
export function oldLeaders(
  blocks: readonly (QuorumBlock | undefined)[], cfg: QuorumConfig, ourRid: bigint, ourTerm: bigint,
): OldLeaders {
  let fencedTerm = 0n;
  for (const slot of cfg.present) fencedTerm = bigMax(fencedTerm, eventTerm(blocks[slot]!, 'FENCE'));
  const byRid = new Map<bigint, OldLeader>();
  let newer: OldLeader | null = null;
  for (const slot of cfg.present) {
    const blk = blocks[slot]!;
    const elect = ev(blk, 'ELECT');
    const fence = ev(blk, 'FENCE');
    const stop = eventTerm(blk, 'STOP');
    const records: OldLeader[] = [];
    if (elect.term > stop) records.push({ slot, rid: elect.rid, term: elect.term, event: 'ELECT' });
    if (stop < fence.term && fence.term < elect.term) records.push({ slot, rid: fence.rid, term: fence.term, event: 'FENCE' });
    for (const r of records) {
      if (r.term === 0n || r.rid === 0n || r.rid === ourRid) continue;
      if (r.term > ourTerm) {
        if (newer === null || r.term > newer.term) newer = r;
        continue;
      }
      if (r.term < fencedTerm) continue;
      const had = byRid.get(r.rid);
      if (had === undefined || r.term > had.term) byRid.set(r.rid, r);
    }
  }
  const fence = [...byRid.values()].sort((a, b) => a.slot - b.slot || (a.term < b.term ? -1 : 1));
  return { fencedTerm, fence, newer };
}

function bigMax(a: bigint, b: bigint): bigint {
  return a > b ? a : b;
}

/* ---- the client's lookup -------------------------------------------------------- */

/**
 * Where the server is (PROTOCOL.md 2.4, 3.9): "a.b.c.d:port" of the slot
 * advertising the newest running server, with its slot and term; null when
 * no server is advertised (retry later).  sb: the super already read at
 * mount, if the caller has it (its fsid and qconf never change).
 */
export async function findServerAddress(metaDev: BlockDevice, sb?: Super): Promise<ServerLocation | null> {
  const s = sb ?? await readMetaSuper(metaDev);
  const cfg = quorumConfig(s);
  const blocks = await readQuorumBlocks(metaDev, s.hdr.fsid, cfg);
  return serverFromBlocks(blocks, cfg);
}

export function describeBlock(blk: QuorumBlock): string {
  return QUORUM_EVENT_NAMES.map((n, i) => {
    const e = blk.events[i]!;
    return e.rid === 0n ? `${n}=-` : `${n}=${e.term}@${hexRid(e.rid).slice(0, 6)}`;
  }).join(' ');
}

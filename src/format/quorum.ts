/*
 * Quorum blocks (FORMAT.md 6): 15 SM blocks at SM 17..31, block 17+i for
 * slot i.  280 bytes used: header, write_nr, six events (BEGIN, TERM, ELECT,
 * FENCE, STOP, END).  Plus the 32-byte quorum UDP message (wire only) whose
 * crc is raw CRC-32C of bytes 0..27.
 */
import { layout, getU64, setU64, getU32, setU32 } from './layout.js';
import { BLOCK_HEADER, writeHeader, sealBlock, readHeader, type BlockHeader } from './block.js';
import { TIMESPEC, readTimespec, writeTimespec, type Timespec } from './common.js';
import { MAGIC, QUORUM_BLKNO, SM_BLOCK_SIZE } from './constants.js';
import { crc32cRaw } from './crc.js';

export const QUORUM_EVENT_NAMES = ['begin', 'term', 'elect', 'fence', 'stop', 'end'] as const;
export const QUORUM_EVENT = { BEGIN: 0, TERM: 1, ELECT: 2, FENCE: 3, STOP: 4, END: 5 } as const;
export const QUORUM_EVENTS = 6;

export const QUORUM_BLOCK_EVENT = layout('quorum_block_event', 40, [
  ['write_nr', 8],
  ['rid', 8],
  ['term', 8],
  ['ts', TIMESPEC],
]);

export const QUORUM_BLOCK = layout('quorum_block', 280, [
  ['hdr', BLOCK_HEADER],
  ['write_nr', 8],
  ['events', QUORUM_BLOCK_EVENT, QUORUM_EVENTS],
]);

export const QUORUM_MESSAGE = layout('quorum_message', 32, [
  ['fsid', 8],
  ['version', 8],
  ['term', 8],
  ['type', 1],
  ['from', 1],
  ['pad', 2],
  ['crc', 4],
]);
export const QUORUM_MSG = { REQUEST_VOTE: 0, VOTE: 1, HEARTBEAT: 2, RESIGNATION: 3 } as const;

export interface QuorumEvent { write_nr: bigint; rid: bigint; term: bigint; ts: Timespec }
export interface QuorumBlock { hdr: BlockHeader; write_nr: bigint; events: QuorumEvent[] }

export function quorumBlkno(slot: number): bigint {
  return QUORUM_BLKNO + BigInt(slot);
}

export function decodeQuorumBlock(b: Uint8Array): QuorumBlock {
  const events: QuorumEvent[] = [];
  for (let e = 0; e < QUORUM_EVENTS; e++) {
    const o = QUORUM_BLOCK.o(`events[${e}]`);
    events.push({ write_nr: getU64(b, o), rid: getU64(b, o + 8), term: getU64(b, o + 16), ts: readTimespec(b, o + 24) });
  }
  return { hdr: readHeader(b), write_nr: getU64(b, QUORUM_BLOCK.o('write_nr')), events };
}

export function encodeQuorumBlock(q: { fsid: bigint; seq: bigint; slot: number; write_nr: bigint; events: QuorumEvent[] }): Uint8Array {
  const b = new Uint8Array(SM_BLOCK_SIZE);
  writeHeader(b, { magic: MAGIC.quorum, fsid: q.fsid, seq: q.seq, blkno: quorumBlkno(q.slot) });
  setU64(b, QUORUM_BLOCK.o('write_nr'), q.write_nr);
  q.events.forEach((ev, e) => {
    const o = QUORUM_BLOCK.o(`events[${e}]`);
    setU64(b, o, ev.write_nr);
    setU64(b, o + 8, ev.rid);
    setU64(b, o + 16, ev.term);
    writeTimespec(b, o + 24, ev.ts);
  });
  sealBlock(b);
  return b;
}

export interface QuorumMessage { fsid: bigint; version: bigint; term: bigint; type: number; from: number }

export function encodeQuorumMessage(m: QuorumMessage): Uint8Array {
  const b = new Uint8Array(32);
  setU64(b, 0, m.fsid);
  setU64(b, 8, m.version);
  setU64(b, 16, m.term);
  b[24] = m.type;
  b[25] = m.from;
  setU32(b, 28, crc32cRaw(b.subarray(0, 28)));
  return b;
}

/** Decode a quorum message; null when its size or crc is wrong. */
export function decodeQuorumMessage(b: Uint8Array): QuorumMessage | null {
  if (b.length !== 32) return null;
  if (getU32(b, 28) !== crc32cRaw(b.subarray(0, 28))) return null;
  return { fsid: getU64(b, 0), version: getU64(b, 8), term: getU64(b, 16), type: b[24]!, from: b[25]! };
}

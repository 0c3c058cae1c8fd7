/*
 * Quorum messages on the wire (PROTOCOL.md 2.2, FORMAT.md 6.2): one
 * 32-byte scoutfs_quorum_message per UDP datagram, crc32c (seed ~0, no
 * final xor) over bytes 0..27.
 *
 *   0        8          16       24   25   26  28    32
 *   +--------+----------+--------+----+----+---+-----+
 *   | fsid   | version  | term   |type|from|pad| crc |
 *   +--------+----------+--------+----+----+---+-----+
 *
 * checkQuorumMessage() is the receiver's filter: it returns the decoded
 * message or the reason to drop it, in the reference's order: size, crc,
 * fsid, type >= 4, from >= 15 or naming a slot that is not present.  The
 * version is never checked (always 0 when sent).  A dropped datagram is a
 * counter and, at most, a rate-limited log line in the caller: garbage
 * from the network never stops a member.  We also drop a message claiming
 * to be from our own slot (the reference never sends to itself, so such a
 * datagram comes from a second mount configured with our slot); the caller
 * warns about it.
 *
 * Pure: no I/O, no state.
 */
import { decodeQuorumMessage, encodeQuorumMessage, QUORUM_MSG } from '../format/quorum.js';
import { QUORUM_MAX_SLOTS } from '../format/constants.js';

export type QuorumMsgType = (typeof QUORUM_MSG)[keyof typeof QUORUM_MSG];
export const QUORUM_MSG_NAMES = ['REQUEST_VOTE', 'VOTE', 'HEARTBEAT', 'RESIGNATION'] as const;
export const QUORUM_MESSAGE_SIZE = 32;

export interface QMsg {
  readonly type: QuorumMsgType;
  readonly term: bigint;
  readonly from: number;
}

export type DropReason = 'size' | 'crc' | 'fsid' | 'type' | 'from' | 'self';
export const DROP_REASONS: readonly DropReason[] = ['size', 'crc', 'fsid', 'type', 'from', 'self'];

export function encodeQMsg(fsid: bigint, m: QMsg): Uint8Array {
  return encodeQuorumMessage({ fsid, version: 0n, term: m.term, type: m.type, from: m.from });
}

export function checkQuorumMessage(
  bytes: Uint8Array, fsid: bigint, present: readonly boolean[], mySlot: number,
): { msg: QMsg } | { drop: DropReason } {
  if (bytes.length !== QUORUM_MESSAGE_SIZE) return { drop: 'size' };
  const m = decodeQuorumMessage(bytes);
  if (m === null) return { drop: 'crc' };
  if (m.fsid !== fsid) return { drop: 'fsid' };
  if (m.type >= 4) return { drop: 'type' };
  if (m.from >= QUORUM_MAX_SLOTS || !present[m.from]) return { drop: 'from' };
  if (m.from === mySlot) return { drop: 'self' };
  return { msg: { type: m.type as QuorumMsgType, term: m.term, from: m.from } };
}

export function describeQMsg(bytes: Uint8Array): string {
  const m = decodeQuorumMessage(bytes);
  if (m === null) return `${bytes.length} bytes (not a quorum message)`;
  return `${QUORUM_MSG_NAMES[m.type] ?? `type ${m.type}`} term ${m.term} from ${m.from}`;
}

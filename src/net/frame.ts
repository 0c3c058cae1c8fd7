/*
 * Framing: bytes on a stream <-> validated messages (PROTOCOL.md 3.2).
 *
 * A frame is exactly a 40-byte header followed by data_len payload bytes;
 * there is no other framing and no checksum.  FrameReader turns an arbitrary
 * chunking of a byte stream (TCP delivers whatever it likes) back into
 * frames, and validates every header as soon as its 40 bytes are present,
 * before waiting for the payload: a data_len above 1100 is rejected at once,
 * so a peer can never make us buffer more than one maximum frame.
 *
 * What a receiver rejects without any connection context (all fatal: the
 * connection is shut down; the peer reconnects and resends):
 *   - seq == 0 or id == 0;
 *   - cmd >= UNKNOWN; flags other than RESPONSE; error >= the sentinel of
 *     our wire error table;
 *   - data_len > 1100;
 *   - a request carrying an error;
 *   - an error response carrying a payload.  PROTOCOL.md says error
 *     responses carry no payload but does not list this as fatal; we do,
 *     because a sender of this code base never produces one.
 * The pad bytes are not checked (FORMAT.md 0: readers must not require zero
 * pads where the format does not say so).  The checks that need connection
 * state (a second greeting, a greeting in the wrong direction, a request
 * with no handler, a message before the greeting) are in connection.ts.
 *
 * Every rejection is a NetCorruptionError: a CorruptionError whose source
 * is the peer, with a typed `reason` so tests can tell the cases apart.  It
 * is never an assertion: bytes from a peer are input, not our logic.  After
 * a rejection a FrameReader is poisoned and refuses further input (the
 * stream position is lost; only a new socket can resume).
 *
 * Owner: the main thread, one FrameReader per socket.  Frames decoded are
 * fresh copies; no view into a transport buffer escapes.
 */
import assert from 'node:assert/strict';
import { CorruptionError } from '../format/errors.js';
import {
  NET_HEADER_SIZE, NET_MAX_DATA_LEN, NET_CMD, NET_FLAGS_KNOWN, NET_FLAG_RESPONSE, NET_ERR_UNKNOWN,
  readNetHeader, writeNetHeader, netCmdName, type NetHeader,
} from '../format/net.js';

/** Why a peer's message was rejected; every case of PROTOCOL.md 3.2. */
export type NetFatalReason =
  | 'zero-seq'
  | 'zero-id'
  | 'bad-cmd'
  | 'bad-flags'
  | 'bad-error'
  | 'data-too-long'
  | 'request-with-error'
  | 'error-with-payload'
  | 'second-greeting'
  | 'greeting-wrong-direction'
  | 'no-handler'
  | 'before-greeting'
  | 'bad-greeting'
  | 'truncated'
  /** A payload of the right size whose contents are invalid (a handler's check). */
  | 'bad-payload';

export class NetCorruptionError extends CorruptionError {
  readonly reason: NetFatalReason;
  constructor(peer: string, reason: NetFatalReason, detail: string) {
    super(peer, null, reason === 'data-too-long' || reason === 'truncated' ? 'size' : 'structure', `${reason}: ${detail}`);
    this.name = 'NetCorruptionError';
    this.reason = reason;
  }
}

/** A decoded message: the header fields that matter plus the payload. */
export interface NetFrame {
  readonly seq: bigint;
  readonly recvSeq: bigint;
  readonly id: bigint;
  readonly cmd: number;
  readonly flags: number;
  readonly error: number;
  readonly data: Uint8Array;
}

export function isResponse(f: { flags: number }): boolean {
  return (f.flags & NET_FLAG_RESPONSE) !== 0;
}

export function describeFrame(f: Pick<NetFrame, 'seq' | 'id' | 'cmd' | 'flags' | 'error'> & { data: { length: number } }): string {
  return `${netCmdName(f.cmd)} ${isResponse(f) ? 'resp' : 'req'} seq ${f.seq} id ${f.id}` +
    (f.error !== 0 ? ` err ${f.error}` : '') + ` len ${f.data.length}`;
}

/** Throws NetCorruptionError if a header is invalid on its own. */
export function validateHeader(h: NetHeader, peer: string): void {
  const fail = (reason: NetFatalReason, detail: string): never => {
    throw new NetCorruptionError(peer, reason, `${detail} (seq ${h.seq} id ${h.id} cmd ${h.cmd})`);
  };
  if (h.data_len > NET_MAX_DATA_LEN) fail('data-too-long', `data_len ${h.data_len} > ${NET_MAX_DATA_LEN}`);
  if (h.seq === 0n) fail('zero-seq', 'seq is 0');
  if (h.id === 0n) fail('zero-id', 'id is 0');
  if (h.cmd >= NET_CMD.UNKNOWN) fail('bad-cmd', `cmd ${h.cmd} >= ${NET_CMD.UNKNOWN}`);
  if ((h.flags & ~NET_FLAGS_KNOWN) !== 0) fail('bad-flags', `flags 0x${h.flags.toString(16)}`);
  if (h.error >= NET_ERR_UNKNOWN) fail('bad-error', `error code ${h.error} >= ${NET_ERR_UNKNOWN}`);
  const resp = (h.flags & NET_FLAG_RESPONSE) !== 0;
  if (!resp && h.error !== 0) fail('request-with-error', `request carries error ${h.error}`);
  if (resp && h.error !== 0 && h.data_len !== 0) fail('error-with-payload', `error response with ${h.data_len} bytes`);
}

/** Encode one frame; the caller guarantees a valid message (asserted). */
export function encodeFrame(f: NetFrame, clockSyncId: bigint): Uint8Array {
  assert(f.seq > 0n && f.id > 0n, 'frames need nonzero seq and id');
  assert(f.cmd >= 0 && f.cmd < NET_CMD.UNKNOWN, `bad cmd ${f.cmd}`);
  assert(f.data.length <= NET_MAX_DATA_LEN, `payload of ${f.data.length} bytes`);
  assert(f.error >= 0 && f.error < NET_ERR_UNKNOWN, `bad error ${f.error}`);
  assert(isResponse(f) || f.error === 0, 'a request cannot carry an error');
  const b = new Uint8Array(NET_HEADER_SIZE + f.data.length);
  writeNetHeader(b, 0, {
    clock_sync_id: clockSyncId, seq: f.seq, recv_seq: f.recvSeq, id: f.id,
    data_len: f.data.length, cmd: f.cmd, flags: f.flags, error: f.error,
  });
  b.set(f.data, NET_HEADER_SIZE);
  return b;
}

/** Decode exactly one frame occupying all of `b`. */
export function decodeFrame(b: Uint8Array, peer: string): NetFrame {
  if (b.length < NET_HEADER_SIZE) throw new NetCorruptionError(peer, 'truncated', `${b.length} bytes, header needs ${NET_HEADER_SIZE}`);
  const h = readNetHeader(b, 0);
  validateHeader(h, peer);
  if (b.length !== NET_HEADER_SIZE + h.data_len) {
    throw new NetCorruptionError(peer, 'truncated', `frame of ${b.length} bytes, header says ${NET_HEADER_SIZE + h.data_len}`);
  }
  return frameOf(h, b.slice(NET_HEADER_SIZE));
}

function frameOf(h: NetHeader, data: Uint8Array): NetFrame {
  return { seq: h.seq, recvSeq: h.recv_seq, id: h.id, cmd: h.cmd, flags: h.flags, error: h.error, data };
}

/**
 * Reassembles frames from a byte stream.  push() returns the frames
 * completed by a chunk, in order, or throws NetCorruptionError (after
 * which the reader is poisoned).
 */
export class FrameReader {
  private readonly peer: string;
  private buf: Uint8Array = new Uint8Array(0);
  private header: NetHeader | null = null;
  private poisoned = false;

  constructor(peer: string) {
    this.peer = peer;
  }

  /** Bytes held while waiting for the rest of a frame; at most one frame. */
  get pendingBytes(): number {
    return this.buf.length;
  }

  push(chunk: Uint8Array): NetFrame[] {
    assert(!this.poisoned, 'FrameReader used after a fatal frame');
    let b: Uint8Array;
    if (this.buf.length === 0) {
      b = chunk;
    } else {
      b = new Uint8Array(this.buf.length + chunk.length);
      b.set(this.buf, 0);
      b.set(chunk, this.buf.length);
    }
    const out: NetFrame[] = [];
    let at = 0;
    try {
      for (;;) {
        if (this.header === null) {
          if (b.length - at < NET_HEADER_SIZE) break;
          const h = readNetHeader(b, at);
          validateHeader(h, this.peer);
          this.header = h;
        }
        const need = NET_HEADER_SIZE + this.header.data_len;
        if (b.length - at < need) break;
        out.push(frameOf(this.header, b.slice(at + NET_HEADER_SIZE, at + need)));
        this.header = null;
        at += need;
      }
    } catch (e) {
      this.poisoned = true;
      this.buf = new Uint8Array(0);
      throw e;
    }
    // Copy the partial tail: the transport may reuse its chunk buffers.
    this.buf = at === b.length ? new Uint8Array(0) : b.slice(at);
    assert(this.buf.length < NET_HEADER_SIZE + NET_MAX_DATA_LEN);
    return out;
  }
}

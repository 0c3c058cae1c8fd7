/*
 * Goal: framing round trips for any valid message and any chunking of the
 * byte stream, and every fatal case of PROTOCOL.md 3.2 that needs no
 * connection state is rejected as a NetCorruptionError (a CorruptionError
 * naming the peer) with the right reason, never an assertion or a crash.
 * A data_len above 1100 is refused from the header alone, before any
 * payload is buffered.  (Fatal cases that need connection state are in
 * connection.test.ts.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CorruptionError } from '../../../src/format/errors.js';
import { NET_CMD, NET_ERR_UNKNOWN, NET_MAX_DATA_LEN } from '../../../src/format/net.js';
import {
  FrameReader, NetCorruptionError, decodeFrame, encodeFrame, type NetFatalReason, type NetFrame,
} from '../../../src/net/frame.js';
import { rawFrame } from './util.js';

const frameArb: fc.Arbitrary<NetFrame> = fc
  .record({
    seq: fc.bigInt({ min: 1n, max: (1n << 64n) - 1n }),
    recvSeq: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
    id: fc.bigInt({ min: 1n, max: (1n << 64n) - 1n }),
    cmd: fc.integer({ min: 0, max: NET_CMD.UNKNOWN - 1 }),
    response: fc.boolean(),
    error: fc.integer({ min: 1, max: NET_ERR_UNKNOWN - 1 }),
    withError: fc.boolean(),
    data: fc.uint8Array({ maxLength: NET_MAX_DATA_LEN }),
  })
  .map((r) => {
    const isErr = r.response && r.withError;
    return {
      seq: r.seq, recvSeq: r.recvSeq, id: r.id, cmd: r.cmd, flags: r.response ? 1 : 0, error: isErr ? r.error : 0,
      data: isErr ? new Uint8Array(0) : r.data,
    };
  });

test('encode/decode round trip of any valid frame', () => {
  fc.assert(fc.property(frameArb, fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), (f, sync) => {
    const b = encodeFrame(f, sync);
    assert.equal(b.length, 40 + f.data.length, 'a frame is exactly 40 + data_len bytes');
    assert.deepEqual(decodeFrame(b, 'peer'), f);
  }), { numRuns: 300 });
});

test('FrameReader reassembles frames from any chunking', () => {
  fc.assert(fc.property(fc.array(frameArb, { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1 }), (frames, cuts) => {
    const stream = Buffer.concat(frames.map((f) => encodeFrame(f, 1n)));
    const r = new FrameReader('peer');
    const out: NetFrame[] = [];
    let at = 0;
    let i = 0;
    while (at < stream.length) {
      const n = Math.min(cuts[i++ % cuts.length]!, stream.length - at);
      out.push(...r.push(new Uint8Array(stream.subarray(at, at + n))));
      at += n;
    }
    assert.deepEqual(out, frames);
    assert.equal(r.pendingBytes, 0);
  }), { numRuns: 200 });
});

test('byte-at-a-time delivery and a frame split inside its header', () => {
  const f: NetFrame = { seq: 5n, recvSeq: 4n, id: 3n, cmd: NET_CMD.LOCK, flags: 0, error: 0, data: new Uint8Array(48).fill(7) };
  const b = encodeFrame(f, 9n);
  const r = new FrameReader('peer');
  for (let i = 0; i < b.length - 1; i++) assert.deepEqual(r.push(b.subarray(i, i + 1)), []);
  assert.deepEqual(r.push(b.subarray(b.length - 1)), [f]);
});

const fatal: [NetFatalReason, Uint8Array][] = [
  ['zero-seq', rawFrame({ seq: 0n })],
  ['zero-id', rawFrame({ id: 0n })],
  ['bad-cmd', rawFrame({ cmd: NET_CMD.UNKNOWN })],
  ['bad-cmd', rawFrame({ cmd: 255 })],
  ['bad-flags', rawFrame({ flags: 2 })],
  ['bad-flags', rawFrame({ flags: 0x81 })],
  ['bad-error', rawFrame({ flags: 1, error: NET_ERR_UNKNOWN })],
  ['bad-error', rawFrame({ flags: 1, error: 255 })],
  ['data-too-long', rawFrame({ data_len: NET_MAX_DATA_LEN + 1 })],
  ['data-too-long', rawFrame({ data_len: 0xffff })],
  ['request-with-error', rawFrame({ flags: 0, error: 1 })],
  ['error-with-payload', rawFrame({ flags: 1, error: 3 }, new Uint8Array(8))],
];

test('every context-free fatal case of PROTOCOL.md 3.2 is a NetCorruptionError', () => {
  for (const [reason, bytes] of fatal) {
    for (const decode of [
      () => decodeFrame(bytes, '10.0.0.9:5000'),
      () => new FrameReader('10.0.0.9:5000').push(bytes),
    ]) {
      assert.throws(decode, (e: unknown) => {
        assert(e instanceof NetCorruptionError, `${reason}: ${String(e)}`);
        assert(e instanceof CorruptionError);
        assert.equal(e.reason, reason);
        assert.equal(e.source, '10.0.0.9:5000', 'the source is the peer');
        assert.equal(e.blkno, null);
        return true;
      });
    }
  }
});

test('data_len > 1100 is refused from the 40 header bytes alone', () => {
  const r = new FrameReader('peer');
  const header = rawFrame({ data_len: 5000 }).subarray(0, 40);
  assert.deepEqual(r.push(header.subarray(0, 39)), [], 'not yet a header');
  assert.throws(() => r.push(header.subarray(39)), (e: unknown) => e instanceof NetCorruptionError && e.reason === 'data-too-long');
});

test('a frame whose length disagrees with data_len is truncated', () => {
  const b = rawFrame({}, new Uint8Array(10));
  assert.throws(() => decodeFrame(b.subarray(0, 45), 'p'), (e: unknown) => e instanceof NetCorruptionError && e.reason === 'truncated');
  assert.throws(() => decodeFrame(b.subarray(0, 20), 'p'), (e: unknown) => e instanceof NetCorruptionError && e.reason === 'truncated');
  const longer = new Uint8Array(b.length + 1);
  longer.set(b);
  assert.throws(() => decodeFrame(longer, 'p'), (e: unknown) => e instanceof NetCorruptionError && e.reason === 'truncated');
});

test('a fatal frame after good ones: the good ones are not returned, the reader is poisoned', () => {
  const good = encodeFrame({ seq: 1n, recvSeq: 0n, id: 1n, cmd: 1, flags: 0, error: 0, data: new Uint8Array(8) }, 0n);
  const r = new FrameReader('peer');
  assert.throws(() => r.push(Buffer.concat([good, rawFrame({ seq: 0n })])), NetCorruptionError);
  assert.throws(() => r.push(good), /after a fatal frame/);
});

test('pad bytes are not checked (FORMAT.md 0)', () => {
  const b = rawFrame({});
  b[38] = 0xff;
  assert.equal(decodeFrame(b, 'p').seq, 1n);
});

test('garbage of any shape never escapes as anything but NetCorruptionError', () => {
  fc.assert(fc.property(fc.array(fc.uint8Array({ minLength: 0, maxLength: 200 }), { maxLength: 8 }), (chunks) => {
    const r = new FrameReader('peer');
    try {
      for (const c of chunks) r.push(c);
    } catch (e) {
      assert(e instanceof NetCorruptionError, String(e));
    }
  }), { numRuns: 500 });
});

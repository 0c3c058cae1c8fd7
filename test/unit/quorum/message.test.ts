/*
 * Goal: quorum messages are the 32 bytes FORMAT.md 6.2 describes (fields at
 * their offsets, little-endian, crc32c seed ~0 without final xor over bytes
 * 0..27), and the receiver's filter drops exactly what PROTOCOL.md 2.2 says
 * (wrong size, bad crc, wrong fsid, type >= 4, from >= 15 or a slot that is
 * not present) plus our own slot, each with its reason, never throwing.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32cRaw } from '../../../src/format/crc.js';
import { QUORUM_MSG } from '../../../src/format/quorum.js';
import { checkQuorumMessage, describeQMsg, encodeQMsg } from '../../../src/quorum/message.js';

const FSID = 0x1122334455667788n;
const present = Array.from({ length: 15 }, (_, i) => i < 3);
const dv = (b: Uint8Array): DataView => new DataView(b.buffer, b.byteOffset, b.byteLength);

test('encoding puts every field at its FORMAT.md offset, crc over bytes 0..27', () => {
  const b = encodeQMsg(FSID, { type: QUORUM_MSG.HEARTBEAT, term: 0x0102030405060708n, from: 2 });
  assert.equal(b.length, 32);
  assert.equal(dv(b).getBigUint64(0, true), FSID);
  assert.equal(dv(b).getBigUint64(8, true), 0n, 'version is always 0');
  assert.equal(dv(b).getBigUint64(16, true), 0x0102030405060708n);
  assert.equal(b[24], 2);
  assert.equal(b[25], 2);
  assert.deepEqual([...b.subarray(26, 28)], [0, 0]);
  assert.equal(dv(b).getUint32(28, true), crc32cRaw(b.subarray(0, 28)));
  // The raw crc is the bitwise NOT of the textbook CRC-32C (FORMAT.md 3.2).
  assert.equal(crc32cRaw(new TextEncoder().encode('123456789')), 0x1cf96d7c);
  assert.equal(describeQMsg(b), 'HEARTBEAT term 72623859790382856 from 2');
});

test('a valid message decodes; each kind of garbage is dropped with its reason', () => {
  const good = encodeQMsg(FSID, { type: QUORUM_MSG.REQUEST_VOTE, term: 7n, from: 1 });
  assert.deepEqual(checkQuorumMessage(good, FSID, present, 0), { msg: { type: 0, term: 7n, from: 1 } });

  assert.deepEqual(checkQuorumMessage(good.subarray(0, 31), FSID, present, 0), { drop: 'size' });
  assert.deepEqual(checkQuorumMessage(new Uint8Array(33), FSID, present, 0), { drop: 'size' });
  assert.deepEqual(checkQuorumMessage(new Uint8Array(0), FSID, present, 0), { drop: 'size' });

  for (const at of [0, 8, 16, 24, 25, 27, 28, 31]) {
    const bad = good.slice();
    bad[at]! ^= 0x40;
    assert.deepEqual(checkQuorumMessage(bad, FSID, present, 0), { drop: 'crc' }, `flipped byte ${at}`);
  }
  assert.deepEqual(checkQuorumMessage(encodeQMsg(FSID + 1n, { type: 0, term: 7n, from: 1 }), FSID, present, 0), { drop: 'fsid' });
  for (const type of [4, 5, 255]) {
    const b = encodeQMsg(FSID, { type: type as 0, term: 7n, from: 1 });
    assert.deepEqual(checkQuorumMessage(b, FSID, present, 0), { drop: 'type' });
  }
  for (const from of [3, 14, 15, 200]) {
    const b = encodeQMsg(FSID, { type: 1, term: 7n, from });
    assert.deepEqual(checkQuorumMessage(b, FSID, present, 0), { drop: 'from' }, `from ${from}`);
  }
  assert.deepEqual(checkQuorumMessage(encodeQMsg(FSID, { type: 2, term: 7n, from: 0 }), FSID, present, 0), { drop: 'self' });
});

test('random bytes never throw and never pass as a message', () => {
  let seed = 12345;
  const next = (): number => { seed = (seed * 1103515245 + 12345) >>> 0; return seed >>> 24; };
  for (let i = 0; i < 2000; i++) {
    const b = new Uint8Array(i % 40).map(() => next());
    const r = checkQuorumMessage(b, FSID, present, 0);
    assert.ok('drop' in r);
  }
});

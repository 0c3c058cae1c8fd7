/*
 * Goal: the UDP datagram transport keeps the contract of datagram.ts on
 * real loopback sockets: whole datagrams with the sender's address, a bind
 * conflict is an error naming the address, send never throws (bad address,
 * after close), nothing is delivered after close.  Addresses are random
 * 127.x.y.z with port 0 so parallel runs cannot collide.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { UdpTransport } from '../../../src/net/udp.js';
import { FsError } from '../../../src/format/errors.js';

const host = (): string => `127.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`;

test('datagrams arrive whole with the sender address; conflicts and bad sends are errors, not throws', async () => {
  const t = new UdpTransport();
  const a = await t.bind(`${host()}:0`);
  const b = await t.bind(`${host()}:0`);
  try {
    assert.match(a.addr, /^127\.\d+\.\d+\.\d+:\d+$/);
    const got: { bytes: Uint8Array; from: string }[] = [];
    const arrived = new Promise<void>((resolve) => b.onMessage((bytes, from) => { got.push({ bytes: bytes.slice(), from }); if (got.length === 2) resolve(); }));
    a.send(b.addr, new Uint8Array(32).fill(7));
    a.send(b.addr, new Uint8Array([1, 2, 3]));
    await arrived;
    const sizes = got.map((g) => g.bytes.length).sort((x, y) => x - y);
    assert.deepEqual(sizes, [3, 32]);
    for (const g of got) assert.equal(g.from, a.addr);
    await assert.rejects(t.bind(b.addr), (e: unknown) => e instanceof FsError && e.message.includes(b.addr) && /EADDRINUSE/.test(e.message));
    a.send('not an address', new Uint8Array(1));
    a.close();
    a.send(b.addr, new Uint8Array(1));
    assert.ok(a.closed);
  } finally {
    a.close();
    b.close();
  }
});

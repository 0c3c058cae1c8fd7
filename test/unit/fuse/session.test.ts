/*
 * Goal: nothing a message from /dev/fuse does can stop the FUSE session
 * (src/fuse/session.ts + ops.ts), driven directly, not through the kernel:
 * a seeded fuzzer sends INIT and then thousands of random and malformed
 * messages (valid headers with random opcodes, node ids and argument
 * bytes; truncated messages; lengths that disagree with the header;
 * extensions longer than the message; names without NUL; FORGET and
 * BATCH_FORGET with random counts; INTERRUPTs; pure garbage) against a
 * small in-memory Fs (memfs.ts), and checks that
 *   - every message whose unique is readable and that wants a reply gets
 *     exactly one, with a well-formed out header (len = bytes written,
 *     error 0 or a negative errno);
 *   - FORGET and BATCH_FORGET never get one;
 *   - afterwards the session still answers a GETATTR of the root with
 *     success, and a LOOKUP of a file created before the storm.
 * (DESTROY is left out of the random opcodes: it ends a session.)
 * A failure prints its seed; SCOUTFS_FUZZ_SEED=S replays it, and
 * SCOUTFS_FUZZ_MESSAGES=N sends more.
 *
 * Also checked on their own: INIT negotiation (minor version, flags only
 * from what the kernel offered, EPROTO for an old kernel) and the lookup
 * counting of LOOKUP replies and FORGET.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SeededRandom } from '../../../src/runtime/random.js';
import { Ops } from '../../../src/fuse/ops.js';
import { Session, type Channel } from '../../../src/fuse/session.js';
import { ENTRY_OUT, IN_HEADER, INIT, OP, OUT_HEADER } from '../../../src/fuse/proto.js';
import { MemFs } from './memfs.js';

interface Reply {
  unique: bigint;
  error: number;
  len: number;
  bytes: Buffer;
}

class Recorder implements Channel {
  replies: Reply[] = [];
  reply(parts: readonly Uint8Array[]): boolean {
    const b = Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));
    assert.ok(b.length >= OUT_HEADER.size, 'a reply has its header');
    this.replies.push({ len: b.readUInt32LE(0), error: b.readInt32LE(4), unique: b.readBigUInt64LE(8), bytes: b });
    return true;
  }
  notify(): Promise<void> {
    return Promise.resolve();
  }
}

function request(opcode: number, unique: bigint, nodeid: bigint, args: Uint8Array, o: { extlen?: number; len?: number } = {}): Buffer {
  const b = Buffer.alloc(IN_HEADER.size + args.length);
  b.writeUInt32LE(o.len ?? b.length, 0);
  b.writeUInt32LE(opcode, 4);
  b.writeBigUInt64LE(unique, 8);
  b.writeBigUInt64LE(nodeid, 16);
  b.writeUInt16LE(o.extlen ?? 0, 36);
  b.set(args, IN_HEADER.size);
  return b;
}

function initArgs(minor: number, flags: number): Buffer {
  const a = Buffer.alloc(64);
  a.writeUInt32LE(7, 0);
  a.writeUInt32LE(minor, 4);
  a.writeUInt32LE(1 << 20, 8);
  a.writeUInt32LE(flags >>> 0, 12);
  return a;
}

function setup(): { fs: MemFs; rec: Recorder; session: Session; logs: string[] } {
  const fs = new MemFs();
  const logs: string[] = [];
  const log = (l: string): void => void logs.push(l);
  const ops = new Ops(fs, { log, timeoutS: 3600, now: () => ({ sec: 1n, nsec: 0 }) });
  const rec = new Recorder();
  const session = new Session(ops, rec, { log, writebackCache: true, maxWriteBytes: 1 << 20 });
  return { fs, rec, session, logs };
}

async function settle(session: Session): Promise<void> {
  for (let i = 0; i < 10_000 && session.counters.inFlight > 0; i++) await new Promise((r) => setImmediate(r));
  assert.equal(session.counters.inFlight, 0, 'every request finished');
}

test('INIT: our minor, only offered flags, EPROTO for a kernel older than 7.23', () => {
  const { rec, session } = setup();
  session.handle(request(OP.INIT, 1n, 0n, initArgs(45, INIT.ASYNC_READ | INIT.WRITEBACK_CACHE | INIT.DO_READDIRPLUS)));
  assert.equal(rec.replies.length, 1);
  const r = rec.replies[0]!;
  assert.equal(r.error, 0);
  assert.equal(r.len, 16 + 64);
  assert.equal(r.bytes.readUInt32LE(16 + 4), 38, 'we speak 7.38');
  assert.equal(r.bytes.readUInt32LE(16 + 12), (INIT.ASYNC_READ | INIT.WRITEBACK_CACHE | INIT.DO_READDIRPLUS) >>> 0, 'nothing the kernel did not offer');
  const old = setup();
  old.session.handle(request(OP.INIT, 1n, 0n, initArgs(22, 0xffffffff)));
  assert.equal(old.rec.replies[0]!.error, -71, 'EPROTO');
  assert.equal(old.session.initialized, null);
});

test('lookup counts: LOOKUP adds one per reply, FORGET takes them back', async () => {
  const { fs, session } = setup();
  session.handle(request(OP.INIT, 1n, 0n, initArgs(45, 0)));
  const a = await fs.create(1n, Buffer.from('f'), 0o644, { uid: 0, gid: 0 });
  for (let i = 0; i < 3; i++) session.handle(request(OP.LOOKUP, BigInt(10 + i), 1n, Buffer.from('f\0')));
  await settle(session);
  assert.equal(session.lookupCount(a.ino), 3n);
  const f = Buffer.alloc(8);
  f.writeBigUInt64LE(2n);
  session.handle(request(OP.FORGET, 20n, a.ino, f));
  assert.equal(session.lookupCount(a.ino), 1n);
  session.handle(request(OP.FORGET, 21n, a.ino, f));
  assert.equal(session.lookupCount(a.ino), 0n);
  assert.equal(session.lookupCount(1n), 1n, 'the root stays');
});

test('fuzz: random and malformed requests are each answered once and the session stays up', async () => {
  const seed = BigInt(process.env.SCOUTFS_FUZZ_SEED ?? Date.now());
  const count = Number(process.env.SCOUTFS_FUZZ_MESSAGES ?? 5000);
  const rnd = new SeededRandom(seed);
  const { fs, rec, session } = setup();
  try {
    session.handle(request(OP.INIT, 1n, 0n, initArgs(45, 0xffffffff)));
    const known = await fs.create(1n, Buffer.from('known'), 0o644, { uid: 0, gid: 0 });
    await fs.mkdir(1n, Buffer.from('dir'), 0o755, { uid: 0, gid: 0 });
    // DESTROY ends a session by design (the kernel sends nothing after it).
    const opcodes = [...Object.values(OP).filter((o) => o !== OP.DESTROY), 0, 99, 4096, 0xffffffff];
    const expect = new Map<bigint, number>(); // unique -> replies wanted (0 or 1)
    let unique = 100n;
    for (let i = 0; i < count; i++) {
      const kind = rnd.int(10);
      const u = unique;
      unique += 2n; // even: never the INT_REQ_BIT
      const opcode = opcodes[rnd.int(opcodes.length)]!;
      const nodeid = [1n, known.ino, 0n, rnd.u64()][rnd.int(4)]!;
      const args = Buffer.from(rnd.bytes(rnd.int(3) === 0 ? rnd.int(300) : rnd.int(40)));
      // Names: often a NUL-terminated one, sometimes none.
      if (rnd.int(2) === 0 && args.length > 2) args[rnd.int(args.length)] = 0;
      const noReply = opcode === OP.FORGET || opcode === OP.BATCH_FORGET || opcode === OP.INTERRUPT;
      let msg: Buffer;
      switch (kind) {
        case 0: // truncated anywhere, possibly inside the header
          msg = request(opcode, u, nodeid, args).subarray(0, rnd.int(IN_HEADER.size + args.length));
          if (msg.length >= 16) expect.set(u, 1);
          break;
        case 1: // header length disagrees with the message
          msg = request(opcode, u, nodeid, args, { len: rnd.int(1 << 20) + IN_HEADER.size + args.length + 1 });
          expect.set(u, 1);
          break;
        case 2: // extensions longer than the message
          msg = request(opcode, u, nodeid, args, { extlen: 1000 + rnd.int(1000) });
          expect.set(u, 1);
          break;
        case 3: // garbage of random length
          msg = Buffer.from(rnd.bytes(rnd.int(100)));
          if (msg.length >= 16) {
            const gu = msg.readBigUInt64LE(8);
            if (gu === 0n) break; // unique 0 is never answered
            // Well-formed by chance?  Then it is a request like any other.
            if (msg.length >= IN_HEADER.size && msg.readUInt32LE(0) === msg.length) continue;
            expect.set(gu, (expect.get(gu) ?? 0) + 1);
          }
          break;
        default:
          msg = request(opcode, u, nodeid, args);
          if (opcode === OP.INIT) expect.set(u, 1); // a second INIT is EIO
          else if (!noReply) expect.set(u, 1);
          else if (opcode === OP.INTERRUPT) expect.set(u, -1); // EAGAIN when unknown, else none
      }
      session.handle(msg);
      if (rnd.int(50) === 0) await settle(session);
    }
    await settle(session);
    const got = new Map<bigint, number>();
    for (const r of rec.replies.slice(1)) {
      assert.equal(r.len, r.bytes.length, `reply to ${r.unique}: header len`);
      assert.ok(r.error <= 0 && r.error > -4096, `reply to ${r.unique}: error ${r.error}`);
      got.set(r.unique, (got.get(r.unique) ?? 0) + 1);
    }
    for (const [u, n] of expect) {
      if (n === -1) assert.ok((got.get(u) ?? 0) <= 1, `interrupt ${u} answered at most once`);
      else assert.equal(got.get(u) ?? 0, n, `unique ${u} answered ${got.get(u) ?? 0} times`);
    }
    for (const u of got.keys()) assert.ok(expect.has(u), `a reply to ${u}, which wanted none`);
    assert.ok(session.counters.malformed > 0, 'malformed messages were sent');

    // Still up: a GETATTR of the root and a LOOKUP of the file succeed.
    const before = rec.replies.length;
    const g = Buffer.alloc(16);
    session.handle(request(OP.GETATTR, 2n, 1n, g));
    session.handle(request(OP.LOOKUP, 4n, 1n, Buffer.from('known\0')));
    await settle(session);
    const [ga, lk] = rec.replies.slice(before);
    assert.equal(ga!.error, 0);
    assert.equal(lk!.error, 0);
    assert.equal(lk!.len, 16 + ENTRY_OUT.size);
    assert.equal(lk!.bytes.readBigUInt64LE(16), known.ino);
  } catch (e) {
    throw new Error(`fuzz failed with SCOUTFS_FUZZ_SEED=${seed}: ${(e as Error).message}`, { cause: e });
  }
});

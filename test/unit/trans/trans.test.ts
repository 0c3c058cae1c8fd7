/*
 * Goal: the client transaction (src/trans/trans.ts) follows PROTOCOL.md
 * 4.2-4.5 and 4.13 (7), (11), against the fake log trees server
 * (fakeserver.ts) on a real in-memory volume, with a FakeClock (no test
 * sleeps for real):
 *   - before the first GET: holds fail EINVAL, sync succeeds with no
 *     COMMIT sent, also while the first GET is still in flight (4.14 (4));
 *   - the strict sequence GET -> modify -> COMMIT -> GET, traced call by
 *     call, and the committed items readable by another mount; the idle
 *     10 s timer commits on its own;
 *   - COMMIT ok then GET fails (4.14 (3)): writers stay blocked, the same
 *     COMMIT (byte for byte, same get_trans_seq) is re-sent every 2 s and
 *     acknowledged as already committed, recovery when GET succeeds, one
 *     warning and one "succeeded" line;
 *   - a lost COMMIT response and a lost GET response both recover;
 *   - a persistent failure is visible in status() and the counters, never
 *     silent, and a forced unmount ends it with EIO;
 *   - commit_before_hold and the dirty limit start commits on their own.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FsError, LifecycleError } from '../../../src/format/errors.js';
import { key, type Key } from '../../../src/format/key.js';
import { ZONE } from '../../../src/format/items.js';
import { encodeLogTrees, type LogTrees } from '../../../src/format/logtrees.js';
import type { TransServer } from '../../../src/trans/trans.js';
import { makeEnv, lockFor, settle, type Mount } from './env.js';

const fk = (ino: bigint, n: number): Key => key(ZONE.FS, ino, 6, BigInt(n)); // symlink items: any value
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const isFs = (code: string) => (e: unknown): boolean => e instanceof FsError && e.code === code;

async function write(m: Mount, ino: bigint, n: number, v: string): Promise<void> {
  const h = await m.trans.hold();
  try {
    await m.items.create(fk(ino, n), text(v), lockFor(fk(ino, n)));
  } finally {
    m.trans.release(h);
  }
}

/** Records every COMMIT payload on its way to the server. */
function recording(inner: TransServer): { server: TransServer; commits: Uint8Array[] } {
  const commits: Uint8Array[] = [];
  return {
    commits,
    server: {
      getLogTrees: () => inner.getLogTrees(),
      commitLogTrees: (lt: LogTrees) => {
        commits.push(encodeLogTrees(lt));
        return inner.commitLogTrees(lt);
      },
    },
  };
}

test('before the first GET: holds fail EINVAL, sync succeeds with no traffic, even with the GET in flight', async () => {
  const env = await makeEnv(21n);
  try {
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const inner = env.server.client(1n);
    const m = env.mount(1n, {
      server: {
        getLogTrees: async () => { await gate; return inner.getLogTrees(); },
        commitLogTrees: (lt) => inner.commitLogTrees(lt),
      },
    });
    await assert.rejects(m.trans.hold(), isFs('EINVAL'));
    await m.trans.sync();
    assert.equal(m.trans.counters.commitsWithoutTrans, 1);
    // The mount is blocked in its first GET: sync still completes, still nothing sent.
    const opening = m.trans.openFirst();
    await settle();
    await m.trans.sync();
    await m.trans.sync(false);
    await settle();
    assert.equal(m.trans.counters.commitsWithoutTrans, 3);
    assert.equal(env.server.counters.gets, 0);
    assert.equal(env.server.counters.commits, 0);
    assert.equal(m.trans.counters.commitRpcs, 0);
    assert.equal(m.trans.transSeq, 0n);
    release();
    await opening;
    assert.ok(m.trans.transSeq > 0n);
    assert.deepEqual(env.server.trace, [`GET -> ${m.trans.transSeq}`]);
    assert.equal(env.server.counters.commits, 0);
    assert.ok(m.logs.some((l) => l.level === 'warn' && /before the first transaction/.test(l.msg)));
  } finally {
    env.close();
  }
});

test('the strict sequence GET -> modify -> COMMIT -> GET, items committed and visible, the 10 s timer', async () => {
  const env = await makeEnv(22n);
  try {
    const m = env.mount(1n);
    await m.trans.openFirst();
    const g1 = m.trans.transSeq;
    const h = await m.trans.hold();
    assert.equal(await m.trans.hold({ outer: h }), h, 'holds nest');
    m.trans.release(h);
    assert.ok(m.trans.isHeld());
    await m.items.create(fk(1024n, 1), text('one'), lockFor(fk(1024n, 1)));
    await m.items.create(fk(1024n, 2), text('two'), lockFor(fk(1024n, 2), 'WRITE', g1 + 100n));
    m.trans.release(h);
    assert.equal(env.server.counters.commits, 0, 'nothing is sent before a trigger');
    await m.trans.sync();
    const g2 = m.trans.transSeq;
    assert.ok(g2 > g1);
    assert.deepEqual(env.server.trace, [`GET -> ${g1}`, `COMMIT ${g1}`, `GET -> ${g2}`]);
    assert.deepEqual(m.trace, ['GET', `open ${g1}`, `COMMIT ${g1}`, 'GET', `open ${g2}`]);
    const lt = env.server.lts.get(1n)!;
    assert.equal(lt.commit_trans_seq, g1);
    assert.equal(lt.get_trans_seq, g2);
    assert.equal(lt.max_item_seq, g1 + 100n, 'item seq = max(trans seq, lock write seq)');
    assert.equal(m.items.dirtyCount, 0);
    // Another mount reads the committed items.
    const other = env.mount(2n);
    assert.deepEqual(await other.reader.lookup(fk(1024n, 1)), { key: fk(1024n, 1), val: text('one'), seq: g1 });
    assert.equal((await other.reader.lookup(fk(1024n, 2)))?.seq, g1 + 100n);
    // Idle: the timer commits 10 s after the last commit and opens the next transaction.
    env.clock.advance(9_999);
    await settle();
    assert.equal(env.server.counters.commits, 1);
    env.clock.advance(1);
    await settle();
    const g3 = m.trans.transSeq;
    assert.ok(g3 > g2);
    assert.deepEqual(env.server.trace.slice(3), [`COMMIT ${g2}`, `GET -> ${g3}`]);
    assert.equal(m.trans.counters.kicks.timer, 1);
    assert.equal(m.trans.status().failing, false);
    await env.assertClean('after the timer commit');
  } finally {
    env.close();
  }
});

test('COMMIT ok then GET fails: writers blocked, the same COMMIT resent every 2 s, recovery', async () => {
  const env = await makeEnv(23n);
  try {
    const rec = recording(env.server.client(1n));
    const m = env.mount(1n, { server: rec.server });
    await m.trans.openFirst();
    const g1 = m.trans.transSeq;
    await write(m, 1024n, 1, 'one');
    env.server.faults.get.push('fail', 'fail');
    let synced = false;
    const s = m.trans.sync().then(() => { synced = true; });
    await settle();
    assert.deepEqual(env.server.trace.slice(1), [`COMMIT ${g1}`, 'GET: ENOSPC (injected)']);
    let st = m.trans.status();
    assert.equal(st.failing, true);
    assert.equal(st.writer, true);
    assert.equal(st.lastFailedStep, 'get');
    assert.equal(st.transSeq, g1);
    // A writer waits: nothing may touch the committed transaction.
    let held: Awaited<ReturnType<typeof m.trans.hold>> | null = null;
    const hp = m.trans.hold().then((h) => { held = h; });
    await settle();
    assert.equal(held, null);
    env.clock.advance(1_999);
    await settle();
    assert.equal(env.server.counters.commits, 1, 'no retry before 2 s');
    env.clock.advance(1);
    await settle();
    assert.deepEqual(env.server.trace.slice(3), [`COMMIT ${g1} (already committed)`, 'GET: ENOSPC (injected)']);
    assert.equal(held, null);
    assert.equal(synced, false);
    env.clock.advance(2_000);
    await settle();
    const g2 = m.trans.transSeq;
    assert.ok(g2 > g1);
    assert.deepEqual(env.server.trace.slice(5), [`COMMIT ${g1} (already committed)`, `GET -> ${g2}`]);
    await s;
    await hp;
    assert.ok(synced && held !== null);
    assert.equal((held as { seq: bigint }).seq, g2, 'the blocked writer joined the new transaction');
    m.trans.release(held!);
    // Three identical COMMITs, all for g1.
    assert.equal(rec.commits.length, 3);
    for (const c of rec.commits) assert.deepEqual(c, rec.commits[0]);
    assert.equal(env.server.counters.commitsAlreadyCommitted, 2);
    const c = m.trans.counters;
    assert.deepEqual([c.commitFailures, c.getFailures, c.commitResends, c.warnings, c.recoveries], [2, 2, 2, 1, 1]);
    assert.equal(m.logs.filter((l) => l.level === 'warn').length, 1);
    assert.match(m.logs.find((l) => l.level === 'warn')!.msg, /critical transaction commit failure/);
    assert.ok(m.logs.some((l) => l.level === 'info' && /retried transaction commit succeeded/.test(l.msg)));
    st = m.trans.status();
    assert.equal(st.failing, false);
    assert.equal(st.lastResult, 'ok');
    // The data is there.
    assert.equal(new TextDecoder().decode((await env.mount(2n).reader.lookup(fk(1024n, 1)))!.val), 'one');
    await env.assertClean('after recovery');
  } finally {
    env.close();
  }
});

test('a lost COMMIT response and a lost GET response both recover without a second transaction', async () => {
  const env = await makeEnv(24n);
  try {
    const m = env.mount(1n);
    await m.trans.openFirst();
    const g1 = m.trans.transSeq;
    await write(m, 1024n, 1, 'one');
    env.server.faults.commit.push('lost');
    const s1 = m.trans.sync();
    await settle();
    env.clock.advance(2_000);
    await settle();
    await s1;
    const g2 = m.trans.transSeq;
    assert.deepEqual(env.server.trace.slice(1), [
      `COMMIT ${g1}`, 'COMMIT: EIO (response lost)', `COMMIT ${g1} (already committed)`, `GET -> ${g2}`,
    ]);
    // The GET opened g3 but its response was lost: the re-sent COMMIT for g2 is refused (the
    // server's open transaction is g3 now), which does not matter: it was acknowledged before.
    await write(m, 1024n, 2, 'two');
    env.server.faults.get.push('lost');
    const s2 = m.trans.sync();
    await settle();
    env.clock.advance(2_000);
    await settle();
    await s2;
    const g3 = m.trans.transSeq;
    assert.ok(g3 > g2);
    assert.deepEqual(env.server.trace.slice(5), [
      `COMMIT ${g2}`, `GET -> ${g3}`, 'GET: EIO (response lost)', `COMMIT ${g2}: EIO open transaction is ${g3}`, `GET -> ${g3} (already open)`,
    ]);
    assert.equal(m.trans.counters.commitResendErrors, 1);
    assert.equal(env.server.counters.getsAlreadyOpen, 1);
    const r = env.mount(2n).reader;
    assert.ok(await r.lookup(fk(1024n, 1)));
    assert.ok(await r.lookup(fk(1024n, 2)));
    await env.assertClean('after lost responses');
  } finally {
    env.close();
  }
});

test('a persistent failure is visible in status and counters; forced unmount ends it with EIO', async () => {
  const env = await makeEnv(25n);
  try {
    const m = env.mount(1n);
    await m.trans.openFirst();
    await write(m, 1024n, 1, 'one');
    env.server.commitAlwaysFails = true;
    const out: { sync: unknown; hold: unknown } = { sync: 'pending', hold: 'pending' };
    const s = m.trans.sync().then(() => { out.sync = 'ok'; }, (e) => { out.sync = e; });
    await settle();
    for (let i = 0; i < 5; i++) {
      env.clock.advance(2_000);
      await settle();
    }
    const st = m.trans.status();
    assert.equal(st.failing, true);
    assert.equal(st.consecutiveFailures, 6);
    assert.equal(st.lastFailedStep, 'commit');
    assert.match(st.lastError!, /EIO/);
    assert.equal(st.failingSinceMs, 0);
    assert.equal(st.writer, true);
    assert.equal(m.trans.counters.commitFailures, 6);
    assert.equal(m.trans.counters.warnings, 1, 'warned once, not once per retry');
    assert.equal(out.sync, 'pending', 'sync waits while the commit keeps failing');
    const hp = m.trans.hold();
    hp.then(() => { out.hold = 'held'; }, (e) => { out.hold = e; });
    await settle();
    assert.equal(out.hold, 'pending');
    m.trans.forceUnmount();
    await settle();
    await s;
    const so = out.sync as unknown;
    assert.ok(so instanceof FsError && so.code === 'EIO', `sync ended with ${String(so)}`);
    assert.ok((out.hold as unknown) instanceof LifecycleError);
    assert.equal(m.trans.counters.commitsEio, 1);
    assert.equal(m.images.dirtyCount, 0, 'the dirty blocks were dropped');
    assert.equal(m.trans.status().forced, true);
  } finally {
    env.close();
  }
});

test('commit_before_hold and the dirty limit start commits on their own', async () => {
  const env = await makeEnv(26n);
  try {
    // commit_before_hold: the server hands out 256-entry avail lists (SERVER_OPTS), so a
    // transaction with a lot of dirty items must be committed before more holds.
    const m = env.mount(1n, { dirtyLimitBytes: 1 << 30 });
    await m.trans.openFirst();
    const big = new Uint8Array(800).fill(7);
    for (let i = 0; i < 1200; i++) {
      const k = fk(1024n * BigInt(1 + (i % 40)), i);
      const h = await m.trans.hold({ allocating: true });
      await m.items.create(k, big, lockFor(k));
      m.trans.release(h);
    }
    assert.ok(m.trans.counters.commitBeforeHold >= 1, 'commit_before_hold fired');
    assert.ok(env.server.counters.commits >= 1);
    assert.equal(m.trans.counters.kicks.limit, 0);
    await m.trans.sync();
    const r = env.mount(2n).reader;
    for (const i of [0, 599, 1199]) assert.ok(await r.lookup(fk(1024n * BigInt(1 + (i % 40)), i)), `item ${i}`);
    await env.assertClean('after big transactions');

    // The dirty limit: release kicks a commit once the dirty items pass it.
    const m3 = env.mount(3n, { dirtyLimitBytes: 16 * 1024 });
    await m3.trans.openFirst();
    for (let i = 0; i < 40; i++) await write(m3, 1024n * 50n, i, 'x'.repeat(600));
    await settle();
    assert.ok(m3.trans.counters.kicks.limit >= 1);
    assert.ok(m3.trans.counters.commitsOk >= 1);
  } finally {
    env.close();
  }
});

test('random writes on three mounts with random server faults and clock jumps: every commit lands, fsck clean', async () => {
  const seeds = process.env.TRANS_SEEDS ? Array.from({ length: Number(process.env.TRANS_SEEDS) }, (_, i) => BigInt(100 + i)) : [31n, 32n, 33n];
  for (const seed of seeds) {
    const env = await makeEnv(seed);
    try {
      const rnd = env.rnd.fork('workload');
      const mounts = [env.mount(1n), env.mount(2n), env.mount(3n)];
      for (const m of mounts) await m.trans.openFirst();
      const model = new Map<string, string>();
      const keyOf = (m: Mount, g: number, n: number): Key => fk(1024n * (100n * m.rid + BigInt(g)), n);
      const busy = new Map<Mount, Promise<void>>();
      let ops = 0;
      const actor = async (m: Mount): Promise<void> => {
        const h = await m.trans.hold();
        try {
          for (let i = 1 + rnd.int(6); i > 0; i--) {
            const k = keyOf(m, rnd.int(3), rnd.int(40));
            const id = `${k.first}.${k.second}`;
            const cur = model.get(id);
            const v = `v${ops++}`;
            if (cur === undefined) {
              await m.items.create(k, text(v), lockFor(k));
              model.set(id, v);
            } else if (rnd.int(3) === 0) {
              await m.items.delete(k, lockFor(k));
              model.delete(id);
            } else {
              await m.items.update(k, text(v), lockFor(k));
              model.set(id, v);
            }
          }
        } finally {
          m.trans.release(h);
        }
      };
      for (let step = 0; step < 300; step++) {
        const m = mounts[rnd.int(mounts.length)]!;
        const r = rnd.int(10);
        if (r < 5 && !busy.has(m)) {
          busy.set(m, actor(m).finally(() => busy.delete(m)));
        } else if (r === 5) {
          void m.trans.sync(false);
        } else if (r === 6) {
          const f = (['fail', 'lost'] as const)[rnd.int(2)]!;
          env.server.faults[rnd.int(2) === 0 ? 'get' : 'commit'].push(f);
        } else {
          env.clock.advance(rnd.int(3_000));
        }
        await settle(2);
      }
      // Quiesce: no more faults, let retries and holders finish, then sync everyone.
      env.server.faults.get.length = 0;
      env.server.faults.commit.length = 0;
      for (let i = 0; i < 20 && busy.size > 0; i++) {
        env.clock.advance(2_000);
        await settle();
      }
      assert.equal(busy.size, 0, `seed ${seed}: holders finished: ${JSON.stringify(mounts.map((m) => ({ ...m.trans.status(), trace: m.trace.slice(-6) })), (_k, v) => typeof v === "bigint" ? String(v) : v)} ${env.server.trace.slice(-10).join(" | ")}`);
      for (const m of mounts) {
        const s = m.trans.sync();
        for (let i = 0; i < 5; i++) {
          env.clock.advance(2_000);
          await settle();
        }
        await s;
        assert.equal(m.trans.status().failing, false);
        assert.equal(m.items.dirtyCount, 0);
      }
      const r = env.mount(9n).reader;
      for (const m of mounts) {
        for (let g = 0; g < 3; g++) {
          for (let n = 0; n < 40; n++) {
            const k = keyOf(m, g, n);
            const got = await r.lookup(k);
            assert.equal(got === null ? undefined : new TextDecoder().decode(got.val), model.get(`${k.first}.${k.second}`), `seed ${seed} key ${k.first}.${k.second}`);
          }
        }
      }
      const failures = mounts.reduce((n, m) => n + m.trans.counters.commitFailures, 0);
      assert.ok(failures > 0, `seed ${seed}: faults were hit`);
      await env.assertClean(`seed ${seed}`);
      if (process.env.TRANS_VERBOSE) console.log(`seed ${seed}: ${failures} failed attempts, ${env.server.restarts} server restarts, ${env.server.counters.commitsAlreadyCommitted} resent commits acked, ${env.server.counters.getsAlreadyOpen} resent gets, ${mounts.map((m) => m.trans.counters.commitResendErrors).join("/")} resend errors`);
    } finally {
      env.close();
    }
  }
});

test('shutdown during a running commit returns only after the worker stopped: no server call after it', async () => {
  const env = await makeEnv(91n);
  try {
    let gate: (() => void) | null = null;
    let calls = 0;
    let shutDone = false;
    let lateCalls = 0;
    const server: TransServer = {
      getLogTrees: async () => {
        calls++;
        if (shutDone) lateCalls++;
        return env.server.getLogTrees(1n);
      },
      commitLogTrees: async (lt) => {
        calls++;
        if (shutDone) lateCalls++;
        if (gate === null) await new Promise<void>((r) => { gate = r; });
        return env.server.commitLogTrees(1n, lt);
      },
    };
    const m = env.mount(1n, { server });
    await m.trans.openFirst();
    const h = await m.trans.hold();
    await m.items.create(fk(1024n, 7), text('x'), lockFor(fk(1024n, 7)));
    m.trans.release(h);
    const syncing = m.trans.sync();
    await settle();
    assert.notEqual(gate, null, 'the commit waits at the gate');
    // The shutdown kick folds into the running commit's loop: one more commit follows it.
    const shutting = m.trans.shutdown().then(() => { shutDone = true; });
    await settle();
    (gate as unknown as () => void)();
    await syncing;
    await shutting;
    await settle(10);
    assert.equal(lateCalls, 0, 'no GET or COMMIT after shutdown returned');
    assert.ok(calls >= 4, `${calls} server calls: the second commit ran before shutdown returned`);
  } finally {
    env.close();
  }
});

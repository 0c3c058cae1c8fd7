/*
 * perf/locks.ts: the cost of cluster lock hand-overs, and the lock traffic
 * per operation (issue 11: "a write on one node followed by a stat on
 * another, alternating on one file ... the lock traffic per operation
 * reported").
 *
 * Two mounts and a server in this process, on the in-process transport and
 * real time: the real NetServer + LockServer and NetClient + LockClient of
 * src/.  Mount A takes WRITE on one inode group and marks it dirty, mount
 * B then takes READ on it (a "stat"), alternating, `rounds` times: every
 * operation is a hand-over (an invalidation to the other mount, its answer,
 * a grant).  What stands in for the rest of a mount, stated so the number
 * is read right: the transaction's commit at each WRITE -> READ hand-over
 * is a counter bump (no device I/O), the item cache drop is a counter, and
 * the write seqs come from an in-memory counter, not a server commit hold.
 * So this measures the lock protocol and the message layer alone; the
 * cluster runs of the harness measure the whole path.
 *
 * Reported: operations per second, and per operation the LOCK requests,
 * grants, invalidations and messages (frames both ways) it took, from the
 * lock client, lock server and net counters.  It checks that it measured
 * hand-overs: every round trip moved the server's invalidation counter.
 */
import { NetClient } from '../src/net/client.js';
import { NetServer } from '../src/net/server.js';
import { InProcNetwork } from '../src/net/inproc.js';
import { newNetStats } from '../src/net/connection.js';
import { RealClock } from '../src/runtime/clock.js';
import { SeededRandom } from '../src/runtime/random.js';
import { inodeLockRange } from '../src/format/lock.js';
import { LockClient } from '../src/lock/client.js';
import { LockServer, type LockSeqs } from '../src/server/lock.js';

export interface LocksBenchRow {
  name: string;
  ops: number;
  ms: number;
  opsPerSec: number;
  requestsPerOp: number;
  grantsPerOp: number;
  invalidationsPerOp: number;
  framesPerOp: number;
}

const FSID = 0x5eedn;

export async function runLocksBench(opts: { rounds?: number } = {}): Promise<LocksBenchRow[]> {
  const rounds = opts.rounds ?? 2000;
  const net = new InProcNetwork();
  const clock = new RealClock();
  const serverStats = newNetStats();
  let seq = 1000n;
  const seqs: LockSeqs = { nextWriteSeq: async () => ++seq, raise: async (s) => { if (s > seq) seq = s; } };
  let locks: LockServer | null = null;
  const server = new NetServer({
    transport: net, clock, random: new SeededRandom(1), fsid: FSID, term: 1n, listenAddr: 'perf-locks:0', log: () => {},
    stats: serverStats, hooks: { clientUp: (rid) => locks?.clientUp(rid) },
  });
  locks = new LockServer({ net: server, seqs, log: () => {} }).register();
  const addr = await server.listen();
  const mounts = [0x51n, 0x52n].map((rid) => {
    const c = new NetClient({ transport: net, clock, random: new SeededRandom(rid), fsid: FSID, rid, findServer: () => addr, log: () => {} });
    const st = { seq: 1n, commits: 0 };
    const lc = new LockClient({
      net: c,
      trans: {
        get transSeq() {
          return st.seq;
        },
        async syncForLock(d) {
          if (d === st.seq) {
            st.commits++;
            st.seq++;
          }
        },
      },
      items: { invalidate: () => 1, hasDirty: () => false },
      log: () => {},
    }).register();
    c.start();
    return { c, lc, st };
  });
  const range = inodeLockRange(4096n);
  const [a, b] = mounts as [typeof mounts[0], typeof mounts[0]];
  // Warm up: both connected, the lock known to both.
  a.lc.unlock(await a.lc.lock('WRITE', range));
  b.lc.unlock(await b.lc.lock('READ', range));
  const before = {
    req: a.lc.counters.requests + b.lc.counters.requests,
    grants: locks.counters.grants,
    inv: locks.counters.invalidationsSent,
    frames: serverStats.framesSent + serverStats.framesRecv,
  };
  const t0 = performance.now();
  for (let i = 0; i < rounds; i++) {
    const w = await a.lc.lock('WRITE', range); // the write
    a.lc.unlock(w);
    const r = await b.lc.lock('READ', range); // the stat on the other node
    b.lc.unlock(r);
  }
  const ms = performance.now() - t0;
  const ops = rounds * 2;
  const inv = locks.counters.invalidationsSent - before.inv;
  if (inv < rounds) throw new Error(`only ${inv} invalidations for ${rounds} round trips: not measuring hand-overs`);
  const row: LocksBenchRow = {
    name: 'lock hand-over (WRITE on one mount, READ on another, alternating)',
    ops,
    ms: Math.round(ms * 10) / 10,
    opsPerSec: Math.round((ops * 1000) / ms),
    requestsPerOp: (a.lc.counters.requests + b.lc.counters.requests - before.req) / ops,
    grantsPerOp: (locks.counters.grants - before.grants) / ops,
    invalidationsPerOp: inv / ops,
    framesPerOp: (serverStats.framesSent + serverStats.framesRecv - before.frames) / ops,
  };
  for (const m of mounts) m.c.shutdown();
  server.shutdown();
  return [row];
}

// `node dist/perf/locks.js [ROUNDS]` prints the table.
if (import.meta.url === `file://${process.argv[1]}`) {
  const rows = await runLocksBench({ rounds: Number(process.argv[2] ?? 2000) });
  for (const r of rows) {
    console.log(`${r.name}: ${r.opsPerSec} ops/s (${r.ops} ops in ${r.ms} ms); per op: ${r.requestsPerOp.toFixed(2)} requests, ` +
      `${r.grantsPerOp.toFixed(2)} grants, ${r.invalidationsPerOp.toFixed(2)} invalidations, ${r.framesPerOp.toFixed(2)} frames`);
  }
}

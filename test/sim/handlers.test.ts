/*
 * Goal: the wire adapters of the transaction requests do only what they
 * claim (src/server/handlers.ts, src/client/transserver.ts):
 *   - the handlers check payload sizes, speak for the connection's rid
 *     only, pass errors to the wire table, count maybe-resent requests,
 *     and the one-shot GET trigger fails GETs before anything changes;
 *   - over the simulated network GET_LAST_SEQ answers the stable seq, an
 *     errno of the extended wire table arrives as itself (EEXIST) and one
 *     outside it as EIO, never lost;
 *   - NetTransServer refuses answers of the wrong size or of another rid
 *     with a CorruptionError, and GET_LAST_SEQ decodes the stable seq.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NetTransServer } from '../../src/client/transserver.js';
import { CorruptionError, FsError } from '../../src/format/errors.js';
import { LOG_TREES, decodeLogTrees, encodeLogTrees, type LogTrees } from '../../src/format/logtrees.js';
import { NET_CMD, decodeNetU64, encodeNetU64, type NetCmd } from '../../src/format/net.js';
import type { IdempotentHandler, IncomingRequest } from '../../src/net/connection.js';
import { QUIET_LINK } from '../../src/net/sim.js';
import { registerTransHandlers, type LogTreesService } from '../../src/server/handlers.js';
import { Cluster } from './cluster.js';

const isFs = (code: string) => (e: unknown): boolean => e instanceof FsError && e.code === code;

function someLt(rid: bigint, g: bigint): LogTrees {
  const lt = decodeLogTrees(new Uint8Array(LOG_TREES.size));
  return { ...lt, rid, nr: 1n, get_trans_seq: g };
}

function req(cmd: NetCmd, rid: bigint, data: Uint8Array, delivery: 'first' | 'maybe-resent' = 'first'): IncomingRequest {
  return { cmd, id: 1n, seq: 1n, data, rid, peer: 'test', delivery, defer: () => assert.fail('the transaction handlers never defer') };
}

test('handlers: payload checks, the connection\'s rid, errors, the one-shot GET trigger', async () => {
  const handlers = new Map<number, IdempotentHandler>();
  const calls: string[] = [];
  const service: LogTreesService = {
    async getLogTrees(rid) {
      calls.push(`get ${rid}`);
      return someLt(rid, 7n);
    },
    async commitLogTrees(rid, lt) {
      calls.push(`commit ${rid} ${lt.rid} ${lt.get_trans_seq}`);
      if (lt.rid !== rid) throw new FsError('EIO', 'wrong rid');
    },
    async getLastSeq() {
      calls.push('lastseq');
      return 41n;
    },
  };
  const h = registerTransHandlers({ register: (cmd, fn) => handlers.set(cmd, fn) }, service);
  const call = async (r: IncomingRequest): Promise<Uint8Array> => {
    const out = await handlers.get(r.cmd)!(r);
    assert.ok(out instanceof Uint8Array, 'answered at once');
    return out;
  };

  await assert.rejects(call(req(NET_CMD.GET_LOG_TREES, 5n, new Uint8Array(1))), isFs('EINVAL'));
  await assert.rejects(call(req(NET_CMD.COMMIT_LOG_TREES, 5n, new Uint8Array(471))), isFs('EINVAL'));
  await assert.rejects(call(req(NET_CMD.GET_LAST_SEQ, 5n, new Uint8Array(8))), isFs('EINVAL'));
  assert.equal(calls.length, 0, 'nothing reached the service');

  const got = decodeLogTrees(await call(req(NET_CMD.GET_LOG_TREES, 5n, new Uint8Array(0), 'maybe-resent')));
  assert.equal(got.rid, 5n);
  assert.equal(got.get_trans_seq, 7n);
  assert.equal((await call(req(NET_CMD.COMMIT_LOG_TREES, 5n, encodeLogTrees(someLt(5n, 7n))))).length, 0);
  // The rid is the connection's, never the payload's: the service sees both and refuses.
  await assert.rejects(call(req(NET_CMD.COMMIT_LOG_TREES, 5n, encodeLogTrees(someLt(6n, 7n)))), isFs('EIO'));
  assert.equal(decodeNetU64(await call(req(NET_CMD.GET_LAST_SEQ, 5n, new Uint8Array(0)))), 41n);
  assert.deepEqual(calls, ['get 5', 'commit 5 5 7', 'commit 5 6 7', 'lastseq']);

  h.failNextGets(2, 'ENOSPC');
  await assert.rejects(call(req(NET_CMD.GET_LOG_TREES, 5n, new Uint8Array(0))), isFs('ENOSPC'));
  await assert.rejects(call(req(NET_CMD.GET_LOG_TREES, 5n, new Uint8Array(0))), isFs('ENOSPC'));
  await call(req(NET_CMD.GET_LOG_TREES, 5n, new Uint8Array(0)));
  assert.equal(calls.filter((c) => c.startsWith('get')).length, 2, 'failed GETs never reached the service');
  assert.deepEqual(h.counters, {
    gets: 5, commits: 3, lastSeqs: 2, maybeResent: 1, errors: 6, getsFailedByTrigger: 2, getsFailedBySim: 0,
  });
  // A request before a greeting cannot happen: a bug, not an error answer.
  await assert.rejects(call(req(NET_CMD.GET_LAST_SEQ, 0n, new Uint8Array(0))), assert.AssertionError);
});

test('over the network: GET_LAST_SEQ, and errors keep their errno through the wire table', async () => {
  const cl = new Cluster({ seed: 77n, link: { ...QUIET_LINK } });
  try {
    const s = await cl.startServer();
    const c = cl.mountClient('c1');
    let out: unknown = null;
    const done = (p: Promise<unknown>): Promise<boolean> => {
      out = null;
      p.then((v) => { out = { ok: v }; }, (e: unknown) => { out = { err: e }; });
      return cl.runUntil(() => out !== null, 5000);
    };
    // (A wrong-sized request cannot even be submitted: the client's
    // connection asserts sizes from NET_CMD_INFO, and the server's answers
    // one EINVAL before any handler; test/unit/net covers both.)
    assert.ok(await done(c.net.request(NET_CMD.GET_LAST_SEQ, new Uint8Array(0))));
    assert.equal(decodeNetU64((out as { ok: Uint8Array }).ok), s.seq.current - 1n, 'nothing open: last issued seq - 1');
    // EEXIST is in the extended wire table; ENOTEMPTY too; both cross as themselves.
    s.handlers.failNextGets(1, 'EEXIST');
    assert.ok(await done(c.ts.getLogTrees()));
    assert.ok(isFs('EEXIST')((out as { err: unknown }).err));
    // An errno outside the table (EDQUOT) arrives as EIO: the answer is never lost.
    s.handlers.failNextGets(1, 'EDQUOT');
    assert.ok(await done(c.ts.getLogTrees()));
    assert.ok(isFs('EIO')((out as { err: unknown }).err));
    assert.equal(c.ts.counters.failures, 2);
    assert.ok(await done(c.ts.getLogTrees()));
    assert.equal(((out as { ok: LogTrees }).ok).rid, c.rid);
  } finally {
    cl.destroy();
  }
});

test('NetTransServer refuses answers of the wrong size or of another rid', async () => {
  let answer: Uint8Array = new Uint8Array(0);
  const net = { rid: 9n, request: async (_cmd: NetCmd, _d: Uint8Array) => answer };
  const ts = new NetTransServer(net);
  answer = new Uint8Array(LOG_TREES.size - 1);
  await assert.rejects(ts.getLogTrees(), (e: unknown) => e instanceof CorruptionError && e.check === 'size');
  answer = encodeLogTrees(someLt(8n, 3n));
  await assert.rejects(ts.getLogTrees(), (e: unknown) => e instanceof CorruptionError && e.check === 'structure');
  answer = encodeLogTrees(someLt(9n, 3n));
  assert.equal((await ts.getLogTrees()).get_trans_seq, 3n);
  answer = new Uint8Array(1);
  await assert.rejects(ts.commitLogTrees(someLt(9n, 3n)), CorruptionError);
  answer = encodeNetU64(12n);
  assert.equal(await ts.getLastSeq(), 12n);
  answer = new Uint8Array(4);
  await assert.rejects(ts.getLastSeq(), CorruptionError);
  assert.deepEqual(ts.counters, { gets: 3, commits: 1, lastSeqs: 2, failures: 4 });
});

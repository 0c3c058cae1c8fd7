/*
 * The client side of the transaction requests (PROTOCOL.md 3.3, 4.5, 4.9):
 * the TransServer that src/trans/trans.ts is written against, over the
 * mount's one NetClient.
 *
 *   Trans.commit worker --getLogTrees()----> GET_LOG_TREES ()         --> lt
 *                       --commitLogTrees(lt)-> COMMIT_LOG_TREES (lt)   --> ()
 *   walk-inodes, statfs --getLastSeq()-----> GET_LAST_SEQ ()          --> u64
 *
 * What it owns.  Nothing but the encoding: each call is one request on the
 * NetClient, which keeps it queued across broken sockets and server
 * failovers and resends it until some server answers (3.5, 3.8).  So a
 * call resolves with the answer of whichever server processed it last, and
 * a call that fails with an error response may still have taken effect on
 * an earlier server whose answer was lost: a COMMIT is "maybe delivered".
 * The commit worker copes by resending the same COMMIT, which the server
 * acknowledges without side effects when it has applied it already (4.7).
 *
 * Failure modes.  An error response rejects with FsError (the wire table's
 * errno; the worker retries).  A response of the wrong size rejects with a
 * CorruptionError (the connection checks sizes from NET_CMD_INFO; we check
 * again before decoding, so a layout mismatch can never decode garbage).
 * A GET answer that is the wrong rid's lt is a CorruptionError too: the
 * server speaks for the connection's rid only.  Shutdown of the NetClient
 * rejects pending calls with a LifecycleError.
 *
 * Nothing here retries, sleeps or times out: retry policy is the commit
 * worker's (2 s, 4.5), and requests block until answered (3.5).
 */
import { CorruptionError } from '../format/errors.js';
import { LOG_TREES, decodeLogTrees, encodeLogTrees, type LogTrees } from '../format/logtrees.js';
import { NET_CMD, decodeNetU64, type NetCmd } from '../format/net.js';
import type { TransServer } from '../trans/trans.js';

/** What we need of the mount's NetClient. */
export interface RequestClient {
  readonly rid: bigint;
  request(cmd: NetCmd, data: Uint8Array): Promise<Uint8Array>;
}

export interface NetTransServerCounters {
  gets: number;
  commits: number;
  lastSeqs: number;
  /** Calls that rejected (error responses, bad sizes, shutdown). */
  failures: number;
}

const EMPTY = new Uint8Array(0);

export class NetTransServer implements TransServer {
  readonly counters: NetTransServerCounters = { gets: 0, commits: 0, lastSeqs: 0, failures: 0 };

  constructor(private readonly net: RequestClient) {}

  /** GET_LOG_TREES: open (or, resent, get back) this mount's transaction. */
  async getLogTrees(): Promise<LogTrees> {
    this.counters.gets++;
    const b = await this.call(NET_CMD.GET_LOG_TREES, EMPTY);
    if (b.length !== LOG_TREES.size) throw this.bad(`GET_LOG_TREES answer of ${b.length} bytes, want ${LOG_TREES.size}`);
    const lt = decodeLogTrees(b);
    if (lt.rid !== this.net.rid) throw this.bad(`GET_LOG_TREES answered with the lt of rid ${lt.rid.toString(16)}`, 'structure');
    return lt;
  }

  /** COMMIT_LOG_TREES: close the transaction lt.get_trans_seq.  Maybe delivered when it rejects. */
  async commitLogTrees(lt: LogTrees): Promise<void> {
    this.counters.commits++;
    const b = await this.call(NET_CMD.COMMIT_LOG_TREES, encodeLogTrees(lt));
    if (b.length !== 0) throw this.bad(`COMMIT_LOG_TREES answer of ${b.length} bytes`);
  }

  /** GET_LAST_SEQ: the stable seq (4.9). */
  async getLastSeq(): Promise<bigint> {
    this.counters.lastSeqs++;
    const b = await this.call(NET_CMD.GET_LAST_SEQ, EMPTY);
    if (b.length !== 8) throw this.bad(`GET_LAST_SEQ answer of ${b.length} bytes`);
    return decodeNetU64(b);
  }

  private async call(cmd: NetCmd, data: Uint8Array): Promise<Uint8Array> {
    try {
      return await this.net.request(cmd, data);
    } catch (e) {
      this.counters.failures++;
      throw e;
    }
  }

  private bad(detail: string, check: 'size' | 'structure' = 'size'): CorruptionError {
    this.counters.failures++;
    return new CorruptionError('server', null, check, detail);
  }
}

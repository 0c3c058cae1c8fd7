/*
 * The server's transaction request handlers on the wire (PROTOCOL.md 3.3,
 * 3.8, 4.6, 4.7, 4.9): GET_LOG_TREES, COMMIT_LOG_TREES and GET_LAST_SEQ,
 * registered on a NetServer, each a thin adapter from a request to the
 * log trees service (logtrees.ts) for the rid of the connection it
 * arrived on.
 *
 *   client --GET_LOG_TREES ()------------> getLogTrees(conn rid)  --> lt (472)
 *   client --COMMIT_LOG_TREES (lt 472)---> commitLogTrees(conn rid, lt) --> ()
 *   client --GET_LAST_SEQ ()-------------> getLastSeq()           --> u64 (8)
 *
 * What it owns.  Nothing durable: the handlers decode, call, encode.  All
 * state and every rule of the transaction protocol live in LogTreesServer;
 * this file only decides which rid a request speaks for (the connection's,
 * set by its validated greeting, never anything in the payload) and how the
 * outcome crosses the wire.
 *
 * Payload sizes are checked twice on purpose: the connection answers a
 * wrong-sized request EINVAL before any handler runs (net/connection.ts,
 * from NET_CMD_INFO), and the handlers check again with the same rules
 * logtrees.ts exports (checkGetLogTreesPayload, decodeCommitLogTreesPayload)
 * so that a handler called some other way (a test, a future in-process
 * transport) cannot skip them.  A request with rid 0 cannot reach a handler
 * (messaging is enabled only by a greeting with a nonzero rid); we assert it.
 *
 * Errors.  Handlers throw and the connection answers: an FsError through
 * the closed wire table (an errno outside it becomes EIO, and the response
 * is always sent), a CorruptionError as EIO, a LifecycleError (the server
 * is stopping, its commit queue destroyed) by closing the socket without
 * an answer so the client resends to the next server.  Anything else is our
 * bug and stops the server (Endpoint.bug).
 *
 * Idempotence.  Every request may be "maybe delivered" and come again: on a
 * reconnect to this server (deduplicated by seq unless the connection state
 * was lost), to the next server after a failover, or as a new request when
 * the client's commit worker retries (a resent COMMIT is a new message with
 * the same lt).  The handlers add no state of their own, so they are
 * exactly as idempotent as LogTreesServer: a resent GET returns the open lt
 * unchanged, a resent COMMIT of a closed transaction is acknowledged with
 * no change, GET_LAST_SEQ only reads.  `delivery === 'maybe-resent'` is
 * only counted.
 *
 * Fault injection, both off unless asked for (STYLE.md 7):
 *   - a named one-shot trigger, failNextGets(n, errno): the next n
 *     GET_LOG_TREES requests fail with errno BEFORE the service is called,
 *     so nothing changes (the scenario "COMMIT succeeded, GET failed");
 *   - a random fault site for the simulator only (opts.simFaults): each GET
 *     fails ENOSPC with a given probability, drawn from the simulator's
 *     seeded Random, also before anything changes.  Production never
 *     passes it.
 * Counters prove which path ran.
 *
 * Left out: the other client requests (GET_ROOTS, ALLOC_INODES, locks,
 * srch and log merge, volume options, farewell) belong to their own
 * handler files.
 */
import assert from 'node:assert/strict';
import { CorruptionError, FsError, type ErrnoName } from '../format/errors.js';
import { encodeLogTrees, type LogTrees } from '../format/logtrees.js';
import { NET_CMD, encodeNetU64, type NetCmd } from '../format/net.js';
import type { Random } from '../runtime/random.js';
import type { HandlerOptions, IdempotentHandler, IncomingRequest } from '../net/connection.js';
import { checkGetLogTreesPayload, decodeCommitLogTreesPayload } from './logtrees.js';

/** What the handlers call (LogTreesServer has this shape). */
export interface LogTreesService {
  getLogTrees(rid: bigint): Promise<LogTrees>;
  commitLogTrees(rid: bigint, lt: LogTrees): Promise<void>;
  getLastSeq(): Promise<bigint>;
}

/** Where the handlers are registered (NetServer has this shape). */
export interface HandlerRegistry {
  register(cmd: NetCmd, fn: IdempotentHandler, opts?: HandlerOptions): void;
}

export interface TransHandlerOptions {
  /**
   * SIMULATOR ONLY: a random fault site.  Each GET_LOG_TREES fails ENOSPC
   * with probability getFailRate, before anything is changed.  The rate is
   * read at every GET, so the simulator may pass a getter to turn it on
   * and off during a run.
   */
  simFaults?: { random: Random; getFailRate: number };
}

export interface TransHandlerCounters {
  gets: number;
  commits: number;
  lastSeqs: number;
  /** Requests flagged maybe-resent by the connection (a hint; see the essay). */
  maybeResent: number;
  /** Requests answered with an error (FsError or CorruptionError from the service). */
  errors: number;
  /** GETs failed by the one-shot trigger / by the simulator's fault site. */
  getsFailedByTrigger: number;
  getsFailedBySim: number;
}

export class TransHandlers {
  readonly counters: TransHandlerCounters = {
    gets: 0, commits: 0, lastSeqs: 0, maybeResent: 0, errors: 0, getsFailedByTrigger: 0, getsFailedBySim: 0,
  };
  private failGets = 0;
  private failGetErrno: ErrnoName = 'ENOSPC';

  constructor(private readonly service: LogTreesService, private readonly opts: TransHandlerOptions = {}) {
    const f = opts.simFaults;
    assert(f === undefined || (f.getFailRate >= 0 && f.getFailRate < 1), 'simulated GET failure rate in [0, 1)');
  }

  /** Register the three handlers. */
  register(srv: HandlerRegistry): this {
    srv.register(NET_CMD.GET_LOG_TREES, (req) => this.counted(req, () => this.getLogTrees(req)));
    srv.register(NET_CMD.COMMIT_LOG_TREES, (req) => this.counted(req, () => this.commitLogTrees(req)));
    srv.register(NET_CMD.GET_LAST_SEQ, (req) => this.counted(req, () => this.getLastSeq(req)));
    return this;
  }

  /** One-shot trigger: the next n GET_LOG_TREES fail with errno, changing nothing. */
  failNextGets(n: number, errno: ErrnoName = 'ENOSPC'): void {
    assert(Number.isSafeInteger(n) && n >= 0, `failNextGets(${n})`);
    this.failGets = n;
    this.failGetErrno = errno;
  }

  private async counted(req: IncomingRequest, fn: () => Promise<Uint8Array>): Promise<Uint8Array> {
    assert(req.rid !== 0n, 'a request reached a handler before its greeting');
    if (req.delivery === 'maybe-resent') this.counters.maybeResent++;
    try {
      return await fn();
    } catch (e) {
      if (e instanceof FsError || e instanceof CorruptionError) this.counters.errors++;
      throw e;
    }
  }

  private async getLogTrees(req: IncomingRequest): Promise<Uint8Array> {
    this.counters.gets++;
    checkGetLogTreesPayload(req.data);
    if (this.failGets > 0) {
      this.failGets--;
      this.counters.getsFailedByTrigger++;
      throw new FsError(this.failGetErrno, `GET_LOG_TREES of rid ${req.rid.toString(16)} failed by trigger`);
    }
    const f = this.opts.simFaults;
    if (f !== undefined && f.getFailRate > 0 && f.random.float() < f.getFailRate) {
      this.counters.getsFailedBySim++;
      throw new FsError('ENOSPC', `GET_LOG_TREES of rid ${req.rid.toString(16)} failed by the simulator`);
    }
    const lt = await this.service.getLogTrees(req.rid);
    assert.equal(lt.rid, req.rid, 'GET_LOG_TREES answered with another rid\'s lt');
    return encodeLogTrees(lt);
  }

  private async commitLogTrees(req: IncomingRequest): Promise<Uint8Array> {
    this.counters.commits++;
    const lt = decodeCommitLogTreesPayload(req.data);
    // lt.rid != the connection's rid is the service's EIO (4.7 step 1).
    await this.service.commitLogTrees(req.rid, lt);
    return new Uint8Array(0);
  }

  private async getLastSeq(req: IncomingRequest): Promise<Uint8Array> {
    this.counters.lastSeqs++;
    if (req.data.length !== 0) throw new FsError('EINVAL', `GET_LAST_SEQ payload of ${req.data.length} bytes`);
    return encodeNetU64(await this.service.getLastSeq());
  }
}

/** Register the transaction handlers on srv over service; returns them (counters, triggers). */
export function registerTransHandlers(srv: HandlerRegistry, service: LogTreesService, opts: TransHandlerOptions = {}): TransHandlers {
  return new TransHandlers(service, opts).register(srv);
}

/*
 * NetClient: a mount's one long-lived connection to whichever server is
 * current (PROTOCOL.md 3.1, 3.6 client side, 3.9).
 *
 * What it owns.  One Connection for the life of the mount; its queues and
 * sequence state persist across sockets and across servers.  A connect
 * worker that, whenever there is no socket, finds the server address,
 * connects (1 s timeout), attaches the socket and sends a greeting carrying
 * our rid, the last server term we heard (0 until the first greeting
 * response) and our flags.  Requests submitted while disconnected wait in
 * the resend queue.
 *
 * Greeting response.  An error response or a wrong fsid/format version
 * shuts the socket down and the worker retries.  If the term differs from
 * the one recorded, this is a new server: last received seq goes back to 0,
 * queued responses (answers to the previous server's requests) are
 * discarded and the connection's epoch moves on so late responses of
 * handlers still running for the old server are dropped; requests are kept.
 * Then the reconnect delay resets to 0 and the resend queue is
 * retransmitted in its original order.
 *
 * The same applies when the server is the same (same term) but kept no
 * state for us: its greeting response then has a seq at or below the last
 * one we received (see greeting()); we reset as for a new server, so its
 * fresh seqs are not mistaken for duplicates.
 *
 * Reconnect delay: each connect attempt sets it to 100 ms, so failures
 * retry every 100 ms; a validated greeting resets it to 0, so a later drop
 * reconnects at once.
 *
 * Requests block until answered, possibly by a later server; they fail
 * early only when the client is shut down (LifecycleError).  Handlers for
 * server requests (SYNC_LOG_TREES, LOCK, LOCK_RECOVER, OPEN_INO_MAP) are
 * registered here; the lock client registers LOCK `ordered` so grants and
 * invalidations are processed in receive order.
 *
 * Owner: the main thread.  Timers go through the injected Clock, so the
 * same code runs on real time and in the simulator.
 */
import assert from 'node:assert/strict';
import { CorruptionError, FsError, LifecycleError } from '../format/errors.js';
import { FORMAT_VERSION_MAX } from '../format/constants.js';
import {
  NET_GREETING, GREETING_FLAG_FAREWELL, GREETING_FLAG_QUORUM, decodeNetGreeting, encodeNetGreeting,
  errnoOfWire, type NetCmd,
} from '../format/net.js';
import type { Clock, Timer } from '../runtime/clock.js';
import type { Random } from '../runtime/random.js';
import {
  Connection, HandlerTable, crashOnBug, newNetStats,
  type Endpoint, type HandlerOptions, type IdempotentHandler, type NetResult, type NetStats, type ResponseCallback,
} from './connection.js';
import { NetCorruptionError, type NetFrame } from './frame.js';
import type { Transport } from './transport.js';

export interface NetClientOptions {
  transport: Transport;
  clock: Clock;
  random: Random;
  fsid: bigint;
  fmtVers?: bigint;
  rid: bigint;
  /** This mount is a quorum member (greeting flag QUORUM). */
  quorum?: boolean;
  /** The current server's address, or null when none is known yet. */
  findServer: () => string | null | Promise<string | null>;
  connectTimeoutMs?: number;
  reconnectDelayMs?: number;
  name?: string;
  log?: (line: string) => void;
  onBug?: (e: unknown) => void;
  stats?: NetStats;
}

export const CLIENT_CONNECT_TIMEOUT_MS = 1000;
export const CLIENT_RECONNECT_DELAY_MS = 100;

export class NetClient implements Endpoint {
  readonly role = 'client' as const;
  readonly name: string;
  readonly random: Random;
  readonly stats: NetStats;
  readonly handlers = new HandlerTable('client');
  readonly rid: bigint;

  private readonly opts: NetClientOptions;
  private readonly clock: Clock;
  private readonly conn: Connection;
  private readonly logFn: (line: string) => void;
  private readonly bugFn: (e: unknown) => void;
  private readonly fmtVers: bigint;
  private term = 0n;
  private delayMs = 0;
  private timer: Timer | null = null;
  private connecting = false;
  private started = false;
  private stopped = false;
  private farewell = false;

  constructor(opts: NetClientOptions) {
    assert(opts.rid !== 0n && opts.rid !== 0xffffffffffffffffn, 'rid is never 0 or all ones');
    this.opts = opts;
    this.clock = opts.clock;
    this.random = opts.random;
    this.rid = opts.rid;
    this.fmtVers = opts.fmtVers ?? FORMAT_VERSION_MAX;
    this.name = opts.name ?? `client ${opts.rid.toString(16).padStart(16, '0')}`;
    this.stats = opts.stats ?? newNetStats();
    this.logFn = opts.log ?? ((l) => console.error(l));
    this.bugFn = opts.onBug ?? crashOnBug;
    this.conn = new Connection(this);
  }

  /* ---- Endpoint ----------------------------------------------------------- */

  log(line: string): void {
    this.logFn(line);
  }

  bug(e: unknown): void {
    this.bugFn(e);
  }

  greeting(conn: Connection, f: NetFrame): void {
    assert(conn === this.conn);
    if (conn.pendingGreetingId !== f.id) {
      throw new NetCorruptionError(conn.peer, 'bad-greeting', `greeting response id ${f.id}, sent ${conn.pendingGreetingId}`);
    }
    conn.pendingGreetingId = null;
    if (f.error !== 0) {
      this.stats.greetingRejected++;
      this.log(`net ${this.name}: server ${conn.peer} rejected our greeting: ${errnoOfWire(f.error)}; retrying`);
      conn.closeSocket();
      return;
    }
    if (f.data.length !== NET_GREETING.size) {
      throw new NetCorruptionError(conn.peer, 'bad-greeting', `greeting response of ${f.data.length} bytes`);
    }
    const g = decodeNetGreeting(f.data);
    if (g.fsid !== this.opts.fsid || g.fmt_vers !== this.fmtVers) {
      this.stats.greetingRejected++;
      this.log(`net ${this.name}: server ${conn.peer} has fsid ${g.fsid.toString(16)} format ${g.fmt_vers}, ` +
        `we have ${this.opts.fsid.toString(16)} format ${this.fmtVers}; retrying`);
      conn.closeSocket();
      return;
    }
    if (g.rid !== this.rid || g.server_term === 0n) {
      throw new NetCorruptionError(conn.peer, 'bad-greeting', `greeting response rid ${g.rid.toString(16)} term ${g.server_term}`);
    }
    // Same server but it kept no state for us: a take-over continues the
    // old connection's seq counter, so its greeting response always has a
    // seq above anything we received; a fresh connection starts again at 1.
    // (The server destroys a connection after a FAREWELL response; if that
    // response died with the socket, our farewell reconnect lands here.)
    const lostState = g.server_term === this.term && f.seq <= conn.lastRecvSeq;
    if (g.server_term !== this.term || lostState) {
      if (lostState) this.stats.peerLostState++;
      else this.stats.newServer++;
      conn.lastRecvSeq = 0n;
      conn.dropQueuedResponses();
      conn.epoch++;
      this.term = g.server_term;
    }
    this.stats.greetingsAccepted++;
    this.delayMs = 0;
    conn.enable();
  }

  socketClosed(conn: Connection): void {
    assert(conn === this.conn);
    this.scheduleConnect();
  }

  /* ---- API ------------------------------------------------------------------ */

  register(cmd: NetCmd, fn: IdempotentHandler, opts?: HandlerOptions): void {
    this.handlers.register(cmd, fn, opts);
  }

  /** Start connecting.  Register handlers first. */
  start(): void {
    assert(!this.started, 'client started twice');
    this.started = true;
    this.scheduleConnect();
  }

  /** Submit a request; cb runs exactly once (response, or shutdown). */
  submitRequest(cmd: NetCmd, data: Uint8Array, cb: ResponseCallback): void {
    if (this.stopped) {
      cb({ ok: false, error: new LifecycleError('shutdown', `${this.name} is shut down`) });
      return;
    }
    this.conn.submitRequest(cmd, data, cb);
  }

  /** Resolves with the response payload; rejects with FsError for an error response. */
  request(cmd: NetCmd, data: Uint8Array): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.submitRequest(cmd, data, (r: NetResult) => (r.ok ? resolve(r.data) : reject(r.error)));
    });
  }

  /** Later greetings carry FAREWELL (the mount is unmounting). */
  setFarewell(on = true): void {
    this.farewell = on;
  }

  /** The last server term we heard; 0 before the first greeting response. */
  get serverTerm(): bigint {
    return this.term;
  }

  /** A socket is up and its greeting validated. */
  get connected(): boolean {
    return this.conn.enabled;
  }

  queued(): { send: number; resend: number; live: number } {
    return this.conn.queued();
  }

  /** Break the current socket (tests, fault injection); the worker reconnects. */
  disconnect(): void {
    this.conn.closeSocket();
  }

  /** Stop for good: no more connects; pending requests fail with LifecycleError. */
  shutdown(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.timer?.cancel();
    this.timer = null;
    this.conn.destroy(new LifecycleError('shutdown', `${this.name} is shut down`));
  }

  /* ---- connect worker ---------------------------------------------------------- */

  private scheduleConnect(): void {
    if (!this.started || this.stopped || this.timer !== null || this.connecting || this.conn.sock !== null) return;
    this.timer = this.clock.setTimer(this.delayMs, () => {
      this.timer = null;
      void this.connectWorker();
    });
  }

  private async connectWorker(): Promise<void> {
    if (this.stopped || this.conn.sock !== null) return;
    this.connecting = true;
    this.delayMs = this.opts.reconnectDelayMs ?? CLIENT_RECONNECT_DELAY_MS;
    let sock;
    try {
      const addr = await this.opts.findServer();
      if (addr === null) throw new FsError('ENXIO', 'no server address known');
      sock = await this.opts.transport.connect(addr, this.opts.connectTimeoutMs ?? CLIENT_CONNECT_TIMEOUT_MS);
    } catch (e) {
      if (!(e instanceof FsError || e instanceof CorruptionError || isSystemError(e))) {
        this.connecting = false;
        this.bug(e);
        return;
      }
      this.stats.connectFailures++;
      this.connecting = false;
      this.scheduleConnect();
      return;
    }
    this.connecting = false;
    if (this.stopped) {
      sock.close();
      return;
    }
    this.stats.connects++;
    this.conn.attach(sock);
    if (sock.closed) {
      // Closed before we attached its handlers: attach saw it closed at once.
      return;
    }
    let flags = 0n;
    if (this.farewell) flags |= GREETING_FLAG_FAREWELL;
    if (this.opts.quorum) flags |= GREETING_FLAG_QUORUM;
    this.conn.submitGreetingRequest(encodeNetGreeting({
      fsid: this.opts.fsid, fmt_vers: this.fmtVers, server_term: this.term, rid: this.rid, flags,
    }));
  }
}

/** Node system errors (ECONNREFUSED, ETIMEDOUT...) carry a string code. */
function isSystemError(e: unknown): boolean {
  return e instanceof Error && typeof (e as { code?: unknown }).code === 'string';
}

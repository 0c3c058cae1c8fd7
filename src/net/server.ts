/*
 * NetServer: the listening side of the message layer (PROTOCOL.md 3.1,
 * 3.6 server side, 3.7).  The filesystem server plugs in through handlers
 * (one per command) and a few hooks; nothing here knows about log trees or
 * locks.
 *
 * What it owns.  The listener, and one Connection per accepted socket, in
 * accept order.  A connection starts with rid 0 and no messaging until the
 * client's greeting is validated:
 *   1. payload size, fsid and format version must match, and the rid must
 *      not be 0, else an EINVAL error response and the socket is shut down;
 *   2. hooks.greeting runs (mounted_clients insert for a brand-new mount,
 *      recovery bookkeeping); an FsError from it is answered through the
 *      wire table and the socket is shut down;
 *   3. a greeting older (smaller id) than one already accepted for the rid
 *      comes from a stale socket and is dropped with its socket;
 *      an older connection of the same rid (smaller greeting id) is looked
 *      up; a live one is shut down first; then the new connection takes
 *      over its seqs, ids, last received seq, farewell mark and resend
 *      queue (same-server reconnect).  With no old connection, a client
 *      that was reconnecting (nonzero term) to THIS server (same term)
 *      without FAREWELL is refused: its state here is gone;
 *   4. the greeting response goes out first, then the resend queue.  Its
 *      seq comes from the taken-over counter (we take over before queuing
 *      it; the reference queues it first), so it is above anything the
 *      client received; a fresh connection's greeting response has seq 1.
 *      That is how a client tells "same server, state kept" from "same
 *      server, state gone" (a farewell reconnect after the connection was
 *      destroyed) and resets its last received seq in the second case;
 *   5. on first contact (client term != ours) hooks.clientUp registers it.
 *
 * Deviation from the reference, on purpose: the old-connection lookup also
 * runs for a client whose term is 0.  Such a client's greeting may have
 * been accepted on an earlier socket whose response was lost; without the
 * lookup that earlier connection would sit in reconnect-wait and fence a
 * live mount 20 s later.
 *
 * Connection loss.  A socket that dies on a connection that never completed
 * a greeting, or after a FAREWELL response was sent, or while the server
 * stops, destroys the connection.  Otherwise the connection waits 20 s in
 * reconnect-wait, still accepting sends (they go to its resend queue and
 * migrate on take-over); on expiry hooks.reconnectTimeout starts fencing
 * and the connection is destroyed, which fails its pending requests with a
 * LifecycleError and tells hooks.clientDown.  (The reference also puts
 * never-greeted sockets in reconnect-wait and then fences rid 0: 13.22.)
 *
 * Server requests are addressed by rid: the first connection in accept
 * order with that rid, including one in reconnect-wait.  None is the
 * reference's ENOTCONN, which ERRNO lacks: submitRequestToRid returns false
 * and requestRid returns null, and callers (SYNC_LOG_TREES, OPEN_INO_MAP)
 * ignore it.
 *
 * Owner: the main thread; the reconnect-wait timers use the injected Clock.
 */
import assert from 'node:assert/strict';
import { CorruptionError, FsError, LifecycleError, type ErrnoName } from '../format/errors.js';
import { FORMAT_VERSION_MAX } from '../format/constants.js';
import {
  NET_GREETING, GREETING_FLAG_FAREWELL, decodeNetGreeting, encodeNetGreeting, wireErrorOf, type NetCmd,
  type NetGreeting,
} from '../format/net.js';
import type { Clock, Timer } from '../runtime/clock.js';
import type { Random } from '../runtime/random.js';
import {
  Connection, HandlerTable, crashOnBug, newNetStats,
  type Endpoint, type HandlerOptions, type IdempotentHandler, type NetResult, type NetStats, type ResponseCallback,
} from './connection.js';
import type { NetFrame } from './frame.js';
import type { NetListener, NetSocket, Transport } from './transport.js';

export const SERVER_RECONNECT_WAIT_MS = 20_000;

export interface GreetingInfo {
  readonly rid: bigint;
  /** The term the client last heard; 0 for a brand-new mount. */
  readonly clientTerm: bigint;
  readonly flags: bigint;
  readonly peer: string;
  readonly farewell: boolean;
}

export interface NetServerHooks {
  /** Greeting passed the fsid/format checks.  Throw FsError to refuse it. */
  greeting?(g: GreetingInfo): void | Promise<void>;
  /** First contact with a client on this server.  A throw shuts the socket. */
  clientUp?(rid: bigint, g: GreetingInfo): void | Promise<void>;
  /** Reconnect-wait expired: start fencing the rid (reason client_reconnect). */
  reconnectTimeout?(rid: bigint, peer: string): void;
  /** A connection that had come up was destroyed. */
  clientDown?(rid: bigint): void;
}

export interface NetServerOptions {
  transport: Transport;
  clock: Clock;
  random: Random;
  fsid: bigint;
  fmtVers?: bigint;
  /** Our quorum term: nonzero, different for every server incarnation. */
  term: bigint;
  listenAddr: string;
  reconnectWaitMs?: number;
  hooks?: NetServerHooks;
  name?: string;
  log?: (line: string) => void;
  onBug?: (e: unknown) => void;
  stats?: NetStats;
}

export class NetServer implements Endpoint {
  readonly role = 'server' as const;
  readonly name: string;
  readonly random: Random;
  readonly stats: NetStats;
  readonly handlers = new HandlerTable('server');
  readonly term: bigint;

  private readonly opts: NetServerOptions;
  private readonly hooks: NetServerHooks;
  private readonly fmtVers: bigint;
  private readonly logFn: (line: string) => void;
  private readonly bugFn: (e: unknown) => void;
  private conns: Connection[] = [];
  private readonly waits = new Map<Connection, Timer>();
  private listener: NetListener | null = null;
  private stopped = false;

  constructor(opts: NetServerOptions) {
    assert(opts.term !== 0n, 'a server term is never 0');
    this.opts = opts;
    this.term = opts.term;
    this.hooks = opts.hooks ?? {};
    this.random = opts.random;
    this.fmtVers = opts.fmtVers ?? FORMAT_VERSION_MAX;
    this.name = opts.name ?? `server term ${opts.term}`;
    this.stats = opts.stats ?? newNetStats();
    this.logFn = opts.log ?? ((l) => console.error(l));
    this.bugFn = opts.onBug ?? crashOnBug;
  }

  /** Bind the listener.  Register handlers before clients can greet. */
  async listen(): Promise<string> {
    assert(this.listener === null && !this.stopped);
    const l = await this.opts.transport.listen(this.opts.listenAddr, (s) => this.accept(s));
    if (this.stopped) {
      l.close();
      throw new LifecycleError('shutdown', `${this.name} stopped while binding`);
    }
    this.listener = l;
    return l.addr;
  }

  get addr(): string {
    assert(this.listener !== null, 'not listening');
    return this.listener.addr;
  }

  register(cmd: NetCmd, fn: IdempotentHandler, opts?: HandlerOptions): void {
    this.handlers.register(cmd, fn, opts);
  }

  /* ---- Endpoint ------------------------------------------------------------- */

  log(line: string): void {
    this.logFn(line);
  }

  bug(e: unknown): void {
    this.bugFn(e);
  }

  private accept(sock: NetSocket): void {
    if (this.stopped) {
      sock.close();
      return;
    }
    const conn = new Connection(this);
    this.conns.push(conn);
    conn.attach(sock);
  }

  async greeting(conn: Connection, f: NetFrame): Promise<void> {
    const gen = conn.gen;
    if (f.data.length !== NET_GREETING.size) return this.refuseGreeting(conn, f, 'EINVAL', `greeting of ${f.data.length} bytes`);
    const g: NetGreeting = decodeNetGreeting(f.data);
    if (g.fsid !== this.opts.fsid || g.fmt_vers !== this.fmtVers) {
      return this.refuseGreeting(conn, f, 'EINVAL', `fsid ${g.fsid.toString(16)} format ${g.fmt_vers}`);
    }
    if (g.rid === 0n) return this.refuseGreeting(conn, f, 'EINVAL', 'rid 0');
    const info: GreetingInfo = {
      rid: g.rid, clientTerm: g.server_term, flags: g.flags, peer: conn.peer,
      farewell: (g.flags & GREETING_FLAG_FAREWELL) !== 0n,
    };
    if (this.hooks.greeting !== undefined) {
      try {
        await this.hooks.greeting(info);
      } catch (e) {
        if (e instanceof FsError) return this.refuseGreeting(conn, f, e.code, e.message);
        if (e instanceof CorruptionError) return this.refuseGreeting(conn, f, 'EIO', e.message);
        if (e instanceof LifecycleError) return conn.closeSocket();
        throw e;
      }
    }
    if (this.stopped || conn.destroyed || conn.gen !== gen || conn.sock === null) return;

    // Greeting ids grow on the client's one long-lived connection, so a
    // greeting older than one already accepted for this rid comes from a
    // stale socket (delayed in the network past the client's reconnect).
    // Enabling it would give the rid a second, dead connection that server
    // requests would be addressed to and that would later be fenced.
    if (this.conns.some((c) => c !== conn && !c.destroyed && c.rid === g.rid && c.greetingId > f.id)) {
      this.stats.staleGreetings++;
      this.log(`net ${this.name}: stale greeting id ${f.id} from rid ${g.rid.toString(16)}; closing that socket`);
      conn.closeSocket();
      return;
    }
    const reconnecting = g.server_term !== 0n;
    const firstContact = g.server_term !== this.term;
    let old = this.conns.find((c) => c !== conn && !c.destroyed && c.rid === g.rid && c.greetingId < f.id) ?? null;
    if (old !== null && old.sock !== null) {
      // Still live: shut it down; it enters reconnect-wait (or is destroyed).
      old.closeSocket();
      if (old.destroyed) old = null;
    }
    if (old === null && reconnecting && !firstContact && !info.farewell) {
      this.stats.refused++;
      this.log(`net ${this.name}: rid ${g.rid.toString(16)} reconnected to us but its connection is gone; refusing`);
      conn.closeSocket();
      return;
    }
    // Take over before queuing the greeting response: the response then
    // carries a seq from the continued counter, which tells the client its
    // state survived (client.ts greeting()).
    if (old !== null) {
      this.waits.get(old)?.cancel();
      this.waits.delete(old);
      this.conns = this.conns.filter((c) => c !== old);
      conn.takeOver(old);
      this.stats.takeovers++;
    }
    conn.rid = g.rid;
    conn.greetingId = f.id;
    conn.peerGreetingSeq = f.seq;
    conn.peerReconnecting = reconnecting;
    conn.submitGreetingResponse(f.id, 0, encodeNetGreeting({
      fsid: this.opts.fsid, fmt_vers: this.fmtVers, server_term: this.term, rid: g.rid, flags: 0n,
    }));
    this.stats.greetingsAccepted++;
    conn.enable();
    if (firstContact && !conn.up) {
      conn.up = true;
      if (this.hooks.clientUp !== undefined) {
        try {
          await this.hooks.clientUp(g.rid, info);
        } catch (e) {
          if (!(e instanceof FsError || e instanceof CorruptionError || e instanceof LifecycleError)) throw e;
          this.log(`net ${this.name}: setting up rid ${g.rid.toString(16)} failed: ${e.message}`);
          conn.closeSocket();
        }
      }
    }
  }

  private refuseGreeting(conn: Connection, f: NetFrame, code: ErrnoName, why: string): void {
    this.stats.greetingRejected++;
    this.log(`net ${this.name}: refusing greeting from ${conn.peer}: ${why}`);
    if (conn.sock !== null) conn.submitGreetingResponse(f.id, wireErrorOf(code), new Uint8Array(0));
    conn.closeSocket();
  }

  socketClosed(conn: Connection): void {
    if (conn.destroyed) return;
    if (this.stopped || conn.farewellSent || conn.rid === 0n) {
      this.destroyConn(conn, true);
      return;
    }
    this.stats.reconnectWaits++;
    const waitMs = this.opts.reconnectWaitMs ?? SERVER_RECONNECT_WAIT_MS;
    this.waits.set(conn, this.opts.clock.setTimer(waitMs, () => {
      this.waits.delete(conn);
      if (conn.destroyed) return;
      this.stats.reconnectTimeouts++;
      this.log(`net ${this.name}: rid ${conn.rid.toString(16)} did not reconnect within ${waitMs} ms`);
      this.hooks.reconnectTimeout?.(conn.rid, conn.peer);
      this.destroyConn(conn, true);
    }));
  }

  private destroyConn(conn: Connection, notify: boolean): void {
    this.waits.get(conn)?.cancel();
    this.waits.delete(conn);
    this.conns = this.conns.filter((c) => c !== conn);
    const wasUp = conn.up && !conn.destroyed;
    conn.destroy(new LifecycleError('shutdown', `connection to ${conn.peer} destroyed`));
    if (notify && wasUp) this.hooks.clientDown?.(conn.rid);
  }

  /* ---- server requests --------------------------------------------------------- */

  private connOf(rid: bigint): Connection | undefined {
    return this.conns.find((c) => c.rid === rid && !c.destroyed);
  }

  /** false = no connection for rid (ENOTCONN); cb does not run then. */
  submitRequestToRid(rid: bigint, cmd: NetCmd, data: Uint8Array, cb: ResponseCallback): boolean {
    const c = this.stopped ? undefined : this.connOf(rid);
    if (c === undefined) return false;
    c.submitRequest(cmd, data, cb);
    return true;
  }

  /** null = no connection for rid; else the response (FsError rejects). */
  requestRid(rid: bigint, cmd: NetCmd, data: Uint8Array): Promise<Uint8Array> | null {
    let res!: (d: Uint8Array) => void;
    let rej!: (e: Error) => void;
    const p = new Promise<Uint8Array>((a, b) => {
      res = a;
      rej = b;
    });
    const ok = this.submitRequestToRid(rid, cmd, data, (r: NetResult) => (r.ok ? res(r.data) : rej(r.error)));
    return ok ? p : null;
  }

  /**
   * Shut the socket of rid's connection down (a peer answered a server
   * request with something the protocol forbids, PROTOCOL.md 3.3); the
   * connection enters reconnect-wait as after any socket loss.  false when
   * rid has no live socket.
   */
  disconnectRid(rid: bigint): boolean {
    const c = this.connOf(rid);
    if (c === undefined || c.sock === null) return false;
    c.closeSocket();
    return true;
  }

  /** Rids with a greeted connection (live or in reconnect-wait). */
  rids(): bigint[] {
    return this.conns.filter((c) => c.rid !== 0n && !c.destroyed).map((c) => c.rid);
  }

  /** Connections in accept order (tests, status). */
  connections(): readonly Connection[] {
    return this.conns;
  }

  /** Stop listening, destroy every connection; no hooks run. */
  shutdown(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.listener?.close();
    this.listener = null;
    for (const c of [...this.conns]) this.destroyConn(c, false);
  }
}

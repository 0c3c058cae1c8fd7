/*
 * Connection: the per-peer message state machine of PROTOCOL.md 3.5-3.6.
 *
 * What it owns.  A Connection holds everything that must survive a broken
 * socket: the send sequence counter (seq, never 0, shared by requests,
 * responses and greetings), the request id counter, the last seq received
 * from the peer, the send queue, the resend queue and the map of live
 * requests waiting for their response.  A socket is attached to it, used
 * and detached; the Connection lives on.  The client keeps one Connection
 * for its whole life (client.ts); the server makes one per accepted socket
 * and migrates a reconnecting client's old state into the new one
 * (takeOver, server.ts).  Role-specific greeting handling is in the
 * Endpoint that owns the connection; everything else is here.
 *
 * Invariants.
 *   - Every message gets its seq when submitted.  A message goes to the
 *     send queue only if a socket is attached and messaging is enabled (or
 *     it is the greeting); otherwise to the resend queue.  The send queue
 *     is transmitted at once, in order, each frame stamped with the current
 *     lastRecvSeq; transmitted requests and responses move to the resend
 *     queue, greetings are forgotten.  Hence every seq in the resend queue
 *     is below every seq in the send queue, and each queue is sorted by
 *     seq (asserted when resending: the receiver drops seq <= last, so an
 *     out-of-order resend would lose messages).
 *   - A request leaves the queues when its response arrives (matched by id
 *     and cmd among live requests); its callback runs exactly once: with
 *     the response, or with a LifecycleError when the connection is
 *     destroyed.  A response for no live request is dropped silently.
 *   - A response leaves the resend queue when an accepted message from the
 *     peer acknowledges it (recv_seq >= its seq).
 *   - Receiver dedup: a non-greeting message with seq <= lastRecvSeq is
 *     dropped, recv_seq and all.  Greetings bypass the seq logic.
 *   - When the socket dies, greetings are discarded and whatever is left in
 *     the send queue joins the resend queue; enable() after the next
 *     validated greeting moves the resend queue back and retransmits it.
 *
 * Resends and idempotence.  A request the peer transmitted before the
 * current socket's greeting may already have been processed, by this server
 * before its socket broke or by a previous server whose response was lost.
 * Same-server duplicates are removed by seq dedup (the server migrates
 * lastRecvSeq on take-over), but two different servers may both process
 * the same request.  Handlers therefore receive an IncomingRequest whose
 * `delivery` says 'maybe-resent' when the request may have been processed
 * before: on the server, when the client's greeting carried a nonzero
 * server term (it has talked to a server before) and the request's seq is
 * below that greeting's seq (it was submitted before this socket existed).
 * A request with a seq above the greeting's was submitted after this socket
 * was up and cannot have reached any other server: 'first'.  On the client
 * every request is 'first' at this layer (server requests are never carried
 * across servers and same-server resends are deduplicated), though client
 * handlers still see semantic duplicates from lock recovery.  The flag is a
 * hint for counters and logs; EVERY handler must be idempotent regardless,
 * which is why the handler type is named IdempotentHandler.
 *
 * Receive order.  Decoded frames go through a per-socket pump.  Greetings
 * and handlers registered `ordered` are awaited before the next frame is
 * looked at (the client registers LOCK ordered, PROTOCOL.md 3.5); other
 * requests run concurrently.  Response callbacks run synchronously in
 * receive order; a caller that needs its continuation ordered against the
 * next incoming message uses the callback form, not the promise.
 *
 * Deferred responses.  A handler may answer later, from outside its own
 * call: it calls req.defer() and returns DEFERRED, and sends the answer
 * through the DeferredReply whenever it is ready (the lock server answers
 * a LOCK request with its grant, possibly much later, and must enqueue that
 * grant in the same synchronous step that decides it, so that an
 * invalidation it sends next cannot overtake it on the wire; the lock
 * client answers invalidations from its own worker, while its ordered
 * handler only queues them so the pump never waits on a commit).  A
 * deferred answer follows the same rules as a returned one: it goes to
 * the connection the request's connection was taken over by, and is
 * dropped when the peer changed identity or the connection was destroyed.
 * Each DeferredReply answers once (asserted).
 *
 * Stale responses.  A handler that finishes after the connection moved on
 * to a new server (client) or was destroyed drops its response: the request
 * came from a server that is gone, and its id may already name a different
 * request of the new server.  After a take-over the response goes to the
 * successor connection.
 *
 * Failure modes.  Bad bytes from the peer (frame.ts checks, a second
 * greeting, a greeting in the wrong direction, a request with no handler, a
 * message before the greeting) raise a NetCorruptionError: counted, logged,
 * socket shut down; the peer reconnects and resends.  A handler failure
 * with FsError becomes an error response through the wire error table
 * (outside the table: EIO; the response is always sent); a CorruptionError
 * becomes EIO; a LifecycleError shuts the socket down without a response;
 * anything else is our bug and goes to Endpoint.bug, which stops the daemon
 * by default.  A throwing response callback is a bug too.  A request whose
 * payload has the wrong size is answered EINVAL without calling the handler
 * (the reference shuts some connections down instead, which makes the
 * client resend the same bytes forever).  A success response of the wrong
 * size completes the request with a CorruptionError (the reference's
 * EMSGSIZE, which ERRNO lacks).  Handlers registered `sizeFatal` (the
 * server's and the client's LOCK, the client's LOCK_RECOVER, PROTOCOL.md
 * 3.3) take the reference's stricter path: a wrong-sized request is a
 * fatal message that shuts the socket down, with no answer; so does a
 * handler that throws a NetCorruptionError (a well-sized payload whose
 * contents the protocol forbids, e.g. a LOCK mode byte of 7).
 *
 * Owner: the main thread.  Nothing here blocks or touches time; timers
 * (reconnect delay, reconnect-wait) belong to the endpoints.
 */
import assert from 'node:assert/strict';
import { CorruptionError, FsError, LifecycleError } from '../format/errors.js';
import type { Random } from '../runtime/random.js';
import {
  NET_CMD, NET_CMD_INFO, NET_FLAG_RESPONSE, NET_ERR_EIO, errnoOfWire, netCmdName, payloadSizeOk,
  wireErrorOf, type NetCmd, type NetPayloadSize,
} from '../format/net.js';
import { FrameReader, NetCorruptionError, describeFrame, encodeFrame, isResponse, type NetFrame } from './frame.js';
import type { NetSocket } from './transport.js';

/* ---- public types ------------------------------------------------------- */

export type Role = 'client' | 'server';
export type Delivery = 'first' | 'maybe-resent';

export interface IncomingRequest {
  readonly cmd: NetCmd;
  readonly id: bigint;
  readonly seq: bigint;
  readonly data: Uint8Array;
  /** The client's rid on the server; 0n on the client. */
  readonly rid: bigint;
  readonly peer: string;
  /** See the top comment: a hint; handlers are idempotent either way. */
  readonly delivery: Delivery;
  /** Answer later: call this, return DEFERRED, then answer through the reply. */
  defer(): DeferredReply;
}

/**
 * A request handler.  Returns the response payload, or throws FsError for
 * an error response (CorruptionError answers EIO).  It MUST be idempotent:
 * the same request may be processed again after a reconnect, by the next
 * server, or by this one if it had discarded the client's connection.
 * Throw LifecycleError only when this endpoint is going away: the socket is
 * shut without an answer, and a resend to the same server would be dropped
 * by seq dedup, so only the next server can answer it.
 */
export type IdempotentHandler = (req: IncomingRequest) => HandlerResult | Promise<HandlerResult>;

/** Returned by a handler that called req.defer() and answers through it later. */
export const DEFERRED: unique symbol = Symbol('deferred response');
export type HandlerResult = Uint8Array | typeof DEFERRED;

/** The answer to one request, sent later (see "Deferred responses" above). */
export interface DeferredReply {
  /** Send the success response (its size is checked like a returned one). */
  send(data: Uint8Array): void;
  /** Send an error response through the wire table. */
  fail(e: FsError): void;
  /** The response would be dropped now (peer gone or changed identity). */
  readonly stale: boolean;
}

export interface HandlerOptions {
  /** Await this handler before processing the next received message. */
  ordered?: boolean;
  /** A request of the wrong payload size shuts the socket down instead of answering EINVAL. */
  sizeFatal?: boolean;
}

export type NetError = FsError | CorruptionError | LifecycleError;
export type NetResult = { ok: true; data: Uint8Array } | { ok: false; error: NetError };
/** Runs exactly once per submitted request. */
export type ResponseCallback = (r: NetResult) => void;

export interface NetStats {
  framesSent: number;
  framesRecv: number;
  /** Fatal messages from peers (each one shut a socket down). */
  corruption: number;
  /** Messages dropped by seq dedup. */
  dupDropped: number;
  unknownResponses: number;
  staleResponses: number;
  badRequestSize: number;
  badResponseSize: number;
  errorResponsesSent: number;
  /** Messages retransmitted from the resend queue after a greeting. */
  resent: number;
  requestsHandled: number;
  maybeResentHandled: number;
  greetingsSent: number;
  greetingsAccepted: number;
  greetingRejected: number;
  /** Greetings from a stale socket, older than one already accepted. */
  staleGreetings: number;
  refused: number;
  newServer: number;
  /** Client: the same server answered a reconnect with fresh state. */
  peerLostState: number;
  takeovers: number;
  reconnectWaits: number;
  reconnectTimeouts: number;
  connects: number;
  connectFailures: number;
  socketsClosed: number;
}

export function newNetStats(): NetStats {
  return {
    framesSent: 0, framesRecv: 0, corruption: 0, dupDropped: 0, unknownResponses: 0, staleResponses: 0,
    badRequestSize: 0, badResponseSize: 0, errorResponsesSent: 0, resent: 0, requestsHandled: 0,
    maybeResentHandled: 0, greetingsSent: 0, greetingsAccepted: 0, greetingRejected: 0, staleGreetings: 0, refused: 0,
    newServer: 0, peerLostState: 0, takeovers: 0, reconnectWaits: 0, reconnectTimeouts: 0, connects: 0, connectFailures: 0,
    socketsClosed: 0,
  };
}

/** Handlers of one endpoint, shared by all its connections. */
export class HandlerTable {
  private readonly role: Role;
  private readonly map = new Map<number, { fn: IdempotentHandler; ordered: boolean; sizeFatal: boolean }>();

  constructor(role: Role) {
    this.role = role;
  }

  register(cmd: NetCmd, fn: IdempotentHandler, opts: HandlerOptions = {}): void {
    assert(cmd !== NET_CMD.GREETING, 'greetings are handled by the endpoint');
    const info = NET_CMD_INFO[cmd];
    assert(info !== undefined, `unknown cmd ${cmd}`);
    const handles = info.dir === 'both' || (info.dir === 'c2s') === (this.role === 'server');
    assert(handles, `a ${this.role} does not handle ${info.name} requests`);
    assert(!this.map.has(cmd), `handler for ${info.name} registered twice`);
    this.map.set(cmd, { fn, ordered: opts.ordered ?? false, sizeFatal: opts.sizeFatal ?? false });
  }

  get(cmd: number): { fn: IdempotentHandler; ordered: boolean; sizeFatal: boolean } | undefined {
    return this.map.get(cmd);
  }
}

/** What a Connection needs from the client or server that owns it. */
export interface Endpoint {
  readonly role: Role;
  readonly name: string;
  readonly random: Random;
  readonly stats: NetStats;
  readonly handlers: HandlerTable;
  log(line: string): void;
  /** Our own bug surfaced in a callback: stop (default) or record (tests). */
  bug(e: unknown): void;
  /** A greeting frame passed the generic checks (direction, once per socket). */
  greeting(conn: Connection, f: NetFrame): void | Promise<void>;
  /** The socket of conn died or was shut down; conn is detached. */
  socketClosed(conn: Connection): void;
}

/** Default Endpoint.bug: rethrow outside any promise chain, so the process stops. */
export function crashOnBug(e: unknown): void {
  process.nextTick(() => {
    throw e;
  });
}

/* ---- the state machine -------------------------------------------------- */

type Kind = 'greeting' | 'request' | 'response';

interface Outgoing {
  readonly kind: Kind;
  readonly seq: bigint;
  readonly id: bigint;
  readonly cmd: number;
  readonly flags: number;
  readonly error: number;
  readonly data: Uint8Array;
  /** Requests (not greetings): the callback, cleared once it ran. */
  cb: ResponseCallback | null;
  /** Requests: the size a success response must have. */
  readonly expect: NetPayloadSize | null;
  transmits: number;
}

/** What a handler's response needs to find its way back. */
interface RequestOrigin {
  readonly cmd: number;
  readonly id: bigint;
  readonly epoch: number;
}

const EMPTY = new Uint8Array(0);

export class Connection {
  readonly ep: Endpoint;

  private nextSeq = 1n;
  private nextId = 1n;
  lastRecvSeq = 0n;
  private sendQ: Outgoing[] = [];
  private resendQ: Outgoing[] = [];
  private readonly live = new Map<bigint, Outgoing>();

  sock: NetSocket | null = null;
  /** Incremented per attached socket; stale socket callbacks compare it. */
  gen = 0;
  private reader: FrameReader | null = null;
  private pumpQ: NetFrame[] = [];
  private pumpGen: number | null = null;
  /** Messaging enabled on the current socket (its greeting validated). */
  enabled = false;
  private greetingSeen = false;
  /** Client: the greeting request sent on the current socket. */
  pendingGreetingId: bigint | null = null;

  /** Server: the client's rid once greeted; 0n before. */
  rid = 0n;
  /** Server: net id of the greeting request that enabled this connection. */
  greetingId = 0n;
  /** Server: the seq of that greeting and whether the client was reconnecting. */
  peerGreetingSeq = 0n;
  peerReconnecting = false;
  /** Server: a FAREWELL success response was submitted here. */
  farewellSent = false;
  /** Server: first-contact setup ran for this client (it is "up"). */
  up = false;
  /** Bumped when the peer changes identity (client: a new server). */
  epoch = 0;
  destroyed = false;
  successor: Connection | null = null;
  peer = '';

  constructor(ep: Endpoint) {
    this.ep = ep;
  }

  /* ---- sockets ---------------------------------------------------------- */

  attach(sock: NetSocket): void {
    assert(this.sock === null && !this.destroyed, 'attach to a connection that has a socket or was destroyed');
    assert(this.sendQ.length === 0, 'send queue must be empty without a socket');
    this.sock = sock;
    const gen = ++this.gen;
    this.peer = sock.peer;
    this.reader = new FrameReader(sock.peer);
    this.enabled = false;
    this.greetingSeen = false;
    this.pendingGreetingId = null;
    sock.onData((chunk) => this.recv(gen, chunk));
    sock.onClose(() => {
      if (gen === this.gen && this.sock !== null) this.detach();
    });
  }

  /** Shut the current socket down (if any); the endpoint is told via socketClosed. */
  closeSocket(): void {
    const s = this.sock;
    if (s === null) return;
    this.detach();
    s.close();
  }

  private detach(): void {
    assert(this.sock !== null);
    this.sock = null;
    this.reader = null;
    this.pumpQ = [];
    this.enabled = false;
    this.greetingSeen = false;
    this.pendingGreetingId = null;
    const unsent = this.sendQ.filter((m) => m.kind !== 'greeting');
    this.sendQ = [];
    for (const m of unsent) this.resendQ.push(m);
    this.ep.stats.socketsClosed++;
    this.ep.socketClosed(this);
  }

  /** Greeting validated: move the resend queue to the send queue, transmit. */
  enable(): void {
    assert(this.sock !== null && !this.enabled && !this.destroyed);
    assert(this.sendQ.length === 0, 'greetings are flushed before enabling');
    for (let i = 1; i < this.resendQ.length; i++) {
      assert(this.resendQ[i - 1]!.seq < this.resendQ[i]!.seq, 'resend queue out of seq order');
    }
    this.enabled = true;
    for (const m of this.resendQ) if (m.transmits > 0) this.ep.stats.resent++;
    this.sendQ = this.resendQ;
    this.resendQ = [];
    this.flush();
  }

  /** Client, new server: its responses answered the previous server. */
  dropQueuedResponses(): void {
    this.resendQ = this.resendQ.filter((m) => m.kind !== 'response');
    this.sendQ = this.sendQ.filter((m) => m.kind !== 'response');
  }

  /**
   * Server, same-server reconnect: take the old connection's sequence
   * state, farewell mark and resend queue; the old one is destroyed without
   * callbacks and forwards late responses to us.
   */
  takeOver(old: Connection): void {
    assert(old !== this && !old.destroyed && old.sock === null, 'take over a live or destroyed connection');
    assert(this.resendQ.length === 0 && this.live.size === 0, 'new connection already has state');
    this.nextSeq = old.nextSeq > this.nextSeq ? old.nextSeq : this.nextSeq;
    this.nextId = old.nextId > this.nextId ? old.nextId : this.nextId;
    this.lastRecvSeq = old.lastRecvSeq;
    this.farewellSent = old.farewellSent;
    this.up = old.up;
    this.epoch = old.epoch;
    this.resendQ = old.resendQ.concat(old.sendQ);
    for (const [id, m] of old.live) this.live.set(id, m);
    old.resendQ = [];
    old.sendQ = [];
    old.live.clear();
    old.destroyed = true;
    old.successor = this;
  }

  /** Permanently stop: fail every live request once, forget the queues. */
  destroy(err: LifecycleError): void {
    if (this.destroyed) return;
    this.destroyed = true;
    const s = this.sock;
    this.sock = null;
    this.reader = null;
    this.pumpQ = [];
    this.enabled = false;
    if (s !== null) s.close();
    const reqs = [...this.live.values()];
    this.live.clear();
    this.sendQ = [];
    this.resendQ = [];
    for (const m of reqs) this.runCallback(m, { ok: false, error: err });
  }

  /** Messages waiting in the queues (tests and status). */
  queued(): { send: number; resend: number; live: number } {
    return { send: this.sendQ.length, resend: this.resendQ.length, live: this.live.size };
  }

  /* ---- submitting --------------------------------------------------------- */

  submitRequest(cmd: NetCmd, data: Uint8Array, cb: ResponseCallback): bigint {
    assert(!this.destroyed, 'submit on a destroyed connection');
    assert(cmd !== NET_CMD.GREETING);
    const info = NET_CMD_INFO[cmd]!;
    assert(payloadSizeOk(info.req, data), `${info.name} request of ${data.length} bytes`);
    const m = this.newMessage('request', cmd, this.nextId++, 0, 0, data, cb, info.resp);
    this.live.set(m.id, m);
    this.enqueue(m);
    return m.id;
  }

  /** Client: the greeting request for the socket just attached. */
  submitGreetingRequest(data: Uint8Array): void {
    assert(this.sock !== null && !this.enabled && this.pendingGreetingId === null);
    const m = this.newMessage('greeting', NET_CMD.GREETING, this.nextId++, 0, 0, data, null, null);
    this.pendingGreetingId = m.id;
    this.ep.stats.greetingsSent++;
    this.enqueue(m);
  }

  /** Server: the answer to a greeting request (error code 0 or a wire code). */
  submitGreetingResponse(id: bigint, error: number, data: Uint8Array): void {
    assert(this.sock !== null);
    this.enqueue(this.newMessage('greeting', NET_CMD.GREETING, id, NET_FLAG_RESPONSE, error, data, null, null));
  }

  private newMessage(
    kind: Kind, cmd: number, id: bigint, flags: number, error: number, data: Uint8Array,
    cb: ResponseCallback | null, expect: NetPayloadSize | null,
  ): Outgoing {
    const seq = this.nextSeq++;
    return { kind, seq, id, cmd, flags, error, data, cb, expect, transmits: 0 };
  }

  private enqueue(m: Outgoing): void {
    if (this.sock !== null && (this.enabled || m.kind === 'greeting')) {
      this.sendQ.push(m);
      this.flush();
    } else {
      assert(m.kind !== 'greeting', 'a greeting needs a socket');
      this.resendQ.push(m);
    }
  }

  private flush(): void {
    const s = this.sock;
    assert(s !== null);
    while (this.sendQ.length > 0) {
      const m = this.sendQ.shift()!;
      const bytes = encodeFrame({ ...m, recvSeq: this.lastRecvSeq }, this.ep.random.u64());
      m.transmits++;
      this.ep.stats.framesSent++;
      if (m.kind !== 'greeting') this.resendQ.push(m);
      s.send(bytes);
    }
  }

  /* ---- receiving ------------------------------------------------------------ */

  private recv(gen: number, chunk: Uint8Array): void {
    if (gen !== this.gen || this.reader === null) return;
    let frames: NetFrame[];
    try {
      frames = this.reader.push(chunk);
    } catch (e) {
      if (e instanceof NetCorruptionError) return this.fatal(e);
      throw e;
    }
    this.ep.stats.framesRecv += frames.length;
    for (const f of frames) this.pumpQ.push(f);
    this.runPump();
  }

  private fatal(e: NetCorruptionError): void {
    this.ep.stats.corruption++;
    this.ep.log(`net ${this.ep.name}: ${e.message}; shutting the connection down`);
    this.closeSocket();
  }

  /** Process queued frames in order; awaits greetings and ordered handlers. */
  private runPump(): void {
    if (this.pumpGen === this.gen) return;
    const gen = this.gen;
    this.pumpGen = gen;
    const loop = (): void => {
      while (this.gen === gen && this.pumpQ.length > 0) {
        const f = this.pumpQ.shift()!;
        let r: void | Promise<void>;
        try {
          r = this.processFrame(f);
        } catch (e) {
          this.frameFailed(gen, e);
          continue;
        }
        if (r !== undefined) {
          r.then(loop, (e: unknown) => {
            this.frameFailed(gen, e);
            loop();
          });
          return;
        }
      }
      if (this.pumpGen === gen) this.pumpGen = null;
    };
    loop();
  }

  private frameFailed(gen: number, e: unknown): void {
    if (e instanceof NetCorruptionError) {
      if (gen === this.gen && this.sock !== null) this.fatal(e);
      else this.ep.stats.corruption++;
      return;
    }
    this.ep.bug(e);
  }

  private processFrame(f: NetFrame): void | Promise<void> {
    if (f.cmd === NET_CMD.GREETING) {
      if (this.greetingSeen) throw new NetCorruptionError(this.peer, 'second-greeting', describeFrame(f));
      const wrongWay = this.ep.role === 'server' ? isResponse(f) : !isResponse(f);
      if (wrongWay) throw new NetCorruptionError(this.peer, 'greeting-wrong-direction', `${this.ep.role} got ${describeFrame(f)}`);
      this.greetingSeen = true;
      return this.ep.greeting(this, f);
    }
    if (!this.enabled) throw new NetCorruptionError(this.peer, 'before-greeting', describeFrame(f));
    if (f.seq <= this.lastRecvSeq) {
      this.ep.stats.dupDropped++;
      return;
    }
    this.lastRecvSeq = f.seq;
    this.ack(f.recvSeq);
    if (isResponse(f)) {
      this.response(f);
      return;
    }
    return this.request(f);
  }

  /** Drop responses the peer has acknowledged. */
  private ack(recvSeq: bigint): void {
    const q = this.resendQ;
    let keep = 0;
    for (let i = 0; i < q.length; i++) {
      const m = q[i]!;
      if (!(m.kind === 'response' && m.seq <= recvSeq)) q[keep++] = m;
    }
    q.length = keep;
  }

  private response(f: NetFrame): void {
    const m = this.live.get(f.id);
    if (m === undefined || m.cmd !== f.cmd) {
      this.ep.stats.unknownResponses++;
      return;
    }
    this.live.delete(m.id);
    this.removeQueued(m);
    let r: NetResult;
    if (f.error !== 0) {
      const name = errnoOfWire(f.error);
      assert(name !== undefined && name !== null, 'frame validation admits only table codes');
      r = { ok: false, error: new FsError(name, `${netCmdName(f.cmd)} answered by ${this.peer}`) };
    } else if (m.expect !== null && !payloadSizeOk(m.expect, f.data)) {
      this.ep.stats.badResponseSize++;
      this.ep.stats.corruption++;
      const e = new NetCorruptionError(this.peer, 'truncated', `${netCmdName(f.cmd)} response of ${f.data.length} bytes`);
      this.ep.log(`net ${this.ep.name}: ${e.message}`);
      r = { ok: false, error: e };
    } else {
      r = { ok: true, data: f.data };
    }
    this.runCallback(m, r);
  }

  private removeQueued(m: Outgoing): void {
    let i = this.resendQ.indexOf(m);
    if (i >= 0) {
      this.resendQ.splice(i, 1);
      return;
    }
    i = this.sendQ.indexOf(m);
    if (i >= 0) this.sendQ.splice(i, 1);
  }

  private runCallback(m: Outgoing, r: NetResult): void {
    const cb = m.cb;
    assert(cb !== null, 'response callback ran twice');
    m.cb = null;
    try {
      cb(r);
    } catch (e) {
      this.ep.bug(e);
    }
  }

  private request(f: NetFrame): void | Promise<void> {
    const h = this.ep.handlers.get(f.cmd);
    if (h === undefined) throw new NetCorruptionError(this.peer, 'no-handler', `${this.ep.role} has no handler for ${describeFrame(f)}`);
    const origin: RequestOrigin = { cmd: f.cmd, id: f.id, epoch: this.epoch };
    const info = NET_CMD_INFO[f.cmd]!;
    if (!payloadSizeOk(info.req, f.data)) {
      this.ep.stats.badRequestSize++;
      if (h.sizeFatal) throw new NetCorruptionError(this.peer, 'truncated', `${describeFrame(f)}: payload size wrong`);
      this.ep.log(`net ${this.ep.name}: ${describeFrame(f)} from ${this.peer}: payload size wrong, answering EINVAL`);
      this.respond(origin, wireErrorOf('EINVAL'), EMPTY);
      return;
    }
    const delivery: Delivery = this.peerReconnecting && f.seq < this.peerGreetingSeq ? 'maybe-resent' : 'first';
    this.ep.stats.requestsHandled++;
    if (delivery === 'maybe-resent') this.ep.stats.maybeResentHandled++;
    let deferred: DeferredReply | null = null;
    const req: IncomingRequest = {
      cmd: f.cmd as NetCmd, id: f.id, seq: f.seq, data: f.data, rid: this.rid, peer: this.peer, delivery,
      defer: () => {
        assert(deferred === null, 'defer() called twice');
        deferred = this.deferredReply(origin);
        return deferred;
      },
    };
    const finish = (r: HandlerResult): void => {
      if (r === DEFERRED) {
        assert(deferred !== null, `${info.name} handler returned DEFERRED without calling defer()`);
        return;
      }
      assert(deferred === null, `${info.name} handler called defer() and returned an answer`);
      this.respond(origin, 0, r);
    };
    const failed = (e: unknown): void => {
      // A handler that deferred owns its answer: a throw after defer() is our
      // bug, unless it is the peer's fault (a bad payload), which is fatal.
      if (deferred === null || e instanceof NetCorruptionError) this.handlerFailed(origin, e);
      else this.ep.bug(e);
    };
    let r: HandlerResult | Promise<HandlerResult>;
    try {
      r = h.fn(req);
    } catch (e) {
      failed(e);
      return;
    }
    if (r instanceof Uint8Array || r === DEFERRED) {
      try {
        finish(r);
      } catch (e) {
        this.ep.bug(e);
      }
      return;
    }
    const done = Promise.resolve(r).then(finish).catch(failed);
    return h.ordered ? done : undefined;
  }

  private deferredReply(origin: RequestOrigin): DeferredReply {
    let sent = false;
    const once = (): void => {
      assert(!sent, `deferred ${netCmdName(origin.cmd)} reply sent twice`);
      sent = true;
    };
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const conn = this;
    return {
      send(data: Uint8Array): void {
        once();
        conn.respond(origin, 0, data);
      },
      fail(e: FsError): void {
        once();
        conn.respond(origin, wireErrorOf(e.code), EMPTY);
      },
      get stale(): boolean {
        return conn.target(origin) === null;
      },
    };
  }

  private handlerFailed(origin: RequestOrigin, e: unknown): void {
    if (e instanceof NetCorruptionError) {
      // The peer's request was well-sized but invalid, for a command whose
      // handler "returns the error" (PROTOCOL.md 3.3): no answer, shut down.
      this.ep.stats.corruption++;
      this.ep.log(`net ${this.ep.name}: ${netCmdName(origin.cmd)} handler: ${e.message}; shutting the connection down`);
      this.target(origin)?.closeSocket();
    } else if (e instanceof FsError) {
      this.respond(origin, wireErrorOf(e.code), EMPTY);
    } else if (e instanceof CorruptionError) {
      this.ep.log(`net ${this.ep.name}: ${netCmdName(origin.cmd)} handler: ${e.message}; answering EIO`);
      this.respond(origin, NET_ERR_EIO, EMPTY);
    } else if (e instanceof LifecycleError) {
      // Shutting down or fenced: no answer; the peer resends elsewhere.
      this.target(origin)?.closeSocket();
    } else {
      this.ep.bug(e);
    }
  }

  /** The connection a response should go to now, or null to drop it. */
  private target(origin: RequestOrigin): Connection | null {
    let c: Connection = this;
    while (c.destroyed && c.successor !== null) c = c.successor;
    if (c.destroyed || c.epoch !== origin.epoch) return null;
    return c;
  }

  private respond(origin: RequestOrigin, error: number, data: Uint8Array): void {
    const c = this.target(origin);
    if (c === null) {
      this.ep.stats.staleResponses++;
      return;
    }
    if (!(data instanceof Uint8Array)) {
      this.ep.bug(new TypeError(`${netCmdName(origin.cmd)} handler returned ${typeof data}, not a Uint8Array`));
      return;
    }
    if (error === 0) {
      const info = NET_CMD_INFO[origin.cmd]!;
      if (!payloadSizeOk(info.resp, data)) {
        this.ep.bug(new assert.AssertionError({ message: `${info.name} handler returned ${data.length} bytes` }));
        return;
      }
      if (origin.cmd === NET_CMD.FAREWELL) c.farewellSent = true;
    } else {
      this.ep.stats.errorResponsesSent++;
    }
    c.enqueue(c.newMessage('response', origin.cmd, origin.id, NET_FLAG_RESPONSE, error, data, null, null));
  }
}

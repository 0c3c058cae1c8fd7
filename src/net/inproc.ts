/*
 * In-process transport: the client and the server of one daemon talk
 * without kernel sockets (a quorum member that is also the leader mounts
 * through its own server).
 *
 * An InProcNetwork is a registry of listen addresses ("name:port") in one
 * process.  connect() pairs two InProcSockets; bytes sent on one are copied
 * (no shared mutable memory between the ends) and delivered to the other in
 * order, asynchronously, in a later macrotask (setImmediate), never inside
 * the send() call: a handler's response is never processed re-entrantly
 * inside the handler that sent it, and a busy exchange cannot starve I/O.
 * A local close() runs the local onClose handlers at once; the peer sees
 * the bytes already sent and then its close, in the same later delivery.
 *
 * This transport never loses, duplicates or delays: for faults use sim.ts.
 * Connect succeeds or is refused at once (no listener); timeoutMs is not
 * needed.
 *
 * Owner: the main thread.
 */
import assert from 'node:assert/strict';
import { FsError } from '../format/errors.js';
import { SocketHandlers, splitAddr, type NetListener, type NetSocket, type Transport } from './transport.js';

class InProcSocket implements NetSocket {
  readonly peer: string;
  other: InProcSocket | null = null;
  private readonly h = new SocketHandlers();
  private inbox: (Uint8Array | null)[] = [];
  private scheduled = false;

  constructor(peer: string) {
    this.peer = peer;
  }

  get closed(): boolean {
    return this.h.closed;
  }

  send(bytes: Uint8Array): void {
    if (this.h.closed || this.other === null) return;
    this.other.deliver(bytes.slice());
  }

  close(): void {
    if (!this.h.close()) return;
    this.other?.deliver(null);
  }

  onData(fn: (chunk: Uint8Array) => void): void {
    this.h.onData(fn);
  }

  onClose(fn: () => void): void {
    this.h.onClose(fn);
  }

  /** null = the peer closed, after the bytes before it. */
  private deliver(b: Uint8Array | null): void {
    if (this.h.closed) return;
    this.inbox.push(b);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const batch = this.inbox;
      this.inbox = [];
      for (const x of batch) {
        if (x === null) this.h.close();
        else this.h.data(x);
      }
    });
  }
}

export class InProcNetwork implements Transport {
  private readonly listeners = new Map<string, (s: NetSocket) => void>();
  private nextPort = 40000;
  private nextClient = 1;

  listen(addr: string, onAccept: (sock: NetSocket) => void): Promise<NetListener> {
    const { host, port } = splitAddr(addr);
    const bound = `${host}:${port === 0 ? this.nextPort++ : port}`;
    if (this.listeners.has(bound)) return Promise.reject(new FsError('EBUSY', `${bound} in use`));
    this.listeners.set(bound, onAccept);
    return Promise.resolve({
      addr: bound,
      close: () => {
        if (this.listeners.get(bound) === onAccept) this.listeners.delete(bound);
      },
    });
  }

  connect(addr: string, _timeoutMs: number): Promise<NetSocket> {
    const accept = this.listeners.get(addr);
    if (accept === undefined) return Promise.reject(new FsError('ECONNREFUSED', `nothing listens on ${addr}`));
    const local = new InProcSocket(addr);
    const remote = new InProcSocket(`inproc-client-${this.nextClient++}`);
    local.other = remote;
    remote.other = local;
    accept(remote);
    assert(!local.closed);
    return Promise.resolve(local);
  }
}

/*
 * Transport: the byte streams the message layer runs over.
 *
 * A Transport makes and accepts NetSockets; a NetSocket is one reliable,
 * ordered byte stream between two endpoints, like a TCP connection.  The
 * message layer (connection.ts) never sees anything else, so the same
 * protocol code runs over three implementations:
 *   - tcp.ts: node:net, what a real cluster uses (PROTOCOL.md 3.1);
 *   - inproc.ts: a client and the server in one daemon, no kernel sockets;
 *   - sim.ts: a simulated network on a FakeClock that drops, duplicates,
 *     delays and reorders, partitions and crashes, all from one seed.
 *
 * Contract every implementation keeps (the protocol relies on it):
 *   - Bytes sent on a socket arrive in order or not at all: the peer
 *     receives a prefix of what was sent, never a gap.  Chunk boundaries
 *     are arbitrary (the frame reader reassembles).  The simulator may
 *     additionally deliver a duplicate of a whole earlier send, which the
 *     protocol's seq dedup absorbs; it never reorders within a socket,
 *     because receiver dedup (seq <= last received is dropped) would then
 *     turn a reordered message into a lost one that no resend can repair
 *     on the same server.
 *   - send() after close, or after the stream broke, is silently dropped:
 *     the sender learns about the break only through onClose, as with TCP.
 *   - onClose handlers run exactly once per socket: synchronously inside a
 *     local close(), or later when the peer or the network closes it.  No
 *     onData handler runs after onClose.
 *   - Data arriving before an onData handler is registered is buffered and
 *     handed to the first handler.
 *   - connect() resolves with a socket that was open when it resolved, or
 *     rejects (refused, timed out).  Like any socket it may break at any
 *     moment after that.
 *
 * Addresses are strings "host:port" (IPv4 for TCP; endpoint names in the
 * simulator and in-process).
 */

export interface NetSocket {
  /** The remote address, for logs and as the source of CorruptionErrors. */
  readonly peer: string;
  send(bytes: Uint8Array): void;
  /** Idempotent.  Runs the onClose handlers before returning (first call). */
  close(): void;
  onData(fn: (chunk: Uint8Array) => void): void;
  onClose(fn: () => void): void;
  readonly closed: boolean;
}

export interface NetListener {
  /** The bound address (with the real port when listening on port 0). */
  readonly addr: string;
  /** Stop accepting.  Sockets already accepted stay open. */
  close(): void;
}

export interface Transport {
  /** Rejects when nothing accepts within timeoutMs (PROTOCOL.md 3.1: 1 s). */
  connect(addr: string, timeoutMs: number): Promise<NetSocket>;
  listen(addr: string, onAccept: (sock: NetSocket) => void): Promise<NetListener>;
}

export function splitAddr(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(':');
  const port = i < 0 ? NaN : Number(addr.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`bad address "${addr}", expected host:port`);
  }
  return { host: addr.slice(0, i), port };
}

/**
 * Shared bookkeeping for socket implementations: handler lists, the
 * buffer before the first onData, the run-once close.
 */
export class SocketHandlers {
  private dataFns: ((chunk: Uint8Array) => void)[] = [];
  private closeFns: (() => void)[] = [];
  private early: Uint8Array[] = [];
  closed = false;

  onData(fn: (chunk: Uint8Array) => void): void {
    this.dataFns.push(fn);
    if (this.dataFns.length === 1 && this.early.length > 0) {
      const early = this.early;
      this.early = [];
      for (const c of early) if (!this.closed) fn(c);
    }
  }

  onClose(fn: () => void): void {
    if (this.closed) {
      fn();
      return;
    }
    this.closeFns.push(fn);
  }

  data(chunk: Uint8Array): void {
    if (this.closed) return;
    if (this.dataFns.length === 0) {
      this.early.push(chunk);
      return;
    }
    for (const fn of this.dataFns) {
      if (this.closed) return;
      fn(chunk);
    }
  }

  /**
   * The owner vanished (a simulated crash): closed without running any
   * handler, because the code that registered them is dead.
   */
  abandon(): boolean {
    if (this.closed) return false;
    this.closed = true;
    this.early = [];
    this.closeFns = [];
    this.dataFns = [];
    return true;
  }

  /** Runs the close handlers once; returns false if already closed. */
  close(): boolean {
    if (this.closed) return false;
    this.closed = true;
    this.early = [];
    const fns = this.closeFns;
    this.closeFns = [];
    this.dataFns = [];
    for (const fn of fns) fn();
    return true;
  }
}

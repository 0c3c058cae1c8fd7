/*
 * TCP transport over node:net (PROTOCOL.md 3.1), what a real cluster uses.
 *
 * Socket options: TCP_NODELAY and keepalive on every connected and accepted
 * socket, keepalive idle 7 s.  Node 20 exposes neither TCP_KEEPINTVL /
 * TCP_KEEPCNT (the reference's 1 s x 3) nor TCP_USER_TIMEOUT (10 s), so
 * the kernel defaults apply to those: an unresponsive peer is noticed later
 * than the reference's ~10 s.  There is no send timeout.  Rejected: a
 * user-space heartbeat to recover the 10 s bound; it would add a message
 * the protocol does not have.
 *
 * Close semantics of the Transport contract: close() runs the onClose
 * handlers synchronously and then ends the socket gracefully
 * (destroySoon: pending writes are flushed, e.g. an error response sent
 * just before a shutdown), so a later 'close' event from Node is ignored.
 * 'error' events are logged by nobody here: an error is always followed by
 * 'close', which is what the message layer reacts to.
 *
 * A listener error after binding is not caught: it stops the daemon, which
 * is what PROTOCOL.md 3.7 asks ("listener failure stops the server").
 *
 * Backpressure: write() results are ignored; the message layer bounds what
 * it queues (outstanding requests, unacknowledged responses), and a frame
 * is at most 1140 bytes.
 *
 * Owner: the main thread.  The connect timeout uses the injected Clock.
 */
import net from 'node:net';
import { FsError } from '../format/errors.js';
import type { Clock } from '../runtime/clock.js';
import { SocketHandlers, splitAddr, type NetListener, type NetSocket, type Transport } from './transport.js';

export const TCP_KEEPIDLE_MS = 7000;

class TcpSocket implements NetSocket {
  readonly peer: string;
  private readonly s: net.Socket;
  private readonly h = new SocketHandlers();

  constructor(s: net.Socket) {
    this.s = s;
    this.peer = `${s.remoteAddress ?? '?'}:${s.remotePort ?? '?'}`;
    s.setNoDelay(true);
    s.setKeepAlive(true, TCP_KEEPIDLE_MS);
    s.on('data', (b: Buffer) => this.h.data(new Uint8Array(b.buffer, b.byteOffset, b.byteLength)));
    s.on('error', () => {
      // Followed by 'close'.
    });
    s.on('close', () => this.h.close());
  }

  get closed(): boolean {
    return this.h.closed;
  }

  send(bytes: Uint8Array): void {
    if (this.h.closed || this.s.destroyed) return;
    this.s.write(bytes);
  }

  close(): void {
    if (this.h.close()) this.s.destroySoon();
  }

  onData(fn: (chunk: Uint8Array) => void): void {
    this.h.onData(fn);
  }

  onClose(fn: () => void): void {
    this.h.onClose(fn);
  }
}

export class TcpTransport implements Transport {
  private readonly clock: Clock;

  constructor(clock: Clock) {
    this.clock = clock;
  }

  connect(addr: string, timeoutMs: number): Promise<NetSocket> {
    const { host, port } = splitAddr(addr);
    return new Promise((resolve, reject) => {
      const s = net.createConnection({ host, port, family: 4 });
      let settled = false;
      const timer = this.clock.setTimer(timeoutMs, () => {
        if (settled) return;
        settled = true;
        s.destroy();
        reject(new FsError('ETIMEDOUT', `connect to ${addr}`));
      });
      s.once('connect', () => {
        if (settled) return;
        settled = true;
        timer.cancel();
        resolve(new TcpSocket(s));
      });
      s.once('error', (e: NodeJS.ErrnoException) => {
        if (settled) return;
        settled = true;
        timer.cancel();
        s.destroy();
        reject(e.code === 'ECONNREFUSED' ? new FsError('ECONNREFUSED', `connect to ${addr}`) : e);
      });
    });
  }

  listen(addr: string, onAccept: (sock: NetSocket) => void): Promise<NetListener> {
    const { host, port } = splitAddr(addr);
    return new Promise((resolve, reject) => {
      const server = net.createServer({ noDelay: true, keepAlive: true, keepAliveInitialDelay: TCP_KEEPIDLE_MS });
      server.on('connection', (s) => onAccept(new TcpSocket(s)));
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        const a = server.address() as net.AddressInfo;
        resolve({
          addr: `${a.address}:${a.port}`,
          close: () => server.close(),
        });
      });
    });
  }
}

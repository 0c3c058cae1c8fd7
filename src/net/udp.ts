/*
 * UDP datagrams over node:dgram (PROTOCOL.md 2.2), what a real cluster's
 * quorum members use.  IPv4 only, as scoutfs.
 *
 * send() never throws and ignores send errors (the reference sends
 * non-blocking and ignores failures: an unreachable peer is just a lost
 * datagram); failed sends are counted.  Received datagrams are copied out
 * of Node's Buffer only as a view (no copy): the handler owns them.
 *
 * An 'error' event after bind goes to the onError handlers (the quorum
 * worker stops on it); a bind error rejects bind().  close() runs no
 * handler.
 *
 * Owner: the main thread.
 */
import dgram from 'node:dgram';
import { FsError, type ErrnoName } from '../format/errors.js';
import { splitAddr } from './transport.js';
import type { DatagramSocket, DatagramTransport } from './datagram.js';

export interface UdpCounters {
  sent: number;
  sendErrors: number;
  received: number;
}

class UdpSocket implements DatagramSocket {
  readonly addr: string;
  readonly counters: UdpCounters = { sent: 0, sendErrors: 0, received: 0 };
  private readonly s: dgram.Socket;
  private readonly msgFns: ((b: Uint8Array, from: string) => void)[] = [];
  private readonly errFns: ((e: Error) => void)[] = [];
  closed = false;

  constructor(s: dgram.Socket) {
    this.s = s;
    const a = s.address();
    this.addr = `${a.address}:${a.port}`;
    s.on('message', (b: Buffer, rinfo: dgram.RemoteInfo) => {
      if (this.closed) return;
      this.counters.received++;
      const bytes = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
      const from = `${rinfo.address}:${rinfo.port}`;
      for (const fn of this.msgFns) fn(bytes, from);
    });
    s.on('error', (e: Error) => {
      if (this.closed) return;
      for (const fn of this.errFns) fn(e);
    });
  }

  send(to: string, bytes: Uint8Array): void {
    if (this.closed) return;
    let host: string;
    let port: number;
    try {
      ({ host, port } = splitAddr(to));
    } catch {
      this.counters.sendErrors++;
      return;
    }
    this.counters.sent++;
    try {
      this.s.send(bytes, port, host, (err) => {
        if (err) this.counters.sendErrors++;
      });
    } catch {
      // A socket closed under us (ERR_SOCKET_DGRAM_NOT_RUNNING): a lost datagram.
      this.counters.sendErrors++;
    }
  }

  onMessage(fn: (bytes: Uint8Array, from: string) => void): void {
    this.msgFns.push(fn);
  }

  onError(fn: (err: Error) => void): void {
    this.errFns.push(fn);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.msgFns.length = 0;
    this.errFns.length = 0;
    try {
      this.s.close();
    } catch {
      // Already closed by Node after an error.
    }
  }
}

const BIND_ERRNOS: readonly ErrnoName[] = ['EINVAL', 'EACCES', 'EPERM'];

export class UdpTransport implements DatagramTransport {
  bind(addr: string): Promise<DatagramSocket> {
    const { host, port } = splitAddr(addr);
    return new Promise((resolve, reject) => {
      const s = dgram.createSocket({ type: 'udp4' });
      const onErr = (e: NodeJS.ErrnoException): void => {
        s.close();
        const code = e.code as ErrnoName | undefined;
        // EADDRINUSE/EADDRNOTAVAIL have no entry in our errno table: the
        // message carries them; the kind is EBUSY, an address someone has.
        const kind: ErrnoName = code !== undefined && BIND_ERRNOS.includes(code) ? code : 'EBUSY';
        reject(new FsError(kind, `cannot bind UDP ${addr}: ${e.code ?? ''} ${e.message}`));
      };
      s.once('error', onErr);
      s.bind({ port, address: host, exclusive: true }, () => {
        s.off('error', onErr);
        resolve(new UdpSocket(s));
      });
    });
  }
}

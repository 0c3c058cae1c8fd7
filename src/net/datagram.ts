/*
 * Datagrams: the unreliable message service the quorum election runs over
 * (PROTOCOL.md 2.2: one UDP datagram per scoutfs_quorum_message).
 *
 * A DatagramTransport binds DatagramSockets to addresses "a.b.c.d:port";
 * a bound socket sends whole datagrams to other addresses and hands every
 * datagram it receives, with the sender's address, to its onMessage
 * handlers.  Two implementations:
 *   - udp.ts: node:dgram, what a real cluster uses;
 *   - dgramsim.ts: a simulated datagram network inside the seeded
 *     Simulator (src/net/sim.ts), with drops, duplicates, delays that
 *     reorder, partitions and crashed hosts.
 *
 * Contract every implementation keeps (the election relies on nothing
 * more):
 *   - send() is best effort and never throws: a datagram may be lost,
 *     delivered late, delivered twice, or overtaken by a later one.  A
 *     datagram is delivered whole or not at all (never truncated or
 *     merged); its bytes may still be garbage from a confused peer, so the
 *     receiver validates every datagram (src/quorum/message.ts).
 *   - Datagrams arriving before an onMessage handler is registered are
 *     dropped: the socket is bound by the one owner that reads it, which
 *     registers at once.
 *   - onError handlers run when the socket fails after bind (the quorum
 *     worker treats that as fatal, PROTOCOL.md 2.5); no handler runs after
 *     close().
 *   - close() is idempotent; sends after it are dropped silently.
 */

export interface DatagramSocket {
  /** The bound address, "a.b.c.d:port" (the real port when bound to port 0). */
  readonly addr: string;
  /** Best effort; never throws. */
  send(to: string, bytes: Uint8Array): void;
  onMessage(fn: (bytes: Uint8Array, from: string) => void): void;
  onError(fn: (err: Error) => void): void;
  close(): void;
  readonly closed: boolean;
}

export interface DatagramTransport {
  /** Rejects (EADDRINUSE, EADDRNOTAVAIL, ...) when the address cannot be bound. */
  bind(addr: string): Promise<DatagramSocket>;
}

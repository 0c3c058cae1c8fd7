/*
 * The quorum configuration of a volume (PROTOCOL.md 2.1, FORMAT.md 5.3):
 * which of the 15 slots are present, their addresses, and how many votes
 * an election needs.
 *
 * A slot is present when its address family is IPv4.  Each present slot's
 * address is the UDP endpoint of the member mounted with that
 * quorum_slot_nr and the TCP listen address of the server that member runs
 * when elected.
 *
 * verifyQuorumConfig() is what every member checks at setup; any failure is
 * FsError('EINVAL') naming the slot and the reason, so the mount fails with
 * a message that says what to fix.  Unlike the reference (whose unicast
 * test rejects nothing, PROTOCOL.md 2.1), a slot address must really be
 * unicast: not in 0.0.0.0/8, not multicast (224.0.0.0/4), not
 * 255.255.255.255 (the rest of 240.0.0.0/4 is reserved, refused too).
 *
 * votes_needed: 1 when fewer than 3 slots are present, else a majority,
 * floor(n/2) + 1.  With one or two members a single member can elect
 * itself (PROTOCOL.md 2.1 accepts that two members may then both lead and
 * fence each other; election.ts narrows that window, see there).
 *
 * Pure: no I/O.  The super block is read by the caller.
 */
import { FsError } from '../format/errors.js';
import { formatIpv4, type InetAddr } from '../format/common.js';
import { QUORUM_MAX_SLOTS } from '../format/constants.js';
import type { Super } from '../format/super.js';

export const INET_FAMILY_IPV4 = 1;

export interface QuorumConfig {
  /** Present slot numbers, ascending. */
  readonly present: readonly number[];
  /** "a.b.c.d:port" of each present slot (undefined for absent slots). */
  readonly addrs: readonly (string | undefined)[];
  /** Dotted IPv4 address of each present slot, for fence requests. */
  readonly ipv4: readonly (string | undefined)[];
  readonly votesNeeded: number;
}

export function votesNeeded(presentCount: number): number {
  if (presentCount < 3) return 1;
  return Math.floor(presentCount / 2) + 1;
}

export function slotAddr(a: InetAddr): string {
  return `${formatIpv4(a.addr)}:${a.port}`;
}

/** Why addr cannot be a slot's unicast address, or null. */
function notUnicast(addr: number): string | null {
  const first = addr >>> 24;
  if (first === 0) return 'is in 0.0.0.0/8';
  if (first >= 224 && first <= 239) return 'is multicast';
  if (first >= 240) return addr === 0xffffffff ? 'is the broadcast address' : 'is in the reserved 240.0.0.0/4';
  return null;
}

/** The slots of a super block, unchecked (clients reading quorum blocks use this). */
export function quorumConfig(sb: Super): QuorumConfig {
  const present: number[] = [];
  const addrs: (string | undefined)[] = [];
  const ipv4: (string | undefined)[] = [];
  for (let i = 0; i < QUORUM_MAX_SLOTS; i++) {
    const a = sb.qconf.slots[i]!;
    if (a.family === INET_FAMILY_IPV4) {
      present.push(i);
      addrs.push(slotAddr(a));
      ipv4.push(formatIpv4(a.addr));
    } else {
      addrs.push(undefined);
      ipv4.push(undefined);
    }
  }
  return { present, addrs, ipv4, votesNeeded: votesNeeded(present.length) };
}

/**
 * PROTOCOL.md 2.1: what a member checks at setup.  mySlot is its
 * quorum_slot_nr.  Throws FsError('EINVAL') on the first problem.
 */
export function verifyQuorumConfig(sb: Super, mySlot: number): QuorumConfig {
  if (!Number.isInteger(mySlot) || mySlot < 0 || mySlot >= QUORUM_MAX_SLOTS) {
    throw new FsError('EINVAL', `quorum_slot_nr ${mySlot} is not a slot number (0..${QUORUM_MAX_SLOTS - 1})`);
  }
  const cfg = quorumConfig(sb);
  if (cfg.present.length === 0) throw new FsError('EINVAL', 'the super block configures no quorum slot');
  const seen = new Map<string, number>();
  for (const i of cfg.present) {
    const a = sb.qconf.slots[i]!;
    const why = notUnicast(a.addr);
    if (why !== null) throw new FsError('EINVAL', `quorum slot ${i} address ${formatIpv4(a.addr)} ${why}, not a unicast address`);
    if (a.port === 0 || a.port === 65535) throw new FsError('EINVAL', `quorum slot ${i} has port ${a.port}`);
    const addr = cfg.addrs[i]!;
    const other = seen.get(addr);
    if (other !== undefined) throw new FsError('EINVAL', `quorum slots ${other} and ${i} share the address ${addr}`);
    seen.set(addr, i);
  }
  if (cfg.addrs[mySlot] === undefined) {
    const list = cfg.present.map((i) => `${i}: ${cfg.addrs[i]}`).join(', ');
    throw new FsError('EINVAL', `quorum_slot_nr=${mySlot} is not a configured slot (configured: ${list})`);
  }
  return cfg;
}

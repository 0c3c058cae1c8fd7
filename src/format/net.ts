/*
 * Wire layouts of the client/server messaging protocol (PROTOCOL.md 3.2-3.4,
 * FORMAT.md s14): the 40-byte message header, the wire-only payloads, the
 * command numbers and the closed wire error table.  Like every module in
 * src/format/ this is the one place these offsets are written down; the
 * framing, sequencing and resend logic that uses them lives in src/net/.
 *
 * The header, little-endian, followed by data_len payload bytes:
 *
 *   0              8              16             24             32  34 35 36 37  40
 *   +--------------+--------------+--------------+--------------+---+--+--+--+---+
 *   | clock_sync_id| seq          | recv_seq     | id           |len|cm|fl|er|pad|
 *   +--------------+--------------+--------------+--------------+---+--+--+--+---+
 *
 * A frame is exactly 40 + data_len bytes; there is no checksum and no other
 * framing.  What a receiver must reject is decided in src/net/frame.ts.
 *
 * The wire error table (PROTOCOL.md 3.4 and the preamble's rule).  The
 * reference has six codes: 0 none, 1 ENOENT, 2 ENOMEM, 3 EIO, 4 ENOSPC,
 * 5 EINVAL, 6 the UNKNOWN sentinel, and a sender that meets any other errno
 * fails to send the response at all (13.9).  We keep codes 0..5 and extend
 * the table with the other errnos our server handlers may return (EEXIST,
 * ESTALE, ENOTEMPTY, EROFS, EAGAIN, EBUSY, ETIMEDOUT, ESHUTDOWN); the
 * sentinel moves to the end.  Any errno outside the table is sent as EIO,
 * and the response is always sent.  A received code at or above the
 * sentinel is a fatal invalid message.  Consequence: a reference kernel
 * peer would treat our codes >= 6 as fatal, so this table is not
 * wire-compatible with a reference kmod for those errnos; both ends of our
 * protocol are this code base, so that is accepted.
 *
 * Errnos named in PROTOCOL.md but missing from ERRNO in errors.ts
 * (ENOTCONN, ECONNABORTED, EMSGSIZE) are local conditions that never cross
 * the wire; they are listed in NET_LOCAL_ERRNO below for reference and are
 * reported through other means (a false return, LifecycleError, or a
 * CorruptionError for a wrongly sized response), see src/net/.
 *
 * Payload codecs decode to plain objects with the C field names, like
 * logtrees.ts.  Decoders trust their length argument: the size checks of
 * PROTOCOL.md 3.3 are done against NET_CMD_INFO before decoding.
 */
import assert from 'node:assert/strict';
import { layout, getU16, setU16, getU64, setU64, getU8, setU8 } from './layout.js';
import { KEY, readKey, writeKey, type Key } from './key.js';
import { BTREE_ROOT, readBtreeRoot, writeBtreeRoot, type BtreeRoot } from './common.js';
import { LOG_TREES } from './logtrees.js';
import { SRCH_COMPACT } from './srch.js';
import { LOG_MERGE_REQUEST, LOG_MERGE_COMPLETE } from './logmerge.js';
import { VOLUME_OPTIONS } from './super.js';
import { ERRNO, type ErrnoName } from './errors.js';
import { UUID_BYTES } from './constants.js';

/* ---- header ------------------------------------------------------------- */

export const NET_HEADER = layout('net_header', 40, [
  ['clock_sync_id', 8],
  ['seq', 8],
  ['recv_seq', 8],
  ['id', 8],
  ['data_len', 2],
  ['cmd', 1],
  ['flags', 1],
  ['error', 1],
  ['pad', 3],
]);
export const NET_HEADER_SIZE = NET_HEADER.size;
export const NET_MAX_DATA_LEN = 1100;
export const NET_MAX_FRAME = NET_HEADER_SIZE + NET_MAX_DATA_LEN;
export const NET_FLAG_RESPONSE = 1;
/** Every flag bit a receiver accepts. */
export const NET_FLAGS_KNOWN = NET_FLAG_RESPONSE;

export interface NetHeader {
  clock_sync_id: bigint;
  seq: bigint;
  recv_seq: bigint;
  id: bigint;
  data_len: number;
  cmd: number;
  flags: number;
  error: number;
}

const H = NET_HEADER;

export function readNetHeader(b: Uint8Array, off = 0): NetHeader {
  return {
    clock_sync_id: getU64(b, off + H.o('clock_sync_id')),
    seq: getU64(b, off + H.o('seq')),
    recv_seq: getU64(b, off + H.o('recv_seq')),
    id: getU64(b, off + H.o('id')),
    data_len: getU16(b, off + H.o('data_len')),
    cmd: getU8(b, off + H.o('cmd')),
    flags: getU8(b, off + H.o('flags')),
    error: getU8(b, off + H.o('error')),
  };
}

/** Writes every header byte, pad included (as zero). */
export function writeNetHeader(b: Uint8Array, off: number, h: NetHeader): void {
  setU64(b, off + H.o('clock_sync_id'), h.clock_sync_id);
  setU64(b, off + H.o('seq'), h.seq);
  setU64(b, off + H.o('recv_seq'), h.recv_seq);
  setU64(b, off + H.o('id'), h.id);
  setU16(b, off + H.o('data_len'), h.data_len);
  setU8(b, off + H.o('cmd'), h.cmd);
  setU8(b, off + H.o('flags'), h.flags);
  setU8(b, off + H.o('error'), h.error);
  b.fill(0, off + H.o('pad'), off + H.size);
}

/* ---- commands (PROTOCOL.md 3.3) ----------------------------------------- */

export const NET_CMD = {
  GREETING: 0,
  ALLOC_INODES: 1,
  GET_LOG_TREES: 2,
  COMMIT_LOG_TREES: 3,
  SYNC_LOG_TREES: 4,
  GET_ROOTS: 5,
  GET_LAST_SEQ: 6,
  LOCK: 7,
  LOCK_RECOVER: 8,
  SRCH_GET_COMPACT: 9,
  SRCH_COMMIT_COMPACT: 10,
  GET_LOG_MERGE: 11,
  COMMIT_LOG_MERGE: 12,
  OPEN_INO_MAP: 13,
  GET_VOLOPT: 14,
  SET_VOLOPT: 15,
  CLEAR_VOLOPT: 16,
  RESIZE_DEVICES: 17,
  STATFS: 18,
  FAREWELL: 19,
  /** Sentinel: a received cmd >= UNKNOWN is fatal. */
  UNKNOWN: 20,
} as const;
export type NetCmdName = Exclude<keyof typeof NET_CMD, 'UNKNOWN'>;
export type NetCmd = (typeof NET_CMD)[NetCmdName];

export function netCmdName(cmd: number): string {
  for (const [k, v] of Object.entries(NET_CMD)) if (v === cmd) return k;
  return `cmd#${cmd}`;
}

/** Who sends the request: c2s = client request handled by the server. */
export type NetDirection = 'c2s' | 's2c' | 'both';

/**
 * Exact payload length, or a validator for the one variable payload
 * (the LOCK_RECOVER response, 8 + 48 * nr bytes).
 */
export type NetPayloadSize = number | ((data: Uint8Array) => boolean);

export interface NetCmdInfo {
  readonly name: NetCmdName;
  readonly dir: NetDirection;
  readonly req: NetPayloadSize;
  readonly resp: NetPayloadSize;
}

/** The table of PROTOCOL.md 3.3, indexed by command number. */
export const NET_CMD_INFO: readonly NetCmdInfo[] = Object.freeze([
  { name: 'GREETING', dir: 'c2s', req: 40, resp: 40 },
  { name: 'ALLOC_INODES', dir: 'c2s', req: 8, resp: 16 },
  { name: 'GET_LOG_TREES', dir: 'c2s', req: 0, resp: LOG_TREES.size },
  { name: 'COMMIT_LOG_TREES', dir: 'c2s', req: LOG_TREES.size, resp: 0 },
  { name: 'SYNC_LOG_TREES', dir: 's2c', req: 0, resp: 0 },
  { name: 'GET_ROOTS', dir: 'c2s', req: 0, resp: 72 },
  { name: 'GET_LAST_SEQ', dir: 'c2s', req: 0, resp: 8 },
  { name: 'LOCK', dir: 'both', req: 48, resp: 48 },
  { name: 'LOCK_RECOVER', dir: 's2c', req: KEY.size, resp: (d: Uint8Array) => decodeNetLockRecover(d) !== null },
  { name: 'SRCH_GET_COMPACT', dir: 'c2s', req: 0, resp: SRCH_COMPACT.size },
  { name: 'SRCH_COMMIT_COMPACT', dir: 'c2s', req: SRCH_COMPACT.size, resp: 0 },
  { name: 'GET_LOG_MERGE', dir: 'c2s', req: 0, resp: LOG_MERGE_REQUEST.size },
  { name: 'COMMIT_LOG_MERGE', dir: 'c2s', req: LOG_MERGE_COMPLETE.size, resp: 0 },
  { name: 'OPEN_INO_MAP', dir: 'both', req: 16, resp: 144 },
  { name: 'GET_VOLOPT', dir: 'c2s', req: 0, resp: VOLUME_OPTIONS.size },
  { name: 'SET_VOLOPT', dir: 'c2s', req: VOLUME_OPTIONS.size, resp: 0 },
  { name: 'CLEAR_VOLOPT', dir: 'c2s', req: VOLUME_OPTIONS.size, resp: 0 },
  { name: 'RESIZE_DEVICES', dir: 'c2s', req: 16, resp: 0 },
  { name: 'STATFS', dir: 'c2s', req: 0, resp: 56 },
  { name: 'FAREWELL', dir: 'c2s', req: 0, resp: 0 },
] satisfies NetCmdInfo[]);

export function payloadSizeOk(size: NetPayloadSize, data: Uint8Array): boolean {
  return typeof size === 'number' ? data.length === size : size(data);
}

/* ---- wire errors (PROTOCOL.md 3.4, extended: see top comment) ----------- */

/** Index = wire code; null = no error.  Codes 0..5 are the reference's. */
export const WIRE_ERRORS: readonly (ErrnoName | null)[] = Object.freeze([
  null, 'ENOENT', 'ENOMEM', 'EIO', 'ENOSPC', 'EINVAL',
  'EEXIST', 'ESTALE', 'ENOTEMPTY', 'EROFS', 'EAGAIN', 'EBUSY', 'ETIMEDOUT', 'ESHUTDOWN',
] satisfies (ErrnoName | null)[]);
/** Sentinel: a received error code >= this is fatal. */
export const NET_ERR_UNKNOWN = WIRE_ERRORS.length;
export const NET_ERR_NONE = 0;
export const NET_ERR_EIO = 3;

/**
 * Errnos PROTOCOL.md names that errors.ts's ERRNO lacks.  They are local
 * conditions only and never cross the wire (not in WIRE_ERRORS).
 */
export const NET_LOCAL_ERRNO = Object.freeze({ ENOTCONN: 107, ECONNABORTED: 103, EMSGSIZE: 90 } as const);

const WIRE_CODE_OF = new Map<ErrnoName, number>();
WIRE_ERRORS.forEach((name, code) => {
  if (name !== null) {
    assert(ERRNO[name] !== undefined, `wire error ${name} is not in ERRNO`);
    assert(!WIRE_CODE_OF.has(name), `wire error ${name} listed twice`);
    WIRE_CODE_OF.set(name, code);
  }
});
assert.equal(WIRE_ERRORS[NET_ERR_EIO], 'EIO');
assert(NET_ERR_UNKNOWN <= 0xff);

/** Wire code to send for an errno: outside the table it is EIO, never lost. */
export function wireErrorOf(name: ErrnoName | null): number {
  if (name === null) return NET_ERR_NONE;
  return WIRE_CODE_OF.get(name) ?? NET_ERR_EIO;
}

/** Errno of a received code; undefined when outside the table (fatal). */
export function errnoOfWire(code: number): ErrnoName | null | undefined {
  if (!Number.isInteger(code) || code < 0 || code >= NET_ERR_UNKNOWN) return undefined;
  return WIRE_ERRORS[code];
}

/* ---- greeting (40) -------------------------------------------------------- */

export const NET_GREETING = layout('net_greeting', 40, [
  ['fsid', 8],
  ['fmt_vers', 8],
  ['server_term', 8],
  ['rid', 8],
  ['flags', 8],
]);
export const GREETING_FLAG_FAREWELL = 1n;
export const GREETING_FLAG_QUORUM = 2n;

export interface NetGreeting { fsid: bigint; fmt_vers: bigint; server_term: bigint; rid: bigint; flags: bigint }

export function encodeNetGreeting(g: NetGreeting): Uint8Array {
  const b = new Uint8Array(NET_GREETING.size);
  for (const f of NET_GREETING.order) setU64(b, NET_GREETING.o(f), g[f as keyof NetGreeting]);
  return b;
}
export function decodeNetGreeting(b: Uint8Array): NetGreeting {
  assert.equal(b.length, NET_GREETING.size);
  const G = NET_GREETING;
  return {
    fsid: getU64(b, G.o('fsid')), fmt_vers: getU64(b, G.o('fmt_vers')), server_term: getU64(b, G.o('server_term')),
    rid: getU64(b, G.o('rid')), flags: getU64(b, G.o('flags')),
  };
}

/* ---- lock (48) and lock recover (8 + 48 n) --------------------------------- */

export const NET_LOCK = layout('net_lock', 48, [
  ['key', KEY],
  ['write_seq', 8],
  ['old_mode', 1],
  ['new_mode', 1],
  ['pad', 6],
]);

export interface NetLock { key: Key; write_seq: bigint; old_mode: number; new_mode: number }

export function writeNetLock(b: Uint8Array, off: number, l: NetLock): void {
  writeKey(b, off + NET_LOCK.o('key'), l.key);
  setU64(b, off + NET_LOCK.o('write_seq'), l.write_seq);
  setU8(b, off + NET_LOCK.o('old_mode'), l.old_mode);
  setU8(b, off + NET_LOCK.o('new_mode'), l.new_mode);
  b.fill(0, off + NET_LOCK.o('pad'), off + NET_LOCK.size);
}
export function readNetLock(b: Uint8Array, off: number): NetLock {
  return {
    key: readKey(b, off + NET_LOCK.o('key')),
    write_seq: getU64(b, off + NET_LOCK.o('write_seq')),
    old_mode: getU8(b, off + NET_LOCK.o('old_mode')),
    new_mode: getU8(b, off + NET_LOCK.o('new_mode')),
  };
}
export function encodeNetLock(l: NetLock): Uint8Array {
  const b = new Uint8Array(NET_LOCK.size);
  writeNetLock(b, 0, l);
  return b;
}

/** The fixed part; nr net_lock entries follow at offset 8. */
export const NET_LOCK_RECOVER = layout('net_lock_recover', 8, [
  ['nr', 2],
  ['pad', 6],
]);
export const NET_LOCK_RECOVER_MAX_NR = 22;

export function netLockRecoverSize(nr: number): number {
  return NET_LOCK_RECOVER.size + NET_LOCK.size * nr;
}
assert(netLockRecoverSize(NET_LOCK_RECOVER_MAX_NR) <= NET_MAX_DATA_LEN);

export function encodeNetLockRecover(locks: readonly NetLock[]): Uint8Array {
  assert(locks.length <= NET_LOCK_RECOVER_MAX_NR, `lock recover batch of ${locks.length}`);
  const b = new Uint8Array(netLockRecoverSize(locks.length));
  setU16(b, NET_LOCK_RECOVER.o('nr'), locks.length);
  locks.forEach((l, i) => writeNetLock(b, NET_LOCK_RECOVER.size + i * NET_LOCK.size, l));
  return b;
}
/** null when the length does not equal 8 + 48 * nr or nr exceeds 22. */
export function decodeNetLockRecover(b: Uint8Array): NetLock[] | null {
  if (b.length < NET_LOCK_RECOVER.size) return null;
  const nr = getU16(b, NET_LOCK_RECOVER.o('nr'));
  if (nr > NET_LOCK_RECOVER_MAX_NR || b.length !== netLockRecoverSize(nr)) return null;
  const locks: NetLock[] = [];
  for (let i = 0; i < nr; i++) locks.push(readNetLock(b, NET_LOCK_RECOVER.size + i * NET_LOCK.size));
  return locks;
}

/* ---- roots (72), statfs (56) -------------------------------------------- */

export const NET_ROOTS = layout('net_roots', 72, [
  ['fs_root', BTREE_ROOT],
  ['logs_root', BTREE_ROOT],
  ['srch_root', BTREE_ROOT],
]);
export interface NetRoots { fs_root: BtreeRoot; logs_root: BtreeRoot; srch_root: BtreeRoot }

export function encodeNetRoots(r: NetRoots): Uint8Array {
  const b = new Uint8Array(NET_ROOTS.size);
  writeBtreeRoot(b, NET_ROOTS.o('fs_root'), r.fs_root);
  writeBtreeRoot(b, NET_ROOTS.o('logs_root'), r.logs_root);
  writeBtreeRoot(b, NET_ROOTS.o('srch_root'), r.srch_root);
  return b;
}
export function decodeNetRoots(b: Uint8Array): NetRoots {
  assert.equal(b.length, NET_ROOTS.size);
  return {
    fs_root: readBtreeRoot(b, NET_ROOTS.o('fs_root')),
    logs_root: readBtreeRoot(b, NET_ROOTS.o('logs_root')),
    srch_root: readBtreeRoot(b, NET_ROOTS.o('srch_root')),
  };
}

export const NET_STATFS = layout('net_statfs', 56, [
  ['uuid', UUID_BYTES],
  ['free_meta_blocks', 8],
  ['total_meta_blocks', 8],
  ['free_data_blocks', 8],
  ['total_data_blocks', 8],
  ['inode_count', 8],
]);
export interface NetStatfs {
  uuid: Uint8Array;
  free_meta_blocks: bigint;
  total_meta_blocks: bigint;
  free_data_blocks: bigint;
  total_data_blocks: bigint;
  inode_count: bigint;
}
const STATFS_U64S = ['free_meta_blocks', 'total_meta_blocks', 'free_data_blocks', 'total_data_blocks', 'inode_count'] as const;

export function encodeNetStatfs(s: NetStatfs): Uint8Array {
  assert.equal(s.uuid.length, UUID_BYTES);
  const b = new Uint8Array(NET_STATFS.size);
  b.set(s.uuid, NET_STATFS.o('uuid'));
  for (const f of STATFS_U64S) setU64(b, NET_STATFS.o(f), s[f]);
  return b;
}
export function decodeNetStatfs(b: Uint8Array): NetStatfs {
  assert.equal(b.length, NET_STATFS.size);
  const s = { uuid: b.slice(NET_STATFS.o('uuid'), NET_STATFS.o('uuid') + UUID_BYTES) } as Partial<NetStatfs>;
  for (const f of STATFS_U64S) s[f] = getU64(b, NET_STATFS.o(f));
  return s as NetStatfs;
}

/* ---- inode alloc (16), resize devices (16), single u64 payloads ---------- */

export const NET_INODE_ALLOC = layout('net_inode_alloc', 16, [
  ['ino', 8],
  ['nr', 8],
]);
export interface NetInodeAlloc { ino: bigint; nr: bigint }

export function encodeNetInodeAlloc(a: NetInodeAlloc): Uint8Array {
  const b = new Uint8Array(NET_INODE_ALLOC.size);
  setU64(b, NET_INODE_ALLOC.o('ino'), a.ino);
  setU64(b, NET_INODE_ALLOC.o('nr'), a.nr);
  return b;
}
export function decodeNetInodeAlloc(b: Uint8Array): NetInodeAlloc {
  assert.equal(b.length, NET_INODE_ALLOC.size);
  return { ino: getU64(b, NET_INODE_ALLOC.o('ino')), nr: getU64(b, NET_INODE_ALLOC.o('nr')) };
}

export const NET_RESIZE_DEVICES = layout('net_resize_devices', 16, [
  ['new_total_meta_blocks', 8],
  ['new_total_data_blocks', 8],
]);
export interface NetResizeDevices { new_total_meta_blocks: bigint; new_total_data_blocks: bigint }

export function encodeNetResizeDevices(r: NetResizeDevices): Uint8Array {
  const b = new Uint8Array(NET_RESIZE_DEVICES.size);
  setU64(b, NET_RESIZE_DEVICES.o('new_total_meta_blocks'), r.new_total_meta_blocks);
  setU64(b, NET_RESIZE_DEVICES.o('new_total_data_blocks'), r.new_total_data_blocks);
  return b;
}
export function decodeNetResizeDevices(b: Uint8Array): NetResizeDevices {
  assert.equal(b.length, NET_RESIZE_DEVICES.size);
  return {
    new_total_meta_blocks: getU64(b, NET_RESIZE_DEVICES.o('new_total_meta_blocks')),
    new_total_data_blocks: getU64(b, NET_RESIZE_DEVICES.o('new_total_data_blocks')),
  };
}

/** ALLOC_INODES request (count) and GET_LAST_SEQ response (seq): one u64. */
export function encodeNetU64(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  setU64(b, 0, v);
  return b;
}
export function decodeNetU64(b: Uint8Array): bigint {
  assert.equal(b.length, 8);
  return getU64(b, 0);
}

/* ---- open inode map (args 16, map 144) ----------------------------------- */

export const OPEN_INO_MAP_ARGS = layout('open_ino_map_args', 16, [
  ['group_nr', 8],
  ['req_id', 8],
]);
export const OPEN_INO_MAP_WORDS = 16;
export const OPEN_INO_MAP = layout('open_ino_map', 144, [
  ['args', OPEN_INO_MAP_ARGS],
  ['bits', 8, OPEN_INO_MAP_WORDS],
]);

export interface OpenInoMapArgs { group_nr: bigint; req_id: bigint }
/** bits[w] bit i = inode group_nr * 1024 + w * 64 + i. */
export interface OpenInoMap { args: OpenInoMapArgs; bits: bigint[] }

export function encodeOpenInoMapArgs(a: OpenInoMapArgs): Uint8Array {
  const b = new Uint8Array(OPEN_INO_MAP_ARGS.size);
  setU64(b, OPEN_INO_MAP_ARGS.o('group_nr'), a.group_nr);
  setU64(b, OPEN_INO_MAP_ARGS.o('req_id'), a.req_id);
  return b;
}
export function decodeOpenInoMapArgs(b: Uint8Array, off = 0): OpenInoMapArgs {
  return { group_nr: getU64(b, off + OPEN_INO_MAP_ARGS.o('group_nr')), req_id: getU64(b, off + OPEN_INO_MAP_ARGS.o('req_id')) };
}
export function encodeOpenInoMap(m: OpenInoMap): Uint8Array {
  assert.equal(m.bits.length, OPEN_INO_MAP_WORDS);
  const b = new Uint8Array(OPEN_INO_MAP.size);
  b.set(encodeOpenInoMapArgs(m.args), OPEN_INO_MAP.o('args'));
  m.bits.forEach((w, i) => setU64(b, OPEN_INO_MAP.o('bits') + 8 * i, w));
  return b;
}
export function decodeOpenInoMap(b: Uint8Array): OpenInoMap {
  assert.equal(b.length, OPEN_INO_MAP.size);
  const bits: bigint[] = [];
  for (let i = 0; i < OPEN_INO_MAP_WORDS; i++) bits.push(getU64(b, OPEN_INO_MAP.o('bits') + 8 * i));
  return { args: decodeOpenInoMapArgs(b, OPEN_INO_MAP.o('args')), bits };
}

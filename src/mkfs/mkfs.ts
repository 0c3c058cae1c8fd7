/*
 * mkfs: what `scoutfs mkfs` writes (FORMAT.md 13), byte for byte.
 *
 * planMkfs() is pure: from device sizes, options, random bytes and a time
 * it computes every block to write and the summary to print.  runMkfs()
 * checks the devices (readable, distinct, large enough, not already a
 * filesystem unless forced) BEFORE writing anything, then writes the
 * metadata blocks and quorum blocks, then the data device super (flushed),
 * then the metadata device super (flushed).  The metadata super is the
 * commit point: a crash before it leaves no valid filesystem, never a
 * half-made one that mounts.
 *
 * Every refusal is an MkfsError with a message for the user, and on any
 * refusal no byte of either device has been written.  Where the reference
 * mkfs's wording is known (the -z minimum, the size warnings, the summary)
 * we print the same words; bin/mkfs.ts prints refusals bare, as it does.
 *
 * Pinned to the real scoutfs mkfs: test/unit/mkfs/reference.test.ts
 * compares every block and hole of our plan with images the reference mkfs
 * wrote (../shared/golden/reference-mkfs).  The one deliberate difference:
 * the reference leaves the 24 unused bytes after each configured quorum
 * slot's IPv4 address (inet_addr bytes 8..31, FORMAT.md 4.2) holding
 * uninitialized stack memory (pointers that differ run to run); we write
 * zeros there.  Readers never look at those bytes.
 *
 * Layout written (LG = 64 KiB units on the metadata device):
 *   LG 2     fs_root leaf: META_SEQ index item of ino 1, root inode
 *   LG 3     server alloc list: blknos 4..1027
 *   LG 1028  data_alloc leaf: [64, last_data]
 *   LG 1029  meta_alloc[0] leaf: first half of [1031, last_meta]
 *   LG 1030  meta_alloc[1] leaf: second half
 *   SM 17-31 quorum blocks, header only
 *   SM 16    super on both devices (META flag only on the metadata copy)
 */
import assert from 'node:assert/strict';
import { setU32, setU64 } from '../format/layout.js';
import { writeHeader, sealBlock } from '../format/block.js';
import { encodeSuper, type Super } from '../format/super.js';
import { encodeQuorumBlock, quorumBlkno } from '../format/quorum.js';
import { encodeInode, freeExtentKeys, indexKey, inodeKey, INDEX_TYPE } from '../format/items.js';
import { buildMkfsLeaf } from './leaf.js';
import {
  MAGIC, LG_BLOCK_SIZE, SM_BLOCK_SIZE, SUPER_BLKNO, QUORUM_BLOCKS, QUORUM_MAX_SLOTS,
  FORMAT_VERSION_MIN, FORMAT_VERSION_MAX, MIN_DEVICE_BYTES, SUPER_FLAG_META_BDEV,
  LOCK_INODE_GROUP_NR, ROOT_INO, DATA_DEV_START_BLKNO,
} from '../format/constants.js';
import { EMPTY_BTREE_ROOT, type InetAddr, type Timespec } from '../format/common.js';
import { formatSize } from './size.js';
import { writeSuperDurably } from '../block/super.js';
import type { BlockDevice } from '../runtime/device.js';

export class MkfsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MkfsError';
  }
}

export interface QuorumSlotArg {
  nr: number;
  addr: number; // host-order IPv4
  port: number;
}

export interface MkfsOptions {
  metaPath: string;
  dataPath: string;
  slots: QuorumSlotArg[];
  force?: boolean;
  allowSmall?: boolean;
  maxMetaBytes?: bigint;
  maxDataBytes?: bigint;
  dataAllocZoneBlocks?: bigint;
  formatVersion?: bigint;
}

export interface MkfsInputs {
  fsid: bigint;
  uuid: Uint8Array; // 16 bytes, v4
  now: Timespec;
}

export interface BlockWrite {
  dev: 'meta' | 'data';
  off: bigint;
  bytes: Uint8Array;
  what: string;
}

export interface MkfsPlan {
  writes: BlockWrite[];
  superBlock: Super;
  summary: string;
  warnings: string[];
}

/** Blocks mkfs places before the meta allocators' extents start. */
const FS_ROOT_BLKNO = 2n;
const LIST_BLKNO = 3n;
const LIST_NR = 1024n;
const DATA_ALLOC_BLKNO = LIST_BLKNO + 1n + LIST_NR; // 1028
const META_ALLOC_BLKNOS = [DATA_ALLOC_BLKNO + 1n, DATA_ALLOC_BLKNO + 2n]; // 1029, 1030
const META_START = DATA_ALLOC_BLKNO + 3n; // 1031
/** -z bounds: at least a mount's data allocation target (4 GiB of 4 KiB blocks), at most 1024 zones. */
const DATA_FILL_TARGET_BLOCKS = 1048576n;
const DATA_ALLOC_MAX_ZONES = 1024n;
/** Smallest device sizes for which mkfs arithmetic leaves free space. */
export const MIN_META_BLOCKS = META_START + 2n;
export const MIN_DATA_BLOCKS = DATA_DEV_START_BLKNO + 1n;

export function validateSlots(slots: QuorumSlotArg[]): void {
  if (slots.length === 0) throw new MkfsError('must specify at least one quorum slot with -Q|--quorum-slot');
  const seenNr = new Set<number>();
  const seenAddr = new Set<string>();
  for (const s of slots) {
    if (!Number.isInteger(s.nr) || s.nr < 0 || s.nr >= QUORUM_MAX_SLOTS) {
      throw new MkfsError(`quorum slot nr ${s.nr} out of range, must be 0 to ${QUORUM_MAX_SLOTS - 1}`);
    }
    if (seenNr.has(s.nr)) throw new MkfsError(`quorum slot nr ${s.nr} specified more than once`);
    seenNr.add(s.nr);
    if (s.addr === 0 || s.addr === 0xffffffff) throw new MkfsError(`quorum slot ${s.nr} has invalid address`);
    if (!Number.isInteger(s.port) || s.port < 1 || s.port > 65535) {
      throw new MkfsError(`quorum slot ${s.nr} port ${s.port} out of range, must be 1 to 65535`);
    }
    const ap = `${s.addr}:${s.port}`;
    if (seenAddr.has(ap)) throw new MkfsError(`quorum slot ${s.nr} address and port duplicate another slot`);
    seenAddr.add(ap);
  }
}

function ceilDiv(a: bigint, b: bigint): bigint {
  return (a + b - 1n) / b;
}

/** The pure part: every block and the printed summary. */
export function planMkfs(
  opts: MkfsOptions,
  metaBytes: bigint,
  dataBytes: bigint,
  inputs: MkfsInputs,
): MkfsPlan {
  validateSlots(opts.slots);
  const fmtVers = opts.formatVersion ?? FORMAT_VERSION_MAX;
  if (fmtVers < FORMAT_VERSION_MIN || fmtVers > FORMAT_VERSION_MAX) {
    throw new MkfsError(`format version ${fmtVers} out of range, must be ${FORMAT_VERSION_MIN} to ${FORMAT_VERSION_MAX}`);
  }
  assert(inputs.uuid.length === 16);
  const warnings: string[] = [];

  let sm = metaBytes;
  if (opts.maxMetaBytes !== undefined) {
    if (opts.maxMetaBytes > metaBytes) {
      throw new MkfsError(`meta size ${formatSize(opts.maxMetaBytes)} larger than device size ${formatSize(metaBytes)}`);
    }
    sm = opts.maxMetaBytes;
  }
  let sd = dataBytes;
  if (opts.maxDataBytes !== undefined) {
    if (opts.maxDataBytes > dataBytes) {
      throw new MkfsError(`data size ${formatSize(opts.maxDataBytes)} larger than device size ${formatSize(dataBytes)}`);
    }
    sd = opts.maxDataBytes;
  }
  sm -= sm % BigInt(LG_BLOCK_SIZE);
  sd -= sd % BigInt(SM_BLOCK_SIZE);
  for (const [bytes, what] of [[sm, 'meta'], [sd, 'data']] as const) {
    if (bytes < MIN_DEVICE_BYTES) {
      const msg = `${formatSize(bytes, '')} file too small for min ${formatSize(MIN_DEVICE_BYTES, '')} ${what} device`;
      if (!opts.allowSmall) throw new MkfsError(msg);
      warnings.push(`${msg}, allowing with -A`);
    }
  }
  // After the size warnings, as the reference prints them (its mkfs.out of -m 3G -d 12G on 4G/16G images).
  if (sm < metaBytes) warnings.push(`Limiting use of ${formatSize(metaBytes, '')} meta device to ${formatSize(sm, '')}`);
  if (sd < dataBytes) warnings.push(`Limiting use of ${formatSize(dataBytes, '')} data device to ${formatSize(sd, '')}`);
  const totalMeta = sm / BigInt(LG_BLOCK_SIZE);
  const totalData = sd / BigInt(SM_BLOCK_SIZE);
  if (totalMeta < MIN_META_BLOCKS) {
    throw new MkfsError(`meta device of ${formatSize(sm)} is too small: mkfs needs at least ${formatSize(MIN_META_BLOCKS * BigInt(LG_BLOCK_SIZE))}`);
  }
  if (totalData < MIN_DATA_BLOCKS) {
    throw new MkfsError(`data device of ${formatSize(sd)} is too small: mkfs needs at least ${formatSize(MIN_DATA_BLOCKS * BigInt(SM_BLOCK_SIZE))}`);
  }
  const lastMeta = totalMeta - 1n;
  const lastData = totalData - 1n;

  let volopt = { set_bits: 0n, data_alloc_zone_blocks: 0n };
  if (opts.dataAllocZoneBlocks !== undefined) {
    const z = opts.dataAllocZoneBlocks;
    const failed = `setting data_alloc_zone_blocks to '${z}' failed`;
    if (z < DATA_FILL_TARGET_BLOCKS) throw new MkfsError(`${failed}, must be at least ${DATA_FILL_TARGET_BLOCKS} mount data allocation target blocks`);
    const minZone = ceilDiv(totalData, DATA_ALLOC_MAX_ZONES);
    if (z < minZone) throw new MkfsError(`${failed}, must be at least ${minZone} blocks to divide ${totalData} data blocks into at most ${DATA_ALLOC_MAX_ZONES} zones`);
    if (z > totalData) throw new MkfsError(`${failed}, must be at most the ${totalData} total data blocks`);
    volopt = { set_bits: 1n, data_alloc_zone_blocks: z };
  }

  const { fsid, uuid, now } = inputs;
  const writes: BlockWrite[] = [];
  const lg = (blkno: bigint) => blkno * BigInt(LG_BLOCK_SIZE);
  const ref1 = (blkno: bigint) => ({ blkno, seq: 1n });

  // fs_root leaf: meta_seq index of the root inode, then the root inode.
  const rootInode = encodeInode({
    size: 0n, meta_seq: 0n, data_seq: 0n, data_version: 0n, online_blocks: 0n, offline_blocks: 0n,
    next_readdir_pos: 2n, next_xattr_id: 0n, version: 0n, nlink: 2, uid: 0, gid: 0, mode: 0o040755,
    rdev: 0, flags: 0, atime: now, ctime: now, mtime: now, crtime: { sec: 0n, nsec: 0 },
  });
  writes.push({
    dev: 'meta', off: lg(FS_ROOT_BLKNO), what: 'fs_root leaf',
    bytes: buildMkfsLeaf(fsid, FS_ROOT_BLKNO, 1n, [
      { key: indexKey(INDEX_TYPE.META_SEQ, 0n, ROOT_INO), seq: 1n, val: new Uint8Array(0) },
      { key: inodeKey(ROOT_INO), seq: 1n, val: rootInode },
    ]),
  });

  // Server alloc list: 1024 blocks after the list block itself.
  const list = new Uint8Array(LG_BLOCK_SIZE);
  writeHeader(list, { magic: MAGIC.allocList, fsid, seq: 1n, blkno: LIST_BLKNO });
  setU32(list, 48, 0);
  setU32(list, 52, Number(LIST_NR));
  for (let i = 0n; i < LIST_NR; i++) setU64(list, 56 + 8 * Number(i), LIST_BLKNO + 1n + i);
  sealBlock(list);
  writes.push({ dev: 'meta', off: lg(LIST_BLKNO), what: 'server alloc list', bytes: list });

  // Allocator leaves: each one free extent stored in both keyings.
  const extentLeaf = (blkno: bigint, start: bigint, len: bigint) => {
    const k = freeExtentKeys(start, len);
    return buildMkfsLeaf(fsid, blkno, 1n, [
      { key: k.blkno, seq: 1n, val: new Uint8Array(0) },
      { key: k.order, seq: 1n, val: new Uint8Array(0) },
    ]);
  };
  const dataLen = lastData - DATA_DEV_START_BLKNO + 1n;
  writes.push({ dev: 'meta', off: lg(DATA_ALLOC_BLKNO), what: 'data_alloc leaf', bytes: extentLeaf(DATA_ALLOC_BLKNO, DATA_DEV_START_BLKNO, dataLen) });
  const half = ceilDiv(lastMeta - META_START + 1n, 2n);
  const metaLens = [half, lastMeta - (META_START + half) + 1n];
  writes.push({ dev: 'meta', off: lg(META_ALLOC_BLKNOS[0]!), what: 'meta_alloc[0] leaf', bytes: extentLeaf(META_ALLOC_BLKNOS[0]!, META_START, metaLens[0]!) });
  writes.push({ dev: 'meta', off: lg(META_ALLOC_BLKNOS[1]!), what: 'meta_alloc[1] leaf', bytes: extentLeaf(META_ALLOC_BLKNOS[1]!, META_START + half, metaLens[1]!) });

  // Quorum blocks: header only, for every one of the 15 slots.
  const zeroEvent = { write_nr: 0n, rid: 0n, term: 0n, ts: { sec: 0n, nsec: 0 } };
  for (let i = 0; i < QUORUM_BLOCKS; i++) {
    writes.push({
      dev: 'meta', off: quorumBlkno(i) * BigInt(SM_BLOCK_SIZE), what: `quorum block ${i}`,
      bytes: encodeQuorumBlock({ fsid, seq: 1n, slot: i, write_nr: 0n, events: Array(6).fill(zeroEvent) }),
    });
  }

  const slots: InetAddr[] = Array.from({ length: QUORUM_MAX_SLOTS }, () => ({ family: 0, port: 0, addr: 0 }));
  for (const s of opts.slots) slots[s.nr] = { family: 1, port: s.port, addr: s.addr };
  const emptyList = { ref: { blkno: 0n, seq: 0n }, total_nr: 0n, first_nr: 0, flags: 0 };
  const sb: Super = {
    hdr: { crc: 0, magic: MAGIC.super, fsid, seq: 1n, blkno: SUPER_BLKNO },
    id: 0n,
    fmt_vers: fmtVers,
    flags: 0n,
    uuid,
    seq: 1n,
    next_ino: ((ROOT_INO + LOCK_INODE_GROUP_NR) / LOCK_INODE_GROUP_NR) * LOCK_INODE_GROUP_NR,
    inode_count: 1n,
    total_meta_blocks: totalMeta,
    total_data_blocks: totalData,
    qconf: { version: 0n, slots },
    meta_alloc: [
      { total_len: metaLens[0]!, flags: 0, root: { ref: ref1(META_ALLOC_BLKNOS[0]!), height: 1 } },
      { total_len: metaLens[1]!, flags: 0, root: { ref: ref1(META_ALLOC_BLKNOS[1]!), height: 1 } },
    ],
    data_alloc: { total_len: dataLen, flags: 0, root: { ref: ref1(DATA_ALLOC_BLKNO), height: 1 } },
    server_meta_avail: [{ ref: ref1(LIST_BLKNO), total_nr: LIST_NR, first_nr: Number(LIST_NR), flags: 0 }, emptyList],
    server_meta_freed: [emptyList, emptyList],
    fs_root: { ref: ref1(FS_ROOT_BLKNO), height: 1 },
    logs_root: EMPTY_BTREE_ROOT,
    log_merge: EMPTY_BTREE_ROOT,
    mounted_clients: EMPTY_BTREE_ROOT,
    srch_root: EMPTY_BTREE_ROOT,
    volopt,
  };
  const superOff = SUPER_BLKNO * BigInt(SM_BLOCK_SIZE);
  writes.push({ dev: 'data', off: superOff, what: 'data device super', bytes: encodeSuper(sb) });
  const metaSuper = { ...sb, flags: SUPER_FLAG_META_BDEV };
  writes.push({ dev: 'meta', off: superOff, what: 'meta device super', bytes: encodeSuper(metaSuper) });

  return { writes, superBlock: metaSuper, summary: formatSummary(opts, metaSuper, sm, sd), warnings };
}

export function formatUuid(u: Uint8Array): string {
  const h = Buffer.from(u).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function formatSummary(opts: MkfsOptions, sb: Super, sm: bigint, sd: bigint): string {
  const slotLines = opts.slots
    .slice()
    .sort((a, b) => a.nr - b.nr)
    .map((s) => `${s.nr}: ${[s.addr >>> 24, (s.addr >>> 16) & 0xff, (s.addr >>> 8) & 0xff, s.addr & 0xff].join('.')}:${s.port}`);
  const rows: [string, string][] = [
    ['meta device path:', opts.metaPath],
    ['data device path:', opts.dataPath],
    ['fsid:', sb.hdr.fsid.toString(16)],
    ['uuid:', formatUuid(sb.uuid)],
    ['format version:', sb.fmt_vers.toString()],
    ['64KB metadata blocks:', `${sb.total_meta_blocks} (${formatSize(sm)})`],
    ['4KB data blocks:', `${sb.total_data_blocks} (${formatSize(sd)})`],
    ['quorum slots:', slotLines[0] ?? ''],
  ];
  const width = Math.max(...rows.map(([l]) => l.length)) + 1;
  const lines = ['Created scoutfs filesystem:'];
  for (const [label, value] of rows) lines.push(`  ${label.padEnd(width)}${value}`);
  for (const extra of slotLines.slice(1)) lines.push(`  ${''.padEnd(width)}${extra}`);
  return lines.join('\n') + '\n';
}

/* ---- running mkfs against devices ----------------------------------------- */

/** mkfs writes through the runtime's BlockDevice (files and block devices). */
export type MkfsDevice = BlockDevice;

export interface MkfsDeps {
  open(path: string, readOnly: boolean): Promise<MkfsDevice>;
  /** A string equal for two paths naming the same file or block device. */
  identity(path: string): Promise<string>;
  randomBytes(n: number): Uint8Array;
  now(): Timespec;
}

export function makeInputs(deps: Pick<MkfsDeps, 'randomBytes' | 'now'>): MkfsInputs {
  const f = deps.randomBytes(8);
  let fsid = 0n;
  for (let i = 7; i >= 0; i--) fsid = (fsid << 8n) | BigInt(f[i]!);
  if (fsid === 0n) fsid = 1n;
  const uuid = deps.randomBytes(16).slice();
  uuid[6] = (uuid[6]! & 0x0f) | 0x40;
  uuid[8] = (uuid[8]! & 0x3f) | 0x80;
  const now = deps.now();
  // mkfs time has microsecond precision: nsec = usec * 1000.
  return { fsid, uuid, now: { sec: now.sec, nsec: Math.floor(now.nsec / 1000) * 1000 } };
}

async function openChecked(deps: MkfsDeps, path: string, what: string, readOnly: boolean): Promise<MkfsDevice> {
  try {
    return await deps.open(path, readOnly);
  } catch (e) {
    throw new MkfsError(`opening ${what} device '${path}': ${(e as Error).message}`);
  }
}

function describeSuper(b: Uint8Array): string | null {
  if (b.every((x) => x === 0)) return null;
  const magic = (b[4]! | (b[5]! << 8) | (b[6]! << 16) | (b[7]! << 24)) >>> 0;
  return magic === MAGIC.super ? 'an existing scoutfs super block' : 'non-zero bytes where the super block goes';
}

export interface MkfsResult {
  plan: MkfsPlan;
}

export async function runMkfs(opts: MkfsOptions, deps: MkfsDeps): Promise<MkfsResult> {
  // Cheap argument checks first, before touching any device.
  validateSlots(opts.slots);
  const ids = await Promise.all([opts.metaPath, opts.dataPath].map(async (p) => {
    try {
      return await deps.identity(p);
    } catch (e) {
      throw new MkfsError(`cannot access device '${p}': ${(e as Error).message}`);
    }
  }));
  if (ids[0] === ids[1]) throw new MkfsError(`meta device '${opts.metaPath}' and data device '${opts.dataPath}' are the same device`);

  const superOff = SUPER_BLKNO * BigInt(SM_BLOCK_SIZE);
  const devs: Record<'meta' | 'data', MkfsDevice | null> = { meta: null, data: null };
  try {
    devs.meta = await openChecked(deps, opts.metaPath, 'meta', true);
    devs.data = await openChecked(deps, opts.dataPath, 'data', true);
    for (const which of ['meta', 'data'] as const) {
      const dev = devs[which]!;
      if (dev.sizeBytes < superOff + BigInt(SM_BLOCK_SIZE)) {
        throw new MkfsError(`${which} device '${dev.path}' of ${dev.sizeBytes} bytes is too small to hold a super block`);
      }
      let sb: Uint8Array;
      try {
        sb = await dev.read(superOff, SM_BLOCK_SIZE);
      } catch (e) {
        throw new MkfsError(`reading ${which} device '${dev.path}': ${(e as Error).message}`);
      }
      const found = describeSuper(sb);
      if (found && !opts.force) {
        throw new MkfsError(`${which} device '${dev.path}' contains ${found}; use -f|--force to overwrite it`);
      }
    }
    const plan = planMkfs(opts, devs.meta!.sizeBytes, devs.data!.sizeBytes, makeInputs(deps));
    await devs.meta!.close();
    await devs.data!.close();
    devs.meta = devs.data = null;

    // Everything is validated: now write.
    devs.meta = await openChecked(deps, opts.metaPath, 'meta', false);
    devs.data = await openChecked(deps, opts.dataPath, 'data', false);
    const supers = plan.writes.filter((w) => w.what.endsWith('super'));
    for (const w of plan.writes) if (!supers.includes(w)) await devs[w.dev]!.write(w.off, w.bytes);
    await devs.meta.flush();
    await devs.data.flush();
    // The data device's super first, then the metadata device's: the commit point.
    for (const w of supers) await writeSuperDurably(devs[w.dev]!, w.bytes, true);
    return { plan };
  } finally {
    for (const d of [devs.meta, devs.data]) if (d) await d.close().catch(() => undefined);
  }
}

/*
 * Extended attributes (PROTOCOL.md 8.1, FORMAT.md 8.3-8.5), as scoutfs's
 * xattr.c: each xattr is stored as 896-byte parts of
 * header (value length u16, name length u8, 5 pad) + name + value under
 *
 *   4.ino.2.crc32c(name).id.part
 *
 * where id comes from the inode's next_xattr_id, so names with equal
 * hashes live side by side.  Replacing a value keeps the id.
 *
 * Tags of `scoutfs.` names: `.hide.` names are left out of listxattr;
 * creating or deleting a `.srch.` xattr (also with its inode, see
 * orphan.ts) appends a srch entry (FNV-1a-64 of the name, ino, xattr id)
 * to the transaction's srch log file, which src/srch/search.ts reads;
 * `.totl.<...>.A.B.C` xattrs add (value change, count change) to the total
 * item (3, A, B, C) as an item-cache delta.  Totals are read from committed
 * trees, never through the item cache (src/mount/mount.ts readXattrTotals).
 *
 * Every function here runs inside a unit of work that the caller
 * (src/fs/fs.ts) opened: reading() for lookups, modify() with its hold for
 * changes.
 */
import { CorruptionError, FsError } from '../format/errors.js';
import { FS_TYPE, ZONE, xattrKey, type Inode } from '../format/items.js';
import { srchHash, xattrNameHash } from '../format/hash.js';
import { key } from '../format/key.js';
import { getU16, getU8, setU64, U64_MAX } from '../format/layout.js';
import type { TransHold } from '../trans/trans.js';
import { bytesEq, lockFor, type FsCore } from './core.js';

export const PART_BYTES = 896;
export const XATTR_NAME_MAX = 255;
export const XATTR_VALUE_MAX = 65535;
const XATTR_PREFIXES = ['user.', 'trusted.', 'system.', 'security.', 'scoutfs.'];

const startsWith = (name: Uint8Array, p: string): boolean => Buffer.from(name).subarray(0, p.length).toString('latin1') === p;

/**
 * The tags of a `scoutfs.` xattr name (PROTOCOL.md 8.1): hide., srch. and
 * totl. in any order, each at most once, right after the prefix; `rest` is
 * the length of the name proper after the last tag.  Other names have none.
 */
export function xattrTags(name: Uint8Array): { hide: boolean; srch: boolean; totl: boolean; rest: number } {
  const t = { hide: false, srch: false, totl: false, rest: 0 };
  const s = Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1');
  if (!s.startsWith('scoutfs.')) return t;
  let at = 'scoutfs.'.length;
  for (;;) {
    const tag = (['hide', 'srch', 'totl'] as const).find((x) => !t[x] && s.startsWith(x + '.', at));
    if (tag === undefined) break;
    t[tag] = true;
    at += tag.length + 1;
  }
  t.rest = s.length - at;
  return t;
}

/**
 * A `.totl.` number (FORMAT.md 8.5): 1..23 characters, base detected like
 * C's strtoull (0x/0X hex, a leading 0 octal, else decimal), no sign, no
 * whitespace, within u64.  null when it does not parse.
 */
export function parseTotlNumber(s: string): bigint | null {
  if (s.length < 1 || s.length > 23) return null;
  let digits = s;
  let re = /^[0-9]+$/;
  let prefix = '';
  if (/^0[xX]/.test(s)) {
    digits = s.slice(2);
    re = /^[0-9a-fA-F]+$/;
    prefix = '0x';
  } else if (s.length > 1 && s[0] === '0') {
    digits = s.slice(1);
    re = /^[0-7]+$/;
    prefix = '0o';
  }
  if (!re.test(digits)) return null;
  const v = BigInt(prefix + digits);
  return v > U64_MAX ? null : v;
}

/** The (A, B, C) of a `scoutfs.totl.<...>.A.B.C` name, or null. */
export function totlNameKey(name: Uint8Array): { a: bigint; b: bigint; c: bigint } | null {
  const parts = Buffer.from(name.buffer, name.byteOffset, name.byteLength).toString('latin1').split('.');
  if (parts.length < 5) return null;
  const [a, b, c] = parts.slice(-3).map(parseTotlNumber);
  return a === null || b === null || c === null || a === undefined || b === undefined || c === undefined ? null : { a, b, c };
}

interface FoundXattr {
  id: bigint;
  hash: number;
  parts: number;
  valLen: number;
  nameLen: number;
}

function checkXattrName(name: Uint8Array): void {
  if (name.length === 0 || name.length > XATTR_NAME_MAX) throw new FsError('ERANGE', `xattr name of ${name.length} bytes`);
  const p = XATTR_PREFIXES.find((x) => startsWith(name, x));
  if (p === undefined) throw new FsError('EOPNOTSUPP', 'unknown xattr namespace');
  if (p === 'scoutfs.') {
    const t = xattrTags(name);
    if (!(t.hide || t.srch || t.totl) || t.rest === 0) throw new FsError('EINVAL', 'scoutfs. xattr without a tag');
    if (t.totl && totlNameKey(name) === null) throw new FsError('EINVAL', '.totl. xattr name does not end in three numbers');
  }
}

async function findXattr(c: FsCore, ino: bigint, name: Uint8Array): Promise<FoundXattr | null> {
  const hash = xattrNameHash(name);
  const last = xattrKey(ino, hash, U64_MAX, 0xff);
  let k = xattrKey(ino, hash, 0n, 0);
  for (;;) {
    const it = await c.nextItem(k, last);
    if (it === null) return null;
    const id = it.key.third;
    if (it.key.fourth === 0) {
      const v = it.val;
      if (v.length < 8) throw new CorruptionError('fs items', null, 'structure', `xattr part of inode ${ino} of ${v.length} bytes`);
      const valLen = getU16(v, 0);
      const nameLen = getU8(v, 2);
      if (bytesEq(v.subarray(8, 8 + nameLen), name)) {
        return { id, hash, valLen, nameLen, parts: Math.ceil((8 + nameLen + valLen) / PART_BYTES) };
      }
    }
    if (id === U64_MAX) return null;
    k = xattrKey(ino, hash, id + 1n, 0);
  }
}

async function readXattr(c: FsCore, ino: bigint, x: FoundXattr): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  for (let p = 0; p < x.parts; p++) {
    const v = await c.lookupItem(xattrKey(ino, x.hash, x.id, p));
    if (v === null) throw new CorruptionError('fs items', null, 'structure', `xattr ${x.id} of inode ${ino} misses part ${p}`);
    chunks.push(v);
  }
  const all = Buffer.concat(chunks);
  if (all.length !== 8 + x.nameLen + x.valLen) throw new CorruptionError('fs items', null, 'structure', `xattr ${x.id} of inode ${ino} has ${all.length} bytes`);
  return new Uint8Array(all.subarray(8 + x.nameLen));
}

async function deleteXattrParts(c: FsCore, ino: bigint, x: FoundXattr): Promise<void> {
  for (let p = 0; p < x.parts; p++) await c.deleteItem(xattrKey(ino, x.hash, x.id, p));
}

/** A .srch. xattr was created or deleted: one srch entry (PROTOCOL.md 8.1). */
export async function logSrch(c: FsCore, h: TransHold, ino: bigint, name: Uint8Array, id: bigint): Promise<void> {
  if (!xattrTags(name).srch) return;
  await c.d.trans.srchAdd(h, { hash: srchHash(name), ino, id });
  c.counters.srchEntries++;
}

/**
 * A .totl. xattr changed from `before` to `after` (null: absent): add
 * (after - before, +1/0/-1) to its total item as a delta (FORMAT.md 8.5).
 * Values were checked when they were set; a stored one that does not
 * parse is corruption.
 */
export async function logTotl(c: FsCore, ino: bigint, name: Uint8Array, before: Uint8Array | null, after: Uint8Array | null): Promise<void> {
  if (!xattrTags(name).totl) return;
  const k = totlNameKey(name);
  const num = (v: Uint8Array): bigint => {
    const n = parseTotlNumber(Buffer.from(v).toString('latin1'));
    if (n === null) throw new CorruptionError('fs items', null, 'structure', `.totl. xattr of inode ${ino} holds a value that is not a number`);
    return n;
  };
  if (k === null) throw new CorruptionError('fs items', null, 'structure', `.totl. xattr of inode ${ino} with a bad name`);
  const total = (after === null ? 0n : num(after)) - (before === null ? 0n : num(before));
  const count = (after === null ? 0n : 1n) - (before === null ? 0n : 1n);
  const v = new Uint8Array(16);
  setU64(v, 0, BigInt.asUintN(64, total));
  setU64(v, 8, BigInt.asUintN(64, count));
  const tk = key(ZONE.XATTR_TOTL, k.a, 0, k.b, k.c);
  // Deltas are WRITE_ONLY operations (PROTOCOL.md 5.4): concurrent
  // writers of one total never need to read it.
  await c.items.delta(tk, v, { ...lockFor(tk), mode: 'WRITE_ONLY' });
  c.counters.totlDeltas++;
}

/**
 * The inode is being deleted and this is the first part of one of its
 * xattrs: log the deletion of a .srch. xattr and take a .totl. value out
 * of its total.  A .totl. value (<= 23 bytes) always fits in the first part.
 */
export async function forgetXattrPart(c: FsCore, h: TransHold, ino: bigint, id: bigint, part0: Uint8Array): Promise<void> {
  if (part0.length < 8) return;
  const nameLen = getU8(part0, 2);
  const xname = part0.subarray(8, 8 + nameLen);
  await logSrch(c, h, ino, xname, id);
  if (xattrTags(xname).totl) await logTotl(c, ino, xname, part0.subarray(8 + nameLen, 8 + nameLen + getU16(part0, 0)), null);
}

export async function getxattr(c: FsCore, ino: bigint, name: Uint8Array): Promise<Uint8Array> {
  checkXattrName(name);
  await c.getInode(ino);
  const x = await findXattr(c, ino, name);
  if (x === null) throw new FsError('ENODATA');
  return readXattr(c, ino, x);
}

export async function setxattr(c: FsCore, h: TransHold, ino: bigint, name: Uint8Array, value: Uint8Array, flags: { create?: boolean; replace?: boolean }): Promise<void> {
  checkXattrName(name);
  if (value.length > XATTR_VALUE_MAX) throw new FsError('E2BIG', `xattr value of ${value.length} bytes`);
  const i: Inode = await c.getInode(ino);
  const x = await findXattr(c, ino, name);
  if (x !== null && flags.create === true) throw new FsError('EEXIST');
  if (x === null && flags.replace === true) throw new FsError('ENODATA');
  const totl = xattrTags(name).totl;
  if (totl && parseTotlNumber(Buffer.from(value).toString('latin1')) === null) {
    throw new FsError('EINVAL', '.totl. xattr value is not a number');
  }
  if (totl) await logTotl(c, ino, name, x === null ? null : await readXattr(c, ino, x), value);
  let id: bigint;
  if (x !== null) {
    // Replacing a value logs nothing to srch (8.1).
    await deleteXattrParts(c, ino, x);
    id = x.id;
  } else {
    id = i.next_xattr_id++;
    await logSrch(c, h, ino, name, id);
  }
  const all = new Uint8Array(8 + name.length + value.length);
  all[0] = value.length & 0xff;
  all[1] = value.length >> 8;
  all[2] = name.length;
  all.set(name, 8);
  all.set(value, 8 + name.length);
  const hash = xattrNameHash(name);
  for (let p = 0; p * PART_BYTES < all.length; p++) {
    await c.createItem(xattrKey(ino, hash, id, p), all.slice(p * PART_BYTES, (p + 1) * PART_BYTES));
  }
  i.ctime = c.now();
  await c.putInode(h, ino, i);
}

export async function listxattr(c: FsCore, ino: bigint): Promise<Uint8Array[]> {
  await c.getInode(ino);
  const out: Uint8Array[] = [];
  const last = key(ZONE.FS, ino, FS_TYPE.XATTR, U64_MAX, U64_MAX, 0xff);
  let k = key(ZONE.FS, ino, FS_TYPE.XATTR);
  for (;;) {
    const it = await c.nextItem(k, last);
    if (it === null) break;
    if (it.key.fourth === 0 && it.val.length >= 8) {
      const name = it.val.slice(8, 8 + getU8(it.val, 2));
      if (!xattrTags(name).hide) out.push(name);
    }
    // skip the other parts of this xattr
    if (it.key.third === U64_MAX) {
      if (it.key.second >= 0xffffffffn) break;
      k = key(ZONE.FS, ino, FS_TYPE.XATTR, it.key.second + 1n);
    } else {
      k = key(ZONE.FS, ino, FS_TYPE.XATTR, it.key.second, it.key.third + 1n);
    }
  }
  return out;
}

export async function removexattr(c: FsCore, h: TransHold, ino: bigint, name: Uint8Array): Promise<void> {
  checkXattrName(name);
  const i = await c.getInode(ino);
  const x = await findXattr(c, ino, name);
  if (x === null) throw new FsError('ENODATA');
  if (xattrTags(name).totl) await logTotl(c, ino, name, await readXattr(c, ino, x), null);
  await deleteXattrParts(c, ino, x);
  await logSrch(c, h, ino, name, x.id);
  i.ctime = c.now();
  await c.putInode(h, ino, i);
}

/*
 * test/unit/fuse/memfs.ts is a small in-memory Fs (src/fs/api.ts) used only
 * as a test double for the FUSE adapter and control channel tests.  It is
 * not a model of scoutfs: no transactions, no items, no locks.  It keeps
 * just enough semantics for the adapter's mapping to be checked through a
 * real kernel mount: inodes by number, directories as ordered name maps
 * with positions, open counts keeping unlinked files alive, xattrs, and
 * FsError with the errno names the real Fs raises.  It counts sync() calls
 * and keeps a fake meta_seq index so walk-inodes and stat can be tested.
 * The archive operations that move data (release, stage, setattr_more,
 * move-blocks) are not modelled and answer EOPNOTSUPP: they are tested on
 * the real fs (test/unit/fs/archive.test.ts, test/cluster/archive.test.ts);
 * nothing here ever waits, so data-waiting is always empty.
 */
import type { Attr, Ctx, DataWaitingEntry, DirEntry, Fs, IndexEntry, SeqIndex, SetAttr, StatFs } from '../../../src/fs/api.js';
import { FsError } from '../../../src/format/errors.js';
import { DT } from '../../../src/format/items.js';

const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000;

interface Node {
  attr: Attr;
  data: Uint8Array;
  entries: Map<string, { ino: bigint; pos: bigint }> | null;
  target: Uint8Array | null;
  xattrs: Map<string, Uint8Array>;
  opens: number;
}

const dec = new TextDecoder();
const key = (b: Uint8Array): string => dec.decode(b);

export class MemFs implements Fs {
  readonly rootIno = 1n;
  private readonly nodes = new Map<bigint, Node>();
  private nextIno = 1024n;
  private nextPos = 2n;
  seq = 1n;
  syncs = 0;
  /** Throw this from the next op (to test unexpected-error mapping). */
  bomb: Error | null = null;

  constructor() {
    this.nodes.set(1n, this.newNode(1n, S_IFDIR | 0o755, { uid: 0, gid: 0 }));
    this.nodes.get(1n)!.attr.nlink = 2;
  }

  /** Test inspection: the names stored in directory `dir`. */
  names(dir: bigint): string[] {
    return [...this.dir(dir).keys()].sort();
  }

  /** Test hook: the next inode number handed out. */
  setNextIno(ino: bigint): void {
    this.nextIno = ino;
  }

  /** Test inspection: whether inode `ino` still exists. */
  has(ino: bigint): boolean {
    return this.nodes.has(ino);
  }

  private now(): { sec: bigint; nsec: number } {
    const ms = Date.now();
    return { sec: BigInt(Math.floor(ms / 1000)), nsec: (ms % 1000) * 1e6 };
  }

  private newNode(ino: bigint, mode: number, ctx: Ctx): Node {
    const t = this.now();
    const isDir = (mode & S_IFMT) === S_IFDIR;
    return {
      attr: {
        ino, mode, nlink: isDir ? 2 : 1, uid: ctx.uid, gid: ctx.gid, rdev: 0, size: 0n, blocks: 0n,
        atime: t, mtime: t, ctime: t, crtime: t, meta_seq: this.seq, data_seq: this.seq, data_version: 0n,
        online_blocks: 0n, offline_blocks: 0n,
      },
      data: new Uint8Array(0),
      entries: isDir ? new Map() : null,
      target: null,
      xattrs: new Map(),
      opens: 0,
    };
  }

  private check(): void {
    if (this.bomb) {
      const b = this.bomb;
      this.bomb = null;
      throw b;
    }
  }

  private node(ino: bigint): Node {
    const n = this.nodes.get(ino);
    if (!n) throw new FsError('ENOENT', `ino ${ino}`);
    return n;
  }

  private dir(ino: bigint): Map<string, { ino: bigint; pos: bigint }> {
    const n = this.node(ino);
    if (!n.entries) throw new FsError('ENOTDIR');
    return n.entries;
  }

  private touch(n: Node): void {
    n.attr.meta_seq = this.seq;
    n.attr.ctime = this.now();
  }

  private maybeFree(n: Node): void {
    if (n.attr.nlink <= 0 || (n.entries && n.attr.nlink <= 1)) {
      if (n.opens === 0) this.nodes.delete(n.attr.ino);
    }
  }

  private add(dir: bigint, name: Uint8Array, mode: number, ctx: Ctx): Node {
    this.check();
    const d = this.dir(dir);
    if (name.length > 255) throw new FsError('ENAMETOOLONG');
    if (d.has(key(name))) throw new FsError('EEXIST');
    const ino = this.nextIno++;
    const n = this.newNode(ino, mode, ctx);
    this.nodes.set(ino, n);
    d.set(key(name), { ino, pos: this.nextPos++ });
    if (n.entries) this.node(dir).attr.nlink++;
    this.touch(this.node(dir));
    return n;
  }

  async lookup(dir: bigint, name: Uint8Array): Promise<Attr> {
    this.check();
    const e = this.dir(dir).get(key(name));
    if (!e) throw new FsError('ENOENT');
    return { ...this.node(e.ino).attr };
  }
  async getattr(ino: bigint): Promise<Attr> {
    this.check();
    return { ...this.node(ino).attr };
  }
  async setattr(ino: bigint, set: SetAttr): Promise<Attr> {
    this.check();
    const n = this.node(ino);
    if (set.mode !== undefined) n.attr.mode = set.mode;
    if (set.uid !== undefined) n.attr.uid = set.uid;
    if (set.gid !== undefined) n.attr.gid = set.gid;
    if (set.atime) n.attr.atime = set.atime;
    if (set.mtime) n.attr.mtime = set.mtime;
    if (set.size !== undefined) {
      if (n.entries) throw new FsError('EISDIR');
      const d = new Uint8Array(Number(set.size));
      d.set(n.data.subarray(0, Math.min(n.data.length, d.length)));
      n.data = d;
      n.attr.size = set.size;
      n.attr.data_version++;
    }
    this.touch(n);
    return { ...n.attr };
  }
  async create(dir: bigint, name: Uint8Array, mode: number, ctx: Ctx): Promise<Attr> {
    return { ...this.add(dir, name, S_IFREG | (mode & 0o7777), ctx).attr };
  }
  async mknod(dir: bigint, name: Uint8Array, mode: number, rdev: number, ctx: Ctx): Promise<Attr> {
    const n = this.add(dir, name, mode, ctx);
    n.attr.rdev = rdev;
    return { ...n.attr };
  }
  async mkdir(dir: bigint, name: Uint8Array, mode: number, ctx: Ctx): Promise<Attr> {
    return { ...this.add(dir, name, S_IFDIR | (mode & 0o7777), ctx).attr };
  }
  async unlink(dir: bigint, name: Uint8Array): Promise<void> {
    this.check();
    const d = this.dir(dir);
    const e = d.get(key(name));
    if (!e) throw new FsError('ENOENT');
    const n = this.node(e.ino);
    if (n.entries) throw new FsError('EISDIR');
    d.delete(key(name));
    n.attr.nlink--;
    this.touch(n);
    this.maybeFree(n);
  }
  async rmdir(dir: bigint, name: Uint8Array): Promise<void> {
    this.check();
    const d = this.dir(dir);
    const e = d.get(key(name));
    if (!e) throw new FsError('ENOENT');
    const n = this.node(e.ino);
    if (!n.entries) throw new FsError('ENOTDIR');
    if (n.entries.size > 0) throw new FsError('ENOTEMPTY');
    d.delete(key(name));
    this.node(dir).attr.nlink--;
    this.nodes.delete(e.ino);
  }
  async rename(fromDir: bigint, fromName: Uint8Array, toDir: bigint, toName: Uint8Array): Promise<void> {
    this.check();
    const fd = this.dir(fromDir);
    const td = this.dir(toDir);
    const e = fd.get(key(fromName));
    if (!e) throw new FsError('ENOENT');
    const moving = this.node(e.ino);
    const old = td.get(key(toName));
    if (old) {
      if (old.ino === e.ino) return;
      const o = this.node(old.ino);
      if (o.entries) {
        if (!moving.entries) throw new FsError('EISDIR');
        if (o.entries.size > 0) throw new FsError('ENOTEMPTY');
        this.nodes.delete(old.ino);
        this.node(toDir).attr.nlink--;
      } else {
        if (moving.entries) throw new FsError('ENOTDIR');
        o.attr.nlink--;
        this.maybeFree(o);
      }
    }
    fd.delete(key(fromName));
    td.set(key(toName), { ino: e.ino, pos: this.nextPos++ });
    if (moving.entries && fromDir !== toDir) {
      this.node(fromDir).attr.nlink--;
      this.node(toDir).attr.nlink++;
    }
    this.touch(moving);
  }
  async link(ino: bigint, dir: bigint, name: Uint8Array): Promise<Attr> {
    this.check();
    const n = this.node(ino);
    if (n.entries) throw new FsError('EPERM');
    const d = this.dir(dir);
    if (d.has(key(name))) throw new FsError('EEXIST');
    d.set(key(name), { ino, pos: this.nextPos++ });
    n.attr.nlink++;
    this.touch(n);
    return { ...n.attr };
  }
  async symlink(dir: bigint, name: Uint8Array, target: Uint8Array, ctx: Ctx): Promise<Attr> {
    const n = this.add(dir, name, S_IFLNK | 0o777, ctx);
    n.target = target.slice();
    n.attr.size = BigInt(target.length);
    return { ...n.attr };
  }
  async readlink(ino: bigint): Promise<Uint8Array> {
    this.check();
    const n = this.node(ino);
    if (!n.target) throw new FsError('EINVAL');
    return n.target;
  }
  async open(ino: bigint): Promise<void> {
    this.check();
    this.node(ino).opens++;
  }
  async release(ino: bigint): Promise<void> {
    const n = this.node(ino);
    n.opens--;
    this.maybeFree(n);
  }
  async renameNoreplace(fromDir: bigint, fromName: Uint8Array, toDir: bigint, toName: Uint8Array): Promise<void> {
    if (this.dir(toDir).has(key(toName))) throw new FsError('EEXIST');
    return this.rename(fromDir, fromName, toDir, toName);
  }
  async tmpfile(dir: bigint, mode: number, ctx: Ctx): Promise<Attr> {
    this.dir(dir);
    const ino = this.nextIno++;
    const n = this.newNode(ino, (mode & ~S_IFMT) | S_IFREG, ctx);
    n.attr.nlink = 0;
    n.opens = 1;
    this.nodes.set(ino, n);
    return { ...n.attr };
  }
  async parentOf(dir: bigint): Promise<bigint | null> {
    if (dir === this.rootIno) return null;
    for (const [ino, n] of this.nodes) if (n.entries !== null && [...n.entries.values()].some((e) => e.ino === dir)) return ino;
    return null;
  }
  async fallocate(ino: bigint, off: bigint, len: bigint, mode: number): Promise<void> {
    if ((mode & ~1) !== 0) throw new FsError('EOPNOTSUPP');
    const n = this.node(ino);
    const end = Number(off + len);
    if (end > n.data.length) {
      const d = new Uint8Array(end);
      d.set(n.data);
      n.data = d;
    }
    if ((mode & 1) === 0 && BigInt(end) > n.attr.size) n.attr.size = BigInt(end);
  }
  async seek(ino: bigint, off: bigint, whence: number): Promise<bigint> {
    // No holes here: all data up to the size.
    const n = this.node(ino);
    if (off >= n.attr.size) throw new FsError('ENXIO');
    return whence === 3 ? off : n.attr.size;
  }
  async read(ino: bigint, off: bigint, len: number): Promise<Uint8Array> {
    this.check();
    const n = this.node(ino);
    if (n.entries) throw new FsError('EISDIR');
    return n.data.slice(Number(off), Number(off) + len);
  }
  async write(ino: bigint, off: bigint, data: Uint8Array): Promise<number> {
    this.check();
    const n = this.node(ino);
    const end = Number(off) + data.length;
    if (end > n.data.length) {
      const d = new Uint8Array(end);
      d.set(n.data);
      n.data = d;
      n.attr.size = BigInt(end);
    }
    n.data.set(data, Number(off));
    n.attr.data_version++;
    n.attr.data_seq = this.seq;
    n.attr.blocks = BigInt(Math.ceil(n.data.length / 4096) * 8);
    n.attr.online_blocks = BigInt(Math.ceil(n.data.length / 4096));
    this.touch(n);
    return data.length;
  }
  async readdir(dir: bigint, pos: bigint, max: number): Promise<DirEntry[]> {
    this.check();
    const out: DirEntry[] = [];
    for (const [name, e] of [...this.dir(dir)].sort((a, b) => (a[1].pos < b[1].pos ? -1 : 1))) {
      if (e.pos < pos) continue;
      const isDir = this.node(e.ino).entries !== null;
      out.push({ name: new TextEncoder().encode(name), ino: e.ino, type: isDir ? DT.DIR : DT.REG, pos: e.pos });
      if (out.length >= max) break;
    }
    return out;
  }
  async getxattr(ino: bigint, name: Uint8Array): Promise<Uint8Array> {
    this.check();
    const v = this.node(ino).xattrs.get(key(name));
    if (!v) throw new FsError('ENODATA');
    return v;
  }
  async setxattr(ino: bigint, name: Uint8Array, value: Uint8Array, flags: { create?: boolean; replace?: boolean }): Promise<void> {
    this.check();
    const x = this.node(ino).xattrs;
    if (flags.create && x.has(key(name))) throw new FsError('EEXIST');
    if (flags.replace && !x.has(key(name))) throw new FsError('ENODATA');
    x.set(key(name), value.slice());
  }
  async listxattr(ino: bigint): Promise<Uint8Array[]> {
    this.check();
    return [...this.node(ino).xattrs.keys()].map((k) => new TextEncoder().encode(k));
  }
  async removexattr(ino: bigint, name: Uint8Array): Promise<void> {
    this.check();
    if (!this.node(ino).xattrs.delete(key(name))) throw new FsError('ENODATA');
  }
  async statfs(): Promise<StatFs> {
    return {
      blockSize: 4096, totalBlocks: 1000n, freeBlocks: 900n, totalInodes: 1000n, freeInodes: 990n, nameMax: 255,
      totalMetaBlocks: 100n, freeMetaBlocks: 80n, totalDataBlocks: 1000n, freeDataBlocks: 900n,
    };
  }
  async sync(): Promise<void> {
    this.syncs++;
    this.seq++;
  }
  async walkInodes(index: SeqIndex, first: IndexEntry, last: IndexEntry, max: number): Promise<IndexEntry[]> {
    const stable = this.seq - 1n;
    const all = [...this.nodes.values()]
      .filter((n) => index === 'meta_seq' || (n.attr.mode & S_IFMT) === S_IFREG)
      .map((n) => ({ major: index === 'meta_seq' ? n.attr.meta_seq : n.attr.data_seq, ino: n.attr.ino }))
      .filter((e) => e.major <= stable)
      .sort((a, b) => (a.major !== b.major ? (a.major < b.major ? -1 : 1) : a.ino < b.ino ? -1 : a.ino > b.ino ? 1 : 0));
    const cmp = (a: IndexEntry, b: IndexEntry): number =>
      a.major !== b.major ? (a.major < b.major ? -1 : 1) : a.ino < b.ino ? -1 : a.ino > b.ino ? 1 : 0;
    return all.filter((e) => cmp(e, first) >= 0 && cmp(e, last) <= 0).slice(0, max);
  }
  async committedSeq(): Promise<bigint> {
    return this.seq - 1n;
  }
  async releaseData(): Promise<void> {
    throw new FsError('EOPNOTSUPP', 'MemFs does not model release');
  }
  async stageData(): Promise<void> {
    throw new FsError('EOPNOTSUPP', 'MemFs does not model stage');
  }
  async setattrMore(): Promise<Attr> {
    throw new FsError('EOPNOTSUPP', 'MemFs does not model setattr_more');
  }
  async moveBlocks(): Promise<void> {
    throw new FsError('EOPNOTSUPP', 'MemFs does not model move-blocks');
  }
  async dataWaiting(): Promise<DataWaitingEntry[]> {
    return [];
  }
  async dataWaitErr(a: { ino: bigint }): Promise<number> {
    this.node(a.ino);
    return 0;
  }
  async inoPaths(ino: bigint): Promise<Uint8Array[]> {
    this.node(ino);
    const out: Uint8Array[] = [];
    const walk = (dir: bigint, prefix: string): void => {
      for (const [name, e] of this.dir(dir)) {
        if (e.ino === ino) out.push(new TextEncoder().encode(`${prefix}/${name}`));
        if (this.nodes.get(e.ino)?.entries) walk(e.ino, `${prefix}/${name}`);
      }
    };
    if (ino === 1n) return [new TextEncoder().encode('/')];
    walk(1n, '');
    if (out.length === 0) throw new FsError('ENOENT');
    return out;
  }
  async listHiddenXattrs(ino: bigint): Promise<Uint8Array[]> {
    return [...this.node(ino).xattrs.keys()].filter((n) => n.startsWith('scoutfs.hide.')).map((n) => new TextEncoder().encode(n));
  }
  shutdownDataWaits(): void {}
}

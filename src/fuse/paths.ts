/*
 * src/fuse/paths.ts turns the paths the FUSE binding hands us into scoutfs
 * inode numbers.
 *
 * fuse-native wraps the libfuse2 high-level API, which names every object
 * by an absolute path from the mount root ("/a/b/c").  The Fs interface is
 * inode-based like a kernel VFS, so each op first resolves its path one
 * component at a time with Fs.lookup from the root inode.  A cache of
 * path -> ino makes the common case one Map lookup instead of a walk.
 *
 * Invariants:
 *   - The cache only holds paths that a lookup or a create on this mount
 *     resolved; a miss always falls back to a walk, so the cache can only be
 *     stale, never wrong about what to do on a miss.
 *   - Every local namespace change that removes or moves a name (unlink,
 *     rmdir, rename, and rename's replaced target) drops that path and
 *     every path under it before the op answers the kernel.
 *   - A cached ino whose inode is gone (ENOENT from the Fs) drops the entry
 *     and retries the walk once, which repairs most staleness caused by
 *     other mounts.
 *
 * What is left out: names changed by another mount of the cluster do not
 * invalidate this cache (a rename elsewhere keeps the old name resolving
 * here until a local op on that path fails).  The fix is to drop the cache
 * when a cluster lock covering directory entries is invalidated; the hook
 * for that is invalidateAll().  Rejected: no cache at all, because every
 * op (getattr runs before almost every other op) would cost one Fs.lookup
 * per path component.
 *
 * Names are bytes in scoutfs; the binding gives us JS strings decoded as
 * UTF-8, so names that are not valid UTF-8 cannot be reached through FUSE.
 *
 * Everything here runs on the main thread, like every fuse-native handler.
 */
import type { Fs } from '../fs/api.js';
import { FsError } from '../format/errors.js';

const enc = new TextEncoder();

/**
 * A name (or symlink target, or xattr name) from the binding as bytes.  The
 * binding decodes the kernel's bytes as UTF-8, replacing what is not UTF-8
 * with U+FFFD, so a name holding U+FFFD cannot be told from a rewritten one:
 * it is refused with EINVAL rather than stored rewritten.
 */
export function nameBytes(name: string): Uint8Array {
  if (name.includes('\ufffd')) throw new FsError('EINVAL', 'a name that is not UTF-8 cannot cross fuse-native (use transport=kernel)');
  return enc.encode(name);
}

const strict = new TextDecoder('utf-8', { fatal: true });

/** Stored bytes as a string for the binding, or null when they are not UTF-8 (fuse-native cannot carry them). */
export function nameString(b: Uint8Array): string | null {
  try {
    return strict.decode(b);
  } catch {
    return null;
  }
}

/** Split "/a/b" into ["a", "b"]; "/" is []. */
export function components(path: string): string[] {
  return path.split('/').filter((c) => c.length > 0);
}

/** "/a/b/c" -> { parent: "/a/b", name: "c" }; the root has no parent. */
export function splitParent(path: string): { parent: string; name: string } {
  const parts = components(path);
  const name = parts.pop();
  if (name === undefined) throw new FsError('EINVAL', 'the root has no parent');
  return { parent: '/' + parts.join('/'), name };
}

function normalize(path: string): string {
  // FUSE hands us normalized absolute paths: skip the split/join for them.
  if (path.charCodeAt(0) === 47 && !path.includes('//') && (path.length === 1 || path.charCodeAt(path.length - 1) !== 47)) return path;
  return '/' + components(path).join('/');
}

export class PathCache {
  private readonly map = new Map<string, bigint>();
  /** Counters for tests and status. */
  hits = 0;
  misses = 0;

  constructor(private readonly fs: Fs, private readonly maxEntries = 100_000) {}

  get size(): number {
    return this.map.size;
  }

  /** Resolve a path to an ino, walking from the root on a cache miss. */
  async resolve(path: string): Promise<bigint> {
    const p = normalize(path);
    if (p === '/') return this.fs.rootIno;
    const hit = this.map.get(p);
    if (hit !== undefined) {
      this.hits++;
      return hit;
    }
    this.misses++;
    let ino = this.fs.rootIno;
    let at = '';
    for (const c of components(p)) {
      at += '/' + c;
      const cached = this.map.get(at);
      if (cached !== undefined) {
        ino = cached;
        continue;
      }
      const attr = await this.fs.lookup(ino, nameBytes(c));
      ino = attr.ino;
      this.remember(at, ino);
    }
    return ino;
  }

  remember(path: string, ino: bigint): void {
    const p = normalize(path);
    if (p === '/') return;
    // A crude bound: dropping everything is correct, only slower.
    if (this.map.size >= this.maxEntries) this.map.clear();
    this.map.set(p, ino);
  }

  /** Drop `path` and every path below it. */
  forget(path: string): void {
    const p = normalize(path);
    this.map.delete(p);
    const prefix = p === '/' ? '/' : p + '/';
    for (const k of this.map.keys()) if (k.startsWith(prefix)) this.map.delete(k);
  }

  invalidateAll(): void {
    this.map.clear();
  }
}

/*
 * The server's view of a volume and its atomic commit (issue 3 s3,
 * PROTOCOL.md 4.11).
 *
 * A ServerVolume owns the in-memory super block, the block cache images of
 * the metadata device and the server allocator (src/alloc/server.ts).
 * Handlers change btrees whose roots live in the super (fs_root, logs_root,
 * srch_root, ...) through `store`, the active transaction allocator: every
 * changed block is copied on write to a newly allocated blkno with a fresh
 * random seq, and the old blkno goes onto the freed list.
 *
 * commit() is the only way anything becomes durable:
 *
 *   1. the allocator's last changes (refill the idle avail list, empty the
 *      idle freed list: more dirty blocks);
 *   2. write every dirty block (crc sealed last), then FLUSH;
 *   3. write the super (header seq + 1), then FLUSH;
 *   4. swap allocator pairs/roles and open the next transaction.
 *
 * The super is the single commit point.  A crash anywhere before step 3's
 * write lands leaves the previous super, which references only blocks that
 * were never overwritten (copy-on-write, two-phase freeing); a crash after
 * it leaves the new one, whose blocks were all flushed in step 2.  A torn
 * super (partial 4 KiB write) fails its crc and is reported, never used.
 *
 * Failure: an error in steps 1-3 leaves the in-memory state ahead of the
 * disk in ways a retry cannot always repair, so the volume is marked failed
 * and every later call throws; the owner reopens it from disk, which is the
 * last durable state.  open() checks the super as the kernel does at mount
 * (FORMAT.md 17.2): magic, crc, blkno, format version, META flag, sizes.
 *
 * One owner: the server on the main thread.
 */
import assert from 'node:assert/strict';
import { encodeSuper, type Super } from '../format/super.js';
import { FsError } from '../format/errors.js';
import type { BlockDevice } from '../runtime/device.js';
import type { Random } from '../runtime/random.js';
import { BlockCache } from '../block/cache.js';
import { CacheImages } from '../block/images.js';
import { readMetaSuper, writeSuperDurably } from '../block/super.js';
import { ServerAlloc } from '../alloc/server.js';
import type { BlockStore } from '../btree/store.js';

export interface VolumeOptions {
  random: Random;
  /** Block cache slots (64 KiB each); default 1024 = 64 MiB. */
  cacheSlots?: number;
  /** Server list refill thresholds (small test devices lower them). */
  fillLo?: number;
  fillTarget?: number;
  /** Reserved metadata blocks for the role-swap rule. */
  reserved?: () => bigint;
}

/** Kept here for callers that open a volume; the read lives in src/block/super.ts. */
export { readMetaSuper };

export interface VolumeCounters {
  commits: number;
  blocksWritten: number;
  failedCommits: number;
}

export class ServerVolume {
  readonly counters: VolumeCounters = { commits: 0, blocksWritten: 0, failedCommits: 0 };
  private failed: Error | null = null;
  private closed = false;

  private constructor(
    readonly dev: BlockDevice,
    readonly sb: Super,
    readonly cache: BlockCache,
    readonly images: CacheImages,
    readonly alloc: ServerAlloc,
  ) {}

  static async open(dev: BlockDevice, opts: VolumeOptions): Promise<ServerVolume> {
    const sb = await readMetaSuper(dev);
    const cache = new BlockCache({ slots: opts.cacheSlots ?? 1024 });
    try {
      const images = new CacheImages(cache, dev, sb.hdr.fsid, opts.random);
      const alloc = await ServerAlloc.open(images, sb, {
        bounds: { first: 2n, last: sb.total_meta_blocks - 1n },
        fillLo: opts.fillLo, fillTarget: opts.fillTarget, reserved: opts.reserved,
      });
      return new ServerVolume(dev, sb, cache, images, alloc);
    } catch (e) {
      cache.destroy();
      throw e;
    }
  }

  /** The BlockStore of the current server transaction. */
  get store(): BlockStore {
    this.assertUsable();
    return this.alloc.alloc;
  }

  get fsid(): bigint {
    return this.sb.hdr.fsid;
  }

  /** Make every change since the last commit durable, atomically. */
  async commit(): Promise<void> {
    this.assertUsable();
    try {
      await this.alloc.prepareCommit();
      const n = await this.images.writeDirty();
      await this.dev.flush();
      this.sb.hdr.seq += 1n;
      await writeSuperDurably(this.dev, encodeSuper(this.sb), true);
      await this.alloc.afterCommit();
      this.counters.commits++;
      this.counters.blocksWritten += n;
    } catch (e) {
      this.counters.failedCommits++;
      this.failed = e instanceof Error ? e : new Error(String(e));
      throw e;
    }
  }

  /**
   * Mark the volume failed without a commit attempt (added for
   * src/server/commitq.ts): a handler hit an error after its first change,
   * and its half-done in-memory state must never be committed.  Every later
   * call throws EIO; the owner reopens the volume from disk.
   */
  fail(e: Error): void {
    if (this.failed === null) this.failed = e;
  }

  /** The error that failed the volume (a commit's or fail()'s), or null. */
  get failure(): Error | null {
    return this.failed;
  }

  private assertUsable(): void {
    assert(!this.closed, 'volume used after close');
    if (this.failed) throw new FsError('EIO', `volume ${this.dev.path} failed a commit and must be reopened: ${this.failed.message}`);
  }

  /** Drop uncommitted changes and the cache; the device stays open (caller's). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.images.discard();
    this.cache.destroy();
  }
}

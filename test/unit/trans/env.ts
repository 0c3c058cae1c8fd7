/*
 * A mount's transaction stack over an in-memory mkfs'd volume, for the
 * forest, item and trans tests: the fake log trees server on a
 * ServerVolume, and on the client side its own block cache over the same
 * device, the forest reader (roots from the server), the item cache and
 * the Trans, all on a FakeClock.  settle() lets every promise that does
 * not wait for a timer run to completion.
 */
import { mkfsMemory } from '../../../src/mkfs/memory.js';
import { MemoryBlockDevice } from '../../../src/runtime/memdevice.js';
import { SeededRandom } from '../../../src/runtime/random.js';
import { FakeClock } from '../../../src/runtime/clock.js';
import { BlockCache } from '../../../src/block/cache.js';
import { CacheImages } from '../../../src/block/images.js';
import { ForestReader } from '../../../src/forest/reader.js';
import { lockRangeOf } from '../../../src/format/lock.js';
import { ItemCache, type ItemLock, type LockMode } from '../../../src/item/cache.js';
import { Trans, type LogLevel, type TransServer } from '../../../src/trans/trans.js';
import type { Key } from '../../../src/format/key.js';
import { fsck } from '../../../src/fsck/fsck.js';
import { FakeLogTreesServer } from './fakeserver.js';

export const MIB = 1n << 20n;

export function mkfsMem(metaBytes = 4096n * MIB): MemoryBlockDevice {
  return mkfsMemory(metaBytes, 16n * MIB).meta;
}

/** Let every promise chain that does not wait on the FakeClock finish. */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}

export function lockFor(k: Key, mode: LockMode = 'WRITE', writeSeq = 0n): ItemLock {
  const r = lockRangeOf(k);
  return { start: r.start, end: r.end, mode, writeSeq };
}

export interface Mount {
  rid: bigint;
  images: CacheImages;
  cache: BlockCache;
  reader: ForestReader;
  items: ItemCache;
  trans: Trans;
  logs: { level: LogLevel; msg: string }[];
  trace: string[];
}

export interface Env {
  dev: MemoryBlockDevice;
  rnd: SeededRandom;
  clock: FakeClock;
  server: FakeLogTreesServer;
  mount(rid: bigint, opts?: { maxBytes?: number; server?: TransServer; dirtyLimitBytes?: number }): Mount;
  /** fsck of the durable state: every block referenced, free or listed exactly once, every structure valid. */
  assertClean(what: string): Promise<void>;
  close(): void;
}

export async function makeEnv(seed = 1n): Promise<Env> {
  const dev = mkfsMem();
  const rnd = new SeededRandom(seed);
  const clock = new FakeClock();
  const server = await FakeLogTreesServer.open(dev, rnd.fork('server'));
  const caches: BlockCache[] = [];
  const total = server.vol.sb.total_meta_blocks;
  return {
    dev, rnd, clock, server,
    mount(rid, opts = {}) {
      const cache = new BlockCache({ slots: 512, invariants: false });
      caches.push(cache);
      const images = new CacheImages(cache, dev, server.vol.fsid, rnd.fork(`client${rid}`));
      const reader = new ForestReader(images, () => server.getRoots());
      const logs: { level: LogLevel; msg: string }[] = [];
      const trace: string[] = [];
      // eslint-disable-next-line prefer-const
      let trans: Trans;
      const items = new ItemCache({
        reader, transSeq: () => trans.transSeq, held: () => trans.isHeld(), maxBytes: opts.maxBytes ?? 4 << 20,
        warn: (msg) => logs.push({ level: 'warn', msg }),
      });
      trans = new Trans({
        server: opts.server ?? server.client(rid), clock, images, dev, items, rid,
        bounds: { first: 2n, last: total - 1n },
        log: (level, msg) => logs.push({ level, msg }),
        trace: (ev) => trace.push(ev),
        dirtyLimitBytes: opts.dirtyLimitBytes,
      });
      return { rid, images, cache, reader, items, trans, logs, trace };
    },
    async assertClean(what: string) {
      const r = await fsck(dev, null);
      const errs = r.problems.filter((p) => p.check !== 'warning').map((p) => `${p.blkno} ${p.owner} ${p.check} ${p.detail}`);
      if (errs.length > 0) throw new Error(`${what}: fsck problems:\n${errs.slice(0, 20).join('\n')}`);
    },
    close() {
      for (const c of caches) c.destroy();
      server.vol.close();
    },
  };
}

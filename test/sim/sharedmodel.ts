/*
 * The model of the keys several mounts share under cluster locks, and the
 * lock oracle (cluster.ts, sweep.ts).  Not a test file.
 *
 * Versions.  Every write of a shared key (under a WRITE lock, or a
 * WRITE_ONLY lock on a key only its writer uses) appends a version
 * (value, writer, the writer's trans seq at the write) to the key's
 * history, in simulated time order: the locks make that the one true
 * order of writes to a key.  A read (through the item cache under a READ
 * or WRITE lock, or from a mount's model kernel cache) must return the
 * latest version, with one allowance: a version whose writer crashed
 * before the transaction holding it was known committed (its trans seq
 * was still >= the writer's trans seq at the crash) may have been lost,
 * and then the version before it is as good, and so on back to the first
 * certain version (or to "absent" at the beginning).  The first read by
 * another mount that sees one of those candidates settles it: the later
 * uncertain versions were lost and are dropped, the one seen becomes
 * certain.  (A writer's reads of its own versions settle nothing: it sees
 * its cache, committed or not.)
 *
 * A version of a live writer is certain: it cannot be read by another
 * mount before its lock was given up, which commits it first (4.4); and a
 * writer's own reads see its item cache.  That is exactly the property
 * the lock protocol must provide (5.5), and what a grant that skipped an
 * invalidation breaks: the new holder reads the committed roots, which
 * miss the old holder's newest version, or its stale cache or kernel
 * cache serves an old one.
 *
 * The oracle.  Each mount's lock client reports every grant and downgrade
 * (LockClientOptions.observe).  At each grant the oracle compares the new
 * mode with what every other live mount holds of that lock, by those
 * mounts' own view (the mode they may use): two holders are compatible
 * only both READ or both WRITE_ONLY.  A crashed mount holds nothing that
 * matters (fencing guarantees it is dead before its locks are forgotten).
 */
import { formatKey, type Key } from '../../src/format/key.js';
import type { LockModeName } from '../../src/format/lock.js';

export interface SharedWriter {
  readonly name: string;
  readonly rid: bigint;
  readonly dead: boolean;
  /** The writer's trans seq when it crashed (null while alive). */
  readonly crashSeq: bigint | null;
}

interface Version {
  readonly val: string | null;
  readonly writer: SharedWriter;
  readonly transSeq: bigint;
  certain: boolean;
}

export const hexOf = (b: Uint8Array | null): string | null => (b === null ? null : Buffer.from(b).toString('hex'));

export class SharedModel {
  private readonly history = new Map<string, { key: Key; versions: Version[] }>();
  readonly stats = { writes: 0, reads: 0, settledLost: 0 };

  /** Every key written so far. */
  keys(): Key[] {
    return [...this.history.values()].map((h) => h.key);
  }

  write(k: Key, val: Uint8Array | null, writer: SharedWriter, transSeq: bigint): void {
    const id = formatKey(k);
    let h = this.history.get(id);
    if (h === undefined) {
      h = { key: { ...k }, versions: [] };
      this.history.set(id, h);
    }
    h.versions.push({ val: hexOf(val), writer, transSeq, certain: false });
    this.stats.writes++;
  }

  private uncertain(v: Version): boolean {
    if (v.certain) return false;
    const w = v.writer;
    return w.dead && (w.crashSeq === null || v.transSeq >= w.crashSeq);
  }

  /** The values a read of k may return now (newest first). */
  candidates(k: Key): (string | null)[] {
    const h = this.history.get(formatKey(k));
    const out: (string | null)[] = [];
    if (h === undefined) return [null];
    for (let i = h.versions.length - 1; i >= 0; i--) {
      const v = h.versions[i]!;
      out.push(v.val);
      if (!this.uncertain(v)) return out;
    }
    out.push(null);
    return out;
  }

  /**
   * Check a read: null when it returned an allowed value (and the history
   * is settled accordingly), else what is wrong.
   */
  read(k: Key, got: Uint8Array | null, reader: SharedWriter | null, who: string): string | null {
    this.stats.reads++;
    const g = hexOf(got);
    const h = this.history.get(formatKey(k));
    if (h === undefined) return g === null ? null : `${who} read ${formatKey(k)} = ${g.slice(0, 16)}, never written`;
    for (let i = h.versions.length - 1; i >= 0; i--) {
      const v = h.versions[i]!;
      if (v.val === g) {
        // The writer's own reads see its cache, committed or not: they
        // settle nothing.  Another mount reads committed state.
        if (reader === v.writer) return null;
        const lost = h.versions.length - 1 - i;
        if (lost > 0) this.stats.settledLost += lost;
        h.versions.length = i + 1;
        v.certain = true;
        return null;
      }
      if (!this.uncertain(v)) break;
    }
    // Every version back to the beginning may have been lost: absent is allowed.
    if (g === null && h.versions.every((v) => this.uncertain(v))) {
      this.stats.settledLost += h.versions.length;
      h.versions.length = 0;
      return null;
    }
    const want = this.candidates(k).map((c) => (c === null ? 'absent' : c.slice(0, 16)));
    const last = h.versions.at(-1);
    return `${who} read ${formatKey(k)} = ${g === null ? 'absent' : g.slice(0, 16)}, want one of [${want.join(', ')}]` +
      (last === undefined ? '' : ` (latest written by ${last.writer.name} rid ${last.writer.rid.toString(16)} in trans ${last.transSeq})`);
  }
}

/** May two different mounts hold these modes of one lock at once? */
export function compatibleHolders(a: LockModeName, b: LockModeName): boolean {
  return a === 'NULL' || b === 'NULL' || (a === b && (a === 'READ' || a === 'WRITE_ONLY'));
}

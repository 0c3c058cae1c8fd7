/*
 * The write-heavy workload of test/cluster/crash.test.ts, run as its own
 * node process against a mounted scoutfs (the daemon is killed under it),
 * and the model the test replays to check what survived.
 *
 *   node dist/test/cluster/crashload.js MNT TOPDIR SEED JOURNAL
 *
 * It works under MNT/TOPDIR until it is killed: creates files, appends to
 * them in chunks of up to 128 KiB (one FUSE write each), renames files
 * between directories (sometimes over an existing file), unlinks, unlinks
 * files it still holds open and writes to them (orphans), makes
 * directories, and every few operations fsyncs a file or a directory
 * (scoutfs fsync commits the whole filesystem).  The operations come from
 * a SeededRandom(SEED); their timing does not, so a replay repeats the
 * operations but not the exact kill point.
 *
 * The journal (a local file, outside the mount) gets one JSON line per
 * operation BEFORE it starts ({"t":"op","i":N,...}) and one line after
 * each fsync returned ({"t":"durable","i":N}: operations 0..N are
 * durable).  File content is patternAt(tag, offset) (test/cluster/util.ts),
 * so the model needs only each file's tag and size.
 *
 * What a crash may leave (the model's rule, `matchPrefix`): the state after
 * some prefix of the operations, at least every operation up to the last
 * durable one, plus possibly part of the next operation when that is an
 * append (one append is several FUSE writes, each its own transaction).
 * Every other operation is one FUSE request and one transaction, so it is
 * all there or not at all: a rename never leaves a file under both names
 * or neither.  Any error before the kill ends the process with status 1
 * and an {"t":"error"} line.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SeededRandom } from '../../src/runtime/random.js';
import { patternAt } from './util.js';

export type Op =
  | { op: 'mkdir'; path: string }
  | { op: 'create'; path: string; tag: string }
  | { op: 'append'; path: string; len: number }
  | { op: 'rename'; from: string; to: string }
  | { op: 'unlink'; path: string }
  | { op: 'orphan'; path: string; len: number }
  | { op: 'fsync'; path: string };

export interface FileState {
  tag: string;
  size: number;
}

/** The namespace under the top directory: dirs and files by relative path. */
export class FsModel {
  dirs = new Set<string>(['']);
  files = new Map<string, FileState>();

  clone(): FsModel {
    const m = new FsModel();
    m.dirs = new Set(this.dirs);
    for (const [p, f] of this.files) m.files.set(p, { ...f });
    return m;
  }

  apply(o: Op): void {
    switch (o.op) {
      case 'mkdir':
        this.dirs.add(o.path);
        break;
      case 'create':
        this.files.set(o.path, { tag: o.tag, size: 0 });
        break;
      case 'append':
        this.files.get(o.path)!.size += o.len;
        break;
      case 'rename': {
        const f = this.files.get(o.from)!;
        this.files.delete(o.from);
        this.files.set(o.to, f);
        break;
      }
      case 'unlink':
      case 'orphan':
        this.files.delete(o.path);
        break;
      case 'fsync':
        break;
    }
  }
}

export interface Journal {
  ops: Op[];
  /** Index of the last operation known durable, -1 if none. */
  durable: number;
  errors: string[];
}

export function readJournal(text: string): Journal {
  const j: Journal = { ops: [], durable: -1, errors: [] };
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let r: { t: string; i?: number; msg?: string } & Record<string, unknown>;
    try {
      r = JSON.parse(line) as typeof r;
    } catch {
      continue; // a line cut by the kill
    }
    if (r.t === 'op') {
      if (r.i !== j.ops.length) throw new Error(`journal op ${r.i} after ${j.ops.length} ops`);
      const { t: _t, i: _i, ...op } = r;
      j.ops.push(op as unknown as Op);
    } else if (r.t === 'durable') {
      j.durable = Math.max(j.durable, r.i!);
    } else if (r.t === 'error') {
      j.errors.push(String(r.msg));
    }
  }
  return j;
}

/** What was found on the mount: dirs and files (with their bytes) by relative path. */
export interface Found {
  dirs: Set<string>;
  files: Map<string, Buffer>;
}

/** Why `found` is not `m` (with op `next` maybe partly applied), or null when it is. */
export function mismatch(found: Found, m: FsModel, next: Op | undefined): string | null {
  const dirs = [...found.dirs].sort();
  const want = [...m.dirs].sort();
  if (dirs.join('\n') !== want.join('\n')) return `dirs ${JSON.stringify(dirs)} != ${JSON.stringify(want)}`;
  const names = [...found.files.keys()].sort();
  const wantNames = [...m.files.keys()].sort();
  if (names.join('\n') !== wantNames.join('\n')) {
    const extra = names.filter((n) => !m.files.has(n));
    const missing = wantNames.filter((n) => !found.files.has(n));
    return `files: extra ${JSON.stringify(extra)}, missing ${JSON.stringify(missing)}`;
  }
  for (const [p, f] of m.files) {
    const b = found.files.get(p)!;
    const partial = next?.op === 'append' && next.path === p;
    const maxSize = f.size + (partial ? next.len : 0);
    if (b.length < f.size || b.length > maxSize) return `${p}: size ${b.length}, want ${f.size === maxSize ? f.size : `${f.size}..${maxSize}`}`;
    if (!b.equals(patternAt(f.tag, 0, b.length))) {
      const want = patternAt(f.tag, 0, b.length);
      let at = 0;
      while (at < b.length && b[at] === want[at]) at++;
      return `${p}: content differs at byte ${at} of ${b.length}`;
    }
  }
  return null;
}

/**
 * The prefix of the journal the found state is: the largest q in
 * [durable + 1, ops] such that found == ops[0..q) (+ part of ops[q]).
 * Returns q and the model, or the reasons every candidate failed.
 */
export function matchPrefix(found: Found, j: Journal): { q: number; model: FsModel } | { reasons: string[] } {
  const models: FsModel[] = [new FsModel()];
  for (const o of j.ops) {
    const m = models[models.length - 1]!.clone();
    m.apply(o);
    models.push(m);
  }
  const reasons: string[] = [];
  for (let q = j.ops.length; q >= j.durable + 1; q--) {
    const why = mismatch(found, models[q]!, j.ops[q]);
    if (why === null) return { q, model: models[q]! };
    reasons.push(`prefix ${q}: ${why}`);
  }
  return { reasons };
}

/** Everything under dir (relative paths; dirs include ''). */
export function scan(dir: string): Found {
  const found: Found = { dirs: new Set(['']), files: new Map() };
  const walk = (rel: string): void => {
    for (const e of fs.readdirSync(join(dir, rel), { withFileTypes: true })) {
      const p = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) {
        found.dirs.add(p);
        walk(p);
      } else if (e.isFile()) {
        found.files.set(p, fs.readFileSync(join(dir, p)));
      } else {
        throw new Error(`${p}: unexpected file type`);
      }
    }
  };
  walk('');
  return found;
}

/* ---- the workload process ------------------------------------------------------ */

const MAX_FILES = 120;
const MAX_SIZE = 2 << 20;

function workload(mnt: string, top: string, seed: bigint, journalPath: string): void {
  const rng = new SeededRandom(seed);
  const root = join(mnt, top);
  const jfd = fs.openSync(journalPath, 'a');
  const note = (r: object): void => {
    fs.writeSync(jfd, JSON.stringify(r) + '\n');
  };
  const m = new FsModel();
  let i = 0;
  let nextName = 0;
  const pick = <T>(xs: readonly T[]): T => xs[rng.int(xs.length)]!;
  const abs = (p: string): string => join(root, p);
  const start = (o: Op): void => {
    note({ t: 'op', i, ...o });
  };
  fs.mkdirSync(root);

  const appendTo = (fd: number, tag: string, off: number, len: number): void => {
    let done = 0;
    while (done < len) {
      const n = Math.min(len - done, 4096 * (1 + rng.int(32)));
      const b = patternAt(tag, off + done, n);
      let w = 0;
      while (w < n) w += fs.writeSync(fd, b, w, n - w, off + done + w);
      done += n;
    }
  };

  try {
    for (;;) {
      const files = [...m.files.keys()];
      const dirs = [...m.dirs];
      const r = rng.int(100);
      let o: Op;
      if (dirs.length < 3 || (r < 5 && dirs.length < 12)) {
        const parent = pick(dirs);
        o = { op: 'mkdir', path: `${parent === '' ? '' : parent + '/'}d${nextName++}` };
        start(o);
        fs.mkdirSync(abs(o.path));
      } else if (files.length === 0 || (r < 30 && files.length < MAX_FILES)) {
        const parent = pick(dirs);
        const name = `f${nextName++}`;
        o = { op: 'create', path: `${parent === '' ? '' : parent + '/'}${name}`, tag: `${top}-${name}-${seed}` };
        start(o);
        fs.closeSync(fs.openSync(abs(o.path), 'wx'));
      } else if (r < 55) {
        const path = pick(files);
        const f = m.files.get(path)!;
        const len = f.size >= MAX_SIZE ? 0 : 1 + rng.int(256 * 1024);
        o = { op: 'append', path, len };
        start(o);
        const fd = fs.openSync(abs(path), 'r+');
        try {
          appendTo(fd, f.tag, f.size, len);
        } finally {
          fs.closeSync(fd);
        }
      } else if (r < 75) {
        const from = pick(files);
        const dir = pick(dirs);
        const inDir = files.filter((p) => p !== from && p.slice(0, Math.max(0, p.lastIndexOf('/'))) === dir);
        const to = inDir.length > 0 && rng.int(4) === 0 ? pick(inDir) : `${dir === '' ? '' : dir + '/'}f${nextName++}`;
        o = { op: 'rename', from, to };
        start(o);
        fs.renameSync(abs(from), abs(to));
      } else if (r < 82 || files.length >= MAX_FILES) {
        o = { op: 'unlink', path: pick(files) };
        start(o);
        fs.unlinkSync(abs(o.path));
      } else if (r < 85) {
        const path = pick(files);
        const f = m.files.get(path)!;
        o = { op: 'orphan', path, len: 1 + rng.int(200 * 1024) };
        start(o);
        const fd = fs.openSync(abs(path), 'r+');
        try {
          fs.unlinkSync(abs(path));
          appendTo(fd, f.tag, f.size, o.len);
        } finally {
          fs.closeSync(fd);
        }
      } else {
        // fsync a file, or (one time in four) a directory.
        const target = rng.int(4) === 0 ? pick(dirs) : pick(files);
        o = { op: 'fsync', path: target };
        start(o);
        const fd = fs.openSync(abs(target), 'r');
        try {
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        note({ t: 'durable', i });
      }
      m.apply(o);
      i++;
    }
  } catch (e) {
    note({ t: 'error', i, msg: e instanceof Error ? e.message : String(e) });
    process.exitCode = 1;
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const [mnt, top, seed, journal] = process.argv.slice(2);
  if (!mnt || !top || !seed || !journal) {
    process.stderr.write('usage: crashload.js MNT TOPDIR SEED JOURNAL\n');
    process.exit(2);
  }
  workload(mnt, top, BigInt(seed), journal);
}

/*
 * `scoutfs walk-inodes {meta_seq|data_seq} FIRST LAST MNT` or
 * `scoutfs walk-inodes [-p MNT] -- {meta_seq|data_seq} FIRST LAST`
 *
 * Both forms print the same (PROTOCOL.md s0, 9.2).  FIRST and LAST are
 * major[.minor[.ino]] parsed like strtoull (so -1 is all ones; missing
 * parts are 0 for FIRST; for LAST too, as in scoutfs).  The mount is asked
 * to commit first, so `touch; walk-inodes` shows the change.  Entries come
 * in batches of 128, restarting after the last one (ino+1 carrying into
 * major).  Output: a header before entries 0, 25, 50, ... and one line per
 * entry, columns left-justified in widths 20, 20, 10, 20.
 */
import { parse, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = `usage: scoutfs walk-inodes {meta_seq|data_seq} FIRST LAST MOUNT-PATH
       scoutfs walk-inodes [-p MOUNT-PATH] -- {meta_seq|data_seq} FIRST LAST
  FIRST, LAST   major[.minor[.ino]]; -1 means the largest value
`;
const U64_MAX = (1n << 64n) - 1n;

/** strtoull: decimal, optional sign; negative wraps modulo 2^64. */
export function strtoull(s: string): bigint | null {
  const m = /^\s*([+-]?)(\d+)$/.exec(s);
  if (!m) return null;
  let n = BigInt(m[2]!);
  if (n > U64_MAX) n = U64_MAX;
  if (m[1] === '-') n = (-n) & U64_MAX;
  return n;
}

export function parseEntry(s: string): { major: bigint; minor: bigint; ino: bigint } | null {
  const parts = s.split('.');
  if (parts.length > 3) return null;
  const v = parts.map(strtoull);
  if (v.some((x) => x === null)) return null;
  return { major: v[0]!, minor: v[1] ?? 0n, ino: v[2] ?? 0n };
}

function cols(a: string, b: string, c: string, d: string): string {
  return `${a.padEnd(20)} ${b.padEnd(20)} ${c.padEnd(10)} ${d.padEnd(20)}\n`;
}

export function formatEntry(n: number, e: { major: bigint; ino: bigint }): string {
  return (n % 25 === 0 ? cols('#', 'major', 'minor', 'ino') : '') + cols(String(n), String(e.major), '0', String(e.ino));
}

export async function run(args: string[], io: CliIo): Promise<number> {
  // `-1` looks like an option to parseArgs; the quick start writes
  // `walk-inodes meta_seq 0 -1 MNT`, so negative numbers are positionals.
  const opts: string[] = [];
  const pos: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') {
      pos.push(...args.slice(i + 1));
      break;
    }
    if (/^-\d/.test(a) || !a.startsWith('-')) pos.push(a);
    else if ((a === '-p' || a === '--path') && i + 1 < args.length) opts.push(a, args[++i]!);
    else opts.push(a);
  }
  const { values, positionals } = parse([...opts, '--', ...pos], { path: { type: 'string', short: 'p' } }, USAGE);
  let rest = positionals;
  let mntArg = values.path;
  if (rest.length === 4) {
    if (mntArg !== undefined) throw new UsageError('more than three arguments given', USAGE);
    mntArg = rest[3];
    rest = rest.slice(0, 3);
  } else if (rest.length > 4) {
    throw new UsageError('more than three arguments given', USAGE);
  } else if (rest.length < 3) {
    throw new UsageError('need an index, FIRST and LAST', USAGE);
  }
  const [index, firstS, lastS] = rest as [string, string, string];
  if (index !== 'meta_seq' && index !== 'data_seq') throw new UsageError(`unknown index '${index}' (meta_seq or data_seq)`, USAGE);
  const first = parseEntry(firstS);
  const last = parseEntry(lastS);
  if (!first) throw new UsageError(`bad FIRST '${firstS}'`, USAGE);
  if (!last) throw new UsageError(`bad LAST '${lastS}'`, USAGE);
  const { mnt } = await withControl(async () => findMountOf(mntArg ?? process.cwd()));
  await withControl(() => controlRequest(mnt, { op: 'sync' }));
  let at = { major: first.major, ino: first.ino };
  let total = 0;
  for (;;) {
    const r = await withControl(() => controlRequest(mnt, {
      op: 'walk-inodes', index, first: { major: at.major.toString(), ino: at.ino.toString() },
      last: { major: last.major.toString(), ino: last.ino.toString() }, max: 128,
    }));
    const ents = (r.entries as { major: string; ino: string }[]).map((e) => ({ major: BigInt(e.major), ino: BigInt(e.ino) }));
    if (ents.length === 0) break;
    let out = '';
    for (const e of ents) out += formatEntry(total++, e);
    io.out(out);
    const lastEnt = ents[ents.length - 1]!;
    if (lastEnt.ino < U64_MAX) at = { major: lastEnt.major, ino: lastEnt.ino + 1n };
    else if (lastEnt.major < U64_MAX) at = { major: lastEnt.major + 1n, ino: 0n };
    else break;
  }
  return 0;
}

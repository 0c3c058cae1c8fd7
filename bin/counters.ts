/*
 * `scoutfs counters [-p] MNT`: every counter of a mount, one `name value`
 * line each, as scoutfs's `counters` command lists its sysfs counters.
 * The names are the dotted paths of the numeric fields of the mount's
 * status (the control channel's `status` op): the transaction
 * (`trans.*`), the item cache (`items.*`), the filesystem (`fs.*`), the
 * in-process server (`server.*`) and, on a cluster mount, the lock client
 * and lock server (`locks.client.requests`, `locks.client.invalidations`,
 * `locks.server.grants`, `locks.server.recoveredLocks`, ...).  u64 fields
 * arrive as decimal strings and are listed too; text fields are not.
 * Names are padded to one column so the output reads as a table; -t
 * (as the reference's) lays the counters out in columns filling the
 * terminal's width ($COLUMNS, else 80, when not a terminal).  The archive
 * interface's waits are `fs.dataWaits.*` (waits, wakes, errors,
 * interrupts, shutdowns, waiting), log merges at mount `logMerge.*`,
 * transaction counters `transCounters.*` (commits, holds, ...), FUSE
 * errors and abandoned waits `fuse.*`.  The reference takes a sysfs
 * directory; a FUSE mount has none, so this takes a path in the mount.
 */
import { parse, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs counters [-t|--table] [-p] MOUNT-PATH\n';

/** The numeric leaves of a status object, as dotted names, in field order. */
export function flattenCounters(v: unknown, prefix = '', out: [string, string][] = []): [string, string][] {
  if (typeof v === 'number' && Number.isFinite(v)) out.push([prefix, String(v)]);
  else if (typeof v === 'string' && /^\d+$/.test(v)) out.push([prefix, v]);
  else if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    for (const [k, x] of Object.entries(v)) flattenCounters(x, prefix === '' ? k : `${prefix}.${k}`, out);
  }
  return out;
}

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { path: { type: 'string', short: 'p' }, table: { type: 'boolean', short: 't' } }, USAGE);
  const p = values.path ?? positionals[0];
  if (p === undefined) throw new UsageError('need the mount path', USAGE);
  if (positionals.length > (values.path ? 0 : 1)) throw new UsageError('too many arguments', USAGE);
  const status = await withControl(async () => controlRequest(findMountOf(p).mnt, { op: 'status' }));
  const rows = flattenCounters(status);
  const w = Math.max(0, ...rows.map(([n]) => n.length));
  if (values.table !== true) {
    io.out(rows.map(([n, v]) => `${n.padEnd(w)}  ${v}\n`).join(''));
    return 0;
  }
  const vw = Math.max(0, ...rows.map(([, v]) => v.length));
  const width = process.stdout.columns ?? (Number(process.env.COLUMNS) || 80);
  const per = Math.max(1, Math.floor((width + 2) / (w + 1 + vw + 2)));
  const nrows = Math.ceil(rows.length / per);
  let out = '';
  for (let r = 0; r < nrows; r++) {
    const cells: string[] = [];
    for (let c = 0; c < per; c++) {
      const x = rows[c * nrows + r];
      if (x !== undefined) cells.push(`${x[0].padEnd(w)} ${x[1].padStart(vw)}`);
    }
    out += cells.join('  ').trimEnd() + '\n';
  }
  io.out(out);
  return 0;
}

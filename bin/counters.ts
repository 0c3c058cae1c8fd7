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
 * Names are padded to one column so the output reads as a table.
 */
import { parse, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs counters [-p] MOUNT-PATH\n';

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
  const { values, positionals } = parse(args, { path: { type: 'string', short: 'p' } }, USAGE);
  const p = values.path ?? positionals[0];
  if (p === undefined) throw new UsageError('need the mount path', USAGE);
  if (positionals.length > (values.path ? 0 : 1)) throw new UsageError('too many arguments', USAGE);
  const status = await withControl(async () => controlRequest(findMountOf(p).mnt, { op: 'status' }));
  const rows = flattenCounters(status);
  const w = Math.max(0, ...rows.map(([n]) => n.length));
  io.out(rows.map(([n, v]) => `${n.padEnd(w)}  ${v}\n`).join(''));
  return 0;
}

/*
 * `scoutfs read-xattr-totals [-p MOUNT-PATH]`: the committed totals of
 * `.totl.` xattrs (PROTOCOL.md 9.3-9.4): one `a.b.c = total, count` line
 * per name, in (a, b, c) order.  The mount commits its open transaction
 * first, so totals include xattrs set before the command.
 */
import { parse, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs read-xattr-totals [-p MOUNT-PATH]\n';

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { path: { type: 'string', short: 'p' } }, USAGE);
  if (positionals.length > 0) throw new UsageError('no arguments besides -p', USAGE);
  const r = await withControl(async () => controlRequest(findMountOf(values.path ?? process.cwd()).mnt, { op: 'read-xattr-totals' }));
  const totals = r.totals as { name: [string, string, string]; total: string; count: string }[];
  io.out(totals.map((t) => `${t.name.join('.')} = ${t.total}, ${t.count}\n`).join(''));
  return 0;
}

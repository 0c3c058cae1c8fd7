/*
 * `scoutfs stat FILE [-s FIELD]`: scoutfs's per-inode fields (STAT_MORE),
 * asked from the mount holding FILE by path (st_ino is truncated to 32
 * bits by the FUSE binding, the path is not).  Lines are `%-17s value`;
 * -s prints only the value of one field.
 */
import { parse, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs stat FILE [-s FIELD]\n';
export const STAT_FIELDS = ['meta_seq', 'data_seq', 'data_version', 'online_blocks', 'offline_blocks', 'crtime'];

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { 'single-field': { type: 'string', short: 's' } }, USAGE);
  if (positionals.length !== 1) throw new UsageError('need one FILE', USAGE);
  const field = values['single-field'];
  if (field !== undefined && !STAT_FIELDS.includes(field)) throw new UsageError(`unknown field '${field}'`, USAGE);
  const r = await withControl(async () => {
    const { mnt, rel } = findMountOf(positionals[0]!);
    return controlRequest(mnt, { op: 'stat', path: rel });
  });
  if (field !== undefined) io.out(`${String(r[field])}\n`);
  else io.out(STAT_FIELDS.map((f) => `${f.padEnd(17)} ${String(r[f])}\n`).join(''));
  return 0;
}

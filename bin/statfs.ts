/*
 * `scoutfs statfs [-p] MNT [-s FIELD]`: volume-wide fields (STATFS_MORE):
 * fsid and rid in 16 hex digits, committed_seq (the stable seq) and the
 * device totals from the super block, one `%-17s value` line each.
 */
import { parse, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs statfs [-s FIELD] [-p] MOUNT-PATH\n';
const FIELDS = ['fsid', 'rid', 'committed_seq', 'total_meta_blocks', 'total_data_blocks'];

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    path: { type: 'string', short: 'p' }, 'single-field': { type: 'string', short: 's' },
  }, USAGE);
  const p = values.path ?? positionals[0] ?? process.cwd();
  if (positionals.length > (values.path ? 0 : 1)) throw new UsageError('too many arguments', USAGE);
  const field = values['single-field'];
  if (field !== undefined && !FIELDS.includes(field)) throw new UsageError(`unknown field '${field}'`, USAGE);
  const r = await withControl(async () => controlRequest(findMountOf(p).mnt, { op: 'statfs' }));
  if (field !== undefined) io.out(`${String(r[field])}\n`);
  else io.out(FIELDS.map((f) => `${f.padEnd(17)} ${String(r[f])}\n`).join(''));
  return 0;
}

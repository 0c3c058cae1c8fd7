/*
 * `scoutfs search-xattrs NAME [-p MOUNT-PATH]`: the inodes that carry a
 * `.srch.` xattr named NAME (PROTOCOL.md 8.4, 9.4), one inode number per
 * line in ascending order.  The mount commits its open transaction first,
 * so an xattr set before the command is found.  Only `scoutfs.` names
 * with the srch. tag are indexed; any other NAME is refused.  Results can
 * hold false positives (two names with the same 64-bit hash).
 */
import { parse, UsageError, CommandError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs search-xattrs NAME [-p MOUNT-PATH]\n';

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { path: { type: 'string', short: 'p' } }, USAGE);
  if (positionals.length !== 1) throw new UsageError('need one xattr NAME', USAGE);
  const name = positionals[0]!;
  if (!/^scoutfs\.((hide|totl)\.)*srch\./.test(name)) {
    throw new UsageError(`'${name}' is not a .srch. xattr name (scoutfs.srch.<name>)`, USAGE);
  }
  const r = await withControl(async () => controlRequest(findMountOf(values.path ?? process.cwd()).mnt, { op: 'search-xattrs', name }));
  const inos = r.inos as string[];
  io.out(inos.map((i) => `${i}\n`).join(''));
  if (r.complete !== true) throw new CommandError('search-xattrs: the search was cut short at the result limit');
  return 0;
}

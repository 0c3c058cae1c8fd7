/*
 * `scoutfs list-hidden-xattrs FILE` (PROTOCOL.md 9.3 LISTXATTR_HIDDEN,
 * 9.4): the names of FILE's `scoutfs.` xattrs with the `hide.` tag, which
 * listxattr(2) leaves out, one per line, in no particular order.
 */
import { parse, UsageError, type CliIo } from './cli.js';
import { controlRequest } from '../src/mount/control.js';
import { withControl } from './sync.js';
import { scoutfsFile } from './target.js';

const USAGE = 'usage: scoutfs list-hidden-xattrs FILE\n';

export async function run(args: string[], io: CliIo): Promise<number> {
  const { positionals } = parse(args, {}, USAGE);
  if (positionals.length !== 1) throw new UsageError('need one FILE', USAGE);
  const r = await withControl(async () => {
    const { mnt, rel } = scoutfsFile(positionals[0]!, { write: false });
    return controlRequest(mnt, { op: 'list-hidden-xattrs', path: rel });
  });
  io.out((r.names as string[]).map((n) => Buffer.from(n, 'base64').toString('utf8') + '\n').join(''));
  return 0;
}

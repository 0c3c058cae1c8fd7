/*
 * `scoutfs data-wait-err -I INO -V VERSION -F OFFSET -C COUNT -O OP -E ERR
 * [-p PATH]` (PROTOCOL.md 9.3 DATA_WAIT_ERR, 9.4): the archive agent gives
 * up on a region: tasks waiting for offline blocks of inode INO in
 * [OFFSET, OFFSET+COUNT) bytes, blocked in OP (read, write or change_size;
 * a comma list is accepted), fail with ERR.  VERSION must be the file's
 * data_version.  ERR is an errno as the reference takes it, negative
 * (-5), or positive (5), or by name (EIO).  Prints `data_wait_err found N
 * waiters.`
 */
import { parse, parseU64, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { ERRNO } from '../src/format/errors.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs data-wait-err -I|--inode INODE-NUM -V|--version VER-NUM -F|--offset OFF-NUM -C|--count COUNT -O|--op {read|write|change_size} -E|--err ERR [-p|--path PATH]\n';
const OPS: Record<string, number> = { read: 1, write: 2, change_size: 4 };

export function parseErrno(s: string): number | null {
  const named = (ERRNO as Record<string, number>)[s.toUpperCase()];
  if (named !== undefined) return named;
  const m = /^-?(\d+)$/.exec(s);
  if (m === null) return null;
  const n = Number(m[1]);
  return n >= 1 && n <= 4095 ? n : null;
}

export async function run(args: string[], io: CliIo): Promise<number> {
  // `-E -5`: a value that starts with a dash; hand it to parseArgs joined.
  const fixed: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if ((a === '-E' || a === '--err') && i + 1 < args.length && /^-\d+$/.test(args[i + 1]!)) fixed.push(`${a === '-E' ? '-E' : '--err='}${args[++i]!}`);
    else fixed.push(a);
  }
  const { values, positionals } = parse(fixed, {
    inode: { type: 'string', short: 'I' }, version: { type: 'string', short: 'V' }, offset: { type: 'string', short: 'F' },
    count: { type: 'string', short: 'C' }, op: { type: 'string', short: 'O' }, err: { type: 'string', short: 'E' },
    path: { type: 'string', short: 'p' },
  }, USAGE);
  if (positionals.length > 0) throw new UsageError('unexpected arguments', USAGE);
  const ino = parseU64(values.inode, '--inode', USAGE, false);
  const vers = parseU64(values.version, '--version', USAGE, false);
  const offset = parseU64(values.offset, '--offset', USAGE);
  const count = parseU64(values.count, '--count', USAGE);
  if (values.op === undefined) throw new UsageError('--op is required', USAGE);
  let op = 0;
  for (const o of values.op.split(',')) {
    const bit = OPS[o];
    if (bit === undefined) throw new UsageError(`unknown op '${o}' (read, write or change_size)`, USAGE);
    op |= bit;
  }
  if (values.err === undefined) throw new UsageError('--err is required', USAGE);
  const errno = parseErrno(values.err);
  if (errno === null) throw new UsageError(`--err '${values.err}' is not an errno (-5, 5 or EIO)`, USAGE);
  const r = await withControl(async () => controlRequest(findMountOf(values.path ?? process.cwd()).mnt, {
    op: 'data-wait-err', ino: ino.toString(), data_version: vers.toString(), offset: offset.toString(), count: count.toString(), op_mask: op, errno,
  }));
  io.out(`data_wait_err found ${String(r.count)} waiters.\n`);
  return 0;
}

/*
 * `scoutfs data-waiting -I INO -B BLOCK [-p PATH]` (PROTOCOL.md 9.3
 * DATA_WAITING, 9.4): the blocks that tasks are waiting for because they
 * are offline, after (INO, BLOCK), sorted by inode and block, one line
 * each: `ino N iblock N ops read,write,change_size` (the ops waiting on
 * that block).  -I 0 -B 0 lists them all; both default to 0.
 */
import { parse, parseU64, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs data-waiting -I|--inode INODE-NUM -B|--block BLOCK-NUM [-p|--path PATH]\n';

export function opsText(ops: number): string {
  const names: string[] = [];
  if (ops & 1) names.push('read');
  if (ops & 2) names.push('write');
  if (ops & 4) names.push('change_size');
  return names.join(',');
}

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    inode: { type: 'string', short: 'I' }, block: { type: 'string', short: 'B' }, path: { type: 'string', short: 'p' },
  }, USAGE);
  if (positionals.length > 0) throw new UsageError('unexpected arguments', USAGE);
  const ino = values.inode === undefined ? 0n : parseU64(values.inode, 'INODE-NUM', USAGE, false);
  const blk = values.block === undefined ? 0n : parseU64(values.block, 'BLOCK-NUM', USAGE, false);
  const r = await withControl(async () => controlRequest(findMountOf(values.path ?? process.cwd()).mnt, {
    op: 'data-waiting', after_ino: ino.toString(), after_iblock: blk.toString(),
  }));
  const entries = r.entries as { ino: string; iblock: string; ops: number }[];
  io.out(entries.map((e) => `ino ${e.ino} iblock ${e.iblock} ops ${opsText(e.ops)}\n`).join(''));
  return 0;
}

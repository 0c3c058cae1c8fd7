/*
 * `scoutfs counters [-t] [PATH | -p PATH]` (PROTOCOL.md 9.4): the mount's
 * counters, `name value` per line sorted by name; -t lays them out in
 * columns filling the terminal's width ($COLUMNS, else 80, when not a
 * terminal).
 *
 * The reference reads /sys/fs/scoutfs/<id>/counters/; a FUSE mount has no
 * sysfs directory, so this takes a path inside the mount and asks its
 * control channel.  The names are the mount's subsystems' counters
 * (trans_ commits and holds, fs_, data_wait_ waits, wakes, errors and
 * interrupts, item_cache_, block_cache_, forest_, server_, log_trees_,
 * log_merge_ merges at mount, fuse_ requests and errors); lock counters
 * join when cluster locks do.
 */
import { parse, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs counters [-t|--table] [-p|--path] PATH\n';

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, { table: { type: 'boolean', short: 't' }, path: { type: 'string', short: 'p' } }, USAGE);
  if (positionals.length > (values.path === undefined ? 1 : 0)) throw new UsageError('too many arguments', USAGE);
  const p = values.path ?? positionals[0] ?? process.cwd();
  const r = await withControl(async () => controlRequest(findMountOf(p).mnt, { op: 'counters' }));
  const c = r.counters as Record<string, number>;
  const names = Object.keys(c).sort();
  if (values.table !== true) {
    io.out(names.map((n) => `${n} ${c[n]}\n`).join(''));
    return 0;
  }
  const nameW = Math.max(...names.map((n) => n.length));
  const valW = Math.max(...names.map((n) => String(c[n]).length));
  const cell = nameW + 1 + valW;
  const width = process.stdout.columns ?? (Number(process.env.COLUMNS) || 80);
  const per = Math.max(1, Math.floor((width + 2) / (cell + 2)));
  const rows = Math.ceil(names.length / per);
  let out = '';
  for (let row = 0; row < rows; row++) {
    const cells: string[] = [];
    for (let col = 0; col < per; col++) {
      const n = names[col * rows + row];
      if (n !== undefined) cells.push(`${n.padEnd(nameW)} ${String(c[n]).padStart(valW)}`);
    }
    out += cells.join('  ').trimEnd() + '\n';
  }
  io.out(out);
  return 0;
}

/*
 * `scoutfs df [-h] [-p] MNT`: metadata (64 KiB) and data (4 KiB) block
 * totals, used and free, as a table like scoutfs's df.  -h prints sizes in
 * human units instead of block counts.
 */
import { parse, UsageError, type CliIo } from './cli.js';
import { controlRequest, findMountOf } from '../src/mount/control.js';
import { withControl } from './sync.js';

const USAGE = 'usage: scoutfs df [-h] [-p] MOUNT-PATH\n';

function human(bytes: bigint): string {
  const units = ['B', 'K', 'M', 'G', 'T', 'P'];
  let v = Number(bytes);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v < 10 && i > 0 ? v.toFixed(1) : Math.round(v)}${units[i]}`;
}

export async function run(args: string[], io: CliIo): Promise<number> {
  const { values, positionals } = parse(args, {
    path: { type: 'string', short: 'p' }, 'human-readable': { type: 'boolean', short: 'h' },
  }, USAGE);
  const p = values.path ?? positionals[0] ?? process.cwd();
  if (positionals.length > (values.path ? 0 : 1)) throw new UsageError('too many arguments', USAGE);
  const r = await withControl(async () => controlRequest(findMountOf(p).mnt, { op: 'df' }));
  const row = (type: string, size: string, bs: bigint, total: bigint, free: bigint): string => {
    const used = total - free;
    const pct = total === 0n ? 0n : (used * 100n) / total;
    const f = (n: bigint): string => (values['human-readable'] ? human(n * bs) : n.toString());
    return `${type.padEnd(10)} ${size.padEnd(6)} ${f(total).padStart(12)} ${f(used).padStart(12)} ${f(free).padStart(12)} ${(pct.toString() + '%').padStart(5)}\n`;
  };
  io.out(`${'Type'.padEnd(10)} ${'Size'.padEnd(6)} ${'Total'.padStart(12)} ${'Used'.padStart(12)} ${'Free'.padStart(12)} ${'Use%'.padStart(5)}\n`);
  io.out(row('MetaData', '64KB', 65536n, BigInt(r.total_meta_blocks as string), BigInt(r.free_meta_blocks as string)));
  io.out(row('Data', '4KB', 4096n, BigInt(r.total_data_blocks as string), BigInt(r.free_data_blocks as string)));
  return 0;
}

/*
 * `scoutfs mkfs -Q NR,ADDR,PORT [-Q ...] [-f] [-A] [-m SIZE] [-d SIZE]
 *  [-z BLOCKS] [-V VERS] META-DEVICE DATA-DEVICE`
 *
 * Parses and checks the arguments, then hands them to src/mkfs which checks
 * the devices and writes nothing unless everything is valid.
 */
import { statSync, realpathSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { parse, UsageError, CommandError, type CliIo } from './cli.js';
import { runMkfs, MkfsError, type MkfsOptions, type QuorumSlotArg } from '../src/mkfs/mkfs.js';
import { parseSize } from '../src/mkfs/size.js';
import { parseIpv4 } from '../src/format/common.js';
import { FileBlockDevice } from '../src/runtime/device.js';

export const USAGE = `usage: scoutfs mkfs -Q|--quorum-slot NR,ADDR,PORT [-Q ...] [options] META-DEVICE DATA-DEVICE
  -Q, --quorum-slot NR,ADDR,PORT   quorum slot NR (0-14) listens on IPv4 ADDR and PORT (repeatable, required)
  -f, --force                      overwrite an existing filesystem
  -A, --allow-small-size           allow devices smaller than the 64 GiB minimum
  -m, --max-meta-size SIZE         use at most SIZE bytes of the meta device (K/M/G/T suffixes)
  -d, --max-data-size SIZE         use at most SIZE bytes of the data device (K/M/G/T suffixes)
  -z, --data-alloc-zone-blocks N   steer each mount's data allocations into zones of N 4 KiB blocks
  -V, --format-version VERS        format version to write (only 0)
`;

export function parseSlot(s: string): QuorumSlotArg {
  const parts = s.split(',');
  if (parts.length !== 3) throw new UsageError(`quorum slot '${s}' must be NR,ADDR,PORT`, USAGE);
  const [nrS, addrS, portS] = parts as [string, string, string];
  if (!/^\d+$/.test(nrS)) throw new UsageError(`quorum slot nr '${nrS}' is not a number`, USAGE);
  const addr = parseIpv4(addrS);
  if (addr === null) throw new UsageError(`quorum slot address '${addrS}' is not an IPv4 address`, USAGE);
  if (!/^\d+$/.test(portS)) throw new UsageError(`quorum slot port '${portS}' is not a number`, USAGE);
  return { nr: Number(nrS), addr, port: Number(portS) };
}

function sizeArg(v: string | undefined, what: string): bigint | undefined {
  if (v === undefined) return undefined;
  const n = parseSize(v);
  if (n === null || n === 0n) throw new UsageError(`invalid ${what} '${v}'`, USAGE);
  return n;
}

function identity(path: string): Promise<string> {
  const st = statSync(path);
  if (st.isBlockDevice()) return Promise.resolve(`bdev:${st.rdev}`);
  if (!st.isFile()) throw new Error('not a regular file or block device');
  return Promise.resolve(`file:${st.dev}:${st.ino}:${realpathSync(path)}`);
}

/** The arguments of `scoutfs mkfs` as options for src/mkfs (null for --help). */
export function parseMkfsArgs(args: string[]): MkfsOptions | null {
  const { values, positionals } = parse(args, {
    'quorum-slot': { type: 'string', short: 'Q', multiple: true },
    force: { type: 'boolean', short: 'f' },
    'allow-small-size': { type: 'boolean', short: 'A' },
    'max-meta-size': { type: 'string', short: 'm' },
    'max-data-size': { type: 'string', short: 'd' },
    'data-alloc-zone-blocks': { type: 'string', short: 'z' },
    'format-version': { type: 'string', short: 'V' },
    help: { type: 'boolean', short: 'h' },
  }, USAGE);
  if (values.help) return null;
  if (positionals.length !== 2) throw new UsageError('must specify a META-DEVICE and a DATA-DEVICE', USAGE);
  const slots = (values['quorum-slot'] ?? []).map(parseSlot);
  if (slots.length === 0) throw new UsageError('must specify at least one quorum slot with -Q|--quorum-slot', USAGE);
  let zone: bigint | undefined;
  if (values['data-alloc-zone-blocks'] !== undefined) {
    if (!/^\d+$/.test(values['data-alloc-zone-blocks'])) throw new UsageError(`invalid data alloc zone blocks '${values['data-alloc-zone-blocks']}'`, USAGE);
    zone = BigInt(values['data-alloc-zone-blocks']);
  }
  let fmtVers: bigint | undefined;
  if (values['format-version'] !== undefined) {
    if (!/^\d+$/.test(values['format-version'])) throw new UsageError(`invalid format version '${values['format-version']}'`, USAGE);
    fmtVers = BigInt(values['format-version']);
  }
  const [metaPath, dataPath] = positionals as [string, string];
  return {
    metaPath, dataPath, slots,
    force: values.force ?? false,
    allowSmall: values['allow-small-size'] ?? false,
    maxMetaBytes: sizeArg(values['max-meta-size'], 'max meta size'),
    maxDataBytes: sizeArg(values['max-data-size'], 'max data size'),
    dataAllocZoneBlocks: zone,
    formatVersion: fmtVers,
  };
}

export async function run(args: string[], io: CliIo): Promise<number> {
  const opts = parseMkfsArgs(args);
  if (opts === null) {
    io.out(USAGE);
    return 0;
  }
  try {
    const { plan } = await runMkfs(opts, {
      open: (p, readOnly) => FileBlockDevice.open(p, { readOnly }),
      identity,
      randomBytes: (n) => new Uint8Array(randomBytes(n)),
      // Microseconds of wall-clock time, as the reference mkfs stamps the root inode.
      now: () => {
        const us = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000));
        return { sec: us / 1_000_000n, nsec: Number(us % 1_000_000n) * 1000 };
      },
    });
    for (const w of plan.warnings) io.err(`${w}\n`);
    io.out(plan.summary);
    return 0;
  } catch (e) {
    // The reference mkfs prints its refusals as a bare line and exits 1.
    if (e instanceof MkfsError) throw new CommandError(e.message, { bare: true });
    throw e;
  }
}

/*
 * Shared CLI plumbing: output sinks, the two error kinds a subcommand
 * raises (UsageError for bad arguments, CommandError for a failure), and
 * argument parsing on node:util parseArgs with errors turned into
 * UsageError so every subcommand reports bad input the same way.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';

export interface CliIo {
  out(s: string): void;
  err(s: string): void;
}

export function realIo(): CliIo {
  return {
    out: (s) => { process.stdout.write(s); },
    err: (s) => { process.stderr.write(s); },
  };
}

export class UsageError extends Error {
  constructor(message: string, readonly usage: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export class CommandError extends Error {
  /** Print the message alone, without the `scoutfs: CMD failed:` prefix. */
  readonly bare: boolean;

  constructor(message: string, opts: { bare?: boolean } = {}) {
    super(message);
    this.name = 'CommandError';
    this.bare = opts.bare ?? false;
  }
}

export function parse<T extends NonNullable<ParseArgsConfig['options']>>(
  args: string[], options: T, usage: string,
) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message, usage);
  }
}

/* ---- numbers, sizes, times and files shared by the archive commands ---------------------- */

const U64_MAX = (1n << 64n) - 1n;
const SUFFIX: Record<string, bigint> = { K: 1n << 10n, M: 1n << 20n, G: 1n << 30n, T: 1n << 40n, P: 1n << 50n };

/**
 * A u64 as strtoull(base 0) reads it (decimal, 0x hex, leading-0 octal),
 * with an optional K/M/G/T/P (binary) suffix when `sizes`; anything else,
 * or a value past 2^64-1, is a usage error naming `what`.
 */
export function parseU64(s: string | undefined, what: string, usage: string, sizes = true): bigint {
  if (s === undefined) throw new UsageError(`${what} is required`, usage);
  const m = /^(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9]\d*)([KMGTP])?$/.exec(s.trim());
  if (m === null || (!sizes && m[2] !== undefined)) throw new UsageError(`${what} '${s}' is not a number${sizes ? ' (with an optional K, M, G, T or P suffix)' : ''}`, usage);
  const v = m[1]!;
  let n = v.length > 1 && v[0] === '0' && v[1] !== 'x' && v[1] !== 'X' ? BigInt('0o' + v.slice(1)) : BigInt(v);
  if (m[2] !== undefined) n *= SUFFIX[m[2]]!;
  if (n > U64_MAX) throw new UsageError(`${what} '${s}' is larger than 2^64-1`, usage);
  return n;
}

/** "<seconds-since-epoch>.<nanoseconds>" (the nanoseconds are optional). */
export function parseTimespec(s: string, what: string, usage: string): { sec: string; nsec: number } {
  const m = /^(\d+)(?:\.(\d{1,9}))?$/.exec(s);
  if (m === null) throw new UsageError(`${what} '${s}' is not <seconds>.<nanoseconds>`, usage);
  const sec = BigInt(m[1]!);
  if (sec > U64_MAX) throw new UsageError(`${what} seconds out of range`, usage);
  return { sec: sec.toString(), nsec: Number(m[2] ?? '0') };
}

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

/*
 * Test helpers for CLI tests: run `bin/scoutfs` as a child process, as a
 * user runs it (the shim, the dispatcher, real stdout/stderr and exit
 * status), make sparse image files in a per-test temp folder, hash files to
 * prove they were not touched, and loop devices (root only) that are always
 * detached.
 */
import { mkdtempSync, rmSync, openSync, ftruncateSync, closeSync, readFileSync, readSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFile, execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const CLI = join(ROOT, 'bin', 'scoutfs');

export interface CliResult { code: number; out: string; err: string }

/** `bin/scoutfs ARGS` as a child process; its exit status, stdout and stderr. */
export function scoutfs(...args: string[]): Promise<CliResult> {
  return scoutfsIn({}, ...args);
}

/** scoutfs() with a working directory. */
export function scoutfsIn(o: { cwd?: string }, ...args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, ...args], { cwd: o.cwd, timeout: 120_000, maxBuffer: 64 << 20 }, (e, stdout, stderr) => {
      if (e && typeof e.code !== 'number') {
        reject(new Error(`scoutfs ${args.join(' ')}: ${e.message} (signal ${e.signal ?? 'none'})`));
        return;
      }
      resolve({ code: e ? (e.code as number) : 0, out: stdout, err: stderr });
    });
  });
}

export class TempDir {
  readonly path = mkdtempSync(join(tmpdir(), 'scoutfs-test-'));
  private loops: string[] = [];

  image(name: string, bytes: bigint | number): string {
    const p = join(this.path, name);
    const fd = openSync(p, 'w');
    ftruncateSync(fd, Number(bytes));
    closeSync(fd);
    return p;
  }

  loop(image: string): string {
    const dev = execFileSync('losetup', ['-f', '--show', image], { encoding: 'utf8' }).trim();
    this.loops.push(dev);
    return dev;
  }

  cleanup(): void {
    for (const l of this.loops.splice(0)) {
      try { execFileSync('losetup', ['-d', l]); } catch { /* already gone */ }
    }
    rmSync(this.path, { recursive: true, force: true });
  }
}

export function sha(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

export const isRoot = process.getuid?.() === 0;
export const MIB = 1024 * 1024;

/** Read len bytes at off of a file; with fn, let it change them and write them back. */
export function rw(path: string, off: bigint, len: number, fn?: (b: Uint8Array) => void): Uint8Array {
  const fd = openSync(path, 'r+');
  try {
    const b = new Uint8Array(len);
    readSync(fd, b, 0, len, Number(off));
    if (fn) { fn(b); writeSync(fd, b, 0, len, Number(off)); }
    return b;
  } finally {
    closeSync(fd);
  }
}

/*
 * Test helpers for CLI tests: run `scoutfs` in-process with captured
 * output, make sparse image files in a per-test temp folder, hash files to
 * prove they were not touched, and loop devices (root only) that are always
 * detached.
 */
import { mkdtempSync, rmSync, openSync, ftruncateSync, closeSync, readFileSync, readSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../bin/scoutfs.js';

export interface CliResult { code: number; out: string; err: string }

export async function scoutfs(...args: string[]): Promise<CliResult> {
  let out = '';
  let err = '';
  const code = await main(args, { out: (s) => { out += s; }, err: (s) => { err += s; } });
  return { code, out, err };
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

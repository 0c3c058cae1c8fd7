/*
 * perf/workload-worker.ts is the load generator process of the end-to-end
 * workloads (dist/perf/workload-worker.js).  The orchestrator (workloads.ts)
 * starts one per client, so a hung filesystem op blocks only this process,
 * which the orchestrator can kill and then unmount around.
 *
 *   meta DIR COUNT     create, stat, unlink COUNT empty files in DIR
 *   write FILE MIB     write MIB MiB sequentially in 1 MiB writes, fsync
 *   read FILE          read FILE sequentially in 1 MiB reads
 *
 * Protocol: JSON lines on stdout.  `meta` prints {"ready":true}, then before
 * each phase waits for a line "go" on stdin (the orchestrator's barrier, so
 * that parallel clients run each phase together), runs it and prints
 * {"phase":"create","ns":...,"ops":COUNT}.  write/read print one line
 * {"phase":"write","ns":...,"bytes":...}.  Any error exits non-zero with the
 * message on stderr.  All I/O is synchronous syscalls: the time measured is
 * the filesystem's, not an event loop's.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { randomFillSync } from 'node:crypto';

const MiB = 1 << 20;

function say(o: object): void {
  fs.writeSync(1, JSON.stringify(o) + '\n');
}

const now = (): bigint => process.hrtime.bigint();

async function meta(dir: string, count: number): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const names: string[] = [];
  for (let i = 0; i < count; i++) names.push(join(dir, `f${i.toString(36).padStart(5, '0')}`));
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const go = async (): Promise<void> => {
    const l = await lines.next();
    if (l.done || l.value.trim() !== 'go') throw new Error('orchestrator went away');
  };
  say({ ready: true });
  const phases: [string, (p: string) => void][] = [
    ['create', (p) => fs.closeSync(fs.openSync(p, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY, 0o644))],
    ['stat', (p) => {
      if (!fs.statSync(p).isFile()) throw new Error(`${p} is not a file`);
    }],
    ['unlink', (p) => fs.unlinkSync(p)],
  ];
  for (const [phase, op] of phases) {
    await go();
    const t0 = now();
    for (const p of names) op(p);
    say({ phase, ns: Number(now() - t0), ops: count });
  }
  fs.rmdirSync(dir);
  process.exit(0);
}

function write(file: string, mib: number): void {
  const buf = randomFillSync(Buffer.alloc(MiB));
  const t0 = now();
  const fd = fs.openSync(file, 'w');
  for (let i = 0; i < mib; i++) {
    // Change a few bytes per MiB so no layer can dedupe the stream.
    buf.writeUInt32LE(i, 0);
    let off = 0;
    while (off < MiB) off += fs.writeSync(fd, buf, off, MiB - off, i * MiB + off);
  }
  fs.fsyncSync(fd);
  fs.closeSync(fd);
  say({ phase: 'write', ns: Number(now() - t0), bytes: mib * MiB });
}

function read(file: string): void {
  const buf = Buffer.alloc(MiB);
  const t0 = now();
  const fd = fs.openSync(file, 'r');
  let total = 0;
  for (;;) {
    const n = fs.readSync(fd, buf, 0, MiB, total);
    if (n === 0) break;
    total += n;
  }
  fs.closeSync(fd);
  say({ phase: 'read', ns: Number(now() - t0), bytes: total });
}

async function main(): Promise<void> {
  const [cmd, a, b] = process.argv.slice(2);
  if (cmd === 'meta' && a && b) return meta(a, Number(b));
  if (cmd === 'write' && a && b) return write(a, Number(b));
  if (cmd === 'read' && a) return read(a);
  throw new Error(`usage: workload-worker.js meta DIR COUNT | write FILE MIB | read FILE`);
}

main().catch((e: unknown) => {
  process.stderr.write(`workload-worker: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});

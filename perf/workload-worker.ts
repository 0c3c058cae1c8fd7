/*
 * perf/workload-worker.ts is the load generator process of the end-to-end
 * workloads (dist/perf/workload-worker.js).  The orchestrator (workloads.ts)
 * starts one per client, so a hung filesystem op blocks only this process,
 * which the orchestrator can kill and then unmount around.
 *
 *   meta DIR COUNT     create, stat, readdir, unlink COUNT empty files in
 *                      DIR; the readdir phase lists DIR (COUNT entries)
 *                      READDIR_PASSES times and counts entries
 *   write FILE MIB     write MIB MiB sequentially in 1 MiB writes, fsync
 *   read FILE          read FILE sequentially in 1 MiB reads
 *   bytes FILE SECONDS write single bytes sequentially (one write(2) each,
 *                      through the page cache, no fsync) for SECONDS or
 *                      4 MiB, whichever ends first
 *
 * Protocol: JSON lines on stdout.  `meta` prints {"ready":true}, then before
 * each phase waits for a line "go" on stdin (the orchestrator's barrier, so
 * that parallel clients run each phase together), runs it and prints
 * {"phase":"create","ns":...,"ops":COUNT} (for readdir, ops is the
 * number of entries listed over all passes).  write/read print one line
 * {"phase":"write","ns":...,"bytes":...}.  Any error exits non-zero with the
 * message on stderr.  All I/O is synchronous syscalls: the time measured is
 * the filesystem's, not an event loop's.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { randomFillSync } from 'node:crypto';

const MiB = 1 << 20;
/** How many times the readdir phase lists the directory. */
const READDIR_PASSES = 5;

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
  const each = (op: (p: string) => void) => (): number => {
    for (const p of names) op(p);
    return count;
  };
  const phases: [string, () => number][] = [
    ['create', each((p) => fs.closeSync(fs.openSync(p, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY, 0o644)))],
    ['stat', each((p) => {
      if (!fs.statSync(p).isFile()) throw new Error(`${p} is not a file`);
    })],
    ['readdir', () => {
      let n = 0;
      for (let pass = 0; pass < READDIR_PASSES; pass++) {
        const got = fs.readdirSync(dir).length;
        if (got !== count) throw new Error(`readdir of ${dir} listed ${got} entries, expected ${count}`);
        n += got;
      }
      return n;
    }],
    ['unlink', each((p) => fs.unlinkSync(p))],
  ];
  for (const [phase, run] of phases) {
    await go();
    const t0 = now();
    const ops = run();
    say({ phase, ns: Number(now() - t0), ops });
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

function bytes(file: string, seconds: number): void {
  const one = Buffer.from('x');
  const fd = fs.openSync(file, 'w');
  const limit = BigInt(Math.round(seconds * 1e9));
  const t0 = now();
  let n = 0;
  while (n < 4 * MiB) {
    for (let i = 0; i < 1000; i++) fs.writeSync(fd, one, 0, 1, n++);
    if (now() - t0 >= limit) break;
  }
  const ns = Number(now() - t0);
  fs.closeSync(fd);
  say({ phase: 'bytes', ns, ops: n });
}

async function main(): Promise<void> {
  const [cmd, a, b] = process.argv.slice(2);
  if (cmd === 'meta' && a && b) return meta(a, Number(b));
  if (cmd === 'write' && a && b) return write(a, Number(b));
  if (cmd === 'read' && a) return read(a);
  if (cmd === 'bytes' && a && b) return bytes(a, Number(b));
  throw new Error(`usage: workload-worker.js meta DIR COUNT | write FILE MIB | read FILE | bytes FILE SECONDS`);
}

main().catch((e: unknown) => {
  process.stderr.write(`workload-worker: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exit(1);
});

/*
 * Goal: the example archive agent (examples/archive-agent.sh) works as its
 * README section says, on a real mount: `demo` runs the whole cycle in one
 * command (write, archive and release, a read that waits until the agent
 * stages, identical bytes); `archive` leaves files offline with their
 * sizes, their copies in the archive directory; under `serve`, readers of
 * several released files all get their bytes back byte-exact and nothing
 * is left waiting; a file whose archived copy is gone makes its reader fail
 * with EIO (the agent's data-wait-err) instead of hanging.
 *
 * Needs root, /dev/fuse, fusermount and losetup; skipped otherwise.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { CleanupRegistry } from '../../harness/cleanup.js';
import type { NodeProc } from '../../harness/proc.js';
import { clusterSkip, finish, GIB, pattern, randomQuorum, ROOT, scoutfs, stopMount, tempBase, Volume } from './util.js';

const SKIP = await clusterSkip();
const reg = new CleanupRegistry('cluster-archive-agent', 60_000);
const AGENT = join(ROOT, 'examples', 'archive-agent.sh');
const execf = promisify(execFile);
let base = '';
let v: Volume;
let daemon: NodeProc;

before(async () => {
  if (SKIP) return;
  base = await tempBase(reg, 'agent');
  v = await Volume.create(reg, base, 'vol', { metaBytes: GIB, dataBytes: 2 * GIB, ...randomQuorum() });
  daemon = await v.mount();
});

after(async () => {
  if (!SKIP && daemon !== undefined) {
    await stopMount(daemon, v.mnt);
    await v.assertFsckClean();
  }
  await finish(reg, base);
});

async function agent(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await execf('bash', [AGENT, ...args], { maxBuffer: 16 << 20, timeout: 300_000, env: { ...process.env, POLL_SECONDS: '0.1' } });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, out: x.stdout ?? '', err: x.stderr ?? '' };
  }
}

async function stat(path: string, f: string): Promise<string> {
  const r = await scoutfs('stat', '-s', f, path);
  assert.equal(r.code, 0, r.err);
  return r.out.trim();
}

test('demo: the whole archive cycle in one command', { skip: SKIP, timeout: 300_000 }, async () => {
  const r = await agent('demo', v.mnt, join(base, 'demo-archive'));
  assert.equal(r.code, 0, `demo failed:\n${r.out}${r.err}`);
  assert.match(r.out, /archived .* and released it/);
  assert.match(r.out, /offline_blocks\s+2048/, 'released: 2048 offline blocks');
  assert.match(r.out, /staged .* back/);
  assert.match(r.out, /the bytes read back are identical/);
});

test('archive, serve and read back byte-exact; a lost archive copy fails its reader with EIO', { skip: SKIP, timeout: 300_000 }, async () => {
  const dir = v.path('agent');
  const arch = join(base, 'archive');
  await fsp.mkdir(dir);
  const files = [1, 4096, 3 * 4096 + 5, 5 << 20].map((size, i) => ({ path: join(dir, `f${i}`), bytes: pattern(`agent-${i}`, size) }));
  for (const f of files) await fsp.writeFile(f.path, f.bytes);
  const a = await agent('archive', v.mnt, arch, ...files.map((f) => f.path));
  assert.equal(a.code, 0, a.out + a.err);
  for (const f of files) {
    assert.equal(await stat(f.path, 'online_blocks'), '0');
    assert.equal(await stat(f.path, 'offline_blocks'), String(Math.ceil(f.bytes.length / 4096)));
    assert.equal((await fsp.stat(f.path)).size, f.bytes.length, 'the size stays');
    const copy = join(arch, `${(await fsp.stat(f.path, { bigint: true })).ino}.${await stat(f.path, 'data_version')}`);
    assert((await fsp.readFile(copy)).equals(f.bytes), 'the archive holds the bytes');
  }
  // One archived copy goes missing: that file's reader must get EIO.
  const lost = files[1]!;
  await fsp.rm(join(arch, `${(await fsp.stat(lost.path, { bigint: true })).ino}.${await stat(lost.path, 'data_version')}`));

  const serve = spawn('bash', [AGENT, 'serve', v.mnt, arch], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, POLL_SECONDS: '0.1' }, detached: true });
  let log = '';
  serve.stdout!.on('data', (d: Buffer) => { log += d.toString(); });
  serve.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
  const served = new Promise<void>((r) => serve.on('close', () => r()));
  await reg.add(`stop the archive agent ${serve.pid}`, async () => {
    if (serve.exitCode === null && serve.signalCode === null) process.kill(-serve.pid!, 'SIGKILL');
    await served;
  });
  try {
    const reads = await Promise.all(files.map((f) => fsp.readFile(f.path).then((b) => ({ ok: true as const, b }), (e: NodeJS.ErrnoException) => ({ ok: false as const, code: e.code }))));
    for (let i = 0; i < files.length; i++) {
      const r = reads[i]!;
      if (files[i] === lost) {
        assert.deepEqual(r, { ok: false, code: 'EIO' }, 'the reader of a file without an archived copy gets EIO');
      } else {
        assert(r.ok && r.b.equals(files[i]!.bytes), `f${i} read back byte-exact`);
        assert.equal(await stat(files[i]!.path, 'offline_blocks'), '0');
      }
    }
    const w = await scoutfs('data-waiting', '-I', '0', '-B', '0', '-p', v.mnt);
    assert.equal(w.out, '', 'nothing is left waiting');
  } finally {
    process.kill(-serve.pid!, 'SIGTERM');
    await served;
  }
  assert.match(log, /no archived copy of .*f1 .*its waiters get EIO/);
  assert.match(log, /staged .*f3 .* back/);
});

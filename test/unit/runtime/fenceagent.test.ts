/*
 * Goal: the default fencing agent (LocalFenceAgent) really stops the
 * daemon of a rid on this host, through the registration a daemon makes
 * (registerRid), and never kills anything else:
 *   - a real child process that registered itself for a rid is killed
 *     (SIGKILL observed by its parent), the agent waits until it is gone,
 *     answers fenced and removes the registration;
 *   - a real FUSE daemon (perf/fuse-passthrough) registered for a rid is
 *     killed and its mount is gone afterwards (root and /dev/fuse only);
 *   - no registration: fenced (nothing of that rid runs here); a stale one
 *     (dead pid) is fenced without killing; a registration whose pid now
 *     belongs to another process (start time differs) kills nothing;
 *   - registrations are written whole and removed only by their owner.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  LocalFenceAgent, procStat, readMountInfo, readRidFile, registerRid, ridFilePath,
} from '../../../src/runtime/fenceagent.js';
import { CleanupRegistry, unmount, unmountAllUnder } from '../../../harness/cleanup.js';
import { logMatches, mountAppears, startProc } from '../../../harness/proc.js';
import { isRoot, which } from '../../../harness/sys.js';

const here = dirname(fileURLToPath(import.meta.url));
const CHILD = join(here, 'fence-child.js');
const PASSTHROUGH = join(here, '..', '..', '..', 'perf', 'fuse-passthrough.js');
const base = mkdtempSync(join(tmpdir(), 'scoutfs-fenceagent-'));
const runDir = join(base, 'run');
after(async () => {
  await unmountAllUnder(base).catch(() => {});
  rmSync(base, { recursive: true, force: true });
});

const never = new AbortController().signal;

test('registration: whole file, parsed back, removed only by its owner', () => {
  const reg = registerRid({ runDir, rid: 0x1234n, mnt: '/mnt/a b' });
  assert.equal(reg.path, join(runDir, 'rid-0000000000001234.pid'));
  const rec = readRidFile(reg.path)!;
  assert.equal(rec.pid, process.pid);
  assert.equal(rec.start, procStat(process.pid)!.start);
  assert.equal(rec.mnt, '/mnt/a b');
  assert.equal(rec.rid, '0000000000001234');
  // Someone else re-registered the rid (a new daemon): our remove leaves it.
  writeFileSync(reg.path, `pid=1\nstart=${procStat(1)!.start}\nmnt=/x\nrid=0000000000001234\n`);
  reg.remove();
  assert.ok(existsSync(reg.path));
  rmSync(reg.path);
  const reg2 = registerRid({ runDir, rid: 0x1234n, mnt: '/mnt/a' });
  reg2.remove();
  assert.ok(!existsSync(reg2.path));
  reg2.remove();
  writeFileSync(join(runDir, 'rid-00000000000000ff.pid'), 'garbage');
  assert.throws(() => readRidFile(join(runDir, 'rid-00000000000000ff.pid')), /not a rid registration/);
});

test('the default agent kills a real child registered for the rid and waits until it is gone', async () => {
  const rid = 0xdead0001n;
  const child = spawn(process.execPath, [CHILD, runDir, rid.toString(16), join(base, 'no-mount')], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise<{ code: number | null; signal: string | null }>((r) => child.on('exit', (code, signal) => r({ code, signal })));
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (b: Buffer) => { if (b.toString().includes('registered')) resolve(); });
      child.on('exit', () => reject(new Error('fence-child exited before registering')));
    });
    assert.equal(readRidFile(ridFilePath(runDir, rid))!.pid, child.pid);
    const agent = new LocalFenceAgent({ runDir });
    const out = await agent.fence({ rid, addr: '127.0.0.1', reason: 'client_recovery' }, never);
    assert.equal(out.ok, true, out.output);
    assert.match(out.output, new RegExp(`killed pid ${child.pid} \\(SIGKILL\\)\\npid ${child.pid} is gone`));
    assert.deepEqual(await exited, { code: null, signal: 'SIGKILL' });
    assert.ok(!existsSync(ridFilePath(runDir, rid)), 'registration removed');
  } finally {
    child.kill('SIGKILL');
  }
});

test('no registration, a stale one, or a reused pid: fenced, and nothing else is killed', async () => {
  const agent = new LocalFenceAgent({ runDir });
  const none = await agent.fence({ rid: 0x77n, addr: '10.0.0.1', reason: 'quorum_block_leader' }, never);
  assert.equal(none.ok, true);
  assert.match(none.output, /no daemon registered for rid 0000000000000077 .* none runs on this host/);

  // A dead pid: a process that has exited and been reaped.
  const gone = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => gone.on('exit', r));
  mkdirSync(runDir, { recursive: true });
  writeFileSync(ridFilePath(runDir, 0x78n), `pid=${gone.pid}\nstart=1\nmnt=/nowhere\nrid=0000000000000078\n`);
  const stale = await agent.fence({ rid: 0x78n, addr: '10.0.0.1', reason: 'client_reconnect' }, never);
  assert.equal(stale.ok, true);
  assert.match(stale.output, /is not running \(stale registration\)/);

  // Our own pid with another start time: a reused pid must not be killed (we would die).
  writeFileSync(ridFilePath(runDir, 0x79n), `pid=${process.pid}\nstart=12345\nmnt=/nowhere\nrid=0000000000000079\n`);
  const reused = await agent.fence({ rid: 0x79n, addr: '10.0.0.1', reason: 'client_recovery' }, never);
  assert.equal(reused.ok, true);
  assert.match(reused.output, /stale registration/);
});

const FUSE_SKIP = isRoot() && existsSync('/dev/fuse') && (await which('fusermount')) ? false : 'needs root, /dev/fuse and fusermount';

test('the default agent kills a FUSE daemon registered for the rid and its mount is gone', { skip: FUSE_SKIP }, async () => {
  const reg = new CleanupRegistry('fenceagent-fuse');
  try {
    const backing = join(base, 'backing');
    const mnt = join(base, 'mnt');
    mkdirSync(backing);
    mkdirSync(mnt);
    const proc = await startProc(reg, { name: 'fenced', command: process.execPath, args: [PASSTHROUGH, backing, mnt], logPath: join(base, 'fenced.log') });
    await reg.add(`unmount ${mnt}`, () => unmount(mnt));
    const up = mountAppears(mnt);
    const said = logMatches(proc.logPath, /^mounted /m);
    await proc.waitReady(async () => (await up()) && (await said()), { timeoutMs: 20_000, what: 'FUSE mount' });
    writeFileSync(join(mnt, 'f'), 'x');
    const rid = 0xf00d0001n;
    registerRid({ runDir, rid, mnt, pid: proc.pid });
    const out = await new LocalFenceAgent({ runDir }).fence({ rid, addr: '127.0.0.1', reason: 'quorum_block_leader' }, never);
    assert.equal(out.ok, true, out.output);
    const info = await proc.exited;
    assert.equal(info.signal, 'SIGKILL');
    assert.ok(!readMountInfo('/proc/self/mountinfo').some((m) => m.mountPoint === mnt), `no mount left at ${mnt}:\n${out.output}`);
    assert.match(out.output, /killed pid \d+ \(SIGKILL\)/);
    assert.ok(!existsSync(ridFilePath(runDir, rid)));
    assert.equal(readFileSync(join(backing, 'f'), 'utf8'), 'x');
  } finally {
    const rep = await reg.runAll({ ok: true });
    assert.deepEqual(rep.errors.map((e) => e.error.message), []);
  }
});

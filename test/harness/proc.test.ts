/*
 * Goal: a node process logs to its own file, readiness is awaited through a
 * polled predicate (a log line), pause/resume really stop and continue it,
 * stop escalates from SIGTERM to SIGKILL for a node that ignores SIGTERM,
 * kill is immediate, waitReady fails early when the node dies, and a
 * predicate that never holds times out with a HarnessTimeoutError.  Every
 * test's registry is drained in `after`, so no process outlives the file.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CleanupRegistry } from '../../harness/cleanup.js';
import { HarnessTimeoutError, logMatches, pidAlive, startProc, type NodeProc } from '../../harness/proc.js';
import { sleep } from '../../harness/sys.js';

const base = await mkdtemp(join(tmpdir(), 'sfh-proc-'));
const reg = new CleanupRegistry('proc-tests');
const started: NodeProc[] = [];
after(async () => {
  await reg.runAll({ ok: false });
  for (const p of started) assert.equal(await pidAlive(p.pid), false, `${p.name} left alive`);
  await rm(base, { recursive: true, force: true });
});

const TICKER = `
let n = 0;
console.log('up ' + process.pid);
setInterval(() => console.log('tick ' + (++n)), 20);
process.on('SIGTERM', () => { console.log('bye'); process.exit(0); });
`;

async function start(name: string, src: string): Promise<NodeProc> {
  const p = await startProc(reg, { name, command: process.execPath, args: ['-e', src], logPath: join(base, `${name}.log`), stopTimeoutMs: 500 });
  started.push(p);
  return p;
}

async function procState(pid: number): Promise<string> {
  const s = await readFile(`/proc/${pid}/stat`, 'utf8');
  return s.slice(s.lastIndexOf(')') + 2, s.lastIndexOf(')') + 3);
}

function ticks(log: string): number {
  return [...log.matchAll(/^tick (\d+)$/gm)].length;
}

test('log, readiness, pause/resume, clean stop', async () => {
  const p = await start('ticker', TICKER);
  await p.waitReady(logMatches(p.logPath, /^up \d+$/m), { timeoutMs: 10_000, what: 'up line' });
  assert.equal(await pidAlive(p.pid), true);
  await p.waitReady(async () => ticks(await p.log()) >= 2, { timeoutMs: 10_000, what: 'two ticks' });

  p.pause();
  await p.waitReady(async () => (await procState(p.pid)) === 'T', { timeoutMs: 5_000, what: 'stopped state' });
  const frozen = ticks(await p.log());
  await sleep(150);
  assert.equal(ticks(await p.log()), frozen, 'no ticks while paused');
  p.resume();
  await p.waitReady(async () => ticks(await p.log()) > frozen, { timeoutMs: 10_000, what: 'ticks after resume' });

  const exit = await p.stop();
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.match(await p.log(), /^bye$/m);
  assert.match(await p.log(), /^=== harness: start ticker: /m);
  assert.equal(await pidAlive(p.pid), false);
});

test('stop of a paused node still delivers SIGTERM', async () => {
  const p = await start('paused', TICKER);
  await p.waitReady(logMatches(p.logPath, /^up/m), { timeoutMs: 10_000, what: 'up' });
  p.pause();
  const exit = await p.stop();
  assert.equal(exit.code, 0);
});

test('stop escalates to SIGKILL when SIGTERM is ignored', async () => {
  const p = await start('stubborn', `process.on('SIGTERM', () => console.log('ignoring')); console.log('up'); setInterval(() => {}, 1000);`);
  await p.waitReady(logMatches(p.logPath, /^up$/m), { timeoutMs: 10_000, what: 'up' });
  const t0 = Date.now();
  const exit = await p.stop(300);
  assert.equal(exit.signal, 'SIGKILL');
  assert.ok(Date.now() - t0 >= 250, 'waited for the grace period first');
  assert.match(await p.log(), /^ignoring$/m);
});

test('kill is SIGKILL; waitReady fails early when the node died', async () => {
  const p = await start('victim', TICKER);
  await p.waitReady(logMatches(p.logPath, /^up/m), { timeoutMs: 10_000, what: 'up' });
  const exit = await p.kill();
  assert.equal(exit.signal, 'SIGKILL');
  const t0 = Date.now();
  await assert.rejects(p.waitReady(() => false, { timeoutMs: 30_000, what: 'never' }), /exited .* before never/);
  assert.ok(Date.now() - t0 < 5_000);
});

test('a predicate that never holds times out', async () => {
  const p = await start('waiter', TICKER);
  await assert.rejects(
    p.waitReady(logMatches(p.logPath, /^this never appears$/m), { timeoutMs: 200, what: 'a line that never comes' }),
    (err: unknown) => err instanceof HarnessTimeoutError && /a line that never comes/.test(err.message),
  );
  await p.stop();
});

test('a command that does not exist fails to start', async () => {
  await assert.rejects(
    startProc(reg, { name: 'ghost', command: join(base, 'no-such-binary'), args: [], logPath: join(base, 'ghost.log') }),
    /cannot start ghost/,
  );
});

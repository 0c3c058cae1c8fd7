/*
 * Goal: both pools run a job table and return its results; errors come back
 * with their class and fields (FsError code, CorruptionError source, blkno
 * and check, LifecycleError reason), whether thrown on this thread or in a
 * piscina worker; transfer lists move buffers; SharedArrayBuffers are
 * shared; a destroyed pool refuses work with LifecycleError.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { threadId } from 'node:worker_threads';
import { CorruptionError, FsError, LifecycleError } from '../../../src/format/errors.js';
import { InlinePool, PiscinaPool, DEFAULT_WORKER_FILE, type WorkerPool } from '../../../src/runtime/workerpool.js';
import { FIXTURE_JOBS } from './fixture-worker.js';

const fixtureFile = fileURLToPath(new URL('./fixture-worker.js', import.meta.url));
const piscina = new PiscinaPool({ filename: fixtureFile, maxThreads: 2 });
after(() => piscina.destroy());

const pools: [string, WorkerPool][] = [
  ['inline', new InlinePool(FIXTURE_JOBS)],
  ['piscina', piscina],
];

for (const [name, pool] of pools) {
  test(`${name}: results and typed errors`, async () => {
    assert.deepEqual(await pool.run('echo', { a: 1n, b: [1, 'x'] }), { a: 1n, b: [1, 'x'] });
    await assert.rejects(pool.run('fsError', null), (e: unknown) => {
      assert.ok(e instanceof FsError);
      assert.equal(e.code, 'ENOSPC');
      assert.match(e.message, /no room/);
      return true;
    });
    await assert.rejects(pool.run('corrupt', null), (e: unknown) => {
      assert.ok(e instanceof CorruptionError);
      assert.equal(e.source, '/dev/x');
      assert.equal(e.blkno, 77n);
      assert.equal(e.check, 'magic');
      return true;
    });
    await assert.rejects(pool.run('lifecycle', null), (e: unknown) => e instanceof LifecycleError && e.reason === 'fenced');
    await assert.rejects(pool.run('bug', null), (e: unknown) => e instanceof Error && e.name === 'TypeError');
    await assert.rejects(pool.run('nope', null), /unknown worker job "nope"/);
  });

  test(`${name}: transfer moves, SharedArrayBuffer is shared`, async () => {
    const a = new Uint8Array([1, 2, 3, 250]);
    assert.equal(await pool.run('sum', { a }, [a.buffer]), 256);
    assert.equal(a.byteLength, 0, 'the transferred buffer is detached here');
    const sab = new SharedArrayBuffer(4);
    const v = new Uint8Array(sab);
    v.set([5, 5, 5, 5]);
    assert.equal(await pool.run('sum', { a: v }), 20);
  });
}

test('piscina runs jobs on other threads; inline on this one', async () => {
  assert.notEqual(await piscina.run('threadId', null), threadId);
  assert.equal(await new InlinePool(FIXTURE_JOBS).run('threadId', null), threadId);
});

test('the default worker file is dist/workers/index.js', () => {
  assert.match(DEFAULT_WORKER_FILE, /dist\/workers\/index\.js$/);
});

test('destroyed pools refuse work', async () => {
  const p = new PiscinaPool({ filename: fixtureFile, maxThreads: 1 });
  assert.equal(await p.run('echo', 1), 1);
  await p.destroy();
  await p.destroy();
  await assert.rejects(p.run('echo', 1), (e: unknown) => e instanceof LifecycleError && e.reason === 'shutdown');
  const i = new InlinePool(FIXTURE_JOBS);
  await i.destroy();
  await assert.rejects(i.run('echo', 1), LifecycleError);
});

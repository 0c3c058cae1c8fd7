/*
 * A piscina worker entry for workerpool.test.ts: the same dispatch as
 * workers/index.ts over a table of jobs that throw each kind of error, so
 * the test can check that errors cross a real thread boundary typed.
 * (node --test loads this file too; it defines no tests.)
 */
import { threadId } from 'node:worker_threads';
import { runJob, type JobReply, type JobTask, type JobTable } from '../../../src/runtime/job.js';
import { CorruptionError, FsError, LifecycleError } from '../../../src/format/errors.js';

export const FIXTURE_JOBS: JobTable = {
  echo: (p: unknown) => p,
  sum: (p: { a: Uint8Array }) => p.a.reduce((x, y) => x + y, 0),
  fsError: () => { throw new FsError('ENOSPC', 'no room'); },
  corrupt: () => { throw new CorruptionError('/dev/x', 77n, 'magic', 'bad magic'); },
  lifecycle: () => { throw new LifecycleError('fenced', 'fenced by server'); },
  bug: () => { throw new TypeError('oops'); },
  threadId: () => threadId,
};

export default function dispatch(task: JobTask): JobReply {
  return runJob(FIXTURE_JOBS, task);
}

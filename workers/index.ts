/*
 * The piscina worker entry (dist/workers/index.js).
 *
 * Piscina calls the default export once per task with {job, payload}.  We
 * look the job up in the table and reply with a JobReply: the value, or the
 * error serialized with serializeError() so the main thread can rethrow it
 * with its class and fields (src/runtime/workerpool.ts).  This file stays a
 * thin shim: the jobs are pure functions in src/, listed in jobs.ts.
 */
import { runJob, type JobReply, type JobTask } from '../src/runtime/job.js';
import { JOBS } from './jobs.js';

export default function dispatch(task: JobTask): JobReply {
  return runJob(JOBS, task);
}

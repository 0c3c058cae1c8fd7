/*
 * The job protocol shared by the pools and the worker entry.
 *
 * A task is {job, payload}; the reply is {ok: true, value} or {ok: false,
 * error} with the error serialized by serializeError() (src/format/errors.ts),
 * because structured clone drops error classes and their fields.  runJob()
 * never throws: every error, assertion failures included, becomes a reply,
 * and the pool rethrows it on the calling side with deserializeError().
 *
 * This lives apart from workerpool.ts so the worker entry
 * (workers/index.ts) loads only this and the jobs, not piscina's main side.
 */
import { serializeError, type SerializedError } from '../format/errors.js';

/** A pure function: payload in, result out, no I/O, no shared mutable state. */
export type JobFn = (payload: any) => unknown; // eslint-disable-line @typescript-eslint/no-explicit-any
export type JobTable = Readonly<Record<string, JobFn>>;

export interface JobTask {
  job: string;
  payload: unknown;
}

export type JobReply = { ok: true; value: unknown } | { ok: false; error: SerializedError };

/** Run one task against a table; errors become replies. */
export function runJob(table: JobTable, task: JobTask): JobReply {
  try {
    const fn = Object.hasOwn(table, task.job) ? table[task.job] : undefined;
    if (fn === undefined) throw new Error(`unknown worker job "${task.job}"`);
    return { ok: true, value: fn(task.payload) };
  } catch (e) {
    return { ok: false, error: serializeError(e) };
  }
}

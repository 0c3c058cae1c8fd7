/*
 * WorkerPool: where pure CPU jobs over block images run.
 *
 * A job is a name and a structured-clonable payload; the result comes back
 * as a promise.  The jobs themselves are pure functions in src/ collected
 * in a JobTable (workers/jobs.ts).  Two pools run the same table:
 *
 *   PiscinaPool  worker threads (piscina 5).  The worker entry is
 *                dist/workers/index.js, which dispatches by job name.
 *   InlinePool   the calling thread, for unit tests and the simulator,
 *                where one thread and one seed must give one outcome.
 *
 * The task/reply protocol is in job.ts.  The table is injected into
 * InlinePool rather than imported here, so src/runtime/ stays at the bottom
 * of the import graph (the jobs live in src/block/ and above).
 *
 * Errors cross the thread boundary explicitly: the worker catches, sends
 * serializeError(e) in a JobReply, and run() rethrows deserializeError(),
 * so an FsError, CorruptionError or LifecycleError keeps its class and
 * fields (structured clone would turn it into a plain Error).  InlinePool
 * takes the same path, and also structured-clones the payload (honouring
 * the transfer list) unless told not to, so a payload that would not
 * survive postMessage fails in tests too.  SharedArrayBuffers are shared,
 * not copied, by both: that is how workers read block cache slots.
 *
 * PiscinaPool choices:
 *   - maxThreads = os.availableParallelism() by default; minThreads 1 and a
 *     10 s idleTimeout, so an idle daemon holds one thread, not one per CPU.
 *   - atomics: 'sync'.  Our jobs are synchronous pure functions that leave
 *     no handles open, so a worker may park in Atomics.wait between tasks
 *     and be woken with Atomics.notify: the lowest-latency hand-off.  The
 *     waiting happens only in worker threads; piscina's main-thread side
 *     only notifies, so the main thread still never blocks (STYLE.md 6).
 *     Rejected: 'async' (documented performance penalty; it exists for
 *     workers with pending async work, which ours must never have) and
 *     'disabled' (every task then waits for the worker's event loop to
 *     deliver its port message).
 *   - maxQueue max(64, maxThreads^2): the queue is bounded; a run() beyond
 *     it rejects (piscina's queue-full error) instead of queueing without
 *     limit.  Callers bound their own batches well below that.
 *   - Results come back by structured clone.  A job returning a large
 *     ArrayBuffer should wrap it with piscina's move() in its shim; none
 *     does yet.
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import type { Transferable } from 'node:worker_threads';
import { Piscina } from 'piscina';
import { deserializeError, LifecycleError } from '../format/errors.js';
import { runJob, type JobReply, type JobTable, type JobTask } from './job.js';

export { runJob, type JobFn, type JobReply, type JobTable, type JobTask } from './job.js';

export interface WorkerPool {
  run<T>(job: string, payload: unknown, transfer?: Transferable[]): Promise<T>;
  destroy(): Promise<void>;
}

function unwrap<T>(reply: JobReply): T {
  if (!reply.ok) throw deserializeError(reply.error);
  return reply.value as T;
}

/** dist/workers/index.js, from dist/src/runtime/workerpool.js. */
export const DEFAULT_WORKER_FILE = fileURLToPath(new URL('../../workers/index.js', import.meta.url));

export interface PiscinaPoolOptions {
  maxThreads?: number;
  minThreads?: number;
  idleTimeoutMs?: number;
  maxQueue?: number;
  filename?: string;
}

export class PiscinaPool implements WorkerPool {
  private piscina: Piscina<JobTask, JobReply> | null;
  readonly maxThreads: number;

  constructor(opts: PiscinaPoolOptions = {}) {
    const maxThreads = opts.maxThreads ?? availableParallelism();
    const minThreads = Math.min(opts.minThreads ?? 1, maxThreads);
    assert(maxThreads >= 1 && minThreads >= 0, 'pool needs at least one thread');
    this.maxThreads = maxThreads;
    this.piscina = new Piscina<JobTask, JobReply>({
      filename: opts.filename ?? DEFAULT_WORKER_FILE,
      maxThreads,
      minThreads,
      idleTimeout: opts.idleTimeoutMs ?? 10_000,
      atomics: 'sync',
      maxQueue: opts.maxQueue ?? Math.max(64, maxThreads * maxThreads),
    });
  }

  async run<T>(job: string, payload: unknown, transfer?: Transferable[]): Promise<T> {
    if (this.piscina === null) throw new LifecycleError('shutdown', `worker pool destroyed; job "${job}" not run`);
    const opts = transfer !== undefined && transfer.length > 0 ? { transferList: transfer } : {};
    return unwrap<T>(await this.piscina.run({ job, payload }, opts));
  }

  /** Stop every thread; safe to call twice. */
  async destroy(): Promise<void> {
    const p = this.piscina;
    this.piscina = null;
    if (p !== null) await p.destroy();
  }
}

export class InlinePool implements WorkerPool {
  private readonly table: JobTable;
  private readonly clone: boolean;
  private destroyed = false;
  /** Jobs run, for tests. */
  jobsRun = 0;

  constructor(table: JobTable, opts: { clone?: boolean } = {}) {
    this.table = table;
    this.clone = opts.clone ?? true;
  }

  async run<T>(job: string, payload: unknown, transfer?: Transferable[]): Promise<T> {
    if (this.destroyed) throw new LifecycleError('shutdown', `worker pool destroyed; job "${job}" not run`);
    // Clone before yielding, like postMessage: the caller may reuse its
    // buffers as soon as run() returns.
    const p = this.clone ? structuredClone(payload, { transfer }) : payload;
    await Promise.resolve();
    this.jobsRun++;
    const reply = runJob(this.table, { job, payload: p });
    return unwrap<T>(this.clone ? structuredClone(reply) : reply);
  }

  async destroy(): Promise<void> {
    this.destroyed = true;
  }
}

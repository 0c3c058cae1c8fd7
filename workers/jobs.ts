/*
 * The worker job table: job name -> pure function in src/.
 *
 * Both pools run this table: PiscinaPool through workers/index.ts in worker
 * threads, InlinePool on the calling thread (it is injected there, so
 * src/runtime/ does not import the layers above it).  A job must be a pure
 * function of its payload: no I/O, no clock, no randomness, no module
 * state; it may read SharedArrayBuffers it is handed (block cache slots)
 * that the main thread pinned for it, and writes nothing it was not given.
 * That is what makes the inline and threaded runs give the same result.
 *
 * Jobs:
 *   verify       checkBlock() over a batch of pinned cache slots (src/block/verify.ts)
 *   buildLeaves  fill reserved leaf blocks from a packed sorted item stream (src/btree/build.ts)
 */
import type { JobTable } from '../src/runtime/job.js';
import { verifyBatch } from '../src/block/verify.js';
import { fillLeaves } from '../src/btree/build.js';

export const JOBS: JobTable = Object.freeze({
  verify: verifyBatch,
  buildLeaves: fillLeaves,
});

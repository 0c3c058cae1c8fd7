/*
 * Log merge bookkeeping values (FORMAT.md 8.12): status, range, request,
 * complete and freeing items of the log_merge btree.
 */
import { layout } from './layout.js';
import { KEY } from './key.js';
import { ALLOC_LIST_HEAD, BTREE_ROOT } from './common.js';

export const LOG_MERGE_STATUS = layout('log_merge_status', 56, [
  ['next_range_key', KEY],
  ['nr_requests', 8],
  ['nr_complete', 8],
  ['seq', 8],
]);

export const LOG_MERGE_RANGE = layout('log_merge_range', 64, [
  ['start', KEY],
  ['end', KEY],
]);

export const LOG_MERGE_REQUEST = layout('log_merge_request', 208, [
  ['meta_avail', ALLOC_LIST_HEAD],
  ['meta_freed', ALLOC_LIST_HEAD],
  ['logs_root', BTREE_ROOT],
  ['root', BTREE_ROOT],
  ['start', KEY],
  ['end', KEY],
  ['input_seq', 8],
  ['rid', 8],
  ['seq', 8],
  ['flags', 8],
]);
export const LOG_MERGE_REQUEST_FLAG_SUBTREE = 1n;

export const LOG_MERGE_COMPLETE = layout('log_merge_complete', 208, [
  ['meta_avail', ALLOC_LIST_HEAD],
  ['meta_freed', ALLOC_LIST_HEAD],
  ['root', BTREE_ROOT],
  ['start', KEY],
  ['end', KEY],
  ['remain', KEY],
  ['rid', 8],
  ['seq', 8],
  ['flags', 8],
]);
export const LOG_MERGE_COMP_FLAG = { ERROR: 1n, REMAIN: 2n } as const;

export const LOG_MERGE_FREEING = layout('log_merge_freeing', 64, [
  ['root', BTREE_ROOT],
  ['key', KEY],
  ['seq', 8],
]);

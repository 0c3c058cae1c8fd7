/*
 * Alloc list blocks (FORMAT.md 9.2): a chain of 64 KiB blocks holding LG
 * blknos.  Valid entries are blknos[start .. start+nr-1]; the rest of the
 * array is undefined.  56 + 8 * 8185 = 65536 exactly.
 */
import { layout, getU32, getU64 } from './layout.js';
import { BLOCK_HEADER, BLOCK_REF, readRef, type BlockRef } from './block.js';
import { ALLOC_LIST_MAX_BLOCKS } from './constants.js';

export const ALLOC_LIST_BLOCK = layout('alloc_list_block', 65536, [
  ['hdr', BLOCK_HEADER],
  ['next', BLOCK_REF],
  ['start', 4],
  ['nr', 4],
  ['blknos', 8, ALLOC_LIST_MAX_BLOCKS],
]);
export const ALLOC_LIST_BLKNOS_OFF = 56;

export interface AllocListBlockView { next: BlockRef; start: number; nr: number }

export function readAllocListBlock(b: Uint8Array): AllocListBlockView {
  return { next: readRef(b, 32), start: getU32(b, 48), nr: getU32(b, 52) };
}

/** Valid entries; null when start/nr overflow the array (corrupt). */
export function allocListEntries(b: Uint8Array): bigint[] | null {
  const { start, nr } = readAllocListBlock(b);
  if (start + nr > ALLOC_LIST_MAX_BLOCKS) return null;
  const out: bigint[] = [];
  for (let i = start; i < start + nr; i++) out.push(getU64(b, ALLOC_LIST_BLKNOS_OFF + 8 * i));
  return out;
}

/*
 * Constants of scoutfs format version 0 (FORMAT.md s1, PROTOCOL.md s12).
 *
 * Block numbers are in the units of what they address: the super and quorum
 * blocks in 4 KiB (SM) units, every other metadata block in 64 KiB (LG) units
 * on the metadata device, file data in SM units on the data device.
 */

export const FORMAT_VERSION_MIN = 0n;
export const FORMAT_VERSION_MAX = 0n;
export const STATFS_F_TYPE = 0x554f4353;

export const SM_BLOCK_SHIFT = 12;
export const SM_BLOCK_SIZE = 4096;
export const LG_BLOCK_SHIFT = 16;
export const LG_BLOCK_SIZE = 65536;
export const SM_TO_LG_SHIFT = 4;

export const SUPER_BLKNO = 16n; // SM units, byte 65536 on both devices
export const QUORUM_BLKNO = 17n; // SM units, first of 15 quorum blocks
export const QUORUM_BLOCKS = 15;
export const QUORUM_MAX_SLOTS = 15;
export const META_DEV_START_BLKNO = 2n; // LG units
export const DATA_DEV_START_BLKNO = 64n; // SM units
export const UUID_BYTES = 16;

export const BTREE_MAX_VAL_LEN = 896;
export const MAX_VAL_SIZE = 896;
export const BTREE_MAX_HEIGHT = 20;
export const BTREE_VALUE_ALIGN = 8;
export const LEAF_ITEM_HASH_NR = 1512;
export const LEAF_ITEM_HASH_BYTES = 3024;

export const ALLOC_LIST_MAX_BLOCKS = 8185;
export const SRCH_PARENT_REFS = 4094;
export const SRCH_ENTRY_MAX_BYTES = 26;
export const SRCH_BLOCK_SAFE_BYTES = 65398;
export const SRCH_LOG_BLOCK_LIMIT = 16;
export const SRCH_COMPACT_ORDER = 2;
export const SRCH_COMPACT_NR = 4;
export const DATA_ALLOC_MAX_ZONES = 1024;
export const DATA_ALLOC_ZONE_BYTES = 128;

export const FOREST_BLOOM_NRS = 3;
export const FOREST_BLOOM_BITS = 523968;
export const FOREST_BLOOM_FUNC_BITS = 19;
export const BLOOM_WORDS = 8187;

export const ROOT_INO = 1n;
export const LOCK_INODE_GROUP_NR = 1024n;
export const LOCK_SEQ_GROUP_MASK = 1023n;
export const NAME_LEN = 255;
export const SYMLINK_MAX_SIZE = 4096;
export const XATTR_MAX_NAME_LEN = 255;
export const XATTR_MAX_VAL_LEN = 65535;
export const XATTR_MAX_PART_SIZE = 896;
export const XATTR_MAX_TOTL_U64 = 23;
export const DIRENT_FIRST_POS = 2n;
export const DIRENT_LAST_POS = 0xfffffffffffffffen;
export const LINK_MAX = 0x7fffffff;

/** mkfs refuses devices below this without -A (FORMAT.md s13). */
export const MIN_DEVICE_BYTES = 64n * 1024n * 1024n * 1024n;

/** Block magics (u32 at header offset 4). */
export const MAGIC = {
  super: 0x103c428b,
  btree: 0xe597f96d,
  bloom: 0x31995604,
  srchBlock: 0x897e4a7d,
  srchParent: 0xb23a2a05,
  allocList: 0x8a93ac83,
  quorum: 0xbc310868,
} as const;
export type BlockKind = keyof typeof MAGIC;

/** Block size of each kind of block. */
export const BLOCK_SIZE_OF: Record<BlockKind, number> = {
  super: SM_BLOCK_SIZE,
  quorum: SM_BLOCK_SIZE,
  btree: LG_BLOCK_SIZE,
  bloom: LG_BLOCK_SIZE,
  srchBlock: LG_BLOCK_SIZE,
  srchParent: LG_BLOCK_SIZE,
  allocList: LG_BLOCK_SIZE,
};

export function magicName(magic: number): BlockKind | null {
  for (const [k, v] of Object.entries(MAGIC)) if (v === magic) return k as BlockKind;
  return null;
}

/** super.flags bit 0: this is the metadata device's copy. */
export const SUPER_FLAG_META_BDEV = 1n;

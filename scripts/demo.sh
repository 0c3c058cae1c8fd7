#!/usr/bin/env bash
# The main job, for now: make two sparse images (loop devices over them when
# root), mkfs with two quorum slots, print the super block, the quorum config
# and the root inode, then clean up.  Later steps mount nodes here.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/scoutfs-demo.XXXXXX)
loops=()
cleanup() {
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

meta_img=$work/meta.img
data_img=$work/data.img
truncate -s 2G "$meta_img"
truncate -s 8G "$data_img"
meta=$meta_img
data=$data_img
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null; then
  if meta=$(losetup -f --show "$meta_img") && loops+=("$meta") && data=$(losetup -f --show "$data_img"); then
    loops+=("$data")
    echo "demo: loop devices $meta (meta) and $data (data)"
  else
    echo "demo: losetup failed; using the image files directly"
    meta=$meta_img; data=$data_img
  fi
fi

echo "+ scoutfs mkfs -A -Q 0,127.0.0.1,7000 -Q 1,127.0.0.1,7001 $meta $data"
./bin/scoutfs mkfs -A -Q 0,127.0.0.1,7000 -Q 1,127.0.0.1,7001 "$meta" "$data"
echo
echo "+ scoutfs print $meta   (super block, quorum config and root inode)"
./bin/scoutfs print "$meta" > "$work/print.txt"
sed -n '/^super blkno/,/^  srch_root/p' "$work/print.txt"
grep -A4 'item 4.1.1.0.0.0' "$work/print.txt"
echo
echo "+ scoutfs fsck $meta $data"
./bin/scoutfs fsck "$meta" "$data"
echo
echo "demo: print walked $(grep -c 'blkno' "$work/print.txt") lines of blocks with no complaint"

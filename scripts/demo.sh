#!/usr/bin/env bash
# The main job: make two sparse images (loop devices over them when root),
# mkfs with two quorum slots, mount one node (root with FUSE), show
# walk-inodes before and after touch + sync as in the scoutfs quick start,
# unmount, then print the super block, the quorum config and the root inode
# and fsck the volume.  Everything is cleaned up on exit.
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
mnt=$work/mnt
mkdir -p "$mnt"
if [ "$(id -u)" = 0 ] && [ -e /dev/fuse ]; then
  echo
  echo "+ scoutfs mount -d -o quorum_slot_nr=0,metadev_path=$meta $data $mnt"
  mounted=1
  ./bin/scoutfs mount -d --log-file "$work/mount.log" --pid-file "$work/mount.pid" \
    -o "quorum_slot_nr=0,metadev_path=$meta" "$data" "$mnt"
  unmount() {
    if [ -n "${mounted:-}" ]; then
      umount "$mnt" 2>/dev/null || fusermount -u "$mnt" 2>/dev/null || true
      for _ in $(seq 50); do [ -e "/proc/$(cat "$work/mount.pid" 2>/dev/null || echo 0)" ] || break; sleep 0.2; done
      mounted=
    fi
  }
  trap 'unmount; cleanup' EXIT INT TERM
  echo "+ scoutfs walk-inodes meta_seq 0 -1 $mnt"
  ./bin/scoutfs walk-inodes meta_seq 0 -1 "$mnt"
  echo "+ touch $mnt/file; sync"
  touch "$mnt/file"
  ./bin/scoutfs sync "$mnt"
  echo "+ scoutfs walk-inodes meta_seq 0 -1 $mnt"
  ./bin/scoutfs walk-inodes meta_seq 0 -1 "$mnt"
  echo "+ echo hello > $mnt/file; scoutfs stat $mnt/file"
  echo hello > "$mnt/file"
  ./bin/scoutfs sync "$mnt"
  ./bin/scoutfs stat "$mnt/file"
  echo "+ umount $mnt"
  unmount
else
  echo "demo: not root or no /dev/fuse: skipping the mount"
fi

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

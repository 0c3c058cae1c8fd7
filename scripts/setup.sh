#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine of this kind and
# builds dist/.  Idempotent: a second run only rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages.  libfuse2 and fuse serve fuse-native; util-linux gives
# losetup; e2fsprogs gives mkfs.ext4 and fio the random I/O for the perf
# baselines; iproute2 gives the harness its network namespaces; attr gives
# setfattr/getfattr for the xattr tests through FUSE; xz-utils unpacks the
# reference mkfs images and python3 finds their holes (SEEK_DATA).
need=()
for pkg in libfuse2 fuse util-linux e2fsprogs iproute2 fio attr xz-utils python3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: not root; cannot install ${need[*]} (FUSE and loop-device features need them)" >&2
  fi
fi

# npm packages, exactly as locked.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

# Native addons, built with the node-gyp that ships inside npm, against the
# headers of the running node (--nodedir), so nothing is downloaded.  Both
# are optional: when one fails to build the code falls back.
#   native/crc32c  CRC-32C (src/format/crc.ts); else @node-rs/crc32 or pure
#                  JS, about 5x and 35x slower.
#   native/fuse    fuse-native's binding with the scoutfs patches (caller
#                  uid/gid for new inodes, 64-bit st_ino, utimens); else the
#                  fuse-native package: new files then belong to the daemon.
#   native/fusedev the /dev/fuse reader of the kernel transport (uv_poll on
#                  the device); else a worker thread reads it (slower).
node_gyp="$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js"
node_dir="$(node -p 'require("path").resolve(process.execPath, "../..")')"
if [ -f "$node_gyp" ] && [ -f "$node_dir/include/node/node_api.h" ]; then
  gyp=(node "$node_gyp" --nodedir="$node_dir")
else
  gyp=(npx --yes node-gyp) # fetches node-gyp and node headers
fi
build_addon() { # DIR WHAT-IS-LOST
  local log
  log="$(mktemp)"
  if "${gyp[@]}" rebuild -C "$1" >"$log" 2>&1; then
    echo "setup: built $1"
  else
    tail -n 20 "$log" >&2
    rm -rf "$1/build"
    echo "setup: WARNING: $1 did not build; $2" >&2
  fi
  rm -f "$log"
}
build_addon native/crc32c 'block checksums use a slower fallback'
build_addon native/fuse 'mounts use the fuse-native package (new files are owned by the daemon)'
build_addon native/fusedev 'the kernel transport reads /dev/fuse from a worker thread'

# The mount(8) helper, so `mount -t scoutfs -o metadev_path=META DATA MNT`
# works as with the kernel module (root only: it goes in /usr/sbin).
if [ "$(id -u)" = 0 ]; then
  sed "s|@REPO@|$(pwd)|" scripts/mount.scoutfs > /usr/sbin/mount.scoutfs.tmp
  chmod 755 /usr/sbin/mount.scoutfs.tmp
  mv /usr/sbin/mount.scoutfs.tmp /usr/sbin/mount.scoutfs
  echo "setup: installed /usr/sbin/mount.scoutfs (mount -t scoutfs)"
fi

# Build: a clean dist/ so removed sources leave no stale tests behind.
rm -rf dist
npx tsc -p tsconfig.json
echo "setup: built dist/"

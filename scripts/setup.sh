#!/usr/bin/env bash
# Installs everything the project needs on a fresh machine of this kind and
# builds dist/.  Idempotent: a second run only rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages.  libfuse2 and fuse serve fuse-native; util-linux gives
# losetup; e2fsprogs gives mkfs.ext4 for the perf baselines.
need=()
for pkg in libfuse2 fuse util-linux e2fsprogs iproute2; do
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

# Build: a clean dist/ so removed sources leave no stale tests behind.
rm -rf dist
npx tsc -p tsconfig.json
echo "setup: built dist/"

#!/usr/bin/env bash
# Runs every test: node:test over dist/test/**/*.test.js under c8 coverage.
# Assumes `make setup` has built dist/.  Every test gets at most 15 minutes
# (a hung FUSE request fails its test instead of stalling CI).  Extra
# arguments go to node --test.
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(find dist/test -name '*.test.js' | sort)
if [ ${#files[@]} -eq 0 ]; then
  echo "test: no test files under dist/test (did the build run?)" >&2
  exit 1
fi
exec npx c8 --reporter=text-summary --reporter=lcov --report-dir=coverage \
  node --test --test-concurrency=2 --test-timeout=900000 "$@" "${files[@]}"

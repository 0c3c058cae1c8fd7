#!/usr/bin/env bash
# Runs every test: node:test over dist/test under c8 coverage.  Assumes
# `make setup` has built dist/.  Extra arguments go to node --test.
set -euo pipefail
cd "$(dirname "$0")/.."
exec npx c8 --reporter=text-summary --reporter=lcov --report-dir=coverage \
  node --test --test-concurrency=2 "$@" dist/test/

#!/usr/bin/env bash
# CI smoke run of the benchmark harness: small dataset, a few seconds, asserts that every
# answer of authzd and Redis was correct. Asserts no speed: the two guards below count.
#
# One release build of the bench package (bench/Package.swift, in bench/.build): authzbench,
# then authzd (a product of the root package, which bench depends on by path) into the same
# folder, beside authzbench, where the harness starts it from; the modules both use compile once.
# Both are executables built as the README builds the daemon for production, without Swift's
# run-time exclusivity checks (docs/architecture.md, "Build"); the tests keep them.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=(-Xswiftc -enforce-exclusivity=unchecked)
build() { # swift build in bench/, release: its last line, or the whole log when it fails
  local log
  log="$(mktemp)"
  if swift build --package-path bench -c release "${flags[@]}" "$@" >"$log" 2>&1; then tail -1 "$log"; rm -f "$log"
  else cat "$log"; rm -f "$log"; return 1; fi
}
build --product authzbench
build --product authzd
bin="$(swift build --package-path bench -c release "${flags[@]}" --show-bin-path)"
"$bin/authzbench" smoke
# The check path must allocate nothing (a release build: debug builds allocate by design).
"$bin/authzbench" alloc-guard
# Nor grow in instructions: the release authzd under callgrind (valgrind, installed by
# scripts/install-deps.sh), instructions per batch-1 check against bench/callgrind-threshold.
"$bin/authzbench" callgrind-guard --threshold-file bench/callgrind-threshold

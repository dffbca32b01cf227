#!/usr/bin/env bash
# CI smoke run of the benchmark harness: small dataset, a few seconds, asserts that every
# answer of authzd and Redis was correct. Asserts no speed: the two guards below count.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product authzbench
swift build --product authzd
"$(swift build --show-bin-path)/authzbench" smoke
# The check path must allocate nothing (a release build: debug builds allocate by design).
swift build -c release --product authzbench 2>&1 | tail -1
"$(swift build -c release --show-bin-path)/authzbench" alloc-guard
# Nor grow in instructions: a release authzd under callgrind (valgrind, installed by
# scripts/install-deps.sh), instructions per batch-1 check against bench/callgrind-threshold.
swift build -c release --product authzd 2>&1 | tail -1
"$(swift build -c release --show-bin-path)/authzbench" callgrind-guard --threshold-file bench/callgrind-threshold

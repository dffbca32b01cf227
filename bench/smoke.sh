#!/usr/bin/env bash
# CI smoke run of the benchmark harness: small dataset, a few seconds, asserts that every
# answer of authzd and Redis was correct. Asserts no speed.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --product authzbench
swift build --product authzd
"$(swift build --show-bin-path)/authzbench" smoke
# The check path must allocate nothing (a release build: debug builds allocate by design).
swift build -c release --product authzbench 2>&1 | tail -1
"$(swift build -c release --show-bin-path)/authzbench" alloc-guard

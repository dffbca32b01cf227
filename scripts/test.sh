#!/usr/bin/env bash
# The test command: generated code check, every test, and the benchmark harness's smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash proto/check-generated.sh
swift build --build-tests
swift test
bash bench/smoke.sh
bash scripts/fuzz.sh 30

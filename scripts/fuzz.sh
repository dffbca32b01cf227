#!/usr/bin/env bash
# Builds the libFuzzer target (frame decoder + message decoding, fast path vs protobuf-c) with
# AddressSanitizer and runs it for N seconds (default 30) on the seed corpus.
# A longer run: bash scripts/fuzz.sh 3600
# The target is the Fuzz package (Fuzz/Package.swift, which depends on the root by path), built
# into Fuzz/.build-fuzz so that a plain `swift build` in Fuzz/ (a replay binary) keeps its own.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
swift build --package-path Fuzz --scratch-path Fuzz/.build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING 2>&1 | grep -v "Cannot export local symbol" | tail -3
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp Fuzz/corpus/* "$work/"
mkdir -p Fuzz/findings
Fuzz/.build-fuzz/debug/authzfuzz -max_total_time="$seconds" -artifact_prefix=Fuzz/findings/ -print_final_stats=1 "$work" 2>&1 | tail -12

#!/usr/bin/env bash
# Export → import into a fresh daemon → export at scale (issue 17): the bench's dataset (default
# `ten`: 10 tenants, 1,000,000 users, ~4.1M records) is loaded offline, exported page by page
# from a running daemon, imported through a second daemon with `authzctl import --chunk-commit`,
# exported again; the two exports must be identical once sorted. Prints sizes, times and the
# daemons' peak memory. Needs release builds of the daemon's package and of the bench's
# (swift build -c release; swift build -c release --package-path bench).
#
#   bash bench/roundtrip.sh [SIZE]      # SIZE: small, reference, ten (default ten)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-ten}
bin=$PWD/.build/release
benchbin=$PWD/bench/.build/release
work=$(mktemp -d /tmp/roundtrip.XXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
now() { date +%s.%N; }
peak() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
wait_socket() { for _ in $(seq 1 600); do [ -S "$1" ] && return 0; sleep 0.1; done; echo "no socket $1" >&2; exit 1; }

"$benchbin/authzbench" generate --size "$size" --out "$work/gen" >/dev/null
src="$work/gen/authzd.jsonl"
records=$(wc -l < "$src")
t0=$(now); "$bin/authzd" import --quiet --data-dir "$work/a" "$src" >/dev/null; t1=$(now)
echo "offline import: $records records in $(echo "$t1 - $t0" | bc) s"

"$bin/authzd" serve --data-dir "$work/a" --socket "$work/a.sock" --log-level warning & pids+=($!); a=$!
wait_socket "$work/a.sock"
t0=$(now); "$bin/authzctl" export --socket "$work/a.sock" --page-size 10000 --include-secrets > "$work/e1.jsonl"; t1=$(now)
echo "paged export (daemon A): $(wc -l < "$work/e1.jsonl") records, $(du -m "$work/e1.jsonl" | cut -f1) MB in $(echo "$t1 - $t0" | bc) s; daemon A peak RSS $(peak $a) KiB"

"$bin/authzd" serve --data-dir "$work/b" --socket "$work/b.sock" --log-level warning & pids+=($!); b=$!
wait_socket "$work/b.sock"
t0=$(now); "$bin/authzctl" import --socket "$work/b.sock" --quiet --chunk-commit "$work/e1.jsonl" >/dev/null; t1=$(now)
echo "import through daemon B (--chunk-commit): $(echo "scale=0; $records / ($t1 - $t0)" | bc) records/s ($(echo "$t1 - $t0" | bc) s); daemon B peak RSS $(peak $b) KiB"
"$bin/authzctl" export --socket "$work/b.sock" --page-size 10000 --include-secrets > "$work/e2.jsonl"
LC_ALL=C sort "$work/e1.jsonl" > "$work/s1"; LC_ALL=C sort "$work/e2.jsonl" > "$work/s2"
if cmp -s "$work/s1" "$work/s2"; then
  echo "round trip: identical ($(wc -l < "$work/s1") lines, sha256 $(sha256sum "$work/s1" | cut -c1-16))"
else
  echo "round trip: DIFFERENT"; diff "$work/s1" "$work/s2" | head -5; exit 1
fi

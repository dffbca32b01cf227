#!/usr/bin/env bash
# Fails when the committed protobuf-c code differs from a fresh generation of proto/authz.proto.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
(cd "$root/proto" && protoc-c --c_out="$out" authz.proto)
sed -i 's|#include "authz.pb-c.h"|#include "include/authz.pb-c.h"|' "$out/authz.pb-c.c"
diff -u "$root/Sources/CAuthzProto/authz.pb-c.c" "$out/authz.pb-c.c"
diff -u "$root/Sources/CAuthzProto/include/authz.pb-c.h" "$out/authz.pb-c.h"
echo "generated protobuf-c code is current ($(protoc-c --version | head -1))"

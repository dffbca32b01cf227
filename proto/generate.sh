#!/usr/bin/env bash
# Regenerates the protobuf-c codec in Sources/CAuthzProto from proto/authz.proto.
# Tool: protoc-c from Debian's protobuf-c-compiler (1.4.1). CI runs this and fails on a diff.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
(cd "$root/proto" && protoc-c --c_out="$out" authz.proto)
sed -i 's|#include "authz.pb-c.h"|#include "include/authz.pb-c.h"|' "$out/authz.pb-c.c"
cp "$out/authz.pb-c.c" "$root/Sources/CAuthzProto/authz.pb-c.c"
cp "$out/authz.pb-c.h" "$root/Sources/CAuthzProto/include/authz.pb-c.h"
protoc-c --version | head -1 > "$root/Sources/CAuthzProto/protoc-c.version"

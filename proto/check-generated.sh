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
(cd "$root/proto" && protoc-c --c_out="$out" events.proto)
sed -i 's|#include "events.pb-c.h"|#include "include/events.pb-c.h"|' "$out/events.pb-c.c"
diff -u "$root/Sources/CAuthzProto/events.pb-c.c" "$out/events.pb-c.c"
diff -u "$root/Sources/CAuthzProto/include/events.pb-c.h" "$out/events.pb-c.h"
echo "generated protobuf-c code is current ($(protoc-c --version | sed -n 1p))"
# Envoy ext_authz: the pruned proto must be what extract.py derives from xds-protos now (needs
# pip install xds-protos), and the C what protoc-c makes of it.
source "$root/proto/envoy/xds-python.sh"  # the pinned xds-protos, whichever python3 is on PATH
python3 "$root/proto/envoy/extract.py" "$out/ext_authz.proto" 2>/dev/null || python3 "$root/proto/envoy/extract.py" "$out/ext_authz.proto"
diff -u "$root/proto/envoy/ext_authz.proto" "$out/ext_authz.proto"
(cd "$root/proto/envoy" && protoc-c --c_out="$out" ext_authz.proto)
sed -i 's|#include "ext_authz.pb-c.h"|#include "include/envoy_ext_authz.pb-c.h"|' "$out/ext_authz.pb-c.c"
diff -u "$root/Sources/CAuthzProto/envoy_ext_authz.pb-c.c" "$out/ext_authz.pb-c.c"
diff -u "$root/Sources/CAuthzProto/include/envoy_ext_authz.pb-c.h" "$out/ext_authz.pb-c.h"
echo "generated Envoy ext_authz proto and protobuf-c code are current (checked with $(python3 -c 'import importlib.metadata as m; print("xds-protos", m.version("xds-protos"))'))"

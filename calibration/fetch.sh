#!/usr/bin/env bash
# Calibration and held-out images for `edgesight optimize`, from assets/vtest.avi and registry
# packages (pinned, checksummed). See calibration/README.md for the sources and the split rule.
# Everything lands in gitignored subfolders of calibration/; a second run does nothing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
source "$ROOT/scripts/lib.sh"
C="$ROOT/calibration"

# Staging folders live inside calibration/ (same filesystem: the final mv is a rename) and are
# removed on exit, so an interrupted run leaves no half-filled folder behind.
TMPS=()
cleanup() { [ ${#TMPS[@]} -eq 0 ] || rm -rf "${TMPS[@]}"; }
trap cleanup EXIT
stage() { local d; d=$(mktemp -d "$C/.staging.XXXXXX"); TMPS+=("$d"); STAGE=$d; }

# count_is DIR N: fail unless DIR holds exactly N .jpg files.
count_is() {
  local n
  n=$(find "$1" -maxdepth 1 -name '*.jpg' | wc -l)
  [ "$n" -eq "$2" ] || { echo "setup: $1 has $n images, expected $2" >&2; exit 1; }
}

# publish STAGED_DIR TARGET: replace TARGET (relative to calibration/) with the staged folder.
publish() {
  mkdir -p "$(dirname "$C/$2")"
  rm -rf "${C:?}/${2:?}"
  mv "$1" "$C/$2"
}

# n_images DIR: how many .jpg files DIR holds (0 when it does not exist).
n_images() { find "$1" -maxdepth 1 -name '*.jpg' 2>/dev/null | wc -l; }

# --- Street: frames of assets/vtest.avi (768x576, 795 frames, 10 fps) ------------------------
# Calibration: frames 0, 20, 40, ..., 780. Held out: every 5th frame that does not calibrate,
# 5, 10, 15, 25, ..., 790: 119 frames. Disjoint, and each held-out frame is at least 0.5 s from
# the nearest calibration frame. (Up to 2026-11-25 the held-out set was the 40 frames at 10, 30,
# ...; a set of another size is fetched again.)
VTEST_FRAMES=795
if [ ! -d "$C/street" ] || [ "$(n_images "$C/heldout/street")" -ne 119 ]; then
  [ -f "$ROOT/assets/vtest.avi" ] || { echo "setup: assets/vtest.avi missing: run assets/fetch.sh first" >&2; exit 1; }
  command -v gst-launch-1.0 >/dev/null || { echo "setup: gst-launch-1.0 missing: install gstreamer1.0-tools" >&2; exit 1; }
  log "extracting calibration frames from assets/vtest.avi"
  stage; tmp=$STAGE
  mkdir -p "$tmp/all" "$tmp/street" "$tmp/heldout"
  gst-launch-1.0 -q filesrc location="$ROOT/assets/vtest.avi" ! decodebin ! videoconvert \
    ! jpegenc quality=95 ! multifilesink location="$tmp/all/%04d.jpg"
  # The file names are the frame numbers only if every frame was decoded.
  count_is "$tmp/all" "$VTEST_FRAMES"
  for ((f = 0; f < VTEST_FRAMES; f += 20)); do
    printf -v n '%04d' "$f"; mv "$tmp/all/$n.jpg" "$tmp/street/vtest-$n.jpg"
  done
  for ((f = 5; f < VTEST_FRAMES; f += 5)); do
    [ $((f % 20)) -eq 0 ] && continue
    printf -v n '%04d' "$f"; mv "$tmp/all/$n.jpg" "$tmp/heldout/vtest-$n.jpg"
  done
  count_is "$tmp/street" 40
  count_is "$tmp/heldout" 119
  publish "$tmp/street" street
  publish "$tmp/heldout" heldout/street
fi

# --- Faces -----------------------------------------------------------------------------------
# faces/:      photos with one or more faces (scenes, for a face detector), from
#              Debian libdlib19.1 (examples/faces, less dogs.jpg), PyPI face-recognition 1.3.0
#              sdist (tests/test_images) and Debian opencv-doc (messi5.jpg).
# face-chips/: 150x150 face crops aligned by dlib, 5 people x 11 (for a face embedder), from
#              Debian libdlib19.1 examples/johns; the file name starts with the person's name.
# Split: sorted by name (C locale), alternately calibration, held out. Face chips alternate
# within each person, so every person is in both sets and no image is in both. dlib ships one
# of John Shimkus's chips twice, under two names; only the first by name is kept, or the split
# would put the same picture on both sides (29 calibration chips, 25 held out; until
# 2026-11-25 it was 30 and 25, with that twin in both, and such a folder is fetched again).
DLIB_DEB=libdlib19.1_19.24+dfsg-1_amd64.deb
DLIB_SHA=f03f46681d43701914ddd38eee42f1d34dc1d12e2f125bd1e3b562f23572b4da
FACEREC_SDIST=face_recognition-1.3.0.tar.gz
FACEREC_SHA=5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec
MESSI=/usr/share/doc/opencv-doc/examples/data/messi5.jpg
MESSI_SHA=1d570e49654e84c7a943918537bd9e5e1ef82920152e147c834006e235be97c9

# dedupe DIR: remove every .jpg whose bytes an earlier one (by name, C locale) already has.
dedupe() {
  local seen=" " f h
  while IFS= read -r f; do
    h=$(sha256sum "$1/$f" | cut -c1-64)
    case "$seen" in
      *" $h "*) rm "$1/$f" ;;
      *) seen="$seen$h " ;;
    esac
  done < <(find "$1" -maxdepth 1 -type f -name '*.jpg' -printf '%f\n' | LC_ALL=C sort)
}

# alternate SRC_DIR CAL_DIR HELDOUT_DIR: alternate SRC_DIR's files, sorted by name, into the two.
alternate() {
  local i=0 f
  while IFS= read -r f; do
    if [ $((i % 2)) -eq 0 ]; then mv "$1/$f" "$2/"; else mv "$1/$f" "$3/"; fi
    i=$((i + 1))
  done < <(find "$1" -maxdepth 1 -type f -name '*.jpg' -printf '%f\n' | LC_ALL=C sort)
}

# The .deb only, not installed: `apt-get download` needs no root. It needs the package lists;
# refresh them once if the pinned version is not found.
fetch_dlib_deb() {
  if [ ! -f "$DL/$DLIB_DEB" ]; then
    if ! (cd "$DL" && apt-get download -qq "libdlib19.1=19.24+dfsg-1" 2>/dev/null); then
      SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
      $SUDO apt-get update -qq
      (cd "$DL" && apt-get download -qq "libdlib19.1=19.24+dfsg-1")
    fi
  fi
  verify "$DL/$DLIB_DEB" "$DLIB_SHA"
}

if [ ! -d "$C/faces" ] || [ ! -d "$C/heldout/faces" ] \
  || [ "$(n_images "$C/face-chips")" -ne 29 ] || [ ! -d "$C/heldout/face-chips" ]; then
  log "fetching face images"
  fetch_dlib_deb
  pip_download face-recognition==1.3.0 "$FACEREC_SDIST" "$FACEREC_SHA" --no-binary :all:
  [ -f "$MESSI" ] || { echo "setup: $MESSI missing: install the Debian package opencv-doc" >&2; exit 1; }

  stage; tmp=$STAGE
  mkdir -p "$tmp/deb" "$tmp/sdist" "$tmp/scenes" "$tmp/chips" \
    "$tmp/faces" "$tmp/heldout-faces" "$tmp/face-chips" "$tmp/heldout-face-chips"
  dpkg-deb -x "$DL/$DLIB_DEB" "$tmp/deb"
  ex="$tmp/deb/usr/share/doc/libdlib19.1/examples"
  for f in "$ex"/faces/*.jpg; do
    [ "$(basename "$f")" = dogs.jpg ] && continue # dogs' faces, no people
    mv "$f" "$tmp/scenes/dlib-$(basename "$f")"
  done
  tar -xzf "$DL/$FACEREC_SDIST" -C "$tmp/sdist"
  for n in biden obama obama2 obama3; do
    mv "$tmp/sdist/face_recognition-1.3.0/tests/test_images/$n.jpg" "$tmp/scenes/facerec-$n.jpg"
  done
  cp "$MESSI" "$tmp/scenes/opencv-messi5.jpg"
  verify "$tmp/scenes/opencv-messi5.jpg" "$MESSI_SHA"
  count_is "$tmp/scenes" 16
  alternate "$tmp/scenes" "$tmp/faces" "$tmp/heldout-faces"

  for person in "$ex"/johns/*/; do
    p=$(basename "$person")
    rm -rf "$tmp/chips" && mkdir "$tmp/chips"
    for f in "$person"*.jpg; do mv "$f" "$tmp/chips/$p-$(basename "$f")"; done
    count_is "$tmp/chips" 11
    dedupe "$tmp/chips"
    alternate "$tmp/chips" "$tmp/face-chips" "$tmp/heldout-face-chips"
  done

  count_is "$tmp/faces" 8
  count_is "$tmp/heldout-faces" 8
  count_is "$tmp/face-chips" 29
  count_is "$tmp/heldout-face-chips" 25
  publish "$tmp/faces" faces
  publish "$tmp/heldout-faces" heldout/faces
  publish "$tmp/face-chips" face-chips
  publish "$tmp/heldout-face-chips" heldout/face-chips
fi

# --- Labels: dlib's hand-drawn face boxes for its photos above -------------------------------
# labels/dlib-faces-{training,testing}.xml (examples/faces of the same .deb; imglab format,
# <box top left width height> per face), for the face detector's recall test.
if [ ! -f "$C/labels/dlib-faces-training.xml" ] || [ ! -f "$C/labels/dlib-faces-testing.xml" ]; then
  log "fetching face labels"
  fetch_dlib_deb
  stage; tmp=$STAGE
  mkdir -p "$tmp/deb" "$tmp/labels"
  dpkg-deb -x "$DL/$DLIB_DEB" "$tmp/deb"
  for f in training testing; do
    mv "$tmp/deb/usr/share/doc/libdlib19.1/examples/faces/$f.xml" "$tmp/labels/dlib-faces-$f.xml"
  done
  publish "$tmp/labels" labels
fi

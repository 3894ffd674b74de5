"""Pose keypoints of every frame of a video with MediaPipe's pose landmarker (BlazePose, 33 points).

Runs on its own, in any Python that has mediapipe (0.10.x, whose wheel carries the full-complexity
pose model, so nothing is downloaded) and NumPy: MediaPipe pins NumPy < 2, so it may live in an
environment of its own. It imports nothing of vpsearch; `vpsearch data make dance --from-video`
runs it in this process when mediapipe imports here, else with --detector-python.

    python pose_detector.py FRAMES.npy POSES.json

FRAMES.npy: uint8 RGB frames (N, H, W, 3). POSES.json: {"detector", "layout": "blazepose33",
"keypoints": [per frame: null where no person was found, else 33 x [x, y, visibility]]} with x, y
in [0, 1] of the frame's width and height.
"""

from __future__ import annotations

import json
import sys


def detect(frames) -> dict:
    import mediapipe as mp

    out = []
    # video mode: each frame's landmarks start from the last one's (steadier than one image at a time)
    with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=1, min_detection_confidence=0.5,
                                min_tracking_confidence=0.5) as pose:
        for frame in frames:
            found = pose.process(frame).pose_landmarks
            out.append(None if found is None else
                       [[round(p.x, 5), round(p.y, 5), round(p.visibility, 4)] for p in found.landmark])
    return {"detector": f"mediapipe {mp.__version__} pose_landmark_full (model_complexity 1)",
            "layout": "blazepose33", "keypoints": out}


def main(argv: list[str]) -> int:
    import numpy as np

    if len(argv) != 2:
        print("usage: python pose_detector.py FRAMES.npy POSES.json", file=sys.stderr)
        return 2
    frames = np.load(argv[0])
    with open(argv[1], "w") as f:
        json.dump(detect(frames), f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

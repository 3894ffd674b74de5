"""benchmarks/gpu_check.py runs anywhere: on a CPU-only machine its CUDA checks say they were
skipped and why, and the rest (bf16 and channels_last training steps, 2 workers sharing one device
in a real `study run`) pass; on a GPU machine nothing is skipped."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
CUDA_ONLY = ["train_fp16", "bair_frames_per_second", "dance_rollout_630"]


@pytest.mark.timeout(1000)  # its own subprocess limit is 900 s
def test_gpu_check_prints_one_summary_and_says_what_it_skipped(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--steps", "2", "--out", str(tmp_path / "gc.json")],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary == json.loads((tmp_path / "gc.json").read_text())
    checks = summary["checks"]
    assert summary["ok"] is True and set(checks) == {"device_selection", "validation_stream", "train_bf16",
                                                    "train_channels_last", "amp_auto", "study_2_trials_per_device",
                                                    *CUDA_ONLY}
    stream = checks["validation_stream"]
    assert stream["same_draws"] is True and stream["caller_untouched"] is True
    if torch.cuda.is_available():
        assert summary["skipped"] == []
        return
    assert summary["skipped"] == CUDA_ONLY and summary["device"] == "cpu"
    for name in CUDA_ONLY:
        assert checks[name]["ok"] is None and checks[name]["skipped"].startswith("skipped: no CUDA device")
    assert checks["device_selection"]["auto"] == "cpu"
    assert math.isfinite(checks["train_bf16"]["loss"]) and checks["train_bf16"]["amp"] == "bf16"
    assert checks["train_channels_last"]["weights_channels_last"] is True
    auto = checks["amp_auto"]
    assert auto["ok"] is True and auto["resolved"] in ("bf16", "none")
    assert {k: v["last_amp"] for k, v in auto["resumed"].items()} == {"bf16->none": "none", "none->bf16": "bf16"}
    study = checks["study_2_trials_per_device"]
    assert study["states"] == ["COMPLETE", "COMPLETE"] and study["devices"] == ["cpu", "cpu"]
    # the two workers train at once: they overlap for most of the shorter trial, not a moment at a hand-over
    assert study["workers"] == 2 and study["overlap_seconds"] >= 0.5 * min(study["trial_seconds"])

"""Checkpoints that rebuild a model from the file alone, and resume exactly.

A checkpoint holds the resolved config, the data shape, weights, optimizer state, the
schedule counters (schedules are pure, so counters are all they need), every RNG state
and the metric history. It is written to a temporary file and renamed, so a crash
mid-write never corrupts the previous checkpoint, and read with
torch.load(weights_only=True): tensors and plain Python values only, no pickled code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vpsearch.config import Config, ConfigError, config_from_dict
from vpsearch.models import DataShape, StepwiseCVAE, build_model

FORMAT = "vpsearch-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt or not a vpsearch checkpoint."""


def rng_state(sampler: torch.Generator, tf: torch.Generator) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "sampler": sampler.get_state(), "teacher": tf.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], sampler: torch.Generator, tf: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    sampler.set_state(state["sampler"])
    tf.set_state(state["teacher"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, *, cfg: Config, shape: DataShape, model: StepwiseCVAE,
                    optimizer: torch.optim.Optimizer, epoch: int, best: float, best_epoch: int,
                    history: list[dict[str, float]], rng: dict[str, Any], lr: float) -> None:
    payload = {
        "format": FORMAT, "config": cfg.to_dict(), "data_shape": shape.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        # schedules are pure functions of these counters
        "scheduler": {"epoch": epoch, "lr": lr},
        "epoch": epoch, "best": best, "best_epoch": best_epoch, "history": history, "rng": rng,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, truncated file, pickled code
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path}: cannot be read as a vpsearch checkpoint ({first[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a vpsearch checkpoint (expected format {FORMAT})")
    return payload


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[StepwiseCVAE, Config, dict]:
    """Rebuild the model from the checkpoint alone (config + data shape + weights)."""
    payload = load_checkpoint(path)
    try:
        cfg = config_from_dict(payload["config"], f"checkpoint {path}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    model = build_model(cfg.model, DataShape.from_dict(payload["data_shape"]))
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the stored config "
                              f"({str(e).splitlines()[0][:160]})") from None
    return model.to(device).eval(), cfg, payload

"""Checkpoints that rebuild a model from the file alone, and resume exactly.

A resume checkpoint (last.pt) holds the resolved config, the data shape, weights, optimizer
state, the schedule counters (schedules are pure, so counters are all they need), every
RNG state, the fp16 loss scaler and the metric history. A weights checkpoint (best.pt, and
what MLflow keeps) holds the config, data shape, weights and history only: a third of an
Adam run's resume checkpoint, and all that evaluate, predict and export need. It is written to a temporary file and renamed, so a crash
mid-write never corrupts the previous checkpoint, and read with
torch.load(weights_only=True): tensors and plain Python values only, no pickled code.
What must match to resume a run or to use a model on data is checked in resume.py.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from vpsearch.config import Config, ConfigError, config_from_dict
from vpsearch.errors import UserError, os_error
from vpsearch.models import DataShape, StepwiseCVAE, build_model

FORMAT = "vpsearch-checkpoint-1"
REQUIRED = ("config", "data_shape", "model")  # what rebuilding the model needs


class CheckpointError(UserError):
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
                    history: list[dict[str, float]], rng: dict[str, Any], lr: float,
                    scaler: torch.amp.GradScaler | None = None, weights_only: bool = False) -> None:
    payload = {
        "format": FORMAT, "config": cfg.to_dict(), "data_shape": shape.to_dict(),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        # schedules are pure functions of these counters
        "scheduler": {"epoch": epoch, "lr": lr},
        "epoch": epoch, "best": best, "best_epoch": best_epoch, "history": history, "rng": rng,
        # fp16's loss scale and growth tracker: a resume without them restarts at 2**16 and
        # skips steps until the scale has come down again
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
    }
    if weights_only:  # nothing to resume from: no optimizer, RNG or scaler state
        for key in ("optimizer", "rng", "scaler"):
            payload.pop(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        # through our own file object: a full disk then raises OSError(ENOSPC) from write(), where
        # torch.save(path) reports "[enforce fail at inline_container.cc] unexpected pos"
        with open(tmp, "wb") as f:
            torch.save(payload, f)
    except BaseException as e:
        tmp.unlink(missing_ok=True)  # the previous checkpoint at `path` is untouched
        cause = _os_cause(e)
        if cause is not None:
            raise os_error(cause, path.parent, f"writing checkpoint {path}", "free space or write elsewhere") from None
        raise
    os.replace(tmp, path)


def _os_cause(e: BaseException | None) -> OSError | None:
    """The OSError behind e: torch's zip writer raises a RuntimeError while closing after a failed write."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError):
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a folder, not a checkpoint file (e.g. RUN/checkpoints/best.pt)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: not a vpsearch checkpoint (empty file)")
    try:
        with warnings.catch_warnings():  # a bare pickle's "protocol 4" warning: the error below says it
            warnings.simplefilter("ignore", UserWarning)
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt zip, truncated file, pickled code
        raise CheckpointError(f"checkpoint {path}: not a vpsearch checkpoint ({_unreadable(e, path)})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a vpsearch checkpoint (expected format {FORMAT})")
    for key in REQUIRED:
        if key not in payload:
            raise CheckpointError(f"checkpoint {path}: not a vpsearch checkpoint (no {key})")
    return payload


def _unreadable(e: Exception, path: Path) -> str:
    """Why torch.load refused the file, in a clause: pickled code, not a checkpoint at all (a text
    file, a bare pickle), or a damaged one. torch's own message leads with advice about
    weights_only=False, which would be the wrong fix here."""
    text = str(e)
    if "unsupported global" in text.lower():
        return "it holds pickled Python objects, refused because loading them could run code"
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except OSError:
        head = b""
    if head[:1] == b"\x80":  # a pickle's protocol opcode: torch.save writes a zip archive instead
        return "a bare Python pickle, not a torch checkpoint; refused because loading it could run code"
    if not head.startswith(b"PK"):
        try:
            head.decode("utf-8")
            return "a text file, not a checkpoint"
        except UnicodeDecodeError:
            return "not a torch checkpoint archive (unknown file type)"
    # torch's weights-only unpickler buries the cause under advice about weights_only=False
    detail = text.split("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else text
    lines = [ln for ln in detail.strip().splitlines() if ln.strip() and not ln.startswith("Weights only load failed")]
    first = (lines or [type(e).__name__])[0].split(". ")[0]  # drop miniz's advice
    return f"truncated or corrupt: {first[:160]}"


def restore_scaler(state: dict[str, Any], scaler: torch.amp.GradScaler) -> None:
    """The fp16 loss scale of a checkpoint (nothing when either side does not use fp16)."""
    if state.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])


def model_from_checkpoint(path: str | Path, device: torch.device | str = "cpu") -> tuple[StepwiseCVAE, Config, dict]:
    """Rebuild the model from the checkpoint alone (config + data shape + weights)."""
    payload = load_checkpoint(path)
    try:
        cfg = config_from_dict(payload["config"], f"checkpoint {path}")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    try:
        model = build_model(cfg.model, DataShape.from_dict(payload["data_shape"]))
    except TypeError as e:
        raise CheckpointError(f"checkpoint {path}: not a vpsearch checkpoint (bad data_shape: {e})") from None
    try:
        model.load_state_dict(payload["model"])
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the stored config "
                              f"({str(e).splitlines()[0][:160]})") from None
    return model.to(device).eval(), cfg, payload

"""What must match before a checkpoint is used: a resumed run's config, and the data a model meets.

Both are checked up front and answered in one line naming what differs, instead of a
screens-long load_state_dict error or a "mat1 and mat2 shapes" deep in a rollout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vpsearch.config import Config, ConfigError, config_from_dict
from vpsearch.models import DataShape
from vpsearch.training.checkpoint import CheckpointError, load_checkpoint, restore_rng, restore_scaler

# Fields a resumed run may change: where it runs, at which precision (train.amp=auto resolves by
# the machine; the scaler's state is restored when there is one) and what it prints, where the
# data live, and how it is evaluated. Every other field changes the training itself (train.epochs too:
# the KL cycles and the lr schedule are laid out over it).
FREE_ON_RESUME = ("name", "train.device", "train.amp", "train.num_threads", "train.progress", "data.root", "data.cache_dir",
                  "eval.")
CONDITION_FILES = {7: "actions.csv + endeffector_positions.csv", 4: "actions.csv", 3: "endeffector_positions.csv"}


def config_changes(stored: dict[str, Any], cfg: Config, source: str = "checkpoint") -> list[tuple[str, Any, Any]]:
    """(field, stored value, new value) of every training-relevant field that differs."""
    try:
        # through the config model, so fields added since the checkpoint compare as their defaults
        old = config_from_dict(stored, source).flat()
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    new = cfg.flat()
    keys = sorted(set(old) | set(new))
    return [(k, old.get(k), new.get(k)) for k in keys
            if old.get(k) != new.get(k) and not k.startswith(FREE_ON_RESUME)]


def _shown(changes: list[tuple[str, Any, Any]]) -> str:
    return ", ".join(f"{k}: {a} -> {b}" for k, a, b in changes)


def resume(path: Path, cfg: Config, shape: DataShape, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           scaler: torch.amp.GradScaler, sampler_gen: torch.Generator, teacher_gen: torch.Generator,
           force: bool = False) -> dict[str, Any]:
    """Load last.pt into the training state after checking it is this run; returns the checkpoint.

    A changed model (or data that no longer fit it) is refused even with force: the
    weights could not be loaded. Other training-relevant changes need force.
    """
    state = load_checkpoint(path)
    check_data_fits(path, state, shape, "the training data")
    changes = config_changes(state["config"], cfg, f"checkpoint {path}")
    model_changes = [c for c in changes if c[0].startswith("model.")]
    if model_changes:
        raise CheckpointError(f"cannot resume {path}: the model differs from the one trained there "
                              f"({_shown(model_changes)}), so its weights do not fit; use the run's config or "
                              "start a new --out")
    if changes and not force:
        raise CheckpointError(f"cannot resume {path}: the config differs from the run's ({_shown(changes)}); "
                              "resume with the same config, start a new --out, or pass --force to continue "
                              "with the new values")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot resume {path}: its weights do not fit the model "
                              f"({(str(e).strip().splitlines() or [''])[0][:160]})") from None
    restore_rng(state["rng"], sampler_gen, teacher_gen)
    restore_scaler(state, scaler)
    return state


def _conditions(shape: dict[str, int]) -> str:
    if shape.get("cond_dim"):
        files = CONDITION_FILES.get(shape["cond_dim"])
        return f"{shape['cond_dim']}-dim condition vectors" + (f" ({files})" if files else "")
    if shape.get("cond_channels"):
        return f"{shape['cond_channels']}-channel label images"
    return "none"


def check_data_fits(path: str | Path, payload: dict[str, Any], shape: DataShape, where: str) -> None:
    """The data's shape (frames, conditions) must be the one the checkpoint was trained on."""
    stored = payload["data_shape"]
    now = shape.to_dict()
    diffs = []
    if _conditions(stored) != _conditions(now):
        diffs.append(f"conditions: {_conditions(stored)} in the checkpoint, {_conditions(now)} in the data")
    for key in ("channels", "height", "width"):
        if stored.get(key) != now[key]:
            diffs.append(f"frame {key}: {stored.get(key)} in the checkpoint, {now[key]} in the data")
    if diffs:
        raise CheckpointError(f"checkpoint {path} does not fit the data ({where}): " + "; ".join(diffs))


def check_format_fits(path: str | Path, cfg: Config, found: str | None, root: str) -> None:
    """A model of one data family (bair: SVG with action vectors; dance: pose images) on the other's data."""
    if found is not None and found != cfg.data.format:
        raise CheckpointError(f"checkpoint {path} is a {cfg.data.format} model (model.name {cfg.model.name}), "
                              f"but {root} holds {found}-format data; pass --data with {cfg.data.format} data "
                              "or a checkpoint trained on this dataset")


"""Model plug-ins: plain nn.Modules built from their config section.

MODELS maps model.name to a builder taking (model config, data shape info); every model
is a StepwiseCVAE, so the one training engine drives them all.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from vpsearch.config import ConfigError
from vpsearch.models.base import Gaussians, StepwiseCVAE
from vpsearch.models.dance import DanceCVAE
from vpsearch.models.svg import SVG


@dataclass(frozen=True)
class DataShape:
    """What a model needs to know about the data; stored in checkpoints beside the config."""

    channels: int = 3
    height: int = 64
    width: int = 64
    cond_dim: int = 0  # vector condition width (actions + positions)
    cond_channels: int = 0  # image condition channels (pose labels)
    # what the vector condition's columns are, in order: (kind, width) with kind "action"
    # or "position" (BAIR: action 4 then position 3); each kind has its own row index
    cond_parts: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "cond_parts", tuple((str(k), int(w)) for k, w in self.cond_parts))
        if sum(w for _, w in self.cond_parts) != self.cond_dim:
            raise ValueError(f"condition parts {list(self.cond_parts)} do not add up to its {self.cond_dim} columns")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataShape":
        d = dict(d)
        if "cond_parts" not in d and d.get("cond_dim"):
            # checkpoints from before per-kind indices: one index served every column (the
            # config migration gives both kinds the old model.cond_index), so one part will do
            d["cond_parts"] = (("action", d["cond_dim"]),)
        return cls(**d)


MODELS: dict[str, Callable[..., StepwiseCVAE]] = {
    "svg": lambda cfg, shape: SVG(cfg, shape.channels, shape.cond_parts),
    "dance": lambda cfg, shape: DanceCVAE(cfg, shape.channels, shape.cond_channels or 3),
}


def build_model(model_cfg, shape: DataShape) -> StepwiseCVAE:
    if model_cfg.name == "svg" and (shape.height, shape.width) != (64, 64):
        raise ConfigError(f"model svg ({model_cfg.backbone}) needs 64x64 frames, data are "
                         f"{shape.height}x{shape.width} (set data.height/data.width to 64)")
    return MODELS[model_cfg.name](model_cfg, shape)


__all__ = ["MODELS", "DataShape", "Gaussians", "StepwiseCVAE", "build_model"]

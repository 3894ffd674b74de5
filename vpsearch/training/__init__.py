"""Training engine: schedules, losses, metrics, the epoch loop, checkpoints, fit().

Names are imported lazily: ``vpsearch.training.history`` or ``.reporter`` (what the search
and tracking layers read) must not pull in torch for every command.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"Evaluation": "engine", "NonFiniteLossError": "engine", "evaluate": "engine",
         "Reporter": "reporter", "Reporters": "reporter", "METRIC_COLUMNS": "history",
         "FitResult": "trainer", "fit": "trainer"}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'vpsearch.training' has no attribute {name!r}")
    return getattr(importlib.import_module(f"vpsearch.training.{_LAZY[name]}"), name)


__all__ = sorted(_LAZY)

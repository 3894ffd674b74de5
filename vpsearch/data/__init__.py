"""Datasets: on-disk formats (BAIR, dance), the decode-once cache, built-in generators."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from vpsearch.config import DataConfig
from vpsearch.data.base import DataError, VideoSet, WindowSampler


def _bair(root: Path, split: str, cfg: DataConfig) -> VideoSet:
    from vpsearch.data.bair import load_bair
    return load_bair(root, split, cfg)


def _dance(root: Path, split: str, cfg: DataConfig) -> VideoSet:
    from vpsearch.data.dance import load_dance
    return load_dance(root, split, cfg)


def _bair_source(root: Path, split: str, cfg: DataConfig):
    from vpsearch.data.bair import bair_source
    return bair_source(root, split, cfg)


def _dance_source(root: Path, split: str, cfg: DataConfig):
    from vpsearch.data.dance import dance_source
    return dance_source(root, split, cfg)


# data.format -> loader(root, split, cfg) -> VideoSet
DATASETS: dict[str, Callable[[Path, str, DataConfig], VideoSet]] = {"bair": _bair, "dance": _dance}
# data.format -> (root, split, cfg) -> cache.SplitSource: the split's cache, for `vpsearch data verify`
SOURCES: dict[str, Callable] = {"bair": _bair_source, "dance": _dance_source}


def guess_format(root: Path) -> str | None:
    """Which data.format a folder holds, from its layout alone (None: cannot tell)."""
    root = Path(root)
    if any((root / a / b).is_dir() for a, b in (("train", "train_img"), ("val", "val_img"), ("test", "test_label"))):
        return "dance"
    if any(next((root / split).rglob("0.png"), None) for split in ("train", "validate", "val", "test")
           if (root / split).is_dir()):
        return "bair"
    return None


def load_split(cfg: DataConfig, split: str) -> VideoSet:
    """Load one split of the dataset a config names (generating built-in data on first use)."""
    from vpsearch.data.builtin import resolve_root
    return DATASETS[cfg.format](resolve_root(cfg.root), split, cfg)


__all__ = ["DATASETS", "DataError", "VideoSet", "WindowSampler", "guess_format", "load_split"]

"""Loader of the processed BAIR robot-pushing format.

ROOT/<split>/**/<seq>/ is a sequence when it holds 0.png; frames 0.png .. (n-1).png,
optional actions.csv (n x 4) and endeffector_positions.csv (n x 3), comma separated,
no header. The per-frame condition is [action, position] (7 dims), whichever of the two
exists, or nothing (the unconditional SVG format). Listing reads only directory entries
and PNG headers, and happens only when the cache is missing or stale; pixels are decoded
once, into the cache (vpsearch.data.cache).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from vpsearch.config import DataConfig
from vpsearch.data.base import DataError, VideoSet
from vpsearch.data.cache import SplitPlan, SplitSource, load_cached
from vpsearch.data.images import check_same_size, read_rgb

CSV_COLUMNS = {"actions.csv": 4, "endeffector_positions.csv": 3}
# Row t of actions.csv is the command applied after frame t; row t of
# endeffector_positions.csv the position at frame t. The kinds let a model index them apart.
CSV_KIND = {"actions.csv": "action", "endeffector_positions.csv": "position"}
_FRAME = re.compile(r"^(0|[1-9]\d*)\.png$")  # 5.png, not 05.png


def natural_key(s: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def find_sequences(split_dir: Path, walked: list[Path] | None = None) -> list[Path]:
    """Every directory under split_dir holding 0.png, in natural order (every folder read is
    appended to walked)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(split_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]  # skip the cache
        if walked is not None:
            walked.append(Path(dirpath))
        if "0.png" in filenames:
            found.append(Path(dirpath))
    return sorted(found, key=lambda p: natural_key(p.relative_to(split_dir).as_posix()))


def frame_count(seq: Path) -> int:
    """Number of frames 0..n-1; a gap is an error naming the first missing file."""
    numbers = sorted(int(m.group(1)) for e in os.scandir(seq) if (m := _FRAME.match(e.name)))
    for expected, n in enumerate(numbers):
        if n != expected:
            raise DataError(f"{seq / f'{expected}.png'}: missing frame (found {len(numbers)} frames "
                            f"numbered up to {numbers[-1]}; expected 0..n-1 without gaps)")
    return len(numbers)


def read_csv(path: Path, columns: int, rows: int) -> np.ndarray:
    """(rows, columns) float32 from a headerless CSV; errors name the file and line."""
    out = np.empty((rows, columns), np.float32)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e})") from None
    lines = [ln for ln in lines if ln.strip()]
    if len(lines) < rows:
        raise DataError(f"{path}: {len(lines)} rows, expected at least {rows} (one per frame)")
    for i, line in enumerate(lines[:rows]):
        cells = line.split(",")
        if len(cells) != columns:
            raise DataError(f"{path}: line {i + 1} has {len(cells)} columns, expected {columns}")
        try:
            out[i] = [float(c) for c in cells]
        except ValueError:
            raise DataError(f"{path}: line {i + 1} holds a non-numeric value ({line.strip()[:60]!r})") from None
        if not np.isfinite(out[i]).all():
            raise DataError(f"{path}: line {i + 1} holds a non-finite value ({line.strip()[:60]!r})")
    return out


def load_bair(root: Path, split: str, cfg: DataConfig) -> VideoSet:
    return load_cached(bair_source(root, split, cfg))


def bair_source(root: Path, split: str, cfg: DataConfig) -> SplitSource:
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: split directory not found (expected ROOT/{split}/.../<seq>/0.png)")
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else Path(root) / ".vpsearch-cache"
    return SplitSource(key=f"bair-{split}", root=split_dir, cache_dir=cache_dir,
                       params={"format": "bair", "height": cfg.height, "width": cfg.width},
                       plan=lambda: plan_bair(split_dir, cfg))


def plan_bair(split_dir: Path, cfg: DataConfig) -> SplitPlan:
    walked: list[Path] = []
    seqs = find_sequences(split_dir, walked)
    if not seqs:
        raise DataError(f"{split_dir}: no sequence folder holding 0.png was found (empty split)")
    csvs = [name for name in CSV_COLUMNS if (seqs[0] / name).is_file()]
    lengths, sources = [], []
    for seq in seqs:
        present = [name for name in CSV_COLUMNS if (seq / name).is_file()]
        if present != csvs:
            raise DataError(f"{seq}: has {present or 'no CSV'}, but {seqs[0]} has {csvs or 'no CSV'}; "
                            "every sequence of a split needs the same condition files")
        lengths.append(frame_count(seq))
        n = lengths[-1]
        sources += [seq / f"{t}.png" for t in range(n)] + [seq / name for name in csvs]
    hw = (cfg.height, cfg.width)
    cond_dim = sum(CSV_COLUMNS[c] for c in csvs)

    def decode(i: int):
        seq, n = seqs[i], lengths[i]
        frames = np.stack([read_rgb(seq / f"{t}.png", hw) for t in range(n)])
        cond = np.concatenate([read_csv(seq / c, CSV_COLUMNS[c], n) for c in csvs], 1) if csvs else None
        return frames, cond

    def check() -> None:  # before any decoding: the frames of each sequence share one size
        for seq, n in zip(seqs, lengths):
            check_same_size([seq / f"{t}.png" for t in range(n)])

    return SplitPlan(
        names=[s.relative_to(split_dir).as_posix() for s in seqs], lengths=lengths,
        frame_shape=(cfg.height, cfg.width, 3), sources=sources, decode=decode,
        cond_shape=(cond_dim,) if cond_dim else None, cond_kind="vector" if cond_dim else None,
        cond_parts=[(CSV_KIND[c], CSV_COLUMNS[c]) for c in csvs] if csvs else None,
        dirs=walked, check=check)

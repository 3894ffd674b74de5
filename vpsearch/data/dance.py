"""Loader of the dance lab layout: RGB frames conditioned on pose-label images.

  ROOT/train/train_img/*.png + ROOT/train/train_label/<same name>   one long video
  ROOT/val/val_img          + ROOT/val/val_label                    one video
  ROOT/test/test_img/<i>/   + ROOT/test/test_label/<i>/             video i (0, 1, ...)
Names sort numerically after stripping a leading 'frame' and the extension
(frame123.png, 123.png). The real test videos give only their first RGB frame and
every label; the frames after it are unknown (zeros here, VideoSet.truth_frames says
how many are real). vpsearch's generator also writes ROOT/test/test_gt/<i>/ with every
true frame; when present it is used as the test frames, so test predictions can be scored.
Frames are resized with area-aware bilinear filtering, labels with nearest neighbour so
skeleton colours stay exact.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from vpsearch.config import DataConfig
from vpsearch.data.base import DataError, VideoSet
from vpsearch.data.cache import SplitPlan, SplitSource, load_cached
from vpsearch.data.images import check_same_size, read_rgb

_NUMBER = re.compile(r"^(?:frame)?[_-]?(\d+)$", re.IGNORECASE)
SPLIT_DIRS = {"train": "train", "val": "val", "validate": "val", "test": "test"}


def frame_number(path: Path) -> int:
    m = _NUMBER.match(path.stem)
    if not m:
        raise DataError(f"{path}: file name is not a frame number (expected e.g. 123.png or frame123.png)")
    return int(m.group(1))


def numbered_pngs(folder: Path) -> list[Path]:
    """PNGs of a folder in numeric order; a missing or empty folder is an error."""
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    # Dot files (.DS_Store, macOS "._1.png" copies) are not frames.
    files = [Path(e.path) for e in os.scandir(folder)
             if e.name.lower().endswith(".png") and not e.name.startswith(".")]
    if not files:
        raise DataError(f"{folder}: no PNG frames found (empty folder)")
    numbered = sorted((frame_number(p), p) for p in files)
    for (a, pa), (b, pb) in zip(numbered, numbered[1:]):
        if a == b:  # e.g. 7.png and frame7.png: their order would be undefined
            raise DataError(f"{pb}: same frame number as {pa.name} (expected one file per frame)")
    return [p for _, p in numbered]


def check_consecutive(folder: Path, paths: list[Path]) -> None:
    """A gap in the numbers (frame 20 missing from frames and labels alike, so pairing passes)
    would make the video jump in time unseen: an error naming it, as the BAIR loader does."""
    numbers = [frame_number(p) for p in paths]
    for (a, pa), (b, pb) in zip(zip(numbers, paths), zip(numbers[1:], paths[1:])):
        if b != a + 1:
            missing = f"frame {a + 1}" if b == a + 2 else f"frames {a + 1}..{b - 1}"
            raise DataError(f"{folder}: {missing} is missing ({pa.name} is followed by {pb.name}; "
                            "expected consecutive frame numbers)")


def paired(img_dir: Path, label_dir: Path) -> tuple[list[Path], list[Path]]:
    """Frames and their labels matched by file name; either one alone is an error."""
    frames, labels = numbered_pngs(img_dir), numbered_pngs(label_dir)
    label_names = {p.name for p in labels}
    for f in frames:
        if f.name not in label_names:
            raise DataError(f"{f}: frame without its label (expected {label_dir / f.name})")
    frame_names = {p.name for p in frames}
    for lb in labels:
        if lb.name not in frame_names:
            raise DataError(f"{lb}: label without its frame (expected {img_dir / lb.name})")
    check_consecutive(img_dir, frames)
    return frames, labels


def test_videos(test_dir: Path, expected_len: int | None = None) -> list[tuple[str, list[Path], list[Path], int]]:
    """(name, frame paths, label paths, true frames) per test video, in numeric order."""
    label_root = test_dir / "test_label"
    if not label_root.is_dir():
        raise DataError(f"{label_root}: folder not found (expected test_label/<i>/*.png)")
    names = sorted((e.name for e in os.scandir(label_root) if e.is_dir()),
                   key=lambda n: int(n) if n.isdigit() else -1)
    if not names:
        raise DataError(f"{label_root}: no test video folders (expected test_label/0, test_label/1, ...)")
    # A video with frames but no label folder would otherwise vanish from the split unnoticed.
    for sub in ("test_img", "test_gt"):
        if (test_dir / sub).is_dir():
            for e in os.scandir(test_dir / sub):
                if e.is_dir() and not e.name.startswith(".") and e.name not in names:
                    raise DataError(f"{e.path}: test video without labels (expected {label_root / e.name})")
    videos = []
    for name in names:
        if not name.isdigit():
            raise DataError(f"{label_root / name}: test video folders are named 0, 1, ...")
        labels = numbered_pngs(label_root / name)
        check_consecutive(label_root / name, labels)
        want = expected_len or (len(videos[0][2]) if videos else len(labels))
        if len(labels) != want:
            raise DataError(f"{label_root / name}: {len(labels)} labels, expected {want} like the other videos")
        gt = test_dir / "test_gt" / name
        given = numbered_pngs(gt if gt.is_dir() else test_dir / "test_img" / name)
        for f, lb in zip(given, labels):
            if f.name != lb.name:
                raise DataError(f"{f}: frame does not match label {lb.name} (same numbering expected)")
        if len(given) > len(labels):
            raise DataError(f"{given[len(labels)]}: frame without its label")
        videos.append((name, given, labels, len(given)))
    return videos


def _read_all(paths: list[Path], hw: tuple[int, int], resample: int) -> np.ndarray:
    with ThreadPoolExecutor(max_workers=4) as pool:  # PIL releases the GIL while decoding
        return np.stack(list(pool.map(lambda p: read_rgb(p, hw, resample), paths)))


def load_dance(root: Path, split: str, cfg: DataConfig, expected_test_len: int | None = None) -> VideoSet:
    data = load_cached(dance_source(root, split, cfg, expected_test_len))
    if expected_test_len is not None and SPLIT_DIRS[split] == "test":  # the listing checks this on a miss
        for name, n in zip(data.names, data.lengths):
            if n != expected_test_len:
                raise DataError(f"{Path(root) / 'test' / 'test_label' / name}: {n} labels, expected "
                                f"{expected_test_len} like the other videos")
    return data


def dance_source(root: Path, split: str, cfg: DataConfig, expected_test_len: int | None = None) -> SplitSource:
    root = Path(root)
    if split not in SPLIT_DIRS:
        raise DataError(f"dance split {split!r}: expected train, val (or validate) or test")
    sub = SPLIT_DIRS[split]
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else root / ".vpsearch-cache"
    return SplitSource(key=f"dance-{sub}", root=root / sub, cache_dir=cache_dir,
                       params={"format": "dance", "height": cfg.height, "width": cfg.width},
                       plan=lambda: plan_dance(root, sub, cfg, expected_test_len))


def plan_dance(root: Path, sub: str, cfg: DataConfig, expected_test_len: int | None = None) -> SplitPlan:
    if sub == "test":
        videos = test_videos(root / "test", expected_test_len)
        test = root / "test"
        dirs = [test] + [test / d for d in ("test_label", "test_img", "test_gt") if (test / d).is_dir()]
        dirs += [p for v in videos for p in (v[1][0].parent, v[2][0].parent)]
    else:
        frames, labels = paired(root / sub / f"{sub}_img", root / sub / f"{sub}_label")
        videos = [(sub, frames, labels, len(frames))]
        dirs = [root / sub, root / sub / f"{sub}_img", root / sub / f"{sub}_label"]
    hw = (cfg.height, cfg.width)

    def decode(i: int):
        _, given, labels, n_true = videos[i]
        frames = np.zeros((len(labels), *hw, 3), np.uint8)
        frames[:n_true] = _read_all(given, hw, Image.BILINEAR)
        return frames, _read_all(labels, hw, Image.NEAREST)

    def check() -> None:
        for _, given, labels, _ in videos:
            check_same_size(given)
            check_same_size(labels)

    return SplitPlan(
        names=[v[0] for v in videos], lengths=[len(v[2]) for v in videos], frame_shape=(*hw, 3),
        sources=[p for v in videos for p in (*v[1], *v[2])], decode=decode, cond_shape=(*hw, 3),
        cond_kind="image", dirs=dirs, check=check, truth_frames=[v[3] for v in videos])

"""The run folder of `vpsearch train --out`: never clobber an earlier run by accident.

A folder holding a run (its config.yaml, metrics.csv or checkpoints) is continued with
--resume, or replaced with an explicit --overwrite, which removes only what the run wrote,
so nothing else the user keeps there is lost. What it wrote is listed where it is written:
every writer calls ``wrote(run_dir, name)`` for the top-level entry it creates, which adds
the name to the folder's manifest (MANIFEST, one name per line), and --overwrite removes
exactly the manifest's entries. A folder from before the manifest falls back to
LEGACY_OUTPUTS, the layout those runs had.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from vpsearch.errors import UserError
from vpsearch.settings import make_dir

MANIFEST = ".vpsearch-outputs"
# what a run wrote before it kept a manifest
LEGACY_OUTPUTS = ["config.yaml", "metrics.csv", "frame_psnr.csv", "frame_psnr", "curves.png", "schedules.png",
                  "frame_psnr.png", "samples", "checkpoints", "error.txt"]
RUN_MARKERS = ["config.yaml", "metrics.csv", "checkpoints", MANIFEST]
_LOCK = threading.Lock()  # the training thread and the drawing thread both write into a run


def wrote(run_dir: Path, *names: str) -> None:
    """Record top-level entries of run_dir that a run writes (before or after writing them)."""
    manifest = Path(run_dir) / MANIFEST
    with _LOCK:
        manifest.parent.mkdir(parents=True, exist_ok=True)  # a writer may come before the folder is made
        known = set(run_outputs(run_dir, legacy=False))
        new = [n for n in names if n not in known and n != MANIFEST]
        if new:
            with manifest.open("a") as f:
                f.write("".join(f"{n}\n" for n in new))


def run_outputs(run_dir: Path, legacy: bool = True) -> list[str]:
    """The names a run recorded writing into run_dir (LEGACY_OUTPUTS for a folder without a manifest)."""
    try:
        return [n for n in (Path(run_dir) / MANIFEST).read_text().splitlines() if n and "/" not in n and n != ".."]
    except FileNotFoundError:
        return list(LEGACY_OUTPUTS) if legacy else []


def holds_run(path: Path) -> bool:
    return path.is_dir() and any((path / m).exists() for m in RUN_MARKERS)


def prepare_run_dir(path: Path, resume: bool = False, overwrite: bool = False) -> Path:
    """Check (and create) the folder a `train` writes to; see the module docstring."""
    path = Path(path)
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other: continue the run or replace it")
    if holds_run(path) and not resume:
        if not overwrite:
            raise UserError(f"{path} already holds a run (its checkpoints and metrics.csv would be overwritten): "
                            "continue it with --resume, pass a new --out, or replace it with --overwrite")
        for name in [*run_outputs(path), MANIFEST]:
            target = path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    return make_dir(path, "the run folder", "pass --out a writable folder")

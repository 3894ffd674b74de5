"""The run folder of `vpsearch train --out`: never clobber an earlier run by accident.

A folder holding a run (its config.yaml, metrics.csv or checkpoints) is continued with
--resume, or replaced with an explicit --overwrite, which removes only the files a run
writes (the layout in trainer.py) so nothing else the user keeps there is lost.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from vpsearch.errors import UserError
from vpsearch.settings import make_dir

# what fit() writes into a run folder
RUN_OUTPUTS = ["config.yaml", "metrics.csv", "frame_psnr.csv", "frame_psnr", "curves.png", "schedules.png",
               "frame_psnr.png", "samples", "checkpoints", "error.txt"]
RUN_MARKERS = ["config.yaml", "metrics.csv", "checkpoints"]


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
        for name in RUN_OUTPUTS:
            target = path / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
    return make_dir(path, "the run folder", "pass --out a writable folder")

"""Where a result came from: package versions, the git commit of the vpsearch checkout, the
dataset and its fingerprint.

Below every layer (it imports the data layer only inside dataset_dir): the worker records
these with each trial when it trains (TrialRecord.provenance), the tracker tags runs with the
commit, and `vpsearch export-best` copies what the trial recorded. Each is computed once per
process (functools.cache): a worker pays for them once, not per trial.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import vpsearch

PACKAGES = ["vpsearch", "torch", "numpy", "optuna", "mlflow", "scikit-optimize", "pandas", "plotly", "pydantic",
            "Pillow"]


@functools.cache
def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = vpsearch.__version__ if name == "vpsearch" else "not installed"
    return out


@functools.cache
def git_commit(path: Path | None = None) -> dict[str, Any]:
    """The commit of the vpsearch checkout (and whether it has uncommitted changes)."""
    where = path or Path(vpsearch.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return {"commit": "unknown (not a git checkout)", "dirty": None}
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown (git not available)", "dirty": None}


def dataset_dir(root: str) -> Path | None:
    """The folder a data.root names on this machine, without generating built-in data."""
    if root.startswith("builtin:"):
        from vpsearch.data.builtin import GENERATORS, builtin_dir
        name = root.split(":", 1)[1]
        if name not in GENERATORS:
            return None
        path = builtin_dir(name)
    else:
        path = Path(root).expanduser()
    return path if path.is_dir() else None


def dataset_fingerprint(path: Path) -> dict[str, Any]:
    """sha256 over every file's relative path and size, plus the dataset marker's content.

    Sizes, not contents: hashing 1.3M BAIR frames would take minutes, while a changed,
    added or removed file almost always changes the listing. Hidden folders (the frame
    cache) are left out because they are derived from the rest.
    """
    h = hashlib.sha256()
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\n".encode())
            files += 1
            size += st.st_size
    marker = path / "vpsearch-dataset.json"
    if marker.is_file():
        h.update(marker.read_bytes())
    return {"sha256": h.hexdigest(), "files": files, "bytes": size,
            "method": "sha256 of relative path + size of every file, and vpsearch-dataset.json"}


@functools.cache
def dataset_info(root: str) -> dict[str, Any]:
    path = dataset_dir(root)
    if path is None:
        return {"root": root, "path": None, "fingerprint": None,
                "note": "not on this machine" + (" (built-in data is generated on first use)"
                                                 if root.startswith("builtin:") else "")}
    return {"root": root, "path": str(path.resolve()), "fingerprint": dataset_fingerprint(path)}


def trial_provenance(data_root: str, device: str, threads: int | None) -> dict[str, Any]:
    """What a trial records when it starts training (TrialRecord.provenance)."""
    return {"git": git_commit(), "packages": package_versions(), "dataset": dataset_info(data_root),
            "device": device, "threads": threads, "host": platform.node()}

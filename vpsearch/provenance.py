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
import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import vpsearch
from vpsearch.machine import cpu

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


METHOD = "sha256 of relative path + size of every file, and vpsearch-dataset.json"
MEMO = Path(".vpsearch-cache") / "dataset-fingerprint.json"  # under the dataset, next to its frame caches


def dataset_fingerprint(path: Path) -> dict[str, Any]:
    """sha256 over every file's relative path and size, plus the dataset marker's content.

    Sizes, not contents: hashing 1.3M BAIR frames would take minutes, while a changed,
    added or removed file almost always changes the listing. Hidden folders (the frame
    cache) are left out because they are derived from the rest. The result is kept in MEMO
    with every folder's mtime, and reused while no folder's mtime and not the marker changed
    (a file added, removed or renamed changes its folder's mtime): a stat per folder instead of
    one per file. A file rewritten in place to another size keeps the old value until then.
    """
    marker = path / "vpsearch-dataset.json"
    marker_sha = hashlib.sha256(marker.read_bytes()).hexdigest() if marker.is_file() else None
    memo = _memo(path, marker_sha)
    if memo is not None:
        return memo
    try:  # before the walk: making it changes the dataset folder's mtime
        (path / MEMO).parent.mkdir(exist_ok=True)
    except OSError:
        pass
    h = hashlib.sha256()
    files = size = 0
    folders = []
    for dirpath, dirnames, filenames in os.walk(path):
        folders.append([os.path.relpath(dirpath, path), os.stat(dirpath).st_mtime_ns])
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            p = Path(dirpath) / name
            st = p.stat()
            h.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\n".encode())
            files += 1
            size += st.st_size
    if marker.is_file():
        h.update(marker.read_bytes())
    result = {"sha256": h.hexdigest(), "files": files, "bytes": size, "method": METHOD}
    try:  # a read-only dataset: computed once per process instead
        tmp = path / MEMO.with_name(f".{MEMO.name}.{os.getpid()}")
        tmp.write_text(json.dumps({"fingerprint": result, "marker_sha256": marker_sha, "folders": folders}))
        os.replace(tmp, path / MEMO)
    except OSError:
        pass
    return result


def _memo(path: Path, marker_sha: str | None) -> dict[str, Any] | None:
    try:
        memo = json.loads((path / MEMO).read_text())
        if memo["marker_sha256"] != marker_sha or memo["fingerprint"]["method"] != METHOD:
            return None
        for rel, mtime in memo["folders"]:
            if os.stat(os.path.join(path, rel)).st_mtime_ns != mtime:
                return None
        return memo["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


@functools.cache
def dataset_info(root: str) -> dict[str, Any]:
    path = dataset_dir(root)
    if path is None:
        return {"root": root, "path": None, "fingerprint": None,
                "note": "not on this machine" + (" (built-in data is generated on first use)"
                                                 if root.startswith("builtin:") else "")}
    return {"root": root, "path": str(path.resolve()), "fingerprint": dataset_fingerprint(path)}


def trial_provenance(data_root: str, device: str, threads: int | None, amp: str | None = None) -> dict[str, Any]:
    """What a trial records when it starts training (TrialRecord.provenance); amp is the resolved
    precision (none, bf16 or fp16), never auto."""
    return {"git": git_commit(), "packages": package_versions(), "dataset": dataset_info(data_root),
            "device": device, "threads": threads, "amp": amp, "cpu": cpu().describe(), "host": platform.node()}

"""The code a result came from: package versions and the git commit of the vpsearch checkout.

Below every layer: the tracker tags runs with the commit, the reports and best-config
exports record both (reporting/provenance.py adds the dataset).
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import vpsearch

PACKAGES = ["vpsearch", "torch", "numpy", "optuna", "mlflow", "scikit-optimize", "pandas", "plotly", "pydantic",
            "Pillow"]


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = vpsearch.__version__ if name == "vpsearch" else "not installed"
    return out


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

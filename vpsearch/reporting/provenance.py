"""Where a result came from: package versions, the git commit (vpsearch/versions.py), the dataset
and its fingerprint.

An exported config is only reproducible with these next to it; they are cheap to collect
(no imports of the packages, one `git` call, one directory walk).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from vpsearch.versions import PACKAGES, git_commit, package_versions

__all__ = ["PACKAGES", "git_commit", "package_versions", "dataset_dir", "dataset_fingerprint", "dataset_info"]


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


def dataset_info(root: str) -> dict[str, Any]:
    path = dataset_dir(root)
    if path is None:
        return {"root": root, "path": None, "fingerprint": None,
                "note": "not on this machine" + (" (built-in data is generated on first use)"
                                                 if root.startswith("builtin:") else "")}
    return {"root": root, "path": str(path.resolve()), "fingerprint": dataset_fingerprint(path)}

"""What a frame cache was built from: every source file's size and mtime, and every folder's mtime.

A cache records the manifest of the files it decoded (relative to the split's folder, so a
moved dataset keeps its cache). Opening a cache checks it cheaply (``stale_reason``):

- the mtime of every folder the loader listed: adding, removing or renaming a file changes its
  folder's mtime, so a changed listing is always caught, with one stat per folder instead of
  one per file (44k instead of 1.3M for the full BAIR set);
- the size and mtime of every file when the split has at most FULL_CHECK_MAX files, otherwise
  of SAMPLE files drawn at random. A file rewritten in place keeps its folder's mtime, so on a
  large split such an edit is caught only when it is drawn: ``vpsearch data verify`` compares
  every file (``diff``) and rebuilds what is stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

FULL_CHECK_MAX = 10_000  # splits this small get every file checked at every open (about 30 ms)
SAMPLE = 64  # files checked at random at every open of a larger split

FILES, STATS, DIRS = "files.npy", "stats.npy", "dirs.json"


def _relative(path: Path, root: Path) -> str:
    return Path(path).relative_to(root).as_posix()


@dataclass
class Manifest:
    files: list[str]  # relative to the split's folder, in the plan's order
    stats: np.ndarray  # (n, 2) int64: size, mtime_ns
    dirs: list[tuple[str, int]]  # (relative folder, mtime_ns); "." is the split's folder itself

    @classmethod
    def of(cls, root: Path, sources: Iterable[Path], dirs: Iterable[Path]) -> "Manifest":
        """Folders are statted before files, and both before decoding: a file added or edited
        during a build shows as a changed folder or file at the next open."""
        root = Path(root)
        folders = [(_relative(d, root), os.stat(d).st_mtime_ns) for d in dirs]
        files, stats = [], []
        for p in sources:
            st = os.stat(p)
            files.append(_relative(p, root))
            stats.append((st.st_size, st.st_mtime_ns))
        return cls(files, np.asarray(stats, np.int64).reshape(-1, 2), folders)

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        files = [f.decode() for f in np.load(folder / FILES)]
        return cls(files, np.load(folder / STATS), [tuple(d) for d in json.loads((folder / DIRS).read_text())])

    def id(self) -> str:
        """8 hex digits naming what was decoded (paths, sizes, mtimes; not the folders)."""
        h = hashlib.sha1()
        for f, (size, mtime) in sorted(zip(self.files, self.stats.tolist())):
            h.update(f"{f}|{size}|{mtime}\n".encode())
        return h.hexdigest()[:8]

    def save(self, folder: Path) -> None:
        """Into a cache folder; the folder list is replaced atomically (it is rewritten in a
        cache that other processes may be reading)."""
        np.save(folder / FILES, np.array([f.encode() for f in self.files], dtype=bytes))
        np.save(folder / STATS, self.stats)
        tmp = folder / f".{DIRS}.{os.getpid()}"
        tmp.write_text(json.dumps(self.dirs))
        os.replace(tmp, folder / DIRS)


def stale_reason(folder: Path, root: Path) -> str | None:
    """Why the cache in folder no longer matches the files under root (None: it matches), from
    the quick check described in the module docstring."""
    try:
        dirs = json.loads((folder / DIRS).read_text())
        files = np.load(folder / FILES, mmap_mode="r")
        stats = np.load(folder / STATS, mmap_mode="r")
    except (OSError, ValueError) as e:
        return f"no readable manifest ({e})"
    base = os.fspath(root)
    for rel, mtime in dirs:  # plain strings: a Path per folder costs more than its stat
        path = os.path.join(base, rel)
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return f"{os.path.normpath(path)}: folder changed"
        except FileNotFoundError:
            return f"{os.path.normpath(path)}: folder removed"
    n = len(files)
    for i in range(n) if n <= max(FULL_CHECK_MAX, SAMPLE) else random.sample(range(n), SAMPLE):
        path = os.path.join(base, files[i].decode())
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return f"{path}: removed"
        if st.st_size != stats[i, 0] or st.st_mtime_ns != stats[i, 1]:
            return f"{path}: changed"
    return None


@dataclass
class Diff:
    changed: list[str]
    added: list[str]
    removed: list[str]

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.removed)

    def summary(self, shown: int = 3) -> str:
        parts = []
        for what, names in (("changed", self.changed), ("added", self.added), ("removed", self.removed)):
            if names:
                more = f", ... {len(names) - shown} more" if len(names) > shown else ""
                parts.append(f"{len(names)} {what} ({', '.join(names[:shown])}{more})")
        return "; ".join(parts) or "no file differs"


def diff(old: Manifest, new: Manifest) -> Diff:
    """Every file of the cache's manifest against the files on disk now."""
    before = dict(zip(old.files, map(tuple, old.stats.tolist())))
    now = dict(zip(new.files, map(tuple, new.stats.tolist())))
    return Diff(changed=sorted(f for f in now if f in before and before[f] != now[f]),
                added=sorted(f for f in now if f not in before), removed=sorted(f for f in before if f not in now))

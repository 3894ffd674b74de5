"""Built-in datasets: ``builtin:pushing`` and ``builtin:dancer`` roots are generated on
first use into the data home (VPSEARCH_DATA_HOME, default ~/.cache/vpsearch/data) and
reused afterwards. Generation takes a file lock and renames a finished folder into
place, so several workers asking at once generate once and never see half a dataset.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from vpsearch.data.base import DataError


def _pushing(out: Path) -> Path:
    from vpsearch.data.generators.pushing import make_pushing
    return make_pushing(out)


def _dancer(out: Path) -> Path:
    from vpsearch.data.generators.dancer import make_dancer
    return make_dancer(out)


# name -> generator writing the dataset (with its own defaults) into a folder
GENERATORS: dict[str, Callable[[Path], Path]] = {"pushing": _pushing, "dancer": _dancer}


def generator_version(name: str) -> int:
    """The generator's VERSION: a new version of a generator gets a folder of its own."""
    import importlib
    return int(getattr(importlib.import_module(f"vpsearch.data.generators.{name}"), "VERSION", 0))


def data_home() -> Path:
    return Path(os.environ.get("VPSEARCH_DATA_HOME", Path.home() / ".cache" / "vpsearch" / "data"))


def builtin_dir(name: str) -> Path:
    """Where builtin:NAME lives (generated or not): one folder per generator version."""
    return data_home() / f"{name}-v{generator_version(name)}"


def resolve_root(root: str | Path) -> Path:
    """A dataset folder for data.root: a path as is, builtin:NAME generated when missing."""
    root = str(root)
    if not root.startswith("builtin:"):
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"data.root {root}: no such directory")
        return path
    name = root.split(":", 1)[1]
    if name not in GENERATORS:
        raise DataError(f"data.root {root}: unknown built-in dataset (known: "
                        + ", ".join(f"builtin:{n}" for n in GENERATORS) + ")")
    target = builtin_dir(name)
    if (target / "vpsearch-dataset.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "vpsearch-dataset.json").is_file():
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
            try:
                GENERATORS[name](tmp)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return target

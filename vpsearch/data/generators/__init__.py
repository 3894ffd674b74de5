"""Writers of datasets on disk: the built-in generators (pushing, dancer) and data/from_video.py."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MANIFEST = "vpsearch-dataset.json"  # written last: its presence marks a complete dataset


@contextmanager
def dataset_folder(out: Path) -> Iterator[tuple[Path, dict]]:
    """(folder to write into, manifest to fill): built in a sibling temporary folder and moved into
    place whole, so a crash leaves no half dataset. An existing `out` is replaced only when it is
    empty or a dataset vpsearch wrote (it holds the manifest): a user's folder is never deleted."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise FileExistsError(f"{out}: exists and is not a generated dataset; refusing to overwrite")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    meta: dict = {}
    try:
        yield tmp, meta
        (tmp / MANIFEST).write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

"""Decode-once frame cache.

A loader describes a split as a :class:`SplitPlan` (sequence names and lengths, frame
shape, the files it reads and a function decoding one sequence). ``load_cached``
decodes every sequence once into ``.npy`` files opened as memory maps afterwards, so
epochs never touch PNG again. The cache key is a fingerprint of every source file's
path, size and mtime plus the decode parameters: edit, add or remove a file and the
cache is rebuilt. Builds go to a temporary folder renamed into place, so an
interrupted build never leaves a half-written cache behind, and take a lock per key,
so workers starting at once build once and never remove a cache another one uses.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from vpsearch.data.base import DataError, VideoSet
from vpsearch.errors import os_error

CACHE_VERSION = 1


@dataclass
class SplitPlan:
    names: list[str]
    lengths: list[int]
    frame_shape: tuple[int, int, int]  # (H, W, C)
    sources: list[Path]  # every file the split reads
    # decode(i) -> (frames (n, H, W, C) uint8, cond (n, ...) or None) for sequence i
    decode: Callable[[int], tuple[np.ndarray, np.ndarray | None]]
    cond_shape: tuple[int, ...] | None = None  # per frame: (D,) or (H, W, C)
    cond_kind: Literal["vector", "image"] | None = None
    params: dict = field(default_factory=dict)  # decode parameters that change the bytes
    # validation that needs more than directory listings (PNG headers): run on a cache miss only
    check: Callable[[], None] | None = None
    truth_frames: list[int] | None = None  # per sequence: leading frames that are real (see VideoSet)


def fingerprint(plan: SplitPlan) -> str:
    """'<decode id>-<sources id>': caches of other decode parameters (a searched data.height)
    live side by side; a change of the files replaces the cache of the same parameters."""
    params = hashlib.sha1(json.dumps({"v": CACHE_VERSION, "params": plan.params, "shape": plan.frame_shape,
                                      "cond": plan.cond_shape}, sort_keys=True).encode()).hexdigest()[:8]
    h = hashlib.sha1()
    for p in sorted(plan.sources):
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return f"{params}-{h.hexdigest()[:8]}"


def load_cached(plan: SplitPlan, cache_dir: Path, key: str, threads: int = 4) -> VideoSet:
    """Open the cache for ``plan`` (building it first when missing or stale).

    Builds take a file lock per key, so workers starting together build once and the others
    wait and open the result; a stale cache is removed under the same lock.
    """
    cache_dir = Path(cache_dir)
    target = cache_dir / f"{key}-{fingerprint(plan)}"
    if (target / "meta.json").is_file():
        try:
            return _open(target)
        except FileNotFoundError:  # removed as stale by a process that saw newer files: rebuild
            pass
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = open(cache_dir / ".build.lock", "w")  # one per folder: its files match no key
    except OSError as e:
        raise _unwritable(e, cache_dir) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "meta.json").is_file():
            if plan.check is not None:
                plan.check()
            _build(plan, target, threads)
            _remove_stale(cache_dir, key, target)
        return _open(target)


def _unwritable(e: OSError, cache_dir: Path) -> DataError:
    return os_error(e, cache_dir, "building the frame cache",
                    "set data.cache_dir to a writable folder (the dataset itself may stay read-only)", DataError)


def _build(plan: SplitPlan, target: Path, threads: int) -> None:
    """Decode into a temporary folder renamed into place (called under the key's lock)."""
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as e:
        raise _unwritable(e, target.parent) from None
    try:
        starts = np.concatenate([[0], np.cumsum(plan.lengths)]).astype(np.int64)
        total = int(starts[-1])
        frames = np.lib.format.open_memmap(tmp / "frames.npy", mode="w+", dtype=np.uint8,
                                           shape=(total, *plan.frame_shape))
        cond = None
        if plan.cond_shape is not None:
            dtype = np.uint8 if plan.cond_kind == "image" else np.float32
            cond = np.lib.format.open_memmap(tmp / "cond.npy", mode="w+", dtype=dtype,
                                             shape=(total, *plan.cond_shape))

        def fill(i: int) -> None:
            f, c = plan.decode(i)
            frames[starts[i]:starts[i + 1]] = f
            if cond is not None:
                cond[starts[i]:starts[i + 1]] = c

        # PIL releases the GIL while decoding, so threads overlap the PNG work. The first bad
        # file stops the build at once instead of after every queued sequence.
        pool = ThreadPoolExecutor(max_workers=max(1, threads))
        try:
            for _ in pool.map(fill, range(len(plan.names))):
                pass
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        frames.flush()
        del frames
        if cond is not None:
            cond.flush()
            del cond
        np.save(tmp / "starts.npy", starts)
        meta = {"names": plan.names, "cond_kind": plan.cond_kind, "version": CACHE_VERSION,
                "truth_frames": plan.truth_frames}
        (tmp / "meta.json").write_text(json.dumps(meta))
        if target.exists():  # a half-built leftover of a version without the lock
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise _unwritable(e, target.parent) from None
        raise


def _open(target: Path) -> VideoSet:
    meta = json.loads((target / "meta.json").read_text())
    cond_path = target / "cond.npy"
    return VideoSet(
        frames=np.load(target / "frames.npy", mmap_mode="r"),
        starts=np.load(target / "starts.npy"),
        names=list(meta["names"]),
        cond=np.load(cond_path, mmap_mode="r") if cond_path.is_file() else None,
        cond_kind=meta["cond_kind"],
        truth_frames=meta.get("truth_frames"),
    )


def _remove_stale(cache_dir: Path, key: str, keep: Path) -> None:
    """Caches of the same key and decode parameters as keep built from older files, and those
    of the one-hash naming before decode parameters got their own part (KEY-<16 hex>)."""
    params = keep.name.rsplit("-", 1)[0]
    legacy = re.compile(re.escape(key) + r"-[0-9a-f]{16}")
    for old in cache_dir.glob(f"{key}-*"):
        stale = old.name.startswith(params + "-") or legacy.fullmatch(old.name)
        if stale and old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)

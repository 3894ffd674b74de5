"""Decode-once frame cache.

A loader describes a split as a :class:`SplitSource`: its cache key, folder and decode
parameters, and a function listing it as a :class:`SplitPlan` (sequence names and lengths,
frame shape, the files and folders it reads, and a function decoding one sequence).
``load_cached`` decodes every sequence once into ``.npy`` files opened as memory maps
afterwards, so epochs never touch PNG again.

A cache is named ``KEY-<decode id>-<files id>``: caches of other decode parameters (a
searched data.height) live side by side, and it records the manifest of the files it
decoded (manifest.py). Opening one lists nothing: it checks the recorded folders' mtimes
and a sample of the files, and only a cache that fails that check is listed, rebuilt and
replaced. ``verify`` is the full check (every file) behind ``vpsearch data verify``.
Builds go to a temporary folder renamed into place, so an interrupted build never leaves a
half-written cache behind, and take a lock per folder, so workers starting at once build
once and never remove a cache another one uses.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from vpsearch.data.base import DataError, VideoSet
from vpsearch.data.manifest import Diff, Manifest, diff, stale_reason
from vpsearch.errors import os_error

# 2: the manifest (files.npy, stats.npy, dirs.json) replaced the fingerprint of every file;
# 3: meta.json records cond_parts (a cache opened without listing must still name its columns);
# 4: meta.json records each array file's size, so a truncated or replaced one is found on open
CACHE_VERSION = 4
log = logging.getLogger(__name__)
ARRAYS = ("frames.npy", "cond.npy", "starts.npy")


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
    cond_parts: list[tuple[str, int]] | None = None  # the vector condition's columns (VideoSet.cond_parts)
    # every folder the listing read: a file added to any of them must change the listing
    dirs: list[Path] = field(default_factory=list)
    # validation that needs more than directory listings (PNG headers): run on a cache miss only
    check: Callable[[], None] | None = None
    truth_frames: list[int] | None = None  # per sequence: leading frames that are real (see VideoSet)


@dataclass
class SplitSource:
    """What opening a split's cache needs before anything is listed."""

    key: str  # e.g. bair-train
    root: Path  # the split's folder: the manifest's paths are relative to it
    cache_dir: Path
    params: dict  # decode parameters that change the bytes (not derived from the files)
    plan: Callable[[], SplitPlan]  # lists and validates the split (a cache miss, verify)

    def prefix(self) -> str:
        params = json.dumps({"v": CACHE_VERSION, "params": self.params}, sort_keys=True)
        return f"{self.key}-{hashlib.sha1(params.encode()).hexdigest()[:8]}"


def damage(target: Path) -> str | None:
    """Why a built cache cannot be trusted (a garbage meta.json, an array file missing, cut short
    or of another size than built, headers that disagree), or None. Stats and headers only."""
    try:
        meta = json.loads((target / "meta.json").read_text())
        sizes = meta["sizes"]
        if not isinstance(meta["names"], list) or not isinstance(sizes, dict):
            raise TypeError
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError):
        return "meta.json is not the JSON a build writes"
    for name, size in sizes.items():
        try:
            actual = (target / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} is {actual} bytes, {size} were written"
    try:
        starts = np.load(target / "starts.npy")
        frames = np.load(target / "frames.npy", mmap_mode="r")
    except (OSError, ValueError) as e:
        return f"its arrays do not open ({e})"
    if len(starts) != len(meta["names"]) + 1 or int(starts[-1]) != frames.shape[0]:
        return f"starts.npy and frames.npy disagree ({len(starts) - 1} sequences, {frames.shape[0]} frames)"
    return None


def load_cached(src: SplitSource, threads: int = 4) -> VideoSet:
    """Open the cache of ``src`` (listing and building it first when missing, stale or damaged)."""
    for target in _candidates(src):
        if stale_reason(target, src.root) is None:
            try:
                if damage(target) is None:
                    return _open(target)
            except FileNotFoundError:  # removed as stale by a process that saw newer files
                pass
            break  # damaged: rebuilt under the lock below (which says so)
    return _rebuild(src, threads)


def _candidates(src: SplitSource) -> list[Path]:
    """Built caches of these decode parameters, newest first (normally one)."""
    found = []
    for p in Path(src.cache_dir).glob(src.prefix() + "-*"):
        try:
            found.append(((p / "meta.json").stat().st_mtime_ns, p))
        except OSError:  # not a cache, or one being removed
            pass
    return [p for _, p in sorted(found, reverse=True)]


def _rebuild(src: SplitSource, threads: int, listed: tuple[SplitPlan, Manifest] | None = None) -> VideoSet:
    """List the split, then open the cache of exactly these files or build it, under the folder's
    lock (workers starting together build once; the others wait and open the result). A stale
    cache of the same parameters is removed under the same lock. ``listed``: already done (verify)."""
    cache_dir = Path(src.cache_dir)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = open(cache_dir / ".build.lock", "w")  # one per folder: its files match no key
    except OSError as e:
        raise _unwritable(e, cache_dir) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if listed is None:
            for target in _candidates(src):  # another process built it while we waited
                if stale_reason(target, src.root) is None and _undamaged(target, quiet=True):
                    return _open(target)
        plan, manifest = listed or _list(src)
        target = cache_dir / f"{src.prefix()}-{manifest.id()}"
        if (target / "meta.json").is_file() and not _undamaged(target):
            shutil.rmtree(target, ignore_errors=True)
        if (target / "meta.json").is_file():
            # these very files, whose folders' mtimes moved (a file added and removed again)
            manifest.save(target)
        else:
            if plan.check is not None:
                plan.check()
            _build(plan, manifest, target, threads)
        _remove_stale(cache_dir, src, target)
        return _open(target)


def _undamaged(target: Path, quiet: bool = False) -> bool:
    """True for a sound cache; a damaged one is named in one line (then rebuilt by the caller)."""
    try:
        why = damage(target)
    except FileNotFoundError:
        return False
    if why is not None and not quiet:
        log.warning("frame cache %s is damaged (%s): rebuilding it from the frames", target, why)
    return why is None


def _list(src: SplitSource) -> tuple[SplitPlan, Manifest]:
    plan = src.plan()
    dirs = plan.dirs or sorted({p.parent for p in plan.sources})
    return plan, Manifest.of(src.root, plan.sources, dirs)


@dataclass
class Verdict:
    """The full check of one split's cache (``verify``)."""

    key: str
    files: int
    state: Literal["fresh", "stale", "missing", "damaged"]
    cache: Path | None  # the cache checked (fresh or stale)
    diff: Diff | None = None  # stale: what differs from the cache
    damage: str | None = None  # damaged: what is wrong with it
    rebuilt: Path | None = None
    seconds: float = 0.0


def verify(src: SplitSource, rebuild: bool = True, threads: int = 4) -> Verdict:
    """Compare every file of the split with the newest cache of these decode parameters, and
    rebuild it when stale or missing (rebuild=False: report only)."""
    t0 = time.perf_counter()
    plan, manifest = _list(src)
    target = Path(src.cache_dir) / f"{src.prefix()}-{manifest.id()}"
    candidates = _candidates(src)
    why = damage(target) if (target / "meta.json").is_file() else None
    if why is not None:
        verdict = Verdict(src.key, len(manifest.files), "damaged", target, damage=why)
        if rebuild:
            shutil.rmtree(target, ignore_errors=True)
    elif (target / "meta.json").is_file():
        verdict = Verdict(src.key, len(manifest.files), "fresh", target)
        if rebuild:
            try:
                manifest.save(target)  # the folders' mtimes as they are now: the quick check passes again
            except OSError as e:
                raise _unwritable(e, target) from None
    elif candidates:
        verdict = Verdict(src.key, len(manifest.files), "stale", candidates[0],
                          diff(Manifest.load(candidates[0]), manifest))
    else:
        verdict = Verdict(src.key, len(manifest.files), "missing", None)
    if rebuild and verdict.state != "fresh":
        _rebuild(src, threads, (plan, manifest))
        verdict.rebuilt = target
    verdict.seconds = time.perf_counter() - t0
    return verdict


def unused_caches(cache_dir: Path) -> list[Path]:
    """Caches this version never opens: older formats (no manifest) and half-built leftovers of
    versions without the lock. Temporary folders of builds under way (.KEY-...) are not listed."""
    if not Path(cache_dir).is_dir():
        return []
    out = []
    for p in sorted(Path(cache_dir).iterdir()):
        if not p.is_dir() or p.name.startswith("."):
            continue
        try:
            version = json.loads((p / "meta.json").read_text()).get("version")
        except (OSError, ValueError):
            version = None
        if version != CACHE_VERSION:
            out.append(p)
    return out


def _unwritable(e: OSError, cache_dir: Path) -> DataError:
    return os_error(e, cache_dir, "building the frame cache",
                    "set data.cache_dir to a writable folder (the dataset itself may stay read-only)", DataError)


def _build(plan: SplitPlan, manifest: Manifest, target: Path, threads: int) -> None:
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
                "truth_frames": plan.truth_frames, "cond_parts": plan.cond_parts,
                "sizes": {a: (tmp / a).stat().st_size for a in ARRAYS if (tmp / a).is_file()}}
        manifest.save(tmp)
        (tmp / "meta.json").write_text(json.dumps(meta))  # last: a cache with meta.json is complete
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
        cond_parts=[(str(k), int(w)) for k, w in meta["cond_parts"]] if meta.get("cond_parts") else None,
    )


def _remove_stale(cache_dir: Path, src: SplitSource, keep: Path) -> None:
    """Caches of the same key and decode parameters as keep built from older files, and those
    of the one-hash naming of version 0 (KEY-<16 hex>)."""
    legacy = re.compile(re.escape(src.key) + r"-[0-9a-f]{16}")
    for old in cache_dir.glob(f"{src.key}-*"):
        stale = old.name.startswith(src.prefix() + "-") or legacy.fullmatch(old.name)
        if stale and old != keep and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)

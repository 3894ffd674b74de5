"""The pictures of a run, drawn off the training thread.

The GIF and strip of a run's best evaluation (visualize.py) and its end-of-run plots
(plots.py) take a second or more each on a CPU: more than a short trial's whole overhead
budget when the training thread draws them. fit() hands them to the process's one drawing thread (DRAWER)
through a :class:`RunPictures`, then waits for them (``vpsearch train``) or, in a study
worker, leaves them drawing while the worker takes its next trial.

- A best evaluation is drawn once it stands: when a later evaluation does not beat it
  (``confirm``), or at the end of the run. A run that improves at every evaluation draws its
  GIF once, not once per evaluation; a new best removes the pictures of the one before, so
  the folder never shows another epoch's pictures as the best's.
- Files are written under a temporary name and renamed: a reader (an MLflow upload, a report)
  sees a whole picture or none.
- ``RunPictures.then(fn)`` runs fn on the drawing thread once the run's pictures are on disk:
  the MLflow tracker uploads them and ends the run from there.
- ``DRAWER.drain()`` waits for everything queued: trackers' close() and the interpreter's exit
  call it. A drawing that fails prints a warning: pictures never fail a trial.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

from vpsearch.training.plots import plot_run
from vpsearch.training.run_dir import wrote
from vpsearch.training.visualize import write_gif, write_strip


@dataclass
class _Job:
    key: Hashable | None  # jobs of one key replace each other while queued
    fn: Callable[[], Any]
    run: "RunPictures | None"


class Drawer:
    """One background thread that runs drawing jobs in the order they came."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._at_exit = False

    def submit(self, fn: Callable[[], Any], key: Hashable | None = None, run: "RunPictures | None" = None) -> None:
        with self._cond:
            if key is not None:
                for job in self._queue:
                    if job.key == key:  # not started yet: draw the newer one in its place
                        job.fn = fn
                        return
            self._queue.append(_Job(key, fn, run))
            if run is not None:
                run._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="vpsearch-drawing", daemon=True)
                self._thread.start()
                if not self._at_exit:  # registered after the tracker's sender: drained before it flushes
                    atexit.register(self.drain)
                    self._at_exit = True
            self._cond.notify_all()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                job = self._queue.popleft()
                self._busy = True
            try:
                job.fn()
            except Exception as e:  # noqa: BLE001 - a picture must never fail a trial
                print(f"vpsearch: warning: drawing failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
            finally:
                with self._cond:
                    self._busy = False
                    if job.run is not None:
                        job.run._pending -= 1
                    self._cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until every queued job has run; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def _wait_for(self, done: Callable[[], bool], timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(done, timeout)


DRAWER = Drawer()


def _replace_into(tmp: Path, final: Path) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, final)


class RunPictures:
    """The pictures of one run, drawn by DRAWER."""

    def __init__(self, run_dir: Path, drawer: Drawer = DRAWER):
        self.run_dir = Path(run_dir)
        self.drawer = drawer
        self._pending = 0  # jobs queued or running (guarded by the drawer's lock)
        self._held: tuple[list, list, list | None] | None = None  # the best evaluation not drawn yet

    def best(self, truths: list, predictions: list, contexts: list | None = None) -> None:
        """A new best evaluation ((T, H, W, C) uint8 per sequence; contexts (P, H, W, C) or None):
        samples/best.gif and samples/best_strip.png once it stands (confirm(), plots())."""
        samples = self.run_dir / "samples"
        self._held = (truths, predictions, contexts)

        def remove() -> None:  # in order after a drawing of the previous best still under way
            for name in ("best.gif", "best_strip.png"):
                (samples / name).unlink(missing_ok=True)
        self.drawer.submit(remove, key=(str(self.run_dir), "best"), run=self)

    def confirm(self) -> None:
        """An evaluation did not beat the held best: draw it now."""
        if self._held is None:
            return
        (truths, predictions, contexts), self._held = self._held, None
        samples = self.run_dir / "samples"

        def draw() -> None:
            wrote(self.run_dir, "samples")
            samples.mkdir(parents=True, exist_ok=True)
            for name, writer in (("best.gif", write_gif), ("best_strip.png", write_strip)):
                tmp = samples / f".tmp-{name}"  # keeps the extension: Pillow picks the format from it
                writer(tmp, truths, predictions, contexts)
                _replace_into(tmp, samples / name)
        self.drawer.submit(draw, key=(str(self.run_dir), "best"), run=self)

    def plots(self, history: list[dict[str, float]], frame_psnr: dict[str, list[float]] | None) -> None:
        """The end of the run: the held best, and curves.png, schedules.png, frame_psnr.png
        (plots.plot_run)."""
        self.confirm()
        rows = [dict(r) for r in history]

        def draw() -> None:
            tmp = self.run_dir / ".plots-tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                for path in plot_run(tmp, rows, frame_psnr):
                    wrote(self.run_dir, path.name)
                    _replace_into(path, self.run_dir / path.name)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        self.drawer.submit(draw, run=self)

    def then(self, fn: Callable[[], Any]) -> None:
        """Run fn on the drawing thread after this run's pictures (and anything queued before)."""
        self.drawer.submit(fn)

    def done(self) -> bool:
        with self.drawer._cond:
            return self._pending == 0

    def wait(self, timeout: float | None = None) -> bool:
        return self.drawer._wait_for(lambda: self._pending == 0, timeout)

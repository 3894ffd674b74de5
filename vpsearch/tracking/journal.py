"""The local spool: every tracking operation is journaled on disk before it is sent.

One Stream per MLflow run (a trial, or the study's parent run) is a folder under
``RUNS_ROOT/mlflow-spool/``::

    meta.json   tracking URI, study, run name, owner host:pid, the run id once created
    ops.jsonl   one JSON operation per line, append-only (what the run should receive)
    acked       how many leading operations the tracking store has acknowledged

Appending a line costs microseconds, so the training thread journals every epoch and
the sender thread (sender.py) delivers in the background. Whatever was not acknowledged
when a process ends (server outage, crash, kill) stays here and ``vpsearch sync``
replays it; replays are idempotent (MLflow drops a metric identical in key, value,
timestamp and step; params, tags and artifacts are overwritten with the same content).
A stream whose final operation is acknowledged is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from vpsearch.settings import runs_root

SPOOL_DIR = "mlflow-spool"
FINAL_OPS = ("terminate", "end", "worker_done")  # a stream is complete once one of these is acknowledged


def spool_root(root: str | Path | None = None) -> Path:
    return runs_root(root) / SPOOL_DIR


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Stream:
    """The journal of one run's operations and how many of them were delivered."""

    def __init__(self, folder: Path, meta: dict[str, Any], ops: list[dict[str, Any]], acked: int):
        self.folder = folder
        self.meta = meta
        self.ops = ops
        self.acked = acked
        self._lock = threading.Lock()

    # -- creation and loading ------------------------------------------------------------
    @classmethod
    def create(cls, spool: Path, label: str, meta: dict[str, Any]) -> "Stream":
        host, pid = socket.gethostname(), os.getpid()
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{label}-{pid}-{uuid.uuid4().hex[:8]}"
        folder = spool / name
        folder.mkdir(parents=True, exist_ok=False)
        meta = {"name": name, "host": host, "pid": pid, "created": time.time(), "run_id": None, **meta}
        stream = cls(folder, meta, [], 0)
        stream._save_meta()
        (folder / "ops.jsonl").touch()
        return stream

    @classmethod
    def load(cls, folder: Path) -> "Stream":
        meta = json.loads((folder / "meta.json").read_text())
        ops = []
        with (folder / "ops.jsonl").open() as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    ops.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # a line torn by a crash mid-write: everything before it is intact
        acked_file = folder / "acked"
        acked = int(acked_file.read_text() or 0) if acked_file.is_file() else 0
        return cls(folder, meta, ops, min(acked, len(ops)))

    # -- state ---------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def run_id(self) -> str | None:
        return self.meta.get("run_id")

    def set_run_id(self, run_id: str) -> None:
        self.update_meta(run_id=run_id)

    def update_meta(self, **values: Any) -> None:
        self.meta.update(values)
        self._save_meta()

    def _save_meta(self) -> None:
        _write_atomic(self.folder / "meta.json", json.dumps(self.meta, indent=1))

    @property
    def pending(self) -> int:
        return len(self.ops) - self.acked

    @property
    def complete(self) -> bool:
        return self.pending == 0 and bool(self.ops) and self.ops[-1]["op"] in FINAL_OPS

    def release(self) -> None:
        """The owner stopped delivering (its sender shut down): `vpsearch sync` may take over."""
        self.update_meta(released=True)

    def owner_alive(self) -> bool:
        """Whether the process that writes this stream still delivers it (sync must not race it)."""
        if self.meta.get("released"):
            return False
        if self.meta.get("host") != socket.gethostname():
            return False  # a spool copied from another machine: its owner is not here
        try:
            os.kill(int(self.meta["pid"]), 0)
        except (ProcessLookupError, ValueError):
            return False
        except PermissionError:
            return True
        return True

    # -- journal -------------------------------------------------------------------------
    def append(self, op: dict[str, Any]) -> int:
        """Journal one operation; returns its index. Safe from any thread."""
        line = json.dumps(op) + "\n"
        with self._lock:
            with (self.folder / "ops.jsonl").open("a") as f:
                f.write(line)
            self.ops.append(op)
            return len(self.ops) - 1

    def ack(self, upto: int) -> None:
        """Operations [0, upto) are delivered."""
        with self._lock:
            if upto <= self.acked:
                return
            self.acked = upto
            _write_atomic(self.folder / "acked", str(upto))

    def reject(self, index: int, error: str) -> None:
        """Record an operation the store refused for good (it is acknowledged, not retried)."""
        with (self.folder / "rejected.jsonl").open("a") as f:
            f.write(json.dumps({"index": index, "op": self.ops[index], "error": error}) + "\n")

    def rejected(self) -> list[dict[str, Any]]:
        """The refused operations recorded so far ({index, op, error}), in order."""
        path = self.folder / "rejected.jsonl"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def set_rejected(self, records: list[dict[str, Any]]) -> None:
        """Keep only these refused operations (after a replay delivered the others)."""
        path = self.folder / "rejected.jsonl"
        if records:
            _write_atomic(path, "".join(json.dumps(r) + "\n" for r in records))
        else:
            path.unlink(missing_ok=True)

    def discard(self) -> None:
        if (self.folder / "rejected.jsonl").is_file():
            return  # keep the evidence of refused operations for the user
        shutil.rmtree(self.folder, ignore_errors=True)


def pending_streams(spool: Path) -> Iterator[Stream]:
    """Streams left in a spool, oldest first (unreadable folders are skipped)."""
    if not spool.is_dir():
        return
    for folder in sorted(p for p in spool.iterdir() if p.is_dir()):
        if not (folder / "meta.json").is_file():
            continue
        try:
            yield Stream.load(folder)
        except (OSError, ValueError, KeyError):
            continue

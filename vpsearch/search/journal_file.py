"""The journal file survives a full disk and a process killed mid-write.

Optuna's JournalFileBackend appends each batch of records as one write of whole lines. When
the disk fills, that write can stop part-way (a record cut off mid-line); the next append
then lands on the same line, and from then on Optuna's reader fails on every open with a
JSONDecodeError: the whole study is unreadable. Two guards:

- ``GuardedJournalBackend.append_logs`` writes like Optuna's (same lock, one write, fsync),
  but a write that fails truncates the file back to where it was, so a failed append leaves
  no partial record; and before writing it sets aside a torn tail left by a process that
  died mid-write (SIGKILL, power loss), so a new record never joins a torn one.
- When a journal is opened, a torn tail is set aside (``set_aside_torn_tail``), and where
  Optuna still cannot read the file, ``repair(path)`` sets aside
  every line that is not a whole record: a torn last line, or a torn record that a later one
  was appended onto (the later record is kept when it parses on its own). Set-aside bytes go
  to ``PATH.torn`` (appended, with a header saying when and from which line), never dropped.

Both run under the journal's flock, so no other process appends meanwhile.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend

RECORD_START = b'{"op_code":'  # how Optuna's journal serialises every record


class GuardedJournalBackend(JournalFileBackend):
    def __init__(self, path: str, lock: Any):
        super().__init__(path, lock_obj=lock)
        self.path, self.flock = Path(path), lock

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode("utf-8")
        self.flock.acquire()
        try:
            set_aside_torn_tail(self.path)
            size = self.path.stat().st_size if self.path.exists() else 0
            try:
                with open(self.path, "ab") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError:
                _truncate(self.path, size)  # no partial record stays behind
                raise
        finally:
            self.flock.release()


def _truncate(path: Path, size: int) -> None:
    try:
        with open(path, "r+b") as f:
            f.truncate(size)
            os.fsync(f.fileno())
    except OSError:
        pass  # repair() sets the torn tail aside on the next open


def set_aside_torn_tail(path: Path) -> int:
    """Cut a last line without its newline (a write that died part-way) into PATH.torn; the bytes
    cut (0: the file ends with a whole record). The caller holds the journal's lock."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            end = f.tell()
            if end == 0:
                return 0
            f.seek(end - 1)
            if f.read(1) == b"\n":
                return 0
            # find the start of the torn line: the byte after the last newline
            block, pos = 65536, end
            start = 0
            while pos > 0:
                step = min(block, pos)
                f.seek(pos - step)
                chunk = f.read(step)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    start = pos - step + i + 1
                    break
                pos -= step
            f.seek(start)
            torn = f.read()
    except FileNotFoundError:
        return 0
    _keep_aside(path, [(None, torn)])
    _truncate(path, start)
    return len(torn)


def repair(path: Path, lock: Any) -> int:
    """Set aside every line of the journal that is not a whole record (module docstring); the
    number of lines set aside (0: the file was whole and is untouched)."""
    path = Path(path)
    if not path.exists():
        return 0
    lock.acquire()
    try:
        raw = path.read_bytes()
        kept, aside = [], []
        for number, line in enumerate(raw.splitlines(keepends=True), start=1):
            if line.endswith(b"\n") and _whole(line):
                kept.append(line)
                continue
            salvaged = _salvage(line) if line.endswith(b"\n") else None
            if salvaged is not None:
                aside.append((number, line[:len(line) - len(salvaged)]))
                kept.append(salvaged)
            else:
                aside.append((number, line))
        if not aside:
            return 0
        _keep_aside(path, aside)
        tmp = path.with_name(path.name + ".repairing")
        with open(tmp, "wb") as f:
            f.write(b"".join(kept))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return len(aside)
    finally:
        lock.release()


def _whole(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _salvage(line: bytes) -> bytes | None:
    """The longest tail of a line that is a whole record on its own (a record appended onto a torn one)."""
    at = line.find(RECORD_START, 1)
    while at > 0:
        if _whole(line[at:]):
            return line[at:]
        at = line.find(RECORD_START, at + 1)
    return None


def _keep_aside(path: Path, pieces: list[tuple[int | None, bytes]]) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(path.with_name(path.name + ".torn"), "ab") as f:
        for number, data in pieces:
            where = f"line {number}" if number is not None else "the torn last line"
            f.write(f"# vpsearch set aside {len(data)} bytes of {where} of {path.name} on {stamp}\n".encode())
            f.write(data if data.endswith(b"\n") else data + b"\n")
        f.flush()
        os.fsync(f.fileno())

"""Study storage: the journal file (embedded default), SQLite (one worker), PostgreSQL (scale).

- ``journal:PATH`` (what settings.storage_url() gives): Optuna's JournalStorage with the
  file backend, locked with flock so a worker killed mid-write never leaves a stale lock.
- ``sqlite:///PATH``: refused for more than one worker (SQLite locks the whole file;
  Optuna's FAQ says not to share it between parallel workers).
- ``postgresql://...`` (any other SQLAlchemy URL): RDBStorage with heartbeats and a
  stale-trial retry callback, so a trial whose worker died is failed and re-run.

Every storage call of the driver goes through ``StudyStorage.call``: transient errors
(connection refused, I/O errors) are retried with exponential backoff for ``wait``
seconds, then one clear StorageUnavailable error names the storage and the cause.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage

from vpsearch.search import journal_file
from vpsearch.search.journal_file import GuardedJournalBackend
from vpsearch.search.spec import Failure, StudyError
from vpsearch.settings import redact, scrub, with_driver

T = TypeVar("T")


class StorageUnavailable(StudyError):
    """The storage could not be reached within the retry budget."""


class StorageFull(StorageUnavailable):
    """The storage's file system is full (or read-only): nothing more can be recorded."""


_FULL_ERRNO = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def disk_full(e: BaseException | None) -> bool:
    """e, or an error it came from (a one-line UserError raised over an OSError), is a full or
    read-only file system: the machine's fault, not the trial's."""
    seen = 0
    while e is not None and seen < 10:
        if isinstance(e, OSError) and e.errno in _FULL_ERRNO:
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


# I/O errors a network file system (a journal on NFS) gives while it is away
_TRANSIENT_ERRNO = {errno.EIO, errno.ESTALE, errno.ENETDOWN, errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ETIMEDOUT}


def _is_transient(e: BaseException) -> bool:
    import sqlalchemy.exc
    if isinstance(e, optuna.exceptions.StorageInternalError) and e.__cause__ is not None:
        return _is_transient(e.__cause__)  # Optuna wraps a connection lost during a commit
    if isinstance(e, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, ConnectionError, TimeoutError,
                      BlockingIOError, InterruptedError)):
        return True
    if isinstance(e, sqlalchemy.exc.DBAPIError) and e.connection_invalidated:
        return True  # any other driver error SQLAlchemy recognised as a lost connection (a server restart)
    if isinstance(e, sqlalchemy.exc.PendingRollbackError):
        return True  # a session whose connection was lost mid-transaction: usable again once rolled back
    return isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNO


class FlockLock:
    """Journal lock held with flock(2): the kernel drops it when its process dies (even by SIGKILL);
    Optuna's default symlink lock would leave a lock file that blocks every worker for 30 s.
    (JournalFileBackend calls only acquire() and release() of its lock object.)"""

    def __init__(self, journal: str):
        self.path = journal + ".flock"
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def set_aside_torn_tail(path: Path, lock: FlockLock, shown: str) -> None:
    if not path.exists():
        return
    lock.acquire()
    try:
        cut = journal_file.set_aside_torn_tail(path)
    finally:
        lock.release()
    if cut:
        print(f"vpsearch: warning: storage {shown}: the journal's last record was cut off ({cut} bytes, a write "
              f"that stopped part-way); set aside into {path.name}.torn, the study goes on from the rest",
              file=sys.stderr)


def _repaired(path: Path, lock: FlockLock, shown: str) -> int:
    n = journal_file.repair(path, lock)
    if n:
        print(f"vpsearch: warning: storage {shown}: {n} torn record(s) in the journal set aside into "
              f"{path.name}.torn; the study goes on from the rest", file=sys.stderr)
    return n


def parse_url(url: str) -> tuple[str, str]:
    """-> (kind, target): ('journal', path) | ('sqlite', url) | ('rdb', url)."""
    if url.startswith("journal:"):
        return "journal", url[len("journal:"):]
    if "://" not in url and url.endswith((".log", ".journal")):
        return "journal", url
    if url.startswith("sqlite:"):
        return "sqlite", url
    if "://" in url:
        return "rdb", with_driver(url)
    raise StudyError(f"storage {redact(url)}: expected journal:PATH, sqlite:///PATH or postgresql://USER@HOST/DB")


def require_existing(url: str) -> None:
    """For commands that only read: a journal or sqlite file that is not there is an error,
    never a new empty store (nor the folders leading to it)."""
    kind, target = parse_url(url)
    if kind == "journal":
        path = target
    elif kind == "sqlite" and target.startswith("sqlite:///"):
        path = target[len("sqlite:///"):]
    else:
        return  # a database server: reading it creates nothing
    if path != ":memory:" and not Path(path).expanduser().is_file():
        raise StudyError(f"storage {redact(url)}: no such {kind} file (run a study first, or pass --storage "
                         "or --root)")


@dataclass
class StudyStorage:
    url: str
    kind: str
    storage: BaseStorage
    wait: float = 60.0
    rdb: RDBStorage | None = None
    journal: Path | None = None
    failure: Failure = field(default_factory=Failure)

    @property
    def shown(self) -> str:
        return redact(self.url)

    @property
    def heartbeats(self) -> bool:
        return self.rdb is not None and self.rdb.heartbeat_interval is not None

    def call(self, fn: Callable[[], T], what: str) -> T:
        return retrying(fn, what, self.shown, self.wait, on_retry=self.reset_session)

    def reset_session(self) -> None:
        """Drop this thread's RDB session (before a retry, after a failed heartbeat): a lost
        connection may have left it mid-transaction. Optuna opens a new one on its next call."""
        if self.rdb is not None:
            try:
                self.rdb.scoped_session.remove()
            except Exception:  # closing a broken session may fail too: the error being retried matters
                pass

    def close(self) -> None:
        """Give the RDB engine's pooled connections back: a process that opens storages again and
        again (a poller, a worker re-opening with the study's heartbeat settings) would otherwise
        hold one each until PostgreSQL refuses new clients."""
        if self.rdb is not None:
            self.reset_session()
            self.rdb.engine.dispose()

    @contextlib.contextmanager
    def lock(self, study_name: str) -> Iterator[None]:
        """Serialises "count the budget, create a trial, enqueue its repeats" between workers, so
        n_trials is met exactly: flock beside the journal, an advisory lock in PostgreSQL."""
        if self.kind == "journal" and self.journal is not None:
            with open(str(self.journal) + ".ask.lock", "w") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                yield
            return
        if self.rdb is not None and self.rdb.engine.name == "postgresql":
            from sqlalchemy import text
            key = int.from_bytes(hashlib.sha1(study_name.encode()).digest()[:8], "big", signed=True)
            with self.rdb.engine.connect() as conn:  # session lock: released if this process dies
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    conn.commit()
            return
        yield  # sqlite: one worker only, nothing to serialise


def retrying(fn: Callable[[], T], what: str, shown: str, wait: float,
             on_retry: Callable[[], None] | None = None) -> T:
    """fn() with exponential backoff (0.5 s doubling to 8 s) on transient errors, for `wait` seconds;
    on_retry() runs before each new attempt."""
    start, delay, attempts = time.monotonic(), 0.5, 0
    while True:
        attempts += 1
        try:
            return fn()
        except Exception as e:
            if isinstance(e, OSError) and e.errno in _FULL_ERRNO:
                raise StorageFull(f"storage {shown}: {(e.strerror or str(e)).lower()} while {what}; free space "
                                  "and run the command again: nothing half-written stays in the journal, and "
                                  "a study resumes where it stopped") from None
            if not _is_transient(e):
                raise
            elapsed = time.monotonic() - start
            if elapsed + delay > wait:
                err = e.__cause__ if isinstance(e, optuna.exceptions.StorageInternalError) else e
                cause = (str(getattr(err, "orig", None) or err).strip().splitlines() or [type(err).__name__])[0]
                raise StorageUnavailable(
                    f"storage {shown} unreachable: {what} failed {attempts} times over {elapsed:.0f}s "
                    f"({cause}); check that it is running and reachable (retry budget: --storage-wait)"
                ) from None
            time.sleep(delay)
            delay = min(8.0, delay * 2)
            if on_retry is not None:
                on_retry()


def open_storage(url: str, workers: int = 1, failure: Failure | None = None, wait: float = 60.0) -> StudyStorage:
    """Open (creating if needed) the storage a URL names; see the module docstring."""
    kind, target = parse_url(url)
    failure = failure or Failure()
    shown = redact(url)
    if kind == "sqlite" and workers > 1:
        raise StudyError(f"storage {shown}: SQLite is not safe for {workers} parallel workers (its file lock "
                         "serialises and times out concurrent writes, see Optuna's FAQ); use the default "
                         "journal file (omit --storage) or postgresql://")
    if kind == "journal":
        path = Path(target).expanduser().resolve()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StudyError(f"storage {shown}: cannot create {path.parent} ({e.strerror})") from None

        def make_journal() -> BaseStorage:
            lock = FlockLock(str(path))
            set_aside_torn_tail(path, lock, shown)
            try:
                return JournalStorage(GuardedJournalBackend(str(path), lock))
            except ValueError:  # a torn record inside the file (Optuna's reader stops at it)
                if not _repaired(path, lock, shown):
                    raise
                return JournalStorage(GuardedJournalBackend(str(path), lock))
        return StudyStorage(url, kind, retrying(make_journal, "opening the journal", shown, wait), wait,
                            journal=path, failure=failure)

    def make_rdb() -> RDBStorage:
        from vpsearch.search.recovery import RetryStaleTrial
        heartbeat = failure.heartbeat_seconds if kind == "rdb" else None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(target, engine_kwargs={"pool_pre_ping": True}, heartbeat_interval=heartbeat,
                              grace_period=failure.grace if heartbeat else None,
                              heartbeat_stale_trial_callback=(RetryStaleTrial(failure.max_retries)
                                                              if heartbeat else None))
    try:
        rdb = retrying(make_rdb, "connecting", shown, wait)
    except StorageUnavailable:
        raise
    except Exception as e:  # bad URL, missing driver, wrong password: not worth retrying
        msg = scrub((str(e).strip().splitlines() or [type(e).__name__])[0], url)
        raise StudyError(f"storage {shown}: cannot open ({msg})") from None
    return StudyStorage(url, kind, rdb, wait, rdb=rdb, failure=failure)


def study_names(store: StudyStorage) -> list[str]:
    return [s.study_name for s in store.call(lambda: optuna.get_all_study_summaries(store.storage), "listing")]


def load_optuna_study(store: StudyStorage, name: str, sampler: Any = None, pruner: Any = None) -> optuna.Study:
    try:
        return store.call(lambda: optuna.load_study(study_name=name, storage=store.storage, sampler=sampler,
                                                    pruner=pruner), f"loading study {name}")
    except KeyError:
        known = study_names(store)
        raise StudyError(f"study {name!r} not found in storage {store.shown}"
                         + (f" (studies there: {', '.join(known)})" if known else " (it holds no studies)")) from None

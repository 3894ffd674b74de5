"""Delivery of journaled operations to MLflow, off the training thread.

The training thread only journals (journal.Stream.append) and enqueues; one Sender
thread per process sends in order, merging consecutive metric batches of a run into
``log_batch`` calls of at most 1000 metrics. When the server is down, or answers with a
server-side error (HTTP 5xx: INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE, a proxy's 502), the
sender goes offline: it warns once, keeps everything queued (and journaled), retries with
a growing pause for as long as that lasts, and flushes when the server works again.
Operations the store refuses as a client error (HTTP 4xx: a bad value; or a local file
that is gone) are recorded next to the journal and skipped, so one bad value never blocks
a study's logging; `vpsearch sync --rejected` replays them after a fix. Waits for delivery
(a trial's close) give up after a few seconds without progress, so a frozen server never
holds training: what is unsent stays in the spool.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from vpsearch.settings import redact
from vpsearch.tracking import names
from vpsearch.tracking.journal import Stream
from vpsearch.tracking.probe import is_remote, probe

log = logging.getLogger("vpsearch.tracking")

# seconds between retries while the server is unreachable: the last repeats (a refused /health
# probe is cheap, and the queue should drain within a couple of seconds of the server's return)
BACKOFF = (0.5, 1.0, 2.0, 2.0, 2.0)
# while it answers but fails (5xx): back off further, a struggling server needs room
SERVER_BACKOFF = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
STALL = 5.0  # a wait gives up after this many seconds in which nothing was delivered


class Refused(Exception):
    """An operation that cannot succeed (recorded in the stream's rejected.jsonl)."""


def is_permanent(err: BaseException) -> bool:
    """A client error no retry fixes: HTTP 4xx from MLflow (not 429), a local file that is gone,
    or a bug on our side. Server errors (5xx) and network errors are retried."""
    if isinstance(err, (Refused, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return True
    from mlflow.exceptions import MlflowException
    if isinstance(err, MlflowException):
        status = err.get_http_status_code()
        return 400 <= status < 500 and status != 429
    return not isinstance(err, (OSError, TimeoutError)) and not _is_transient_io(err)


def _is_transient_io(err: BaseException) -> bool:
    """A network or database connection error from below MLflow (a DB store's lost connection)."""
    import requests
    import sqlalchemy.exc
    return isinstance(err, (requests.exceptions.RequestException, sqlalchemy.exc.OperationalError,
                            sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError))


class Delivery:
    """Executes journaled operations with an MlflowClient (shared by Sender and sync)."""

    def __init__(self, client: Any):
        self.client = client

    def execute(self, stream: Stream, ops: list[dict[str, Any]]) -> None:
        kind = ops[0]["op"]
        if kind == "log_batch":
            self._log_batch(stream, ops)
        elif len(ops) == 1:
            getattr(self, "_" + kind)(stream, ops[0])
        else:
            raise AssertionError("only log_batch operations are merged")

    def _run_id(self, stream: Stream) -> str:
        if not stream.run_id:
            raise Refused(f"run {stream.meta.get('run_name')} was never created")
        return stream.run_id

    def _create_run(self, stream: Stream, op: dict[str, Any]) -> None:
        if stream.run_id:
            return
        if stream.meta.get("create_attempted"):
            # an earlier attempt may have reached the server before the connection broke:
            # find that run by its stream tag instead of creating a twin
            found = self.client.search_runs(
                [op["experiment_id"]], f"tags.`vpsearch.stream` = '{stream.name}'", max_results=1)
            if found:
                stream.set_run_id(found[0].info.run_id)
                return
        stream.update_meta(create_attempted=True)
        run = self.client.create_run(op["experiment_id"], start_time=op["start_time"],
                                     tags={**op["tags"], "vpsearch.stream": stream.name},
                                     run_name=op["run_name"])
        stream.set_run_id(run.info.run_id)

    def _log_batch(self, stream: Stream, ops: list[dict[str, Any]]) -> None:
        from mlflow.entities import Metric, Param, RunTag

        run_id = self._run_id(stream)
        metrics = [Metric(k, v, ts, step) for op in ops for k, v, ts, step in op.get("metrics", [])]
        params: dict[str, str] = {}
        tags: dict[str, str] = {}
        for op in ops:
            params.update(op.get("params", {}))
            tags.update(op.get("tags", {}))
        keyed = [Param(k, v) for k, v in params.items()] + [RunTag(k, v) for k, v in tags.items()]
        m_chunks = list(names.chunks(metrics, names.MAX_METRICS_PER_BATCH)) or [[]]
        k_chunks = list(names.chunks(keyed, names.MAX_PARAMS_TAGS_PER_BATCH)) or [[]]
        for i in range(max(len(m_chunks), len(k_chunks))):
            m = m_chunks[i] if i < len(m_chunks) else []
            k = k_chunks[i] if i < len(k_chunks) else []
            if m or k:
                self.client.log_batch(run_id, metrics=m, params=[x for x in k if isinstance(x, Param)],
                                      tags=[x for x in k if isinstance(x, RunTag)], synchronous=True)

    def _artifact(self, stream: Stream, op: dict[str, Any]) -> None:
        self.client.log_artifact(self._run_id(stream), op["path"], op.get("artifact_path"))

    def _checkpoint(self, stream: Stream, op: dict[str, Any]) -> None:
        from vpsearch.tracking.retention import retain_checkpoint

        retain_checkpoint(self.client, self._run_id(stream), op)

    def _terminate(self, stream: Stream, op: dict[str, Any]) -> None:
        self.client.set_terminated(self._run_id(stream), op["status"], op["end_time"])

    def _reopen(self, stream: Stream, op: dict[str, Any]) -> None:
        """A worker joins the study: its parent run is RUNNING again (a resumed study)."""
        run_id = self._run_id(stream)
        self.client.set_tag(run_id, op["key"], "running")
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def _worker_done(self, stream: Stream, op: dict[str, Any]) -> None:
        """A worker leaves; the last one to leave ends the parent run. Each writes its own tag
        before reading all of them, so of two leaving at once at least the later one sees both."""
        run_id = self._run_id(stream)
        self.client.set_tag(run_id, op["key"], "done")
        tags = self.client.get_run(run_id).data.tags
        if not any(k.startswith(names.TAG_WORKER) and v == "running" for k, v in tags.items()):
            self.client.set_terminated(run_id, "FINISHED", op["end_time"])

    def _end(self, stream: Stream, op: dict[str, Any]) -> None:
        """Marks the end of a stream that does not own its run (a worker's view of the parent)."""

    def _end_lost(self, stream: Stream, op: dict[str, Any]) -> None:
        """The run of a trial whose worker died: FAILED with the reason, unless it ended after all."""
        from mlflow.entities import RunTag

        run_id = self._run_id(stream)
        if self.client.get_run(run_id).info.status != "RUNNING":
            return
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()], synchronous=True)
        self.client.set_terminated(run_id, "FAILED", op["end_time"])

    def _worker_lost(self, stream: Stream, op: dict[str, Any]) -> None:
        """A worker found dead by another process leaves the parent run as if it had said so."""
        for key, value in self.client.get_run(self._run_id(stream)).data.tags.items():
            if key.startswith(op["prefix"]) and value == "running":
                self._worker_done(stream, {"key": key, "end_time": op["end_time"]})


class Sender:
    """The background thread that delivers every stream of one process, in order."""

    def __init__(self, client: Any, uri: str, spool_hint: str,
                 probe_fn: Callable[[str], str | None] = probe):
        self.delivery = Delivery(client)
        self.uri = uri
        self.label = redact(uri)  # for messages: never print a password
        self.remote = is_remote(uri)
        self.probe = probe_fn
        self.spool_hint = spool_hint  # the `vpsearch sync` command line that would deliver leftovers
        self.online = True
        self._items: deque[tuple[Stream, int]] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._offline_tries = 0
        self._progress_at = 0.0  # monotonic time of the last delivery
        self._queued_at = 0.0  # monotonic time the queue last went from empty to non-empty
        self._single = False  # after a refused merged batch, retry its operations one by one
        self._offline_since = 0.0
        self.streams: list[Stream] = []

    # -- producer side (training thread) -------------------------------------------------
    def submit(self, stream: Stream, op: dict[str, Any]) -> int:
        index = stream.append(op)
        with self._cond:
            if stream not in self.streams:
                self.streams.append(stream)
            if not self._items:
                self._queued_at = time.monotonic()
            self._items.append((stream, index))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="vpsearch-mlflow-sender", daemon=True)
                self._thread.start()
                # a process that ends without StudyTracker.close() still gets its uploads out
                atexit.register(self._at_exit)
            self._cond.notify_all()
        return index

    def wait(self, stream: Stream | None = None, timeout: float | None = None,
             offline_grace: float = 0.0, stall: float | None = None,
             until: Callable[[], bool] | None = None) -> bool:
        """Block until stream (or everything) is delivered, or until `until()` holds. False on
        timeout, once the server has been unreachable for offline_grace seconds of this wait
        (0: give up at once), or after `stall` seconds in which nothing was delivered while it
        seemed up (a frozen server).

        The stall clock counts from the last delivery, or from when the queue last filled: a wait
        that starts while a frozen server has already held the queue for `stall` seconds gives up
        at once, so only the first wait of an outage pays it, not every trial's end."""
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        offline_from: float | None = None
        with self._cond:
            while True:
                if (until is not None and until()) or ((stream.pending == 0) if stream is not None
                                                       else not self._items):
                    return True
                now = time.monotonic()
                if self.online:
                    if stall is not None and now - max(self._progress_at, self._queued_at) >= stall:
                        return False  # frozen: it took the request and never answered
                    offline_from = None
                else:
                    offline_from = offline_from or now
                    if now - offline_from >= offline_grace:
                        return False
                if deadline is not None and now >= deadline:
                    return False
                self._cond.wait(0.25 if deadline is None else max(0.0, min(deadline - now, 0.25)))

    @property
    def queued(self) -> int:
        return len(self._items)

    def stop(self, timeout: float, offline_grace: float = 15.0, stall: float = 30.0) -> int:
        """Flush for at most timeout seconds (offline_grace of them while the server is down,
        stall of them without any delivery), stop the thread; returns the number of undelivered
        operations.

        Leftover streams are released to `vpsearch sync` (their journals stay on disk).
        """
        self.wait(None, timeout, offline_grace=min(offline_grace, timeout), stall=stall)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        left = [s for s in self.streams if s.pending]
        for s in left:
            s.release()
        n = sum(s.pending for s in left)
        if n:
            log.warning("vpsearch: %d tracking operations of %d MLflow runs were not delivered to %s; "
                        "they are kept in the local spool: run `%s` to upload them",
                        n, len(left), self.label, self.spool_hint)
        return n

    def _at_exit(self) -> None:
        if self._thread is not None and self._thread.is_alive() and not self._stopping:
            self.stop(timeout=30.0, offline_grace=0.0)

    # -- consumer side (sender thread) ---------------------------------------------------
    def _group(self) -> tuple[Stream, list[int]]:
        stream, first = self._items[0]
        group = [first]
        if stream.ops[first]["op"] == "log_batch" and not self._single:
            count = len(stream.ops[first].get("metrics", []))
            for s, i in itertools.islice(self._items, 1, None):
                op = s.ops[i]
                if s is not stream or op["op"] != "log_batch" or count >= names.MAX_METRICS_PER_BATCH * 5:
                    break
                group.append(i)
                count += len(op.get("metrics", []))
        return stream, group

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stopping:
                    self._cond.wait()
                if not self._items or (self._stopping and not self.online):
                    return
                stream, group = self._group()
            try:
                self.delivery.execute(stream, [stream.ops[i] for i in group])
            except Exception as err:  # noqa: BLE001 - every failure is classified below
                if self._retry_later(stream, group, err):
                    continue
            self._done(stream, group)

    def _done(self, stream: Stream, group: list[int]) -> None:
        # say "back" before the ack: a waiter released by the ack must find the state settled
        with self._cond:
            if not self.online:
                log.warning("vpsearch: MLflow tracking server %s is back after %.0f s; sending %d queued "
                            "operations", self.label, time.monotonic() - self._offline_since,
                            len(self._items) - len(group))
                self.online = True
        stream.ack(group[-1] + 1)
        with self._cond:
            for _ in group:
                self._items.popleft()
            self._offline_tries, self._single = 0, False
            self._progress_at = time.monotonic()
            self._cond.notify_all()
        if stream.complete:
            stream.discard()
            with self._cond:
                if stream in self.streams:
                    self.streams.remove(stream)

    def _retry_later(self, stream: Stream, group: list[int], err: BaseException) -> bool:
        """True: keep the operation queued and retry; False: refuse it (recorded) and move on."""
        if is_permanent(err) and len(group) > 1:
            self._single = True  # find the one bad operation of the merged batch
            return True
        if not is_permanent(err):
            # an outage, or a server that answers /health but fails requests (5xx): retry for as
            # long as it lasts; the journal holds everything meanwhile
            down = self.probe(self.uri) if self.remote else None
            self._go_offline(down if down is not None else f"it answers but failed {stream.ops[group[0]]['op']}: "
                             f"{_first_line(err)}")
            self._offline_tries += 1
            pauses = BACKOFF if down is not None else SERVER_BACKOFF
            self._pause(pauses[min(self._offline_tries, len(pauses)) - 1])
            return True
        for i in group:
            stream.reject(i, f"{type(err).__name__}: {err}")
        log.warning("vpsearch: MLflow refused %s for run %s (%s: %s); recorded in %s, replay it after a fix "
                    "with `%s --rejected`", stream.ops[group[0]]["op"], stream.meta.get("run_name"),
                    type(err).__name__, _first_line(err), stream.folder / "rejected.jsonl", self.spool_hint)
        return False

    def _go_offline(self, why: str) -> None:
        with self._cond:
            if self.online:
                self.online = False
                self._offline_since = time.monotonic()
                self._cond.notify_all()
                log.warning("vpsearch: MLflow tracking server %s unreachable or failing (%s); training continues, "
                            "%d tracking operations are queued and journaled, and are sent when it "
                            "returns (or by `%s`)", self.label, why, len(self._items), self.spool_hint)

    def _pause(self, seconds: float) -> None:
        with self._cond:
            if not self._stopping:
                self._cond.wait(seconds)


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__

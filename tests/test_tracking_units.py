"""Tracking pieces without a server or data: names and limits, batching, the sender's
offline behaviour, the journal, and failing fast on an unreachable server."""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from vpsearch.config import load_config
from vpsearch.tracking import StudyTracker, TrackingUnavailable, make_tracker, names
from vpsearch.tracking.journal import Stream, pending_streams
from vpsearch.tracking.sender import Delivery, Sender

ISSUE_METRICS = ["train/loss", "train/mse", "train/kl", "schedule/kl_beta", "schedule/tfr", "train/lr",
                 "val/psnr", "val/ssim", "time/epoch_seconds"]


class FakeClient:
    """Records log_batch calls; can block, be 'down', or refuse one metric key."""

    def __init__(self):
        self.calls: list[tuple[int, int, int]] = []  # (metrics, params, tags) per call
        self.metrics: list = []
        self.gate = threading.Event()
        self.gate.set()
        self.down = False
        self.refuse_key: str | None = None

    def log_batch(self, run_id, metrics=(), params=(), tags=(), synchronous=None):
        self.gate.wait()
        if self.down:
            raise MlflowException("API request failed: Connection refused")
        if self.refuse_key and any(m.key == self.refuse_key for m in metrics):
            raise MlflowException("bad metric", error_code=INVALID_PARAMETER_VALUE)
        assert len(metrics) <= 1000 and len(params) + len(tags) <= 100
        self.calls.append((len(metrics), len(params), len(tags)))
        self.metrics.extend(metrics)


def stream(tmp_path, run_id="run-1") -> Stream:
    s = Stream.create(tmp_path / "spool", "trial-0", {"tracking_uri": "http://x", "run_name": "trial-0"})
    s.set_run_id(run_id)
    return s


def epoch_op(epoch: int) -> dict:
    values = {k: float(epoch) for k in names.EPOCH_METRICS}
    return {"op": "log_batch", "metrics": names.epoch_metrics(epoch, values, 1000 + epoch)}


def test_metric_names_and_steps_follow_the_issue():
    rows = names.epoch_metrics(7, {"loss": 1.5, "mse": 1.0, "kl": 3.0, "kl_beta": 0.5, "tfr": 0.9, "lr": 2e-3,
                                   "val_psnr": 21.0, "val_ssim": 0.8, "seconds": 4.2, "epoch": 7}, 123)
    assert sorted(r[0] for r in rows) == sorted(ISSUE_METRICS)
    assert {r[3] for r in rows} == {7} and {r[2] for r in rows} == {123}
    assert dict((r[0], r[1]) for r in rows)["schedule/kl_beta"] == 0.5
    frames = names.frame_metrics(names.FRAME_PSNR, ["30.5", 29.0], 5)
    assert frames == [["val/psnr_frame", 30.5, 5, 1], ["val/psnr_frame", 29.0, 5, 2]]


def test_params_are_the_flat_config_within_mlflow_limits():
    cfg = load_config("pushing-small")
    params = names.params_from_flat(cfg.flat())
    assert params["optim.lr"] == "0.002" and params["schedule.kl_anneal_type"] == "cyclical"
    assert params["optim.milestones"] == "[2, 5]" and params["train.steps_per_epoch"] == "60"
    assert set(params) == set(cfg.flat())
    long = names.params_from_flat({"k" * 300: "v" * 7000})
    (key, value), = long.items()
    assert len(key) == 250 and len(value) == 6000 and value.endswith(names.TRUNCATED)


def test_log_batch_splits_at_mlflow_limits(tmp_path):
    client = FakeClient()
    s = stream(tmp_path)
    op = {"op": "log_batch", "metrics": [["m", float(i), 1, i] for i in range(2500)],
          "params": {f"p{i}": str(i) for i in range(150)}, "tags": {f"t{i}": "x" for i in range(70)}}
    Delivery(client).execute(s, [op])
    assert [c[0] for c in client.calls] == [1000, 1000, 500]
    assert sum(c[1] + c[2] for c in client.calls) == 220
    assert [m.value for m in client.metrics] == [float(i) for i in range(2500)]


def test_sender_never_blocks_training_and_merges_a_backlog(tmp_path):
    client = FakeClient()
    client.gate.clear()  # the server is slow: nothing completes until released
    sender = Sender(client, "sqlite:///unused.db", "vpsearch sync")
    s = stream(tmp_path)
    t0 = time.perf_counter()
    for epoch in range(300):
        sender.submit(s, epoch_op(epoch))
    assert time.perf_counter() - t0 < 0.5  # journaling only, no network on the training thread
    client.gate.set()
    assert sender.wait(s, timeout=10)
    per_epoch = len(names.EPOCH_METRICS)
    assert len(client.metrics) == 300 * per_epoch
    assert [m.step for m in client.metrics] == sorted(m.step for m in client.metrics)  # in order
    assert len(client.calls) <= 8  # merged into batches of <= 1000, not 300 calls
    assert (s.acked, s.pending) == (300, 0)


def test_a_frozen_server_costs_the_first_wait_its_stall_and_later_waits_nothing(tmp_path):
    """A server that takes requests and never answers: the first wait gives up after `stall`
    seconds; a wait that starts with the queue already frozen that long gives up at once
    (a trial's end after a trial's start), until a delivery restarts the clock."""
    client = FakeClient()
    client.gate.clear()  # every request hangs
    sender = Sender(client, "http://127.0.0.1:9", "vpsearch sync")
    s = stream(tmp_path)
    sender.submit(s, epoch_op(0))
    t0 = time.monotonic()
    assert not sender.wait(s, timeout=10, stall=1.0)
    first = time.monotonic() - t0
    sender.submit(s, epoch_op(1))
    t0 = time.monotonic()
    assert not sender.wait(s, timeout=10, stall=1.0)
    later = time.monotonic() - t0
    assert first >= 1.0 and later < first / 2, (first, later)
    client.gate.set()  # the server answers again: everything is delivered
    assert sender.wait(s, timeout=10) and s.pending == 0
    sender.stop(1)


def test_sender_queues_through_an_outage_and_warns(tmp_path, caplog):
    client = FakeClient()
    client.down = True
    sender = Sender(client, "http://127.0.0.1:9", "vpsearch sync --root R",
                    probe_fn=lambda uri: None if not client.down else "connection refused")
    s = stream(tmp_path)
    with caplog.at_level(logging.WARNING, logger="vpsearch.tracking"):
        for epoch in range(5):
            sender.submit(s, epoch_op(epoch))
        assert not sender.wait(s, timeout=5)  # gives up at once while offline
        assert not sender.online
        assert s.pending == 5 and len((s.folder / "ops.jsonl").read_text().splitlines()) == 5
        client.down = False
        assert sender.wait(s, timeout=15, offline_grace=15)
    text = caplog.text
    assert "unreachable" in text and "vpsearch sync --root R" in text and "is back" in text
    assert len(client.metrics) == 5 * len(names.EPOCH_METRICS)
    sender.stop(1)


def test_a_refused_operation_is_recorded_and_skipped(tmp_path, caplog):
    client = FakeClient()
    client.refuse_key = "bad"
    sender = Sender(client, "sqlite:///unused.db", "vpsearch sync")
    s = stream(tmp_path)
    client.gate.clear()
    sender.submit(s, epoch_op(0))
    sender.submit(s, {"op": "log_batch", "metrics": [["bad", 1.0, 1, 0]]})
    sender.submit(s, epoch_op(1))
    client.gate.set()
    assert sender.wait(s, timeout=10)
    assert {m.step for m in client.metrics} == {0, 1} and all(m.key != "bad" for m in client.metrics)
    assert "bad" in (s.folder / "rejected.jsonl").read_text()


def test_journal_survives_a_crash(tmp_path):
    s = stream(tmp_path)
    for epoch in range(4):
        s.append(epoch_op(epoch))
    s.ack(2)
    with (s.folder / "ops.jsonl").open("a") as f:
        f.write('{"op": "log_ba')  # torn by a kill mid-write
    (loaded,) = list(pending_streams(tmp_path / "spool"))
    assert loaded.run_id == "run-1" and loaded.acked == 2 and len(loaded.ops) == 4 and loaded.pending == 2
    assert not loaded.complete


def test_tracking_off_is_the_no_op_tracker(tmp_path):
    tracker = make_tracker("off", tmp_path, "s")
    assert type(tracker) is StudyTracker  # the embedded default is covered by test_tracking_embedded
    assert tracker.ensure_parent({}, "tpe", "journal:x") is None and not any(tmp_path.iterdir())


def test_unreachable_server_is_a_clear_error_within_10_seconds(tmp_path):
    port = _closed_port()
    t0 = time.monotonic()
    with pytest.raises(TrackingUnavailable, match=rf"127\.0\.0\.1:{port} is unreachable .*--tracking-uri off"):
        make_tracker(f"http://127.0.0.1:{port}", tmp_path, "s")
    assert time.monotonic() - t0 < 10


def test_a_server_that_accepts_but_never_answers_fails_within_10_seconds(tmp_path):
    with socket.socket() as hole:  # listens, never accepts or answers: a hung server
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        port = hole.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(TrackingUnavailable, match="no answer"):
            make_tracker(f"http://127.0.0.1:{port}", tmp_path, "s")
        assert time.monotonic() - t0 < 10


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

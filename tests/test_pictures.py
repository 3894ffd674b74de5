"""Pictures drawn off the training thread, and what a worker no longer pays per trial
(issue 14, item 3): the drawing thread, the deferred end of a trial's MLflow run, the
dataset fingerprint's memo."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image

from mlflow_server import tiny_config
from vpsearch import provenance
from vpsearch.tracking import StudyTracker, make_tracker
from vpsearch.training import Reporters, fit
from vpsearch.training.outputs import DRAWER, Drawer, RunPictures
from vpsearch.training.visualize import write_strip


def video(value: int) -> list[np.ndarray]:
    return [np.full((4, 16, 16, 3), value, np.uint8)]


def blocked(drawer: Drawer) -> threading.Event:
    """Hold the drawing thread until the returned event is set."""
    gate = threading.Event()
    drawer.submit(lambda: gate.wait(30))
    return gate


def test_a_best_is_drawn_once_it_stands_and_a_queued_one_is_replaced(tmp_path):
    drawer = Drawer()
    pics = RunPictures(tmp_path / "run", drawer)
    samples = tmp_path / "run" / "samples"
    pics.best(video(0), video(0))
    assert pics.wait(30) and not samples.exists()  # held: a later evaluation may beat it
    pics.confirm()  # one did not
    assert pics.wait(30) and sorted(p.name for p in samples.iterdir()) == ["best.gif", "best_strip.png"]
    pics.best(video(100), video(100))
    assert pics.wait(30) and list(samples.iterdir()) == []  # never another epoch's pictures as the best's

    gate = blocked(drawer)
    pics.confirm()
    pics.best(video(255), video(255))  # before the drawing of 100 started: it is dropped
    pics.confirm()
    seen = []
    pics.then(lambda: seen.append(sorted(p.name for p in samples.iterdir())))
    assert not pics.done() and not seen
    gate.set()
    assert pics.wait(30) and drawer.drain(30)
    assert seen == [["best.gif", "best_strip.png"]]  # on disk, no temporary file, before then() ran
    strip = lambda path, v: np.asarray(Image.open(write_strip(path, video(v), video(v))))  # noqa: E731
    drawn = np.asarray(Image.open(samples / "best_strip.png"))
    assert np.array_equal(drawn, strip(tmp_path / "255.png", 255))  # the newer best's pictures
    assert not np.array_equal(drawn, strip(tmp_path / "100.png", 100))


def test_a_failed_drawing_warns_and_later_ones_still_run(tmp_path, capsys):
    drawer = Drawer()
    pics = RunPictures(tmp_path / "run", drawer)
    pics.best([np.zeros((4, 16, 16, 3), np.uint8)], [])  # no prediction rows: the GIF writer fails
    pics.plots([{"epoch": 0, "loss": 1.0, "mse": 1.0, "kl": 0.1, "val_psnr": 20.0}], None)
    assert pics.wait(60)
    assert "vpsearch: warning: drawing failed" in capsys.readouterr().err
    shown = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert shown == [".vpsearch-outputs", "curves.png", "samples", "schedules.png"]  # and the manifest lists them
    assert list((tmp_path / "run" / "samples").iterdir()) == []  # the failed one left no temporary file


def test_fit_waits_for_its_pictures_unless_told_not_to(tiny_cfg, tmp_path):
    done = fit(tiny_cfg(), tmp_path / "a")
    assert done.pictures.done()
    for name in ("curves.png", "schedules.png", "frame_psnr.png", "samples/best.gif", "samples/best_strip.png"):
        assert (tmp_path / "a" / name).is_file(), name
    gate = blocked(DRAWER)
    try:
        quick = fit(tiny_cfg(), tmp_path / "b", wait_pictures=False)
        assert not quick.pictures.done() and not (tmp_path / "b" / "curves.png").exists()
    finally:
        gate.set()
    assert quick.pictures.wait(60) and (tmp_path / "b" / "curves.png").is_file()


def test_a_worker_closing_its_tracker_waits_for_the_pictures(tmp_path):
    gate = blocked(DRAWER)
    RunPictures(tmp_path / "run").plots([{"epoch": 0, "loss": 1.0}], None)
    closer = threading.Thread(target=StudyTracker().close)  # tracking off: the no-op tracker
    closer.start()
    closer.join(0.5)
    assert closer.is_alive()
    gate.set()
    closer.join(30)
    assert not closer.is_alive() and (tmp_path / "run" / "curves.png").is_file()


@pytest.mark.slow
def test_a_trial_run_ends_with_its_pictures_after_the_worker_moved_on(pushing_root, tmp_path):
    tracker = make_tracker(None, tmp_path / "runs", "drawn")
    tracker.ensure_parent({"name": "drawn"}, "random", "journal:x")
    t = tracker.trial(0, tiny_config(pushing_root), {})
    client = MlflowClient(tracking_uri=tracker.uri)
    gate = blocked(DRAWER)
    try:
        fit(tiny_config(pushing_root), tmp_path / "trial", reporter=Reporters(t), wait_pictures=False)
        t.close("COMPLETE")  # returns at once: the pictures are not drawn yet
        assert client.get_run(t.run_id).info.status == "RUNNING"
    finally:
        gate.set()
    tracker.close()  # waits for the drawing, then for the uploads
    run = client.get_run(t.run_id)
    assert run.info.status == "FINISHED"
    names = {a.path for folder in ("plots", "samples") for a in client.list_artifacts(t.run_id, folder)}
    assert {"plots/curves.png", "plots/frame_psnr.png", "samples/best.gif"} <= names


def test_the_dataset_fingerprint_is_remembered_until_a_folder_changes(pushing_root, tmp_path, monkeypatch):
    data = tmp_path / "data"
    shutil.copytree(pushing_root, data, ignore=shutil.ignore_patterns(".vpsearch-cache"))
    first = provenance.dataset_fingerprint(data)
    assert (data / provenance.MEMO).is_file()

    def no_walk(*a, **k):
        raise AssertionError("walked the dataset although no folder changed")
    monkeypatch.setattr(provenance.os, "walk", no_walk)
    assert provenance.dataset_fingerprint(data) == first
    monkeypatch.undo()
    seq = next(Path(d) for d in sorted((data / "train").rglob("0.png"))).parent
    (seq / "30.png").write_bytes(b"x")
    changed = provenance.dataset_fingerprint(data)
    assert changed["files"] == first["files"] + 1 and changed["sha256"] != first["sha256"]
    (seq / "30.png").unlink()
    assert provenance.dataset_fingerprint(data) == first  # the same listing, the same fingerprint

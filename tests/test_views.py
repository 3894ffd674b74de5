"""What a user sees first, without a browser: numbers as written, run names, the MLflow view
settings, labelled GIF and strip frames with faithful colours, the curves' panels, the study
tables and the end of `study run`, and library log lines kept off the terminal."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from PIL import Image

from vpsearch.fmt import duration, number
from vpsearch.tracking import names

REPO = Path(__file__).resolve().parent.parent


# -- numbers and names ------------------------------------------------------------------------------
@pytest.mark.parametrize("value,text", [(1.08e-3, "1.08e-3"), (1.77e-3, "1.77e-3"), (0.002, "2e-3"), (3, "3"),
                                        (0.1234, "0.123"), (22.41, "22.4"), (0.0, "0"), (2.5e5, "2.5e5"),
                                        ("monotonic", "monotonic"), (None, ""), (float("nan"), "")])
def test_numbers_are_written_to_tell_values_apart(value, text):
    assert number(value) == text


def test_durations():
    assert [duration(s) for s in (12, 185, 3725)] == ["12s", "3m05s", "1h02m"]


def test_trial_runs_are_named_by_what_tells_them_apart():
    params = {"schedule.kl_anneal_type": "monotonic", "optim.lr": 1.08e-3, "schedule.tfr_decay_step": 0.0,
              "schedule.kl_anneal_cycle": 2, "model.some_new_knob": 0.5}
    assert names.trial_run_name(2, params) == "t2 monotonic lr=1.1e-3 tfd=0 cycles=2 snk=0.5"
    assert names.trial_run_name(7) == "t7"


def test_the_study_view_shows_objective_baseline_params_state_best_first():
    env = json.loads(names.study_view("val_psnr", ["optim.lr", "schedule.kl_anneal_type"]))
    assert isinstance(env["name"], str) and isinstance(env["createdAt"], int)  # MLflow's saved-view envelope
    state = json.loads(env["state"])
    assert state["selectedColumns"] == ["metrics.`val/psnr_best`", "metrics.`val/gain_db`",
                                        "metrics.`val/baseline_psnr`", "params.`optim.lr`",
                                        "params.`schedule.kl_anneal_type`", "tags.`state`"]
    assert state["orderByKey"] == "metrics.`val/psnr_best`" and state["orderByAsc"] is False
    assert state["columnOrder"][0] == names.RUN_NAME_COLUMN and set(state["columnWidths"]) == set(state["columnOrder"])
    assert json.loads(json.loads(names.study_view("val_ssim", []))["state"])["orderByKey"] == "metrics.`val/ssim_best`"
    assert names.runs_url("http://h:5000/", "3") == \
        "http://h:5000/#/experiments/3/runs?workflowType=machine_learning&viewStateShareKey=vpsearch"


def test_trial_note_documents_the_frame_axis():
    note = names.trial_note()
    first = note.splitlines()[0]  # what the UI shows before "Show more"
    assert f"`{names.FRAME_PSNR}`" in first and "**predicted frame index**" in first and "log10_lr" in first
    assert "`train/log10_lr`" in note and "`schedule/kl_weight`" in note


def test_lr_is_logged_in_a_scale_the_charts_show():
    rows = dict((r[0], r[1]) for r in names.epoch_metrics(0, {"lr": 1e-3, "log10_lr": -3.0}, 0))
    assert rows == {"train/lr": 1e-3, "train/log10_lr": -3.0}


# -- pictures ---------------------------------------------------------------------------------------
def _video(t: int, colour=(40, 90, 160), seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    v = (rng.random((t, 64, 64, 3)) * 80 + 80).astype(np.uint8)  # a busy background of many colours
    v[...] = np.clip(v.astype(int) + np.array(colour) - 120, 0, 255)
    return v


def test_gif_shows_context_then_truth_and_prediction_labelled_with_faithful_colours(tmp_path):
    from vpsearch.training.visualize import write_gif

    ctx, truth, pred = _video(2, seed=1), _video(4, seed=2), _video(4, seed=3)
    for v in (ctx, truth, pred):
        v[:, 40:46, 40:46] = (255, 255, 0)  # a small pure-yellow object among the background's shades
    write_gif(tmp_path / "a.gif", [truth, truth], [pred, pred], [ctx, ctx])
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == 6  # 2 context + 4 predicted frames
    frames = []
    for i in range(gif.n_frames):
        gif.seek(i)
        frames.append(np.asarray(gif.convert("RGB")).astype(int))
    h = 36  # caption + column headers above the pictures
    for i, f in enumerate(frames):
        assert (f[:h].min(-1) < 100).sum() > 50, f"frame {i}: no label text"  # dark text on white
        left = f[h:h + 128, :128]
        right = f[h:h + 128, 128 + 4:]
        ref_l = (ctx if i < 2 else truth)[i if i < 2 else i - 2].repeat(2, 0).repeat(2, 1)
        ref_r = (ctx if i < 2 else pred)[i if i < 2 else i - 2].repeat(2, 0).repeat(2, 1)
        for got, ref in ((left, ref_l), (right, ref_r)):
            assert np.abs(got - ref).max(-1).mean() < 10  # 256 colours for uniform noise: the hardest case
            yellow = (ref == (255, 255, 0)).all(-1)
            assert yellow.sum() == 144 and np.abs(got[yellow] - (255, 255, 0)).max() <= 8  # yellow stays yellow


def test_strip_shows_context_columns_and_frame_numbers(tmp_path):
    from vpsearch.training.visualize import GAP, STRIP_MAX_STEPS, write_strip

    ctx, truth, pred = _video(2), _video(30, seed=1), _video(30, seed=2)
    write_strip(tmp_path / "s.png", [truth], [pred], [ctx])
    img = np.asarray(Image.open(tmp_path / "s.png").convert("RGB")).astype(int)
    cols = 2 + STRIP_MAX_STEPS  # context + subsampled predictions
    assert img.shape[1] == 96 + cols * (128 + GAP) + 2 * GAP  # row labels, cells, the wider gap after the context
    assert (img[:36].min(-1) < 100).sum() > 100  # "context", "predicted frames" and the frame numbers
    # the prediction row leaves the context columns blank: the model is given them, it does not predict them
    pred_row = img[36 + 128 + GAP:36 + 2 * 128 + GAP]
    assert (pred_row[:, 96 + GAP:96 + GAP + 128] == 235).all()


def test_curves_show_the_baseline_integer_epochs_and_loss_apart_from_mse():
    from vpsearch.training.plots import curves_figure

    history = [{"epoch": e, "loss": 1.0 / (e + 1), "mse": 0.99 / (e + 1), "kl": 2.0, "val_psnr": 20.0 + e,
                "baseline_psnr": 19.5} for e in range(3)]
    fig = curves_figure(history)
    loss, mse, kl, val = fig.axes
    assert [ln.get_label() for ln in val.get_lines()] == ["model", "copy last context frame"]
    assert list(val.get_lines()[1].get_ydata()) == [19.5] * 3
    assert loss.get_lines()[0].get_label() != mse.get_lines()[0].get_label()  # separate panels, separate names
    fig.canvas.draw()
    for a in fig.axes:
        ticks = [t for t in a.get_xticks() if a.get_xlim()[0] <= t <= a.get_xlim()[1]]
        assert ticks == [0, 1, 2]  # whole epochs only


# -- tables and the terminal --------------------------------------------------------------------------
def test_tables_write_integers_as_integers_and_tell_lrs_apart():
    from vpsearch.reporting.tables import _fmt, trials_table

    assert [_fmt(v) for v in (1.08e-3, 1.77e-3, 22.414, 0.853, 3, pd.NA)] == ["1.08e-3", "1.77e-3", "22.41", "0.853",
                                                                              "3", ""]
    frame = pd.DataFrame({"number": [0, 1], "state": ["COMPLETE"] * 2, "val_psnr": [20.0, 21.0], "value": [20.0, 21.0],
                          "param:schedule.kl_anneal_cycle": [2, None], "param:optim.lr": [1.08e-3, 1.77e-3]})
    table = trials_table(frame, ["schedule.kl_anneal_cycle", "optim.lr"])
    assert [_fmt(v) for v in table["schedule.kl_anneal_cycle"]] == ["2", ""]
    assert [_fmt(v) for v in table["optim.lr"]] == ["1.08e-3", "1.77e-3"]


def _trial(number: int, value: float | None, state=optuna.trial.TrialState.COMPLETE, lr: float = 1e-3,
           seconds: float = 65.0) -> optuna.trial.FrozenTrial:
    from vpsearch.search.records import TrialRecord, TrialResults

    start = dt.datetime(2026, 1, 1, 12, 0, 0)
    rec = TrialRecord(seed=0, repeat=0, results=TrialResults(val_psnr_best=value, baseline_psnr=20.0))
    t = optuna.trial.create_trial(
        state=state, value=value, params={"schedule.kl_anneal_type": "monotonic", "optim.lr": lr},
        distributions={"schedule.kl_anneal_type": CategoricalDistribution(["none", "monotonic"]),
                       "optim.lr": FloatDistribution(1e-4, 1e-2, log=True)}, user_attrs=rec.attrs())
    t.number, t.datetime_start, t.datetime_complete = number, start, start + dt.timedelta(seconds=seconds)
    return t


@pytest.fixture(scope="module")
def plan():
    from vpsearch.search.plan import load_study

    return load_study(REPO / "studies" / "quickstart.yaml")


def test_study_status_marks_the_best_trial_and_shows_durations(plan):
    from vpsearch.search.status import status_table

    trials = [_trial(0, 21.0, lr=1.08e-3), _trial(1, 22.5, lr=1.77e-3, seconds=12),
              _trial(2, None, optuna.trial.TrialState.PRUNED)]
    lines = status_table(plan, trials).splitlines()
    assert lines[0].split()[:4] == ["#", "state", "val_psnr", "time"]
    assert lines[3].startswith("1 *  COMPLETE  22.500    12s") and "lr=1.77e-3" in lines[3]
    assert lines[2].startswith("0    COMPLETE  21.000    1m05s") and "lr=1.08e-3" in lines[2]
    assert lines[-1] == "* best: trial 1, val_psnr 22.500"


def test_study_run_ends_with_best_baseline_gain_and_next_commands(plan):
    from vpsearch.search.status import summary

    out = summary(plan, [_trial(0, 21.0), _trial(1, 22.5)], 200.0, " --root /tmp/r").splitlines()
    assert out[1].startswith("best val_psnr 22.500: trial 1 (seed 0) kl_anneal_type=monotonic lr=1e-3")
    assert out[2] == "copy-last baseline 20.00 dB on the same sequences: the best trial's 22.50 dB gains +2.50 dB"
    assert out[3] == "next:"
    assert [ln.split("#")[0].strip() for ln in out[4:]] == [
        "vpsearch report quickstart --root /tmp/r", "vpsearch ui quickstart --root /tmp/r",
        "vpsearch export-best quickstart --root /tmp/r", "vpsearch study status quickstart --root /tmp/r"]


def test_parent_run_progress_is_the_best_so_far_and_the_counts(plan):
    from vpsearch.search.status import parent_progress

    step, metrics, tags = parent_progress(plan, [_trial(0, 21.0), _trial(1, 22.5, lr=2e-3),
                                                 _trial(2, None, optuna.trial.TrialState.FAIL)])
    assert step == 3
    assert metrics == {"trials/complete": 2, "trials/pruned": 0, "trials/failed": 1, "val/psnr_best": 22.5,
                       "val/baseline_psnr": 20.0, "val/gain_db": 2.5}
    assert tags[names.TAG_BEST_TRIAL] == "t1 monotonic lr=2e-3"
    # the description answers first: which trial, by how much over copying; then the counts
    assert tags[names.MLFLOW_NOTE].startswith(
        "Best so far: **t1 monotonic lr=2e-3**, val_psnr 22.50; val PSNR 22.50 dB, +2.50 dB over copying "
        "(20.00 dB on the same sequences). 3/")
    assert "(2 complete, 0 pruned, 1 failed), 0 running." in tags[names.MLFLOW_NOTE]


def test_mlflow_and_alembic_log_lines_go_to_the_log_file(tmp_path):
    code = ("from vpsearch.tracking import make_tracker; "
            f"t = make_tracker(None, {str(tmp_path)!r}, 'quiet'); t.close()")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "" and "INFO" not in proc.stderr, proc.stderr[-2000:]
    log = (tmp_path / "studies" / "quiet" / "logs" / "mlflow.log").read_text()
    assert "mlflow.store.db.utils" in log  # "Creating initial MLflow database tables..." went here


def test_parallel_coordinates_use_short_labels():
    from types import SimpleNamespace

    from vpsearch.reporting.figures import parallel

    frame = pd.DataFrame({"number": [0, 1, 2], "state": ["COMPLETE"] * 3, "val_psnr": [20.0, 21.0, 22.0],
                          "param:schedule.kl_anneal_type": ["none", "monotonic", "none"],
                          "param:optim.lr": [1e-4, 1e-3, 5e-3], "param:model.z_dim": [8, 16, 32]})
    data = SimpleNamespace(completed=frame, param_names=["schedule.kl_anneal_type", "optim.lr", "model.z_dim"])
    fig = parallel(data)
    dims = fig.data[0].dimensions
    assert [d.label for d in dims] == ["kl_anneal_type", "lr", "z_dim", "best val PSNR (dB)"]
    assert list(dims[0].ticktext) == ["monotonic", "none"]
    assert list(dims[1].ticktext) == ["1e-4", "1e-3", "0.01"]  # log-searched: decades
    assert fig.layout.margin.l >= 60 and fig.layout.margin.r >= 60 and fig.layout.margin.t >= 80


def test_vpsearch_ui_finds_the_study_page(tmp_path):
    from mlflow import MlflowClient

    from vpsearch.errors import UserError
    from vpsearch.tracking import create_sqlite_store, library_logs_to, ui

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    library_logs_to(tmp_path / "mlflow.log")
    create_sqlite_store(uri)
    client = MlflowClient(tracking_uri=uri)
    old = client.create_experiment("old", tags={names.TAG_STUDY: "old"})
    client.create_experiment("not-a-study")
    created = client.get_experiment(old).creation_time
    while time.time() * 1000 <= created + 1:  # "newest" is by creation time (ms): let the clock pass it
        time.sleep(0.001)
    new = client.create_experiment("new", tags={names.TAG_STUDY: "new", names.MLFLOW_SHARED_VIEW + names.VIEW_KEY:
                                                names.study_view("val_psnr", ["optim.lr"])})
    url, others = ui.study_page(uri, "http://127.0.0.1:5000", None)  # the newest study, with its view
    assert url == names.runs_url("http://127.0.0.1:5000", new) and others == ["old"]
    url, others = ui.study_page(uri, "http://127.0.0.1:5000", "old")  # an older one has no view: plain runs table
    assert url == names.runs_url("http://127.0.0.1:5000", old, view=False) and others == ["new"]
    with pytest.raises(UserError, match=r"no study 'nope' in the MLflow store .* \(studies there: new, old\)"):
        ui.study_page(uri, "http://127.0.0.1:5000", "nope")

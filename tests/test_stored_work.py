"""Stored work is never overwritten or left half-written (issue 12, item 1).

An earlier run is not clobbered by a second `train --out`, a full disk keeps the previous
checkpoint and leaves no temp file, unwritable or impossible output folders are one
line naming the path and the fix, and read-only commands create nothing.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import torch

from conftest import TINY_SVG, one_line, vp
from vpsearch.errors import UserError
from vpsearch.training import checkpoint


def sets(*items: str) -> list[str]:
    return [x for o in items for x in ("--set", o)]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def tmpfs(path: Path, options: str, why: str):
    """A tmpfs mounted at path for the test (root only), unmounted after; skips the test otherwise."""
    path.mkdir(exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                           capture_output=True).returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({why}; needs root)")
    try:
        yield path
    finally:  # lazily: a failed test may still hold a file open in its traceback
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture()
def readonly_dir(tmp_path):
    """A folder nobody can write to: chmod 555 for a user, a read-only tmpfs for root."""
    path = tmp_path / "ro"
    if os.geteuid() != 0:
        path.mkdir()
        path.chmod(0o555)
        yield path
        path.chmod(0o755)
        return
    with tmpfs(path, "ro,size=1m", "a read-only folder for root"):
        yield path


@pytest.fixture()
def small_disk(tmp_path):
    """A 64 kB file system, for a real 'no space left on device'."""
    with tmpfs(tmp_path / "small", "size=64k", "a small disk") as path:
        yield path


# -- train --out EXISTING_RUN ---------------------------------------------------------------------
@pytest.mark.slow
def test_train_into_an_existing_run_refuses_unless_resume_or_overwrite(tmp_path, pushing_root):
    out = tmp_path / "run"
    tiny = sets(*TINY_SVG, f"data.root={pushing_root}")
    first = vp("train", "-c", "pushing-small", *tiny, "--out", out, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    kept = {p: digest(out / p) for p in ("checkpoints/best.pt", "checkpoints/last.pt", "metrics.csv")}

    again = vp("train", "-c", "pushing-small", *tiny, "--set", "optim.lr=0.001", "--out", out, cwd=tmp_path)
    one_line(again, str(out), "already holds a run", "--resume", "--out", "--overwrite")
    assert {p: digest(out / p) for p in kept} == kept  # nothing of the earlier run was touched

    resumed = vp("train", "-c", "pushing-small", *tiny, "--out", out, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    over = vp("train", "-c", "pushing-small", *tiny, "--set", "train.seed=7", "--out", out, "--overwrite",
              cwd=tmp_path)
    assert over.returncode == 0, over.stderr[-2000:]
    assert digest(out / "checkpoints/last.pt") != kept["checkpoints/last.pt"]
    assert "seed: 7" in (out / "config.yaml").read_text()
    # every top-level entry the run wrote is in its manifest, and nothing else is
    from vpsearch.training.run_dir import MANIFEST, run_outputs
    assert sorted(run_outputs(out)) == sorted(p.name for p in out.iterdir() if p.name != MANIFEST)


def test_overwrite_removes_what_the_manifest_lists_and_keeps_the_rest(tmp_path):
    from vpsearch.training.run_dir import MANIFEST, prepare_run_dir, run_outputs, wrote

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"x")
    for name in ("config.yaml", "metrics.csv", "attention.png", "notes.txt"):
        (run / name).write_text(name)
    wrote(run, "config.yaml", "metrics.csv", "checkpoints")
    wrote(run, "attention.png")  # an output added after this module was written
    wrote(run, "config.yaml")  # listed once
    assert run_outputs(run) == ["config.yaml", "metrics.csv", "checkpoints", "attention.png"]
    prepare_run_dir(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]  # the user's own file stays
    assert not (run / MANIFEST).exists()


def test_a_run_from_before_the_manifest_is_overwritten_by_the_old_layout(tmp_path):
    from vpsearch.training.run_dir import LEGACY_OUTPUTS, prepare_run_dir

    run = tmp_path / "old"
    run.mkdir()
    for name in ("config.yaml", "curves.png", "mine.csv"):
        (run / name).write_text(name)
    assert "curves.png" in LEGACY_OUTPUTS
    prepare_run_dir(run, overwrite=True)
    assert sorted(p.name for p in run.iterdir()) == ["mine.csv"]


def test_resume_and_overwrite_together_are_refused(tmp_path):
    one_line(vp("train", "-c", "pushing-small", "--out", tmp_path, "--resume", "--overwrite", cwd=tmp_path),
             "--resume and --overwrite")


# -- disk full while saving a checkpoint --------------------------------------------------------------
def _save(path: Path, tiny_cfg, value: float) -> None:
    from vpsearch.models import DataShape, build_model

    cfg = tiny_cfg()
    shape = DataShape(channels=3, height=64, width=64, cond_dim=7, cond_channels=0,
                      cond_parts=(("action", 4), ("position", 3)))
    model = build_model(cfg.model, shape)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
    opt = torch.optim.Adam(model.parameters())
    gen = torch.Generator()
    checkpoint.save_checkpoint(path, cfg=cfg, shape=shape, model=model, optimizer=opt, epoch=0, best=1.0,
                               best_epoch=0, history=[], rng=checkpoint.rng_state(gen, gen), lr=0.1)


class _FullDisk:
    """A file whose writes fail with ENOSPC after `room` bytes, like a full file system."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def write(self, data) -> int:
        if self.room < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        self.room -= len(data)
        return self.real.write(data)

    def __getattr__(self, name):
        return getattr(self.real, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()


def test_disk_full_while_saving_a_checkpoint_keeps_the_previous_one(tmp_path, tiny_cfg, monkeypatch):
    path = tmp_path / "run" / "checkpoints" / "best.pt"
    _save(path, tiny_cfg, 0.5)
    before = digest(path)
    real_open = open
    monkeypatch.setattr(checkpoint, "open", lambda p, mode="r", *a, **k: _FullDisk(real_open(p, mode, *a, **k),
                                                                                    4096), raising=False)
    with pytest.raises(UserError) as err:
        _save(path, tiny_cfg, 0.25)
    msg = str(err.value)
    assert msg.startswith("no space left on device ") and f"while writing checkpoint {path}" in msg
    assert "\n" not in msg
    assert digest(path) == before  # the previous checkpoint is intact and loadable
    assert checkpoint.load_checkpoint(path)["model"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["best.pt"]  # no .best.pt.tmp-PID left


def test_disk_full_on_a_real_small_file_system(small_disk, tiny_cfg):
    path = small_disk / "best.pt"
    with pytest.raises(UserError, match=rf"^no space left on device {small_disk} while writing checkpoint {path};"):
        _save(path, tiny_cfg, 0.5)  # the tiny model does not fit in 64 kB
    assert list(small_disk.iterdir()) == []


# -- output folders that cannot be written ---------------------------------------------------------
def test_train_out_that_is_a_file_or_under_a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("x")
    one_line(vp("train", "-c", "pushing-small", "--out", f, cwd=tmp_path), f"{f} already exists and is not a folder",
             "--out")
    one_line(vp("train", "-c", "pushing-small", "--out", f / "run", cwd=tmp_path), f"{f} is a file, not a folder",
             "--out")


def test_train_out_in_a_read_only_folder(readonly_dir, tmp_path):
    one_line(vp("train", "-c", "pushing-small", "--out", readonly_dir / "run", cwd=tmp_path),
             f"{readonly_dir / 'run'} is not writable", "pass --out")


def test_study_run_with_a_read_only_root(readonly_dir, tmp_path, pushing_root):
    from test_study_run import write_study
    study = write_study(tmp_path / "s.yaml", pushing_root)
    for storage in ([], ["--storage", f"journal:{tmp_path / 'j.log'}"]):
        err = one_line(vp("study", "run", study, "--root", readonly_dir / "runs", "--tracking-uri", "off",
                          *storage, cwd=tmp_path), "is not writable", "--root")
        assert str(readonly_dir) in err


@pytest.mark.parametrize("cmd", ["report", "export-best", "dashboard"])
def test_report_folders_that_cannot_be_written(cmd, readonly_dir, tmp_path, finished_study):
    root, name = finished_study
    extra = ["--tracking-uri", "off"] if cmd == "report" else []
    one_line(vp(cmd, name, "--root", root, "--out", readonly_dir / "out", *extra, cwd=tmp_path),
             f"{readonly_dir / 'out'} is not writable", "--out")
    f = tmp_path / "file"
    f.write_text("x")
    one_line(vp(cmd, name, "--root", root, "--out", f, *extra, cwd=tmp_path), f"{f} already exists", "--out")


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory, pushing_root):
    """A study with one COMPLETE trial, written straight into a journal (no training)."""
    import optuna

    from test_study_run import write_study
    from vpsearch.search.launcher import prepare_study
    from vpsearch.search.plan import load_study
    from vpsearch.search.storage import open_storage

    root = tmp_path_factory.mktemp("finished")
    plan = load_study(write_study(root / "s.yaml", pushing_root, name="done"))
    store = open_storage(f"journal:{root / 'optuna-journal.log'}")
    study = prepare_study(plan, store, "off", str(root))
    trial = study.ask()
    trial.suggest_float("optim.lr", 1e-3, 3e-3, log=True)
    trial.set_user_attr("seed", 1)
    study.tell(trial, 20.0, state=optuna.trial.TrialState.COMPLETE)
    return root, "done"


def test_a_read_only_dataset_names_data_cache_dir(tmp_path, pushing_root):
    with tmpfs(tmp_path / "data", "size=30m", "a read-only copy of the dataset") as ro:
        subprocess.run(["cp", "-r", str(pushing_root), str(ro / "push")], check=True)
        subprocess.run(["rm", "-rf", str(ro / "push" / ".vpsearch-cache")], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(ro)], check=True)
        tiny = sets(*TINY_SVG, f"data.root={ro / 'push'}", "train.epochs=1")
        one_line(vp("train", "-c", "pushing-small", *tiny, "--out", tmp_path / "run", cwd=tmp_path),
                 f"{ro / 'push' / '.vpsearch-cache'}", "data.cache_dir")
        ok = vp("train", "-c", "pushing-small", *tiny, "--set", f"data.cache_dir={tmp_path / 'cache'}",
                "--out", tmp_path / "run", cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr[-2000:]


# -- read-only commands create nothing -------------------------------------------------------------
@pytest.mark.parametrize("args", [["study", "status", "x"], ["study", "status", "x", "--json"],
                                  ["report", "x"], ["export-best", "x"], ["dashboard", "x"],
                                  ["worker", "--study", "x"]])
def test_read_only_commands_on_a_missing_root_create_nothing(args, tmp_path):
    root = tmp_path / "nothing"
    proc = vp(*args, "--root", root, cwd=tmp_path)
    one_line(proc, "no such journal file")
    assert not root.exists() and not (tmp_path / "runs").exists()

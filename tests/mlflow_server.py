"""A real `mlflow server` for tests, and a tiny study tracked into it.

    pytest_plugins = ["mlflow_server"]   # in a test module: fixtures below, shared per session

MlflowServer runs `mlflow server` (sqlite backend in a temp folder, or the backend_uri
given, e.g. a PostgreSQL database; --serve-artifacts, 127.0.0.1, a free port) the way
vpsearch's at-scale setup does, waits for /health, and can be stopped and restarted on
the same port and store (the outage tests).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from vpsearch.config import Config, load_config
from vpsearch.training import Reporter, Reporters, fit
from vpsearch.tracking.ui import ServerProcess, free_port, server_command

# the tiny model of the brief: a 2-epoch trial takes a second or two on 2 CPU cores
TINY = ["model.nf=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16", "train.epochs=2",
        "train.steps_per_epoch=2", "train.batch_size=4", "eval.max_sequences=4", "eval.gif_sequences=2",
        "train.progress=false", "train.amp=none", "train.channels_last=false", "train.num_threads=1",
        "eval.every=1"]


class MlflowServer:
    def __init__(self, folder: Path, port: int | None = None, backend_uri: str | None = None):
        self.folder = folder
        self.port = port or free_port()
        self.backend_uri = backend_uri or f"sqlite:///{folder / 'mlflow.db'}"
        self.log_path = folder / "server.log"
        self.process: ServerProcess | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "MlflowServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        cmd = server_command(self.backend_uri, self.folder / "artifacts", port=self.port)
        log = self.log_path.open("a")
        self.process = ServerProcess(cmd, self.uri, log=log).start(timeout=90)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self):
        from mlflow import MlflowClient
        return MlflowClient(tracking_uri=self.uri)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory) -> Iterator[MlflowServer]:
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server")).start()
    try:
        yield server
    finally:
        server.stop()


def tiny_config(data_root: Path, *extra: str) -> Config:
    return load_config("pushing-small", [*TINY, f"data.root={data_root}", *extra])


class StopAt(Reporter):
    """The search layer's pruner in miniature: asks fit() to stop after an epoch."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def report(self, epoch: int, metrics: dict[str, float]) -> bool:
        return epoch >= self.epoch


class Explode(Reporter):
    def report(self, epoch: int, metrics: dict[str, float]) -> bool:
        raise RuntimeError(f"loss exploded at epoch {epoch}")


@dataclass
class Trial:
    number: int
    name: str  # its MLflow run name
    state: str
    reason: str | None
    handle: Any  # the TrialTracker: its run id appears once the run exists in MLflow
    run_dir: Path
    config: Config
    best_psnr: float = -math.inf

    @property
    def run_id(self) -> str | None:
        return self.handle.run_id


@dataclass
class TinyStudy:
    name: str
    experiment_id: str
    parent_run_id: str
    trials: list[Trial] = field(default_factory=list)

    def by_state(self, state: str) -> list[Trial]:
        return [t for t in self.trials if t.state == state]


def run_trial(tracker: Any, number: int, cfg: Config, run_dir: Path, extra: Reporter | None = None,
              tags: dict[str, str] | None = None, params: dict[str, Any] | None = None) -> Trial:
    """What the study driver does per trial: trial tracker as a Reporter, close in a finally."""
    from vpsearch.tracking.names import trial_run_name

    t = tracker.trial(number, cfg, {"sampler": "random", "device": "cpu", **(tags or {})}, params)
    state, reason, best = "FAIL", None, -math.inf
    try:
        result = fit(cfg, run_dir, reporter=Reporters(t, extra))
        best = result.best_psnr
        state, reason = ("PRUNED", f"pruned after epoch {result.epochs_done - 1}") if result.stopped_early \
            else ("COMPLETE", None)
    except Exception as e:  # noqa: BLE001 - a failed trial is a result, as in the study driver
        reason = f"{type(e).__name__}: {e}"
    finally:
        t.close(state, reason)
    return Trial(number, trial_run_name(number, params), state, reason, t, run_dir, cfg, best)


@pytest.fixture(scope="session")
def tiny_study(mlflow_server, pushing_root, tmp_path_factory) -> TinyStudy:
    """Four trials tracked into the session server: two complete (different lr and seed),
    one pruned after its first epoch, one failed; top-1 checkpoint retention; runs named by
    their lr (`t1 lr=5e-4`), the runs table's view set, the parent run told the study's progress."""
    from vpsearch.tracking import make_tracker

    root = tmp_path_factory.mktemp("tiny-study-root")
    tracker = make_tracker(mlflow_server.uri, root, "tiny-study", keep_checkpoints=1)
    study_cfg = {"name": "tiny-study", "sampler": "random", "n_trials": 4,
                 "space": {"optim.lr": {"low": 1e-4, "high": 1e-2, "log": True}}}
    parent = tracker.ensure_parent(study_cfg, "random", "postgresql://vp:s3cret@db:5432/optuna")
    study = TinyStudy("tiny-study", tracker.experiment(), parent)
    plan = [(tiny_config(pushing_root, "optim.lr=0.002", "train.seed=1"), None),
            (tiny_config(pushing_root, "optim.lr=0.0005", "train.seed=2"), None),
            (tiny_config(pushing_root, "optim.lr=0.002", "train.seed=3"), StopAt(0)),
            (tiny_config(pushing_root, "optim.lr=0.002", "train.seed=4"), Explode())]
    tracker.set_view("val_psnr", ["optim.lr"])
    for number, (cfg, extra) in enumerate(plan):
        study.trials.append(run_trial(tracker, number, cfg, root / "trials" / f"trial-{number}", extra,
                                      params={"optim.lr": cfg.optim.lr}))
        done = [t for t in study.trials if t.state == "COMPLETE"]
        best = max(done, key=lambda t: t.best_psnr) if done else None
        tracker.study_progress(len(study.trials), {
            "trials/complete": len(done), "trials/pruned": len(study.by_state("PRUNED")),
            "trials/failed": len(study.by_state("FAIL")), **({"val/psnr_best": best.best_psnr} if best else {})},
            {"best_trial": best.name} if best else {})
    tracker.close()
    return study

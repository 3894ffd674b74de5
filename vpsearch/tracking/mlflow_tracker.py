"""The MLflow side of the tracking interface: a study's experiment, parent run and trial runs.

Layout in MLflow (names in names.py):
  experiment  <study name>                  one per study
      tags      the runs table's saved view (names.study_view: objective, baseline, params, state)
  parent run  <study name>                  study.yaml, sampler, storage URL (redacted), reports;
                                            the best value so far, the best trial, trials by state
  child runs  t<n> <searched params>  (mlflow.parentRunId = parent), e.g. `t2 monotonic lr=1.1e-3`
      params    the flattened resolved config (train.lr, schedule.kl_anneal_type, ...)
      metrics   train/loss ... time/epoch_seconds (step = epoch); val/psnr_best ... (step = best
                epoch); val/psnr_frame (step = predicted frame index, 1 = first after the context)
      artifacts config.yaml metrics.csv frame_psnr.csv frame_psnr/epoch_<e>.csv plots/ samples/
                checkpoints/best.pt (top-k trials only, retention.py)

Only experiment and parent-run set-up talk to MLflow synchronously (at study start, where
failing fast is wanted). Everything a trial logs is journaled and handed to the
background sender, so a Reporter hook costs a file append, not an HTTP round trip.
"""

from __future__ import annotations

import csv
import getpass
import math
import os
import re
import socket
import uuid
from pathlib import Path
from typing import Any

import yaml

from vpsearch.config import Config, flatten
from vpsearch.errors import UserError
from vpsearch.provenance import git_commit
from vpsearch.settings import EMBEDDED, artifact_root, embedded_uri, redact
from vpsearch.tracking import names
from vpsearch.tracking.base import StudyTracker, TrialState, TrialTracker
from vpsearch.tracking.journal import Stream, spool_root
from vpsearch.tracking.probe import is_remote
from vpsearch.tracking.sender import STALL, Sender
from vpsearch.training.history import EPOCH_METRICS
from vpsearch.training.outputs import DRAWER

OBJECTIVES = [m for m in EPOCH_METRICS if m.objective]  # each gets a best-epoch summary (names.best_metric)

# run-dir file -> artifact folder ("" = the run's artifact root)
RUN_ARTIFACTS = [
    ("config.yaml", ""), ("metrics.csv", ""), ("frame_psnr.csv", ""),
    ("curves.png", "plots"), ("schedules.png", "plots"), ("frame_psnr.png", "plots"),
    ("samples/best.gif", "samples"), ("samples/best_strip.png", "samples"),
]
BEST_CHECKPOINT = "checkpoints/best.pt"
CREATE_WAIT = 10.0  # seconds trial() waits for its run id while the server answers
# seconds without a delivery after which trial() goes on without its run id: creating a run takes
# milliseconds on a healthy server; on a hanging one the run is created later (await_run_id, sync)
CREATE_STALL = 2.0
# seconds a trial's end waits for a run whose creation was queued while the server was away, so
# the trial's record names its run after a short outage (a longer one: the run keeps its stream tag
# and `sync` delivers it); 30 s had made every trial of an outage 30 s longer
OUTAGE_WAIT = 5.0
# seconds close() waits for a trial's uploads while they progress; STALL s without a delivery (a
# frozen server) end the wait: the rest stays in the spool, sent in the background or by `vpsearch sync`
CLOSE_WAIT = 120.0


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "study"


class MLflowStudyTracker(StudyTracker):
    def __init__(self, uri: str, root: Path, study_name: str, keep_checkpoints: int | None = 3,
                 close_wait: float = CLOSE_WAIT):
        from mlflow import MlflowClient

        self.uri = uri
        self.root = Path(root)
        self.study_name = study_name
        self.keep_checkpoints = keep_checkpoints
        self.close_wait = close_wait
        self.client = MlflowClient(tracking_uri=uri)
        self.spool = spool_root(self.root)
        self.sender = Sender(self.client, uri, f"vpsearch sync --root {self.root}")
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.sampler: str | None = None
        self._created_parent = False
        self._parent_stream: Stream | None = None
        self._joined = False  # this tracker ran a trial: it counts among the study's workers
        self.worker_key = names.TAG_WORKER + _safe_name(f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        git = git_commit()  # one implementation for reports and runs: the package's checkout
        self.commit = "unknown" if str(git["commit"]).startswith("unknown") else git["commit"]
        self.dirty = git["dirty"]
        self.host = socket.gethostname()

    # -- study level ---------------------------------------------------------------------
    def experiment(self) -> str:
        """The study's experiment id, created on first use (safe against a racing worker)."""
        if self.experiment_id is None:
            exp = self.client.get_experiment_by_name(self.study_name)
            if exp is None:
                location = None
                if not is_remote(self.uri):
                    # a local/DB store would otherwise put artifacts in ./mlruns of the cwd
                    location = (artifact_root(self.root) / _safe_name(self.study_name)).as_uri()
                try:
                    self.experiment_id = self.client.create_experiment(
                        self.study_name, artifact_location=location,
                        # the UI then opens on training runs, not on its GenAI overview
                        tags={names.TAG_STUDY: self.study_name,
                              names.MLFLOW_EXPERIMENT_KIND: "custom_model_development"})
                except Exception:  # noqa: BLE001 - another worker created it first
                    exp = self.client.get_experiment_by_name(self.study_name)
                    if exp is None:
                        raise
                    self.experiment_id = exp.experiment_id
            else:
                self.experiment_id = exp.experiment_id
        return self.experiment_id

    def _base_tags(self) -> dict[str, str]:
        tags = {names.TAG_STUDY: self.study_name, names.TAG_HOST: self.host, names.TAG_GIT_COMMIT: self.commit,
                names.MLFLOW_SOURCE: "vpsearch", "mlflow.user": getpass.getuser()}
        if self.commit != "unknown":
            tags[names.MLFLOW_GIT_COMMIT] = self.commit
            tags["git_dirty"] = str(self.dirty).lower()
        return tags

    def ensure_parent(self, study_config: dict[str, Any], sampler: str, storage_url: str,
                      parent_run_id: str | None = None) -> str | None:
        self.sampler = sampler
        exp = self.experiment()
        if parent_run_id is None:
            tags = {**self._base_tags(), names.TAG_ROLE: "study", names.TAG_SAMPLER: sampler,
                    names.TAG_STORAGE: redact(storage_url)}
            run = self.client.create_run(exp, tags=names.clean_tags(tags), run_name=self.study_name)
            parent_run_id, self._created_parent = run.info.run_id, True
        else:
            run = self.client.get_run(parent_run_id)  # raises a clear MLflow error if it is not there
            if run.info.experiment_id != exp:
                raise UserError(f"MLflow run {parent_run_id} belongs to experiment {run.info.experiment_id}, "
                                 f"not to study {self.study_name!r} ({exp}) on {redact(self.uri)}")
        self.parent_run_id = parent_run_id
        if self._created_parent:
            stream = self.parent_stream()
            params = names.params_from_flat({f"study.{k}": v for k, v in flatten(study_config).items()})
            self.sender.submit(stream, {"op": "log_batch", "params": params})
            folder = stream.folder / "files"
            folder.mkdir()
            (folder / "study.yaml").write_text(yaml.safe_dump(study_config, sort_keys=False))
            self.sender.submit(stream, {"op": "artifact", "path": str(folder / "study.yaml")})
        return parent_run_id

    def parent_stream(self) -> Stream:
        """The journal of what this process sends to the parent run (made on first use, so a
        worker that never logs to the parent leaves nothing in the spool)."""
        if self.parent_run_id is None:
            raise RuntimeError("the study's parent run is not known: call ensure_parent first")
        if self._parent_stream is None:
            self._parent_stream = self._stream("study", self.study_name, self.parent_run_id)
        return self._parent_stream

    def _stream(self, label: str, run_name: str, run_id: str | None = None) -> Stream:
        stream = Stream.create(self.spool, _safe_name(label), {
            # the root's own store as 'embedded': `vpsearch sync` of a moved runs folder uses its copy
            "tracking_uri": EMBEDDED if self.uri == embedded_uri(self.root) else self.uri,
            "study": self.study_name, "run_name": run_name,
            "experiment_id": self.experiment()})
        if run_id:
            stream.set_run_id(run_id)
        return stream

    def set_view(self, objective: str, params: list[str]) -> None:
        """The experiment's saved runs-table view (names.study_view); set at study creation."""
        self.client.set_experiment_tag(self.experiment(), names.MLFLOW_SHARED_VIEW + names.VIEW_KEY,
                                       names.study_view(objective, params))

    def study_progress(self, step: int, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """The study so far on its parent run (journaled, sent in the background)."""
        if self.parent_run_id is None:
            return
        now = names.now_ms()
        self.sender.submit(self.parent_stream(), {
            "op": "log_batch", "metrics": [[k, float(v), now, int(step)] for k, v in metrics.items()],
            "tags": names.clean_tags(tags)})

    def trial(self, number: int, config: Config, tags: dict[str, str],
              params: dict[str, Any] | None = None, unused: frozenset[str] = frozenset()) -> TrialTracker:
        if not self._joined and self.parent_run_id is not None:
            # the parent run stays RUNNING while any process trains trials of the study
            self.sender.submit(self.parent_stream(), {"op": "reopen", "key": self.worker_key})
            self._joined = True
        return MLflowTrialTracker(self, number, config, tags, params, unused)

    def lost_trial(self, number: int, run_id: str | None, worker: str | None, reason: str) -> None:
        """See StudyTracker.lost_trial; journaled like every trial operation."""
        if run_id:
            stream = self._stream(f"trial-{number}-lost", names.trial_run_name(number), run_id)  # names the spool
            # end_lost leaves a run alone that its own process ended after all (a Ctrl-C'd worker)
            self.sender.submit(stream, {"op": "end_lost", "end_time": names.now_ms(), "tags": names.clean_tags(
                {names.TAG_STATE: "FAIL", names.TAG_REASON: reason})})
            self.sender.submit(stream, {"op": "end"})
        if worker and self.parent_run_id is not None:
            host, _, pid = worker.rpartition(":")
            self.sender.submit(self.parent_stream(), {"op": "worker_lost", "end_time": names.now_ms(),
                                                      "prefix": names.TAG_WORKER + _safe_name(f"{host}-{pid}-")})

    def log_study_artifacts(self, paths: list[Path], artifact_path: str = "report") -> None:
        """Upload report files to the parent run (journaled; waits for delivery while online)."""
        stream = self.parent_stream()
        for p in paths:
            self.sender.submit(stream, {"op": "artifact", "path": str(Path(p).resolve()),
                                        "artifact_path": artifact_path})
        self.sender.wait(stream, self.close_wait, stall=6 * STALL)

    def close(self, end_parent: bool | None = None, timeout: float | None = None) -> None:
        """Wait for pictures still being drawn (their trial runs end from the drawing thread),
        flush and stop the sender.

        The parent run ends FINISHED when the last process that trained trials closes (the
        launcher that only created it leaves it RUNNING for its workers); end_parent=True
        ends it now, end_parent=False never.
        """
        DRAWER.drain(self.close_wait if timeout is None else timeout)
        if self.parent_run_id is not None:
            if end_parent:
                self.sender.submit(self.parent_stream(), {"op": "terminate", "status": "FINISHED",
                                                          "end_time": names.now_ms()})
            elif self._joined and end_parent is None:
                self.sender.submit(self.parent_stream(), {"op": "worker_done", "key": self.worker_key,
                                                          "end_time": names.now_ms()})
            elif self._parent_stream is not None:
                self.sender.submit(self._parent_stream, {"op": "end"})
            self._parent_stream, self.parent_run_id, self._joined = None, None, False
        self.sender.stop(self.close_wait if timeout is None else timeout)


class MLflowTrialTracker(TrialTracker):
    """One trial's run. Hooks run on the training thread and only journal + enqueue."""

    def __init__(self, study: MLflowStudyTracker, number: int, config: Config, tags: dict[str, str],
                 params: dict[str, Any] | None = None, unused: frozenset[str] = frozenset()):
        self.study = study
        self.number = number
        self.config = config
        self.run_dir: Path | None = None
        self.result: Any = None
        self.closed = False
        self.best: dict[str, tuple[float, int]] = {}  # objective metric key -> (best value, its epoch)
        self.baselines: dict[int, float] = {}  # epoch -> the copy baseline's PSNR on its sequences
        name = names.trial_run_name(number, params)
        self.stream = study._stream(f"trial-{number}", name)
        run_tags = {**study._base_tags(), names.TAG_ROLE: "trial", names.TAG_TRIAL: number,
                    names.TAG_STATE: "RUNNING", names.TAG_SEED: config.train.seed,
                    names.TAG_CONFIG_HASH: config.hash(), names.TAG_DEVICE: config.train.device,
                    names.MLFLOW_NOTE: names.trial_note()}
        if study.sampler:
            run_tags[names.TAG_SAMPLER] = study.sampler
        if study.parent_run_id:
            run_tags[names.MLFLOW_PARENT] = study.parent_run_id
        run_tags.update(tags)  # the search layer knows best (device actually used, sampler, ...)
        self.send({"op": "create_run", "experiment_id": study.experiment(), "run_name": name,
                   "tags": names.clean_tags(run_tags), "start_time": names.now_ms()})
        # a conditional parameter the trial does not use is absent, not the base default it never read
        self.send({"op": "log_batch", "params": names.params_from_flat(
            {k: v for k, v in config.flat().items() if k not in unused})})
        # the search layer may want the run id at once (trial user attrs), and the run its params
        # before training starts: a few ms while online
        study.sender.wait(self.stream, CREATE_WAIT, stall=CREATE_STALL)

    @property
    def run_id(self) -> str | None:  # type: ignore[override]
        return self.stream.run_id

    def await_run_id(self) -> str | None:
        """trial() does not wait while the server is away: the run may be created later."""
        if self.stream.run_id is None:
            self.study.sender.wait(self.stream, OUTAGE_WAIT, offline_grace=OUTAGE_WAIT, stall=CREATE_STALL,
                                   until=lambda: self.stream.run_id is not None)
        return self.stream.run_id

    def send(self, op: dict[str, Any]) -> None:
        self.study.sender.submit(self.stream, op)

    def _artifact(self, path: Path, artifact_path: str = "") -> None:
        if path.is_file():
            self.send({"op": "artifact", "path": str(path.resolve()), "artifact_path": artifact_path or None})

    # -- Reporter hooks ------------------------------------------------------------------
    def started(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self._artifact(self.run_dir / "config.yaml")

    def resumed(self, start_epoch: int, history: list[dict[str, float]]) -> None:
        """A run continued from its last checkpoint (a re-run of a lost trial): this run gets the
        curves of the epochs before too."""
        for row in history:
            self.report(int(row["epoch"]), {k: v for k, v in row.items() if k != "epoch"})

    def report(self, epoch: int, metrics: dict[str, float]) -> bool:
        self.send({"op": "log_batch", "metrics": names.epoch_metrics(epoch, metrics, names.now_ms())})
        base = metrics.get("baseline_psnr")
        if isinstance(base, (int, float)) and math.isfinite(base):
            self.baselines[int(epoch)] = float(base)
        for m in OBJECTIVES:
            v = metrics.get(m.key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                old = self.best.get(m.key)
                if old is None or (v > old[0] if m.direction == "maximize" else v < old[0]):
                    self.best[m.key] = (float(v), int(epoch))
        return False

    def evaluated(self, epoch: int, frame_metrics: dict[str, list[float]]) -> None:
        if self.run_dir is None:
            return
        path = self.run_dir / "frame_psnr" / f"epoch_{epoch}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        psnr, ssim = frame_metrics.get("psnr", []), frame_metrics.get("ssim", [])
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["frame", "psnr", "ssim"])
            for i, p in enumerate(psnr):
                w.writerow([i + 1, f"{p:.4f}", f"{ssim[i]:.4f}" if i < len(ssim) else ""])
        self._artifact(path, "frame_psnr")

    def finished(self, result: Any) -> None:
        self.result = result

    # -- end of the trial ----------------------------------------------------------------
    def close(self, state: TrialState, reason: str | None = None, wait: float | None = None) -> None:
        """End the run (COMPLETE -> FINISHED, PRUNED -> KILLED, FAIL -> FAILED) after its
        artifacts; waits up to `wait` s (default CLOSE_WAIT) for delivery while the server answers
        and deliveries progress (STALL s without one end the wait). While the run's pictures are
        still being drawn (fit(wait_pictures=False)), returns at once: the drawing thread sends
        all of it once they are on disk, and the sender delivers it during the next trial."""
        if self.closed:
            return
        self.closed = True
        pictures = getattr(self.result, "pictures", None)
        if pictures is not None and not pictures.done():
            pictures.then(lambda: self._end(state, reason, 0.0))
            return
        self._end(state, reason, wait)

    def _end(self, state: TrialState, reason: str | None, wait: float | None) -> None:
        now = names.now_ms()
        batch: dict[str, Any] = {"op": "log_batch", "metrics": [],
                                 "tags": names.clean_tags({names.TAG_STATE: state, names.TAG_REASON: reason})}
        if self.run_dir is not None:
            frames = self.run_dir / "frame_psnr.csv"
            if frames.is_file():  # the best evaluation, one value per predicted frame
                rows = list(csv.DictReader(frames.open()))
                batch["metrics"] += names.frame_metrics(names.FRAME_PSNR, [r["psnr"] for r in rows], now)
                batch["metrics"] += names.frame_metrics(names.FRAME_SSIM, [r["ssim"] for r in rows], now)
                if rows and "baseline_psnr" in rows[0]:  # a run folder of an older vpsearch lacks it
                    batch["metrics"] += names.frame_metrics(names.FRAME_COPY, [r["baseline_psnr"] for r in rows], now)
        # each objective metric's best epoch (val/psnr_best: the value top-k retention ranks by)
        batch["metrics"] += [[names.best_metric(k), v, now, e] for k, (v, e) in self.best.items()]
        if "val_psnr" in self.best and self.best["val_psnr"][1] in self.baselines:
            v, e = self.best["val_psnr"]
            batch["metrics"].append([names.GAIN, v - self.baselines[e], now, e])
        self.send(batch)
        if self.run_dir is not None:
            for rel, folder in RUN_ARTIFACTS:
                self._artifact(self.run_dir / rel, folder)
            ckpt = self.run_dir / BEST_CHECKPOINT
            if state == "COMPLETE" and self.result is not None and ckpt.is_file():
                self.send({"op": "checkpoint", "path": str(ckpt.resolve()), "score": float(self.result.score),
                           "keep": self.study.keep_checkpoints, "experiment_id": self.study.experiment(),
                           "parent_run_id": self.study.parent_run_id})
        self.send({"op": "terminate", "status": names.RUN_STATUS.get(state, "FAILED"), "end_time": names.now_ms()})
        self.study.sender.wait(self.stream, self.study.close_wait if wait is None else wait, stall=STALL)

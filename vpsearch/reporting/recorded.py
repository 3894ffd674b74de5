"""A study's learning curves, recorded once, to replay searches on (vpsearch replay).

A recording holds what a replay needs and nothing heavy: the study YAML and resolved base
config (so every trial's config can be rebuilt from its params and seed), and per trial
its params, seed, configuration, the objective at every evaluated epoch, the seconds an
epoch took and the copy-last baseline. Made from a study whose trials ran to the end
(``pruner: none``, evaluation every epoch), or read from a file written by ``save``
(``studies/recorded/*.json``, shipped as reference data).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from vpsearch.config import Config
from vpsearch.reporting.study import ReportError
from vpsearch.search import stopping
from vpsearch.search.plan import StudyPlan
from vpsearch.search.pruners import rank_correlation
from vpsearch.search.records import StudyRecord, TrialRecord
from vpsearch.search.space import trial_config

FORMAT = "vpsearch-recorded-study-1"
DECISIVE = 3.0  # seed stds between the best and the median configuration for a recording to count


@dataclass
class RecordedTrial:
    number: int
    params: dict[str, Any]
    seed: int
    repeat: int
    config_id: int
    curve: list[float]  # objective at epochs 0..E-1
    epoch_seconds: float = 1.0  # mean wall seconds of an epoch (training + evaluation)
    baseline: float | None = None  # copy-last PSNR on the same validation sequences


@dataclass
class RecordedStudy:
    name: str
    study_config: dict[str, Any]
    base_config: dict[str, Any]
    trials: list[RecordedTrial]
    produced_by: dict[str, Any] = field(default_factory=dict)  # command, wall seconds, commit, date

    @property
    def plan(self) -> StudyPlan:
        return StudyPlan.from_record(StudyRecord(study_config=self.study_config, base_config=self.base_config),
                                     f"recording of {self.name}")

    @property
    def epochs(self) -> int:
        return len(self.trials[0].curve)

    @property
    def maximize(self) -> bool:
        return self.plan.spec.objective.direction == "maximize"

    def value(self, t: RecordedTrial) -> float:
        """A trial's objective as the study ranks it: its best evaluated epoch in the study's direction."""
        return max(t.curve) if self.maximize else min(t.curve)

    def config(self, t: RecordedTrial) -> Config:
        plan = self.plan
        return trial_config(plan.base, plan.space, t.params, t.seed, f"{self.name}-{t.number}")

    def configurations(self) -> dict[int, list[RecordedTrial]]:
        out: dict[int, list[RecordedTrial]] = {}
        for t in self.trials:
            out.setdefault(t.config_id, []).append(t)
        return out

    # -- files ----------------------------------------------------------------------------
    def save(self, path: Path) -> Path:
        data = {"format": FORMAT, "name": self.name, "study_config": self.study_config,
                "base_config": self.base_config, "produced_by": self.produced_by,
                "trials": [asdict(t) for t in self.trials]}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=None, separators=(",", ":")) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> "RecordedStudy":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ReportError(f"{path}: cannot read a recorded study ({e})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ReportError(f"{path}: not a vpsearch recorded study (expected format {FORMAT})")
        rec = cls(data["name"], data["study_config"], data["base_config"],
                  [RecordedTrial(**t) for t in data["trials"]], data.get("produced_by", {}))
        _ = rec.plan  # validates the stored study and base config
        return rec

    # -- from a study -------------------------------------------------------------------
    @classmethod
    def from_study(cls, study: optuna.Study) -> "RecordedStudy":
        """The study's completed trials with a value at every epoch; refuses a study that has none."""
        record = StudyRecord.of(study)
        if record.study_config is None or record.base_config is None:
            raise ReportError(f"study {study.study_name}: not a vpsearch study (no stored study config)")
        epochs = int(record.base_config["train"]["epochs"])
        trials, short = [], 0
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            rec = TrialRecord.of(t)
            steps = sorted(t.intermediate_values)
            if steps != list(range(epochs)) or rec.seed is None:
                short += 1  # evaluated on fewer epochs, or run outside the driver
                continue
            res = rec.results
            seconds = (res.train_seconds / len(steps)) if res and res.train_seconds else 1.0
            trials.append(RecordedTrial(t.number, dict(t.params), int(rec.seed), int(rec.repeat or 0),
                                        int(rec.config_id if rec.config_id is not None else t.number),
                                        [float(t.intermediate_values[s]) for s in steps], round(seconds, 3),
                                        res.baseline_psnr if res else None))
        if not trials:
            raise ReportError(f"study {study.study_name}: no completed trial has a value at each of its {epochs} "
                              "epochs; record a study with `pruner: none` and `eval.every: 1`"
                              + (f" ({short} trials were evaluated on fewer epochs)" if short else ""))
        rec = cls(study.study_name, record.study_config, record.base_config, trials)
        rec.produced_by = {**_provenance(study), **rec.summary()}
        return rec

    def summary(self) -> dict[str, Any]:
        """What makes a recording worth replaying (README, "What the search buys you"): the spread of
        the configuration means against the seed noise (the median over configurations of the std
        over their seeds), and how much the early ranking differs from the final one: the rank
        correlation of the configurations' mean curves at a few epochs with their final means, and
        the pairs of configurations whose mean curves are in the other order at some evaluated
        epoch than at the end ("curves that cross"). It counts (``decisive``) where the best mean
        is at least DECISIVE seed stds above the median one."""
        import numpy as np

        sign = 1 if self.maximize else -1
        configs = self.configurations()
        means = {c: statistics.fmean(self.value(t) for t in ts) for c, ts in configs.items()}
        noise = stopping.seed_noise([[self.value(t) for t in ts] for ts in configs.values()]) or 0.0
        ranked = sorted(means.values(), key=lambda v: -sign * v)
        median = statistics.median(ranked)
        # mean curve of each configuration, as best-so-far (what a pruner compares)
        curves = np.array([np.mean([np.maximum.accumulate(sign * np.array(t.curve)) for t in ts], axis=0)
                           for ts in configs.values()])
        final = np.array([sign * means[c] for c in configs])
        crossing, pairs = 0, 0
        for i in range(len(final)):
            for j in range(i + 1, len(final)):
                pairs += 1
                d = np.sign(curves[i] - curves[j])
                crossing += bool(np.any(d * np.sign(final[i] - final[j]) < 0))
        above = (ranked[0] - median) * sign / noise if noise else math.inf
        checkpoints = sorted({0, self.epochs // 6, self.epochs // 3, self.epochs // 2, (2 * self.epochs) // 3})
        return {"configurations": len(configs), "seeds": round(statistics.median(len(ts) for ts in configs.values())),
                "epochs": self.epochs, "config_mean_best": round(ranked[0], 3), "config_mean_median": round(median, 3),
                "config_mean_worst": round(ranked[-1], 3),
                "config_mean_std": round(statistics.pstdev(ranked), 3) if len(ranked) > 1 else 0.0,
                "seed_noise": round(noise, 3), "best_above_median_in_seed_std": round(above, 2),
                "decisive": bool(above >= DECISIVE),
                "rank_correlation_epoch_vs_final": {str(e): _rounded(rank_correlation(list(curves[:, e]), list(final)))
                                                    for e in checkpoints if e < self.epochs - 1},
                "crossing_pairs": f"{crossing} of {pairs}"}

    def baseline(self) -> float:
        vals = [t.baseline for t in self.trials if t.baseline is not None and math.isfinite(t.baseline)]
        return sum(vals) / len(vals) if vals else math.nan


def _rounded(rho: float | None) -> float:
    return math.nan if rho is None else round(rho, 2)


def _provenance(study: optuna.Study) -> dict[str, Any]:
    """How the recorded study ran: its wall time (first trial start to last end), workers, and
    the machine the recording is made on (normally the one that ran it)."""
    from vpsearch.machine import cpu

    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    spec = StudyRecord.of(study).study_config or {}
    out: dict[str, Any] = {"workers": f"{spec.get('workers', 1)} x {spec.get('threads_per_worker', 'auto')} thread(s)",
                           "machine": cpu().describe()}
    if done:
        start = min(t.datetime_start for t in done)
        end = max(t.datetime_complete for t in done)
        out["wall_seconds"] = round((end - start).total_seconds())
        out["date"] = end.date().isoformat()
    return out

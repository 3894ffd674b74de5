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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from vpsearch.config import Config
from vpsearch.reporting.study import ReportError
from vpsearch.search.plan import StudyPlan
from vpsearch.search.records import StudyRecord, TrialRecord
from vpsearch.search.space import trial_config

FORMAT = "vpsearch-recorded-study-1"


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
        return cls(study.study_name, record.study_config, record.base_config, trials)

    def baseline(self) -> float:
        vals = [t.baseline for t in self.trials if t.baseline is not None and math.isfinite(t.baseline)]
        return sum(vals) / len(vals) if vals else math.nan

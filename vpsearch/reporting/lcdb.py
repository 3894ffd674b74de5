"""Learning curves nobody here wrote, as recorded studies: LCDB (Mohr, Viering et al., 2022).

The `lcdb` package's sdist ships ``lcdb/database-accuracy.csv``: for 20 scikit-learn learners
on 248 OpenML datasets, the validation accuracy at training-set sizes ("anchors") growing
geometrically, for 5 outer splits (and several inner ones). Here a dataset becomes one
recorded study, replayable like a vpsearch one (recorded.py):

- configuration = learner, seed = outer split (inner split 0), epoch = anchor (in order of
  size), value = validation accuracy in percent (maximised), epoch seconds = the learner's
  mean fit time over the anchors;
- a learner missing an anchor on a kept split, or with a non-finite score, is left out and
  named in the recording's metadata (a replay needs every curve complete);
- the study around it is a plain vpsearch study: one categorical ``learner`` whose choices
  change nothing in the training config, on a base config whose schedules are constant, so
  every replay (pruners, schedule_aware judging every epoch but the last, racing, samplers,
  the stop rule) runs unchanged. An "epoch saved" is an anchor not evaluated, not a second.

    python benchmarks/lcdb_replay.py lcdb-0.1.0.tar.gz    # convert, replay, write docs/lcdb.md
"""

from __future__ import annotations

import tarfile
from pathlib import Path
from typing import Any

from vpsearch.reporting.recorded import RecordedStudy, RecordedTrial
from vpsearch.reporting.study import ReportError

COLUMNS = ["openmlid", "learner", "size_train", "outer_seed", "inner_seed", "traintime", "score_valid"]
MEMBER = "database-accuracy.csv"
# the base every converted study stands on: constant KL weight and teacher forcing, so the
# schedule-aware pruner may judge any epoch; the training config is never trained
BASE = "pushing-small"
CONSTANT_SCHEDULES = ["eval.every=1", "schedule.kl_anneal_type=none", "schedule.tfr=1.0",
                      "schedule.tfr_lower_bound=1.0"]


def read_database(path: Path):
    """The accuracy database as a DataFrame, from the CSV or from the lcdb sdist (.tar.gz) holding it."""
    import pandas as pd

    path = Path(path)
    try:
        if path.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(path) as tar:
                member = next((m for m in tar.getmembers() if m.name.endswith("/" + MEMBER)), None)
                if member is None:
                    raise ReportError(f"{path}: no {MEMBER} inside (expected the lcdb sdist)")
                frame = pd.read_csv(tar.extractfile(member), usecols=COLUMNS)
        else:
            frame = pd.read_csv(path, usecols=COLUMNS)
    except (OSError, tarfile.TarError) as e:
        raise ReportError(f"{path}: cannot read the lcdb database ({e})") from None
    except ValueError as e:  # a CSV without the columns
        raise ReportError(f"{path}: not an lcdb database: expected columns {', '.join(COLUMNS)} ({e})") from None
    return frame


def short_name(learner: str) -> str:
    """'sklearn.ensemble.RandomForestClassifier' -> 'RandomForestClassifier'."""
    return learner.rsplit(".", 1)[-1]


def from_lcdb(frame, openmlid: int, splits: int = 5, source: str = "lcdb") -> RecordedStudy:
    """One dataset's curves as a recorded study (module docstring); refuses one with fewer than
    two complete learners."""
    import numpy as np

    rows = frame[(frame.openmlid == openmlid) & (frame.inner_seed == 0) & (frame.outer_seed < splits)]
    if rows.empty:
        raise ReportError(f"{source}: no curves for OpenML dataset {openmlid} (inner split 0, outer splits "
                          f"0..{splits - 1})")
    anchors = sorted(int(a) for a in rows.size_train.unique())
    seeds = sorted(int(s) for s in rows.outer_seed.unique())
    kept: dict[str, Any] = {}
    dropped = []
    for learner, part in rows.groupby("learner", sort=True):
        table = part.pivot_table(index="outer_seed", columns="size_train", values="score_valid", aggfunc="mean")
        table = table.reindex(index=seeds, columns=anchors)
        if table.isna().to_numpy().any() or not np.isfinite(table.to_numpy()).all():
            dropped.append(short_name(str(learner)))
            continue
        kept[short_name(str(learner))] = (table, float(part.traintime.mean()))
    if len(kept) < 2:
        raise ReportError(f"{source}: dataset {openmlid} has {len(kept)} learner(s) with every anchor on every "
                          f"split; a replay needs at least 2")
    study = f"lcdb_{openmlid}"
    trials = []
    for cid, (learner, (table, seconds)) in enumerate(kept.items()):
        for repeat, seed in enumerate(seeds):
            curve = [round(100 * float(v), 4) for v in table.loc[seed].tolist()]
            trials.append(RecordedTrial(len(trials), {"learner": learner}, seed, repeat, cid, curve,
                                        round(max(seconds, 1e-4), 4)))
    study_config = {
        "name": study, "description": f"LCDB accuracy curves of OpenML dataset {openmlid}: learner x outer split",
        "base": BASE, "overrides": CONSTANT_SCHEDULES,
        "objective": {"metric": "val_psnr", "direction": "maximize"},
        "search_space": {"learner": {"type": "categorical", "choices": {name: {} for name in kept}}},
        "sampler": {"name": "grid"}, "pruner": {"name": "none"},
        "budget": {"epochs": len(anchors), "steps_per_epoch": 1}, "repeats": len(seeds), "seeds": seeds,
        "workers": 1, "devices": "cpu"}
    base = _base_config(len(anchors))
    rec = RecordedStudy(study, study_config, base, trials, {
        "source": f"lcdb {MEMBER} ({source})", "openmlid": openmlid,
        "objective": "validation accuracy in percent (stored as the study objective)",
        "epochs_are": "training-set sizes " + ", ".join(str(a) for a in anchors),
        "learners_left_out": dropped})
    rec.produced_by.update(rec.summary())
    return rec


def _base_config(epochs: int) -> dict[str, Any]:
    from vpsearch.config import load_config

    overrides = CONSTANT_SCHEDULES + [f"train.epochs={epochs}", "train.steps_per_epoch=1"]
    return load_config(BASE, overrides).to_dict()

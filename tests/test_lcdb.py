"""LCDB curves as recorded studies (reporting/lcdb.py), on a small database in lcdb's own CSV
layout, and the summary that says whether a recording is worth replaying."""

from __future__ import annotations

import io
import math
import tarfile

import pandas as pd
import pytest

from vpsearch.reporting import replay
from vpsearch.reporting.lcdb import from_lcdb, read_database
from vpsearch.reporting.recorded import RecordedStudy
from vpsearch.reporting.study import ReportError
from vpsearch.search.pruners import judged_epochs

ANCHORS = [16, 23, 32, 45, 64]
HEADER = "openmlid,learner,size_train,size_test,outer_seed,inner_seed,traintime,score_train,score_valid,score_test"


def accuracy(learner: str, anchor_index: int, outer: int) -> float:
    """A fast starter that plateaus low, a slow starter that ends best, and a flat one."""
    rise = {"sklearn.tree.DecisionTreeClassifier": 0.70 + 0.02 * min(anchor_index, 2),
            "sklearn.ensemble.RandomForestClassifier": 0.55 + 0.08 * anchor_index,
            "SVC_linear": 0.60}[learner]
    return round(rise + 0.003 * outer, 4)


def database(drop_one: bool = True) -> str:
    rows = [HEADER]
    for openmlid in (6, 7):
        for learner in ("sklearn.tree.DecisionTreeClassifier", "sklearn.ensemble.RandomForestClassifier",
                        "SVC_linear", "sklearn.neighbors.KNeighborsClassifier"):
            for outer in range(5):
                for inner in (0, 1):
                    for k, anchor in enumerate(ANCHORS):
                        if learner.endswith("KNeighborsClassifier"):
                            if drop_one and outer == 3 and k == 4:
                                continue  # a curve that stops early: the learner is left out
                            score = 0.5
                        else:
                            score = accuracy(learner, k, outer) - 0.1 * inner
                        rows.append(f"{openmlid},{learner},{anchor},100,{outer},{inner},{0.01 * (k + 1)},1.0,"
                                    f"{score},{score}")
    return "\n".join(rows) + "\n"


def test_a_dataset_becomes_a_recording_learner_by_split_with_incomplete_learners_left_out(tmp_path):
    (tmp_path / "database-accuracy.csv").write_text(database())
    rec = from_lcdb(read_database(tmp_path / "database-accuracy.csv"), 6)
    assert rec.name == "lcdb_6" and rec.epochs == len(ANCHORS)
    learners = sorted({t.params["learner"] for t in rec.trials})
    assert learners == ["DecisionTreeClassifier", "RandomForestClassifier", "SVC_linear"]
    assert rec.produced_by["learners_left_out"] == ["KNeighborsClassifier"]
    assert len(rec.trials) == 3 * 5 and sorted({t.seed for t in rec.trials}) == [0, 1, 2, 3, 4]
    forest = next(t for t in rec.trials if t.params["learner"] == "RandomForestClassifier" and t.seed == 2)
    # percent, inner split 0 only, in order of the anchors
    assert forest.curve == pytest.approx([100 * accuracy("sklearn.ensemble.RandomForestClassifier", k, 2)
                                          for k in range(5)])
    assert forest.epoch_seconds == pytest.approx(0.03)  # mean fit time over the anchors
    assert rec.produced_by["epochs_are"] == "training-set sizes 16, 23, 32, 45, 64"
    # constant schedules: the schedule-aware pruner may judge every epoch but the last
    assert judged_epochs(rec.config(forest)) == [0, 1, 2, 3]
    back = RecordedStudy.load(rec.save(tmp_path / "lcdb_6.json"))
    assert back.trials == rec.trials and back.produced_by == rec.produced_by


def test_the_sdist_is_read_as_it_ships(tmp_path):
    data = database().encode()
    with tarfile.open(tmp_path / "lcdb-0.1.0.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("lcdb-0.1.0/lcdb/database-accuracy.csv")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    frame = read_database(tmp_path / "lcdb-0.1.0.tar.gz")
    assert set(frame.openmlid) == {6, 7} and len(frame) == len(database().splitlines()) - 1


def test_bad_databases_and_datasets_are_named(tmp_path):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ReportError, match=r"other.csv: not an lcdb database: expected columns openmlid, learner"):
        read_database(tmp_path / "other.csv")
    with tarfile.open(tmp_path / "empty.tar.gz", "w:gz"):
        pass
    with pytest.raises(ReportError, match=r"empty.tar.gz: no database-accuracy.csv inside"):
        read_database(tmp_path / "empty.tar.gz")
    with pytest.raises(ReportError, match=r"missing.csv: cannot read the lcdb database"):
        read_database(tmp_path / "missing.csv")
    frame = pd.read_csv(io.StringIO(database()))
    with pytest.raises(ReportError, match="no curves for OpenML dataset 99"):
        from_lcdb(frame, 99)
    only_one = frame[frame.learner.isin(["SVC_linear", "sklearn.neighbors.KNeighborsClassifier"])]
    with pytest.raises(ReportError, match="dataset 6 has 1 learner.s. with every anchor on every split"):
        from_lcdb(only_one, 6)


def test_summary_states_spread_noise_and_crossing_curves(tmp_path):
    rec = from_lcdb(pd.read_csv(io.StringIO(database())), 6)
    s = rec.summary()
    # final means: forest 87 + 0.6, tree 74 + 0.6, svc 60 + 0.6; every seed is 0.3 points above the last
    assert s["config_mean_best"] == pytest.approx(87.6) and s["config_mean_median"] == pytest.approx(74.6)
    assert s["seed_noise"] == pytest.approx(0.3 * math.sqrt(2.5), abs=1e-3)  # std of 0, .3, .6, .9, 1.2
    assert s["best_above_median_in_seed_std"] == pytest.approx(13 / (0.3 * math.sqrt(2.5)), abs=0.01)
    assert s["decisive"] is True
    # the forest starts below both others (55 < 60 < 70) and ends above them: 2 of 3 pairs cross
    assert s["crossing_pairs"] == "2 of 3"
    assert s["rank_correlation_epoch_vs_final"]["0"] == pytest.approx(-0.5)
    assert rec.produced_by["crossing_pairs"] == "2 of 3"


def test_optuna_pruners_replay_beside_ours_on_the_same_orders():
    rec = from_lcdb(pd.read_csv(io.StringIO(database())), 6)
    names = ["none", "median", "successive_halving", "wilcoxon", "schedule_aware"]
    results = {r.pruner: r for r in replay.replay_pruners(rec, names, orders=3, workers=2)}
    assert set(results) == set(names) and results["none"].epochs_saved == 0
    # the slow starter ends best: the median pruner, judging from the first epoch, loses it in some order
    assert results["median"].best_pruned > 0
    for r in results.values():
        assert 0 <= r.epochs_saved < 1 and r.orders == 3

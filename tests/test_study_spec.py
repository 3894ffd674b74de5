"""Study YAML validation: every bad input is refused before anything runs, in one line naming file and field."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vpsearch.config import shipped_configs
from vpsearch.search.plan import StudyPlan, load_study
from vpsearch.search.records import StudyRecord
from vpsearch.search.spec import StudyError

STUDIES = Path(__file__).resolve().parents[1] / "studies"

GOOD = {
    "name": "t",
    "base": "pushing-small",
    "budget": {"n_trials": 4, "epochs": 6},
    "search_space": {
        "schedule.kl_anneal_type": {"type": "categorical", "choices": ["none", "monotonic", "cyclical"]},
        "schedule.kl_anneal_cycle": {"type": "int", "low": 1, "high": 4,
                                     "when": {"schedule.kl_anneal_type": "cyclical"}},
        "optim.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
    },
    "sampler": "tpe",
}


FLOAT_RANGE = {"type": "float", "low": 1e-4, "high": 1e-2}

CASES = {
    "unknown top key": ({"samplr": "tpe"}, "field samplr: unknown key"),
    "unknown param key": ({"search_space": {"optim.lr": {**FLOAT_RANGE, "logg": True}}},
                          "field search_space.optim.lr.logg: unknown key"),
    "wrong type": ({"repeats": "three"}, "field repeats: Input should be a valid integer"),
    "empty space": ({"search_space": {}}, "field search_space: empty"),
    "grid float range": ({"sampler": "grid", "budget": {},
                          "search_space": {"optim.lr": FLOAT_RANGE}},
                         "field search_space.optim.lr: grid needs discrete values"),
    "grid with condition": ({"sampler": "grid", "budget": {}, "search_space": {
        k: v for k, v in GOOD["search_space"].items() if k != "optim.lr"}},
                            "field search_space.schedule.kl_anneal_cycle.when: grid does not support conditional"),
    "impossible choice": ({"search_space": {**GOOD["search_space"], "schedule.kl_anneal_cycle": {
        "type": "int", "low": 1, "high": 4, "when": {"schedule.kl_anneal_type": "cyclic"}}}},
        "impossible condition: schedule.kl_anneal_type never takes 'cyclic'"),
    "impossible fixed": ({"overrides": ["schedule.kl_anneal_type=monotonic"], "search_space": {
        "schedule.kl_anneal_cycle": {"type": "int", "low": 1, "high": 4,
                                     "when": {"schedule.kl_anneal_type": "cyclical"}}}},
        "schedule.kl_anneal_type is fixed at 'monotonic' in the base config"),
    "condition on float": ({"search_space": {"optim.lr": FLOAT_RANGE, "loss.beta": {
        "type": "float", "low": 1e-5, "high": 1e-3, "when": {"optim.lr": 0.001}}}},
        "conditions may only test categorical parameters; optim.lr is a float range"),
    "condition cycle": ({"search_space": {
        "schedule.kl_anneal_type": {"type": "categorical", "choices": ["none", "cyclical"],
                                    "when": {"schedule.tfr_mode": "batch"}},
        "schedule.tfr_mode": {"type": "categorical", "choices": ["batch", "step"],
                              "when": {"schedule.kl_anneal_type": "none"}}}},
        "conditions form a cycle"),
    "not a field": ({"search_space": {"optim.lrr": FLOAT_RANGE}},
                    "optim.lrr is not a setting of the base config 'pushing-small' (did you mean"),
    "refused value": ({"search_space": {"schedule.tfr": {"type": "float", "low": 0.5, "high": 1.5}}},
                      "value 1.5 is refused by the training config"),
    "reserved seed": ({"search_space": {"train.seed": {"type": "int", "low": 1, "high": 9}}},
                      "train.seed is set by the study driver"),
    "low above high": ({"search_space": {"optim.lr": {"type": "float", "low": 1e-2, "high": 1e-4}}},
                       "field search_space.optim.lr: low (0.01) must be below high"),
    "n_trials missing": ({"budget": {"epochs": 3}}, "field budget.n_trials: required for sampler tpe"),
    "n_trials vs repeats": ({"repeats": 3}, "4 is not a multiple of repeats (3)"),
    "grid too small": ({"sampler": "grid", "budget": {"n_trials": 10}, "search_space": {
        "schedule.kl_anneal_type": {"type": "categorical", "choices": ["none", "cyclical"]}}},
        "budget.n_trials: 10 exceeds the grid (2 distinct points x 1 repeats = 2)"),
    "pruner option": ({"pruner": {"name": "median", "patience": 3}},
                      "field pruner: patience is not an option of pruner median"),
    "sampler name": ({"sampler": "bayes"}, "field sampler.name: Input should be 'tpe', 'gp'"),
    "multi-objective pruning": ({"objective": {"secondary": {"metric": "train_seconds"}},
                                 "pruner": "median"}, "Optuna cannot prune multi-objective studies"),
    "seeds length": ({"repeats": 2, "seeds": [1]}, "seeds: 1 given but repeats is 2"),
    "bad devices": ({"devices": "gpu0"}, "field devices: expected cpu, auto, cuda or cuda:0,cuda:1,..., got 'gpu0'"),
    "unknown base": ({"base": "no-such-config"}, "field base: config 'no-such-config'"),
    "bad override": ({"overrides": ["train.batch_size=0"]}, "field overrides:"),
    "one choice": ({"search_space": {"optim.name": {"type": "categorical", "choices": ["adam"]}}},
                   "needs at least 2 choices"),
    "empty preset": ({"search_space": {"tf": {"type": "categorical", "choices": {"a": {}, "b": {
        "schedule.tfr": 0.5}}}}}, "field search_space.tf.choices.a: empty preset"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_study_is_refused_with_file_and_field(tmp_path, case):
    changes, expected = CASES[case]
    data = {**GOOD, **changes}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(StudyError) as err:
        load_study(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    assert expected in msg, msg
    assert "\n" not in msg


def test_good_study_resolves_base_and_budget(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "repeats": 2, "seeds": [7, 9], "budget": {"n_trials": 4, "epochs": 5,
                                                                                       "steps_per_epoch": 3}}))
    plan = load_study(path)
    assert plan.base.train.epochs == 5 and plan.base.train.steps_per_epoch == 3
    assert plan.n_trials == 4 and [plan.seed_for(0), plan.seed_for(1)] == [7, 9]
    # the plan survives the trip through the study's user attrs (what `vpsearch worker` reads)
    back = StudyPlan.from_record(StudyRecord.from_attrs(yaml.safe_load(yaml.safe_dump(plan.record()))), "stored")
    assert back.spec == plan.spec and back.base == plan.base and back.differences(plan) == []


def test_grid_counts_points_times_repeats_and_presets_expand(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text((STUDIES / "annealing_vs_tfr.yaml").read_text())
    plan = load_study(path)
    assert plan.n_trials == 27
    from vpsearch.search.space import trial_config
    cfg = trial_config(plan.base, plan.space, {"schedule.kl_anneal_type": "none", "teacher_forcing": "late_decay"},
                       seed=5, name="x")
    assert cfg.schedule.kl_anneal_type == "none" and cfg.schedule.tfr_start_decay_epoch == 6
    assert cfg.schedule.tfr_lower_bound == 0.5 and cfg.train.seed == 5


def test_resume_refuses_a_changed_search_but_takes_a_bigger_budget(tmp_path):
    a = tmp_path / "a.yaml"
    a.write_text(yaml.safe_dump(GOOD))
    b = tmp_path / "b.yaml"
    b.write_text(yaml.safe_dump({**GOOD, "budget": {"n_trials": 8, "epochs": 6}, "workers": 3}))
    c = tmp_path / "c.yaml"
    c.write_text(yaml.safe_dump({**GOOD, "sampler": "random"}))
    assert load_study(a).differences(load_study(b)) == []
    assert load_study(a).differences(load_study(c)) == ["sampler"]


@pytest.mark.parametrize("name", sorted(p.stem for p in STUDIES.glob("*.yaml")))
def test_shipped_studies_validate(name):
    text = (STUDIES / f"{name}.yaml").read_text()
    base = yaml.safe_load(text)["base"]
    if base not in shipped_configs() and not (STUDIES / base).is_file():
        pytest.skip(f"base config {base!r} is not in vpsearch/configs yet")
    plan = load_study(STUDIES / f"{name}.yaml")
    assert plan.name == name and plan.n_trials >= 1


def test_cli_refuses_a_bad_study_before_creating_anything(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({**GOOD, "sampler": "grid", "budget": {},
                                    "search_space": {"optim.lr": FLOAT_RANGE}}))
    root = tmp_path / "runs"
    r = subprocess.run([sys.executable, "-m", "vpsearch.cli", "study", "run", str(path), "--root", str(root)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"vpsearch: error: {path}: field search_space.optim.lr: grid needs discrete values but this is a float "
        "range; use type categorical with the values to try"]
    assert not root.exists()

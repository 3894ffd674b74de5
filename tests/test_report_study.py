"""Synthetic studies with known values (shared by the report and dashboard tests), and
the study-loading layer: storage URLs, trial frames, strategy labels, edge cases."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from vpsearch.config import load_config
from vpsearch.reporting.study import ReportError, open_study_data
from vpsearch.search.spec import StudyError
from vpsearch.search.storage import open_storage
from vpsearch.search.records import TrialRecord, TrialResults

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Best val PSNR of each (KL type, teacher-forcing preset) on seeds 0, 1, 2: the known values
# every table in the tests is checked against.
VALUES = {
    ("none", "A"): [24.0, 24.5, 23.8],
    ("none", "B"): [23.0, 23.4, 22.9],
    ("monotonic", "A"): [22.0, 21.5, 22.3],
    ("monotonic", "B"): [21.0, 21.2, 20.7],
    ("cyclical", "A"): [25.0, 25.6, 24.9],
    ("cyclical", "B"): [24.1, 24.3, 24.2],
}
# teacher-forcing presets: (tfr, decay start epoch, decay step)
TF = {"A": (1.0, 1, 0.25), "B": (0.5, 0, 0.0)}
TF_LABEL = {"A": "tfr 1 -0.25/ep after ep 1", "B": "tfr 0.5 fixed"}
EPOCHS = 4
DISTS = {"schedule.kl_anneal_type": CategoricalDistribution(["none", "monotonic", "cyclical"]),
         "schedule.tfr": FloatDistribution(0.0, 1.0), "schedule.tfr_decay_step": FloatDistribution(0.0, 1.0)}


def trial_config(kl: str, tf: str, seed: int, root: str = "builtin:pushing") -> dict:
    tfr, start, step = TF[tf]
    cfg = load_config("pushing-small", [f"schedule.kl_anneal_type={kl}", f"schedule.tfr={tfr}",
                                        f"schedule.tfr_start_decay_epoch={start}", f"schedule.tfr_decay_step={step}",
                                        "schedule.tfr_lower_bound=0.0", f"train.epochs={EPOCHS}",
                                        f"train.seed={seed}", f"data.root={root}"])
    return cfg.to_dict()


def vp_record(kl: str, tf: str, seed: int, value: float | None, run_dir: str = "",
              config_id: int | None = None, **fields) -> TrialRecord:
    """The record the driver writes for a trial of (kl, tf) on `seed` (value None: no results)."""
    from vpsearch.config import config_from_dict
    cfg = trial_config(kl, tf, seed)
    results = None if value is None else TrialResults(
        epochs_done=EPOCHS, best_epoch=EPOCHS - 1, val_psnr_best=value, val_psnr_final=value - 0.3,
        val_ssim_best=round(0.5 + value / 100, 4), baseline_psnr=20.0,
        frame_psnr=[value + 2.5 - 0.5 * j for j in range(10)], baseline_frame_psnr=[21.0 - 0.2 * j for j in range(10)],
        train_seconds=10.0 + seed)
    return TrialRecord(seed=seed, repeat=seed, config=cfg, config_hash=config_from_dict(cfg).hash(),
                       config_id=config_id, run_dir=run_dir or None, worker="host:1", device="cpu", results=results,
                       **fields)


def vp_attrs(kl: str, tf: str, seed: int, value: float | None, run_dir: str = "", config_id: int | None = None,
             **fields) -> dict:
    return vp_record(kl, tf, seed, value, run_dir, config_id, **fields).attrs()


def curve(value: float) -> dict[int, float]:
    return {0: value - 3.0, 1: value - 1.5, 2: value - 0.5, 3: value}


def params(kl: str, tf: str) -> dict:
    return {"schedule.kl_anneal_type": kl, "schedule.tfr": TF[tf][0], "schedule.tfr_decay_step": TF[tf][2]}


def make_study(storage: str, name: str, values: dict = VALUES, others: bool = True,
               parent_run_id: str | None = None) -> optuna.Study:
    """A grid study as the driver writes it: every cell on seeds 0..n-1, plus (others) one
    failed, one pruned and one running trial."""
    study = optuna.create_study(study_name=name, storage=open_storage(storage).storage, direction="maximize")
    from vpsearch.search.records import write_study
    write_study(study, study_config={"name": name, "objective": {"metric": "val_psnr"}, "sampler": "grid"})
    if parent_run_id:
        write_study(study, mlflow_parent_run_id=parent_run_id, mlflow_tracking_uri="sqlite:///nowhere.db")
    for (kl, tf), vals in values.items():
        first = len(study.get_trials(deepcopy=False))  # the configuration's first trial
        for seed, v in enumerate(vals):
            study.add_trial(optuna.trial.create_trial(
                value=v, params=params(kl, tf), distributions=DISTS,
                user_attrs=vp_attrs(kl, tf, seed, v, config_id=first), intermediate_values=curve(v)))
    if others:
        add_unfinished(study)
    return study


def unfinished_attrs(kl: str, tf: str, reason: str = "", outcome: str | None = None,
                     config_id: int | None = None) -> dict:
    """What the driver has stored on a trial that never completed: no results."""
    return vp_attrs(kl, tf, 7, None, fail_reason=reason or None, outcome=outcome, config_id=config_id)


def add_unfinished(study: optuna.Study) -> None:
    """One failed, one pruned and one running trial, each a configuration of its own (as a TPE study has)."""
    for state, kl, tf, reason, outcome, curve_ in [
            (optuna.trial.TrialState.FAIL, "cyclical", "A", "non-finite loss at epoch 1", "diverged", {0: 12.0}),
            (optuna.trial.TrialState.PRUNED, "monotonic", "B", "pruned at epoch 1", None, {0: 15.0, 1: 16.0}),
            (optuna.trial.TrialState.RUNNING, "none", "A", "", None, {0: 18.0})]:
        number = len(study.get_trials(deepcopy=False))
        study.add_trial(optuna.trial.create_trial(
            state=state, params=params(kl, tf), distributions=DISTS, intermediate_values=curve_,
            user_attrs=unfinished_attrs(kl, tf, reason, outcome, config_id=number)))


@pytest.fixture()
def journal(tmp_path) -> str:
    return f"journal:{tmp_path / 'optuna-journal.log'}"


def test_trial_frame_holds_every_trial_with_its_strategy(journal):
    make_study(journal, "grid")
    data = open_study_data("grid", journal)
    assert len(data.frame) == 21 and data.counts() == {"COMPLETE": 18, "PRUNED": 1, "FAIL": 1, "RUNNING": 1,
                                                        "WAITING": 0}
    row = data.frame.set_index("number").loc[0]
    assert (row["kl"], row["tf"], row["seed"], row["val_psnr"]) == ("none", TF_LABEL["A"], 0, 24.0)
    assert row["val_psnr_final"] == pytest.approx(23.7) and row["epochs"] == EPOCHS
    # labels carry no cycle/ratio: the study never varies them
    assert set(data.completed["kl"]) == {"none", "monotonic", "cyclical"}
    assert set(data.completed["tf"]) == set(TF_LABEL.values())
    failed = data.frame[data.frame["state"] == "FAIL"].iloc[0]
    assert failed["reason"] == "non-finite loss at epoch 1" and failed["epochs"] == 1
    assert data.curves[0] == curve(24.0) and data.frame_psnr[0][0] == pytest.approx(26.5)
    assert data.param_names == sorted(DISTS)


def test_strategy_names_follow_effective_schedules():
    from vpsearch.reporting.strategies import name_strategies

    def cfg(*o):
        return load_config("pushing-small", ["train.epochs=12", "train.steps_per_epoch=6", *o])
    configs = {0: cfg("schedule.kl_anneal_type=cyclical", "schedule.kl_anneal_cycle=2"),
               1: cfg("schedule.kl_anneal_type=cyclical", "schedule.kl_anneal_cycle=3"),
               2: cfg("schedule.kl_anneal_type=cyclical", "schedule.kl_anneal_cycle=1"),  # the monotonic ramp
               3: cfg("schedule.kl_anneal_type=monotonic"),
               4: cfg("schedule.tfr_start_decay_epoch=5", "schedule.tfr_mode=step"),
               5: cfg("schedule.tfr_start_decay_epoch=20")}  # decays after the budget: fixed
    kl, tf = name_strategies(configs)
    assert [kl[n].label for n in range(4)] == ["cyclical M=2", "cyclical M=3", "monotonic", "monotonic"]
    assert kl[2] == kl[3] and kl[3].order < kl[0].order
    # coins per step or per batch matter only where the ratio is strictly between 0 and 1
    assert tf[5].label == "tfr 1 fixed" and tf[0].label == "tfr 1 -0.1/ep after ep 6 (batch)"
    assert tf[4].label == "tfr 1 -0.1/ep after ep 5 (step)"


def test_a_continuous_teacher_forcing_decay_is_binned_by_its_forced_share():
    """Issue 26: every trial of a sampled decay was its own strategy ('tfr 1 -0.245127/ep after ep 0')."""
    from vpsearch.reporting.strategies import MAX_NAMED, TF_BINS, forced_share, name_strategies

    decays = [0.02, 0.05, 0.08, 0.11, 0.14, 0.2, 0.3, 0.5, 0.9]
    base = ["train.epochs=10", "schedule.tfr_start_decay_epoch=0", "schedule.tfr_lower_bound=0"]
    configs = {n: load_config("pushing-small", [*base, f"schedule.tfr_decay_step={d}"]) for n, d in enumerate(decays)}
    assert len(configs) > MAX_NAMED
    # ratio 1 - d*e floored at 0, over epochs 0..9: known shares
    assert forced_share(configs[0]) == pytest.approx(1 - 0.02 * 4.5)
    assert forced_share(configs[8]) == pytest.approx(0.11)  # 1.0 at epoch 0, then 0.1, then 0
    _, tf = name_strategies(configs)
    labels = [tf[n].label for n in range(len(decays))]
    assert len(set(labels)) == TF_BINS
    assert labels[0] == labels[1] == labels[2] == "tf share 0.64-0.91"  # the gentlest decays together
    assert labels[-1] == "tf share 0.11-0.22" and tf[0].order > tf[8].order  # ordered by share


def test_missing_study_names_the_ones_there(journal):
    make_study(journal, "grid", others=False)
    with pytest.raises(StudyError, match=r"study 'nope' not found .*studies there: grid"):
        open_study_data("nope", journal)


@pytest.mark.parametrize("url,needle", [("journal:/no/such/journal.log", "no such journal file"),
                                        ("sqlite:////no/such/db.sqlite", "no such sqlite file")])
def test_missing_storage_is_an_error_and_creates_nothing(url, needle):
    with pytest.raises(ReportError, match=needle):
        open_study_data("any", url)
    assert not Path(url.split(":", 1)[1].lstrip("/")).exists()


def test_no_completed_trial_says_so(journal):
    study = optuna.create_study(study_name="empty", storage=open_storage(journal).storage)
    add_unfinished(study)
    data = open_study_data("empty", journal)
    counts = r"\(3 trials: 0 complete, 1 pruned, 1 fail, 1 running\)"
    with pytest.raises(ReportError, match=r"no completed trial yet " + counts):
        data.require_completed()


def test_plain_optuna_study_without_vpsearch_attrs(journal):
    """Tables need nothing but values: a study run without the driver's attrs still loads."""
    study = optuna.create_study(study_name="plain", storage=open_storage(journal).storage, direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    data = open_study_data("plain", journal)
    assert list(data.completed["kl"].unique()) == ["unknown"]
    assert data.completed["val_psnr"].tolist() == [t.value for t in study.trials]


def test_study_without_trials(journal):
    optuna.create_study(study_name="new", storage=open_storage(journal).storage)
    data = open_study_data("new", journal)
    assert data.frame.empty and "strategy" in data.frame and data.counts()["COMPLETE"] == 0
    with pytest.raises(ReportError, match=r"no completed trial yet \(0 trials"):
        data.require_completed()


def test_preset_names_label_strategies(journal):
    """A categorical preset of the study YAML names the teacher-forcing strategy it sets."""
    study = optuna.create_study(study_name="presets", storage=open_storage(journal).storage, direction="maximize")
    study.set_user_attr("study_config", {"search_space": {"teacher_forcing": {"type": "categorical", "choices": {
        "always": {"schedule.tfr": 1.0, "schedule.tfr_decay_step": 0.0},
        "half": {"schedule.tfr": 0.5, "schedule.tfr_decay_step": 0.0}}}}})
    for preset, tf in (("always", "A"), ("half", "B")):
        study.add_trial(optuna.trial.create_trial(
            value=20.0, params={"teacher_forcing": preset},
            distributions={"teacher_forcing": CategoricalDistribution(["always", "half"])},
            user_attrs=vp_attrs("none", tf, 0, 20.0)))
    data = open_study_data("presets", journal)
    assert list(data.frame["tf"]) == [f"always ({TF_LABEL['A']})", f"half ({TF_LABEL['B']})"]

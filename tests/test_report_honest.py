"""Reports that tell the truth: lost seeds are counted and flagged, intervals say what they are over,
the verdict against the trivial predictor comes first, identical schedules are one row."""

from __future__ import annotations

import math

import optuna
import pandas as pd
import pytest
from test_report_study import DISTS, TF_LABEL, curve, journal, params, trial_config, vp_attrs  # noqa: F401

from vpsearch.cli import main
from vpsearch.reporting.report import build_report
from vpsearch.reporting.study import open_study_data
from vpsearch.reporting.tables import STRATEGY_TABLES, strategy_tables
from vpsearch.search.records import write_study
from vpsearch.search.storage import open_storage

PRUNED = optuna.trial.TrialState.PRUNED


def scripted(url: str, name: str = "scripted", baseline: float = 20.0) -> optuna.Study:
    """KL none: one lucky complete seed (24.0) and two pruned ones (~19); cyclical: 3 seeds at ~23."""
    study = optuna.create_study(study_name=name, storage=open_storage(url).storage, direction="maximize")
    write_study(study, study_config={"name": name, "repeats": 3, "sampler": "tpe"})
    for cid, kl, values, states in [(0, "none", [24.0, 19.1, 18.9], ["COMPLETE", "PRUNED", "PRUNED"]),
                                    (3, "cyclical", [23.0, 23.2, 22.9], ["COMPLETE"] * 3)]:
        for seed, (v, st) in enumerate(zip(values, states)):
            attrs = vp_attrs(kl, "A", seed, v if st == "COMPLETE" else None, config_id=cid)
            if baseline != 20.0 and st == "COMPLETE":
                attrs["results"]["baseline_psnr"] = baseline
            study.add_trial(optuna.trial.create_trial(
                state=optuna.trial.TrialState[st], value=v, params=params(kl, "A"), distributions=DISTS,
                user_attrs=attrs, intermediate_values={0: v - 1, 1: v} if st == "COMPLETE" else {0: v}))
    return study


def test_a_strategy_that_lost_seeds_is_flagged_and_not_ranked_best(journal, tmp_path):  # noqa: F811
    scripted(journal)
    data = open_study_data("scripted", journal)
    cells = strategy_tables(data).cells
    top, none = cells.iloc[0], cells.iloc[1]
    assert (top["kl"], top["n"], top["interval_over"], top["incomplete"]) == ("cyclical", "1 x 3", "seeds", False)
    assert top["psnr_mean"] == pytest.approx(23.0333333)
    assert (none["kl"], none["n"], none["complete"], none["pruned"], none["incomplete"]) == ("none", "0", 1, 2, True)
    assert pd.isna(none["psnr_mean"]) and none["interval_note"] == "no configuration with all its seeds complete"
    assert none["sig"] == "incomplete" and pd.isna(none["p_holm"])
    build_report(data, tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "Best strategy: KL cyclical" in md and "24.0" not in md.split("## Every trial")[0].split("Best strategy")[1][:60]
    assert "incomplete: 2 pruned; mean over the 0 complete configuration(s) of 1 only" in md


def test_export_by_mean_over_seeds_skips_a_configuration_with_lost_seeds(journal, tmp_path, capsys):  # noqa: F811
    scripted(journal)
    out = tmp_path / "best"
    assert main(["export-best", "scripted", "--storage", journal, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("skipped configuration #0 (none | tfr 1 -0.25/ep after ep 1): 1 of 3 seeds complete "
                              "(2 pruned), partial mean 24.00 dB: not all its seeds completed")
    import json
    env = json.loads((out / "environment.json").read_text())
    assert env["seeds_of_config"] == [3, 4, 5] and env["trial"] == 4  # cyclical's best seed
    assert "Skipped (not all seeds complete): configuration #0" in (out / "report.md").read_text()


def test_intervals_say_what_they_are_over(journal):  # noqa: F811
    study = optuna.create_study(study_name="mixed", storage=open_storage(journal).storage, direction="maximize")
    write_study(study, study_config={"name": "mixed", "repeats": 1})
    # cyclical: three configurations (different lr) of one seed each; none: one configuration, one seed
    for n, (kl, lr, v) in enumerate([("cyclical", 1e-3, 22.0), ("cyclical", 2e-3, 23.0), ("cyclical", 3e-3, 24.5),
                                     ("none", 1e-3, 21.0)]):
        a = vp_attrs(kl, "A", 0, v, config_id=n)
        a["config"]["optim"]["lr"] = lr
        study.add_trial(optuna.trial.create_trial(value=v, params=params(kl, "A"), distributions=DISTS,
                                                  user_attrs=a, intermediate_values=curve(v)))
    cells = strategy_tables(open_study_data("mixed", journal)).cells.set_index("kl")
    assert cells.loc["cyclical", "interval_over"] == "configurations" and cells.loc["cyclical", "n"] == "3 x 1"
    assert cells.loc["none", "interval_over"] == "" and pd.isna(cells.loc["none", "psnr_ci_low"])
    assert cells.loc["none", "interval_note"] == "1 configuration x 1 seed: no interval"


def test_verdict_comes_first_and_says_when_the_trivial_predictor_wins(journal, tmp_path):  # noqa: F811
    scripted(journal, "loses", baseline=23.5)
    data = open_study_data("loses", journal)
    build_report(data, tmp_path)
    first = (tmp_path / "report.md").read_text().split("\n")[2]
    assert first.startswith("> The best strategy does NOT beat copying the last context frame: 23.03 dB vs 23.50 dB "
                            "on the same validation sequences (-0.47 dB).")
    shown = pd.read_csv(tmp_path / "strategies.csv")
    assert shown.loc[0, "vs_baseline"] == pytest.approx(23.0333333 - 23.5)
    assert "| vs copy-last |" in (tmp_path / "report.md").read_text()


def test_the_dance_family_is_compared_with_copying_the_first_frame(journal):  # noqa: F811
    scripted(journal, "dance")
    study = optuna.load_study(study_name="dance", storage=open_storage(journal).storage)
    write_study(study, base_config={"data": {"n_past": 1}})
    data = open_study_data("dance", journal)
    assert data.baseline_name == "copy-first"
    from vpsearch.reporting.report import verdict
    assert verdict(data, strategy_tables(data)).startswith("The best strategy beats copying the first frame")


def test_identical_schedules_are_one_row(journal):  # noqa: F811
    study = optuna.create_study(study_name="same", storage=open_storage(journal).storage, direction="maximize")
    for n, (kl, cycles, v) in enumerate([("monotonic", 3, 22.0), ("cyclical", 1, 22.4), ("cyclical", 3, 23.0)]):
        a = vp_attrs(kl, "A", 0, v, config_id=n)
        a["config"]["schedule"].update(kl_anneal_cycle=cycles, kl_anneal_unit="epoch")  # resolved on loading
        study.add_trial(optuna.trial.create_trial(value=v, params=params(kl, "A"), distributions=DISTS,
                                                  user_attrs=a, intermediate_values=curve(v)))
    cells = strategy_tables(open_study_data("same", journal)).cells
    # 1 cycle of cyclical is the monotonic ramp: one strategy with two configurations
    assert sorted(cells["kl"]) == ["cyclical", "monotonic"]
    assert cells.set_index("kl").loc["monotonic", "n"] == "2 x 1"


def test_every_registered_table_lands_in_the_report_and_its_csv(journal, tmp_path):  # noqa: F811
    from test_report_study import make_study
    make_study(journal, "grid", others=False)
    paths = build_report(open_study_data("grid", journal), tmp_path)
    md = (tmp_path / "report.md").read_text()
    for spec in STRATEGY_TABLES.values():
        assert (tmp_path / spec.csv) in paths and f"## {spec.title}" in md


def test_a_cell_that_mixes_configurations_is_compared_by_their_means_not_as_paired_seeds(journal):  # noqa: F811
    from scipy import stats

    from vpsearch.reporting.tables import display_strategies

    study = optuna.create_study(study_name="mixes", storage=open_storage(journal).storage, direction="maximize")
    write_study(study, study_config={"name": "mixes", "repeats": 2})
    # each strategy: two learning rates x the same seeds 0 and 1 (the seed key repeats within a cell)
    values = {("cyclical", 1e-3): (24.0, 24.2), ("cyclical", 2e-3): (23.0, 23.4),
              ("none", 1e-3): (22.0, 22.1), ("none", 2e-3): (22.6, 22.5)}
    for cid, ((kl, lr), seeds) in enumerate(values.items()):
        for seed, v in enumerate(seeds):
            a = vp_attrs(kl, "A", seed, v, config_id=cid)
            a["config"]["optim"]["lr"] = lr
            study.add_trial(optuna.trial.create_trial(value=v, params=params(kl, "A"), distributions=DISTS,
                                                      user_attrs=a, intermediate_values=curve(v)))
    cells = strategy_tables(open_study_data("mixes", journal)).cells
    none = cells.set_index("kl").loc["none"]
    assert none["test"] == "welch over configuration means"
    # Welch on the configuration means (24.1, 23.2) vs (22.05, 22.55), not on the 4 trials each
    assert none["p"] == pytest.approx(stats.ttest_ind([24.1, 23.2], [22.05, 22.55], equal_var=False).pvalue)
    shown = display_strategies(cells, ["kl", "tf"]).set_index("KL annealing")
    assert shown.loc["cyclical", "interval over"] == "2 configurations (mixed: their spread, not seed noise)"
    assert shown.loc["none", "p (Holm)"].endswith("welch over configuration means")


def test_the_answer_counts_untested_strategies_and_calls_a_tie_a_tie():
    from types import SimpleNamespace

    from vpsearch.reporting.report import answer

    def cell(kl, tf, mean, p=math.nan, incomplete=False):
        return {"kl": kl, "tf": tf, "psnr_mean": mean, "baseline_psnr": 20.0, "interval_over": "",
                "interval_note": "1 seed: no interval", "n": "1 x 1", "incomplete": incomplete, "p_holm": p,
                "configs": 1, "configs_complete": 1, "pruned": 0, "failed": 0, "running": 0}
    cells = pd.DataFrame([cell("cyclical", "held", 23.031), cell("none", "held", 23.029),
                          cell("monotonic", "held", 22.0, p=0.01)])
    kl = pd.DataFrame([{"kl": "cyclical", "psnr_mean": 23.031, "p_holm": math.nan, "incomplete": False},
                       {"kl": "none", "psnr_mean": 23.029, "p_holm": 0.9, "incomplete": False}])
    t = SimpleNamespace(cells=cells, kl=kl, tf=None)
    text = answer(SimpleNamespace(baseline_name="copy-last"), t)
    assert ("Of the 2 other complete strategies, it is significantly better than 1 (1 could not be tested: too few "
            "seeds or configurations).") in text
    assert "By KL annealing alone: cyclical and none tie (23.03 dB each, p=0.9)." in text


def test_figures_show_the_baseline_count_whole_trials_and_hide_importances_on_few_trials(journal):  # noqa: F811
    from vpsearch.reporting import figures
    from vpsearch.reporting.figures import NoFigure

    scripted(journal, "figs", baseline=21.5)
    data = open_study_data("figs", journal)
    means = figures.strategy_means(data)
    lines = [s for s in means.layout.shapes if s.type == "line"]
    assert len(lines) == 1 and lines[0].y0 == pytest.approx(21.5)  # copy-last on the same sequences
    assert means.layout.annotations[-1].text == "copy-last 21.50 dB"
    history = figures.history(data)
    assert (history.layout.xaxis.tickformat, history.layout.xaxis.dtick) == ("d", 1)  # 6 trials: no tick at 0.5
    with pytest.raises(NoFigure, match="at least 10 completed trials"):
        figures.importances(data)


def test_parallel_coordinates_draw_an_unused_conditional_parameter_as_unused():
    from types import SimpleNamespace

    from vpsearch.reporting import figures

    done = pd.DataFrame({"val_psnr": [22.0, 23.0, 24.0],
                         "param:schedule.kl_anneal_cycle": [2.0, float("nan"), 4.0],
                         "param:schedule.kl_anneal_type": ["cyclical", "none", "cyclical"]})
    fig = figures.parallel(SimpleNamespace(completed=done, param_names=["schedule.kl_anneal_cycle",
                                                                           "schedule.kl_anneal_type"]))
    cycle = fig.data[0].dimensions[0]
    unused = cycle.values[1]
    assert unused < 2.0 and cycle.tickvals[0] == unused and cycle.ticktext[0] == "unused"  # not the minimum, 2
    assert list(cycle.ticktext[1:]) == ["2", "4"]

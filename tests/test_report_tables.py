"""Strategy tables against hand-computed means, t-intervals, paired tests and Holm marks."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from test_report_study import TF_LABEL, VALUES, journal, make_study  # noqa: F401 (fixture)
from vpsearch.reporting.report import build_report
from vpsearch.reporting.stats import compare, holm, mark, t_interval
from vpsearch.reporting.study import open_study_data
from vpsearch.reporting.tables import grid_table, strategy_table, strategy_tables

T975 = {1: 12.706204736174707, 2: 4.302652729911275, 5: 2.570581835636314, 8: 2.306004135204166}


def hand_interval(xs: list[float]) -> tuple[float, float, float]:
    n = len(xs)
    mean = sum(xs) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = T975[n - 1] * sd / math.sqrt(n)
    return mean, mean - half, mean + half


def hand_paired_p(a: list[float], b: list[float]) -> float:
    from scipy.stats import t
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return 2 * t.sf(abs(mean / (sd / math.sqrt(n))), n - 1)


@pytest.fixture()
def data(journal):  # noqa: F811
    """Every cell one configuration on seeds 0, 1, 2, all complete."""
    make_study(journal, "grid", others=False)
    return open_study_data("grid", journal)


def test_t_interval_known_values():
    iv = t_interval([25.0, 25.6, 24.9])
    assert (iv.mean, iv.low, iv.high) == pytest.approx(hand_interval([25.0, 25.6, 24.9]))
    assert iv.half_width == pytest.approx(0.94048, abs=1e-5)  # 4.30265 * 0.378594 / sqrt(3)
    one = t_interval([24.0])
    assert one.n == 1 and one.mean == 24.0 and math.isnan(one.low) and math.isnan(one.sd)
    assert t_interval([]).n == 0


def test_holm_and_marks():
    # sorted 0.01*3=0.03, 0.03*2=0.06, 0.04*1 -> kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([math.nan, 0.02])[0]) and holm([math.nan, 0.02])[1] == pytest.approx(0.02)
    assert [mark(p) for p in (0.0005, 0.005, 0.03, 0.2, math.nan)] == ["***", "**", "*", "", ""]


def test_compare_pairs_by_key_and_falls_back_to_welch():
    from scipy import stats
    a, b = {0: 25.0, 1: 25.6, 2: 24.9}, {0: 24.0, 1: 24.5, 2: 23.8}
    c = compare(a, b)
    assert c.test == "paired" and c.n == 3 and c.diff == pytest.approx(1.0666667)
    assert c.p == pytest.approx(hand_paired_p([25.0, 25.6, 24.9], [24.0, 24.5, 23.8]))
    assert c.p == pytest.approx(stats.ttest_rel([25.0, 25.6, 24.9], [24.0, 24.5, 23.8]).pvalue)
    w = compare({0: 25.0, 1: 25.6, 2: 24.9}, {5: 24.0, 6: 24.5, 7: 23.8, 8: 24.1})  # no seed in common
    assert w.test == "welch"
    assert w.p == pytest.approx(stats.ttest_ind([25.0, 25.6, 24.9], [24.0, 24.5, 23.8, 24.1], equal_var=False).pvalue)
    assert compare({0: 1.0}, {1: 2.0}).test == ""  # one trial each: nothing to test


def test_cell_table_matches_hand_computation(data):
    cells = strategy_tables(data).cells.set_index(["kl", "tf"])
    assert len(cells) == 6
    for (kl, tf), xs in VALUES.items():
        row = cells.loc[(kl, TF_LABEL[tf])]
        mean, lo, hi = hand_interval(xs)
        assert (row["psnr_mean"], row["psnr_ci_low"], row["psnr_ci_high"]) == pytest.approx((mean, lo, hi))
        assert row["n"] == "1 x 3" and row["interval_over"] == "seeds" and not row["incomplete"]
        assert (row["complete"], row["pruned"], row["failed"]) == (3, 0, 0)
        assert row["vs_baseline"] == pytest.approx(mean - 20.0)  # every trial's copy-last baseline: 20
        assert row["best_psnr"] == max(xs)
        # the study adds cells in VALUES order, 3 seeds each: trial number = 3 * cell index + seed
        assert row["best_trial"] == 3 * list(VALUES).index((kl, tf)) + xs.index(max(xs))
        assert row["final_mean"] == pytest.approx(mean - 0.3)  # val_psnr_final = value - 0.3
        assert row["ssim_mean"] == pytest.approx(sum(round(0.5 + x / 100, 4) for x in xs) / 3)


def test_significance_is_paired_by_seed_and_holm_corrected(data):
    cells = strategy_tables(data).cells
    top = VALUES[("cyclical", "A")]
    assert (cells.iloc[0]["kl"], cells.iloc[0]["tf"], cells.iloc[0]["sig"]) == ("cyclical", TF_LABEL["A"], "best")
    rest = cells.iloc[1:]
    raw = [hand_paired_p(top, VALUES[(kl, next(k for k, v in TF_LABEL.items() if v == tf))])
           for kl, tf in zip(rest["kl"], rest["tf"])]
    assert list(rest["test"]) == ["paired"] * 5
    assert list(rest["p"]) == pytest.approx(raw)
    # Holm by hand: sort, multiply by (m - rank), keep monotone
    order = sorted(range(5), key=lambda i: raw[i])
    adj, running = [0.0] * 5, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (5 - rank) * raw[i]))
        adj[i] = running
    assert list(rest["p_holm"]) == pytest.approx(adj)
    assert list(rest["sig"]) == [mark(p) for p in adj]
    # rows are ranked by mean; the grid repeats the marks
    assert list(cells["psnr_mean"]) == sorted(cells["psnr_mean"], reverse=True)
    grid = grid_table(cells)
    assert grid.loc["cyclical", TF_LABEL["A"]].endswith("(best)")
    assert grid.loc["cyclical", TF_LABEL["A"]].startswith("25.17 ± 0.94 (n=1 x 3)")


def test_one_factor_tables_pair_by_the_other_factor_and_seed(data):
    t = strategy_tables(data)
    kl = t.kl.set_index("kl")
    cyc = VALUES[("cyclical", "A")] + VALUES[("cyclical", "B")]
    # two configurations (one per teacher-forcing schedule) of 3 seeds: the interval is the spread
    # over the two configuration means, not seed noise
    means = [sum(VALUES[("cyclical", k)]) / 3 for k in "AB"]
    assert kl.loc["cyclical", "n"] == "2 x 3" and kl.loc["cyclical", "interval_over"] == "configurations"
    assert (kl.loc["cyclical", "psnr_mean"], kl.loc["cyclical", "psnr_ci_low"]) == pytest.approx(
        hand_interval(means)[:2])
    none = VALUES[("none", "A")] + VALUES[("none", "B")]
    assert kl.loc["none", "test"] == "paired"
    assert kl.loc["none", "p"] == pytest.approx(hand_paired_p(cyc, none))
    tf = t.tf.set_index("tf")
    assert tf.loc[TF_LABEL["A"], "n"] == "3 x 3" and tf.loc[TF_LABEL["B"], "test"] == "paired"


def test_unpaired_cells_use_welch(journal):  # noqa: F811
    """Two strategies on different seeds cannot be paired."""
    study = make_study(journal, "welch", values={("none", "A"): [24.0, 24.5, 23.8]}, others=False)
    from test_report_study import DISTS, curve, params, vp_attrs
    import optuna
    for seed, v in zip((5, 6, 7), (22.0, 22.4, 21.9)):
        study.add_trial(optuna.trial.create_trial(value=v, params=params("cyclical", "B"), distributions=DISTS,
                                                  user_attrs=vp_attrs("cyclical", "B", seed, v),
                                                  intermediate_values=curve(v)))
    from scipy import stats
    cells = strategy_tables(open_study_data("welch", journal)).cells
    assert cells.iloc[1]["test"] == "welch"
    assert cells.iloc[1]["p"] == pytest.approx(stats.ttest_ind([24.0, 24.5, 23.8], [22.0, 22.4, 21.9],
                                                               equal_var=False).pvalue)


def test_one_trial_study_reports_without_intervals(journal, tmp_path):  # noqa: F811
    make_study(journal, "one", values={("cyclical", "A"): [24.2]}, others=False)
    data = open_study_data("one", journal)
    paths = build_report(data, tmp_path / "r")
    cells = pd.read_csv(tmp_path / "r" / "strategies.csv")
    assert len(cells) == 1 and cells.loc[0, "n"] == "1 x 1" and cells.loc[0, "psnr_mean"] == 24.2
    assert math.isnan(cells.loc[0, "psnr_ci_low"]) and cells.loc[0, "interval_note"] == "1 configuration x 1 seed: no interval"
    html = (tmp_path / "r" / "report.html").read_text()
    assert 'data-figure-missing="importances"' in html  # guarded: nothing varies
    assert not (tmp_path / "r" / "importances.csv").exists()
    md = (tmp_path / "r" / "report.md").read_text()
    assert "24.20 (n=1 x 1) (best)" in md and "| 24.20 | 1 configuration x 1 seed: no interval | 1 x 1 |" in md
    assert len(paths) == 6  # md, html, its plotly.js, strategies, grid, trials


def test_csvs_hold_the_same_numbers(journal, tmp_path):  # noqa: F811
    make_study(journal, "grid")  # with one failed, one pruned and one running trial
    data = open_study_data("grid", journal)
    build_report(data, tmp_path)
    cells = pd.read_csv(tmp_path / "strategies.csv").set_index(["kl", "tf"])
    mean, lo, hi = hand_interval(VALUES[("none", "B")])
    row = cells.loc[("none", TF_LABEL["B"])]
    assert (row["psnr_mean"], row["psnr_ci_low"], row["psnr_ci_high"]) == pytest.approx((mean, lo, hi))
    trials = pd.read_csv(tmp_path / "trials.csv")
    assert len(trials) == 21 and set(trials["state"]) == {"COMPLETE", "FAIL", "PRUNED", "RUNNING"}
    assert trials.set_index("number").loc[18, "reason"] == "non-finite loss at epoch 1"
    assert not any(c.startswith("_") for c in trials.columns)
    grid = pd.read_csv(tmp_path / "grid.csv", index_col=0)
    assert grid.shape == (3, 2)
    imp = pd.read_csv(tmp_path / "importances.csv", index_col=0)["importance"]
    assert imp.idxmax() == "schedule.kl_anneal_type" and imp.sum() == pytest.approx(1.0)


def test_strategy_table_counts_complete_configurations_only(journal):  # noqa: F811
    make_study(journal, "grid")  # + a failed (cyclical A), a pruned (monotonic B), a running (none A) trial
    t = strategy_table(open_study_data("grid", journal).counted, ["kl", "tf"], ["seed"]).set_index(["kl", "tf"])
    assert (t["complete"].sum(), t["pruned"].sum(), t["failed"].sum(), t["running"].sum()) == (18, 1, 1, 1)
    flagged = t[t["incomplete"]]
    assert sorted(flagged.index) == sorted([("cyclical", TF_LABEL["A"]), ("monotonic", TF_LABEL["B"]),
                                           ("none", TF_LABEL["A"])])
    # their means are over the complete configuration only, and they rank after the complete cells
    assert t.loc[("cyclical", TF_LABEL["A"]), "psnr_mean"] == pytest.approx(sum(VALUES[("cyclical", "A")]) / 3)
    assert list(t["incomplete"]) == [False] * 3 + [True] * 3 and t.iloc[0]["sig"] == "best"
    assert set(t["sig"][t["incomplete"]]) == {"incomplete"}


def test_configs_from_another_version_only_drop_the_schedules_figure(journal, tmp_path):  # noqa: F811
    """A stored config this version refuses (a renamed field) must not take the report down."""
    import optuna

    from test_report_study import DISTS, curve, params, vp_attrs
    from vpsearch.search.storage import open_storage

    study = optuna.create_study(study_name="old", storage=open_storage(journal).storage, direction="maximize")
    for seed, v in enumerate((22.0, 22.5)):
        a = vp_attrs("cyclical", "A", seed, v)
        a["config"]["schedule"]["kl_cycles_renamed"] = 3  # TrialRecord.config
        study.add_trial(optuna.trial.create_trial(value=v, params=params("cyclical", "A"), distributions=DISTS,
                                                  user_attrs=a, intermediate_values=curve(v)))
    build_report(open_study_data("old", journal), tmp_path)
    html = (tmp_path / "report.html").read_text()
    assert 'data-figure-missing="schedules"' in html and 'data-figure="frame_psnr"' in html
    assert pd.read_csv(tmp_path / "strategies.csv").loc[0, "psnr_mean"] == pytest.approx(22.25)


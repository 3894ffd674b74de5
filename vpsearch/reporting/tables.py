"""Strategy tables (pandas), their registry, and their Markdown/HTML renderings.

A strategy cell groups the trials of one KL-annealing x teacher-forcing strategy (or one
factor alone). Within it, a *configuration* (a point of the search space) is trained on
one or more seeds. The cell's number is honest about both:

- its value is the mean over its *complete* configurations (all seeds finished) of each
  configuration's mean best validation PSNR over its seeds;
- its 95% Student-t interval is over the seeds of its one complete configuration
  ("seeds": seed noise), or over its complete configurations' means when it holds several
  ("configurations": spread over configurations, not seed noise); with fewer than two of
  either there is no interval, and the cell says why;
- n is "configurations x seeds", with complete / pruned / failed trial counts;
- a cell that lost seeds or configurations to pruning or failure is flagged: its mean is
  over the survivors only, so it is ranked after the cells that are complete and is not
  tested against them.
Complete rows are tested against the top row: paired by seed (and the other factor) where
both ran the same ones, Welch otherwise; where a cell mixes configurations that the pairing
key does not tell apart, Welch over the cells' configuration means ("welch over configuration
means"), never as if its trials were paired repeats. Holm-corrected over the table.

Tables are registered once in STRATEGY_TABLES; the report, its CSV files and the dashboard
all read that registry.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import pandas as pd

from vpsearch.fmt import number
from vpsearch.reporting.stats import Interval, compare, holm, mark, t_interval

# trial states that are over (a replaced attempt of a re-run trial is not counted at all)
ENDED = ("COMPLETE", "PRUNED", "FAIL")


@dataclass
class CellTrials:
    """The trials of one strategy cell, split by configuration."""

    trials: pd.DataFrame
    repeats: int

    def configurations(self) -> dict[Any, pd.DataFrame]:
        return {cid: g for cid, g in self.trials.groupby("configuration", sort=True)}

    def complete_configurations(self) -> dict[Any, pd.DataFrame]:
        return {cid: g for cid, g in self.configurations().items()
                if len(g) >= self.repeats and (g["state"] == "COMPLETE").all() and g["val_psnr"].notna().all()}


def _seeds_text(counts: list[int]) -> str:
    lo, hi = min(counts), max(counts)
    return str(lo) if lo == hi else f"{lo}-{hi}"


def cell_row(cell: CellTrials) -> dict[str, Any]:
    """The numbers of one cell (see the module docstring)."""
    t = cell.trials
    states = t["state"].value_counts()
    configs, complete = cell.configurations(), cell.complete_configurations()
    means = {cid: float(g["val_psnr"].mean()) for cid, g in complete.items()}
    iv, over, note = Interval(math.nan, math.nan, math.nan, math.nan, 0), "", ""
    if len(complete) >= 2:
        iv, over = t_interval(list(means.values())), "configurations"
    elif len(complete) == 1:
        seeds = next(iter(complete.values()))["val_psnr"].tolist()
        iv = t_interval(seeds)
        over, note = ("seeds", "") if len(seeds) >= 2 else ("", "1 seed: no interval")
    else:
        note = "no configuration with all its seeds complete"
    if len(complete) == 1 and iv.n == 1:
        note = "1 configuration x 1 seed: no interval"
    lost = int(states.get("PRUNED", 0) + states.get("FAIL", 0))
    best = t.loc[t["val_psnr"].idxmax()] if t["val_psnr"].notna().any() else None
    done = t[t["state"] == "COMPLETE"]
    kept = pd.concat(list(complete.values())) if complete else t.iloc[:0]
    return {
        "n": f"{len(complete)} x {_seeds_text([len(g) for g in complete.values()])}" if complete else "0",
        "configs": len(configs), "configs_complete": len(complete),
        "complete": int(states.get("COMPLETE", 0)), "pruned": int(states.get("PRUNED", 0)),
        "failed": int(states.get("FAIL", 0)), "running": int(len(t) - sum(states.get(s, 0) for s in ENDED)),
        "incomplete": lost > 0 or len(complete) < len(configs),
        "psnr_mean": float(sum(means.values()) / len(means)) if means else math.nan,
        "psnr_ci_low": iv.low, "psnr_ci_high": iv.high, "psnr_sd": iv.sd, "interval_over": over,
        "interval_note": note,
        "best_trial": int(best["number"]) if best is not None else -1,
        "best_psnr": float(best["val_psnr"]) if best is not None else math.nan,
        "final_mean": float(kept["val_psnr_final"].mean()) if "val_psnr_final" in kept and len(kept) else math.nan,
        "ssim_mean": float(kept["val_ssim"].mean()) if "val_ssim" in kept and len(kept) else math.nan,
        "baseline_psnr": float(done["baseline_psnr"].mean()) if len(done) else math.nan,
        "_values": kept,
    }


def _pair_values(g: pd.DataFrame, pair_on: list[str]) -> dict[Any, float] | None:
    """Values keyed for pairing where `pair_on` names each trial once; None where it does not
    and the cell holds several configurations (two learning rates x 3 seeds, say): seeds of
    different configurations are not repeats of one measurement."""
    keys = [tuple(r) for r in g[pair_on].itertuples(index=False)] if pair_on else []
    if keys and not any(pd.isna(k) for key in keys for k in key) and len(set(keys)) == len(keys):
        return dict(zip(keys, g["val_psnr"]))
    if g["configuration"].nunique() > 1:
        return None
    return {("trial", n): v for n, v in zip(g["number"], g["val_psnr"])}


def _compare_cells(top: pd.DataFrame, other: pd.DataFrame, pair_on: list[str]):
    """Paired (or Welch) on the trials where both cells name each trial once; where either mixes
    configurations, Welch over the two cells' configuration means, and the test says so."""
    a, b = _pair_values(top, pair_on), _pair_values(other, pair_on)
    if a is not None and b is not None:
        return compare(a, b)
    c = compare(_config_means(top), _config_means(other))
    return replace(c, test=f"{c.test} over configuration means") if c.test else c


def _config_means(g: pd.DataFrame) -> dict[Any, float]:
    return {("configuration", c): float(v) for c, v in g.groupby("configuration")["val_psnr"].mean().items()}


def strategy_table(frame: pd.DataFrame, by: list[str], pair_on: list[str], repeats: int = 1) -> pd.DataFrame:
    """One row per group of `by` (see the module docstring), ranked: complete cells by mean, then
    flagged ones; complete rows tested against the top row.

    frame: the study's trial frame (study.StudyData.frame): number, state, configuration, seed,
    val_psnr, baseline_psnr and the `by` columns; replaced attempts and skipped trials left out.
    """
    frame = frame[frame["state"].isin([*ENDED, "RUNNING", "WAITING"])]
    rows = []
    for key, g in frame.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        row = {**dict(zip(by, key)), **cell_row(CellTrials(g, repeats))}
        row["_order"] = tuple(int(g[f"_{c}_order"].min()) for c in by if f"_{c}_order" in g)
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    # complete cells by mean, then flagged ones by their survivors' mean, then cells without a mean
    rows.sort(key=lambda r: (r["incomplete"], math.isnan(r["psnr_mean"]),
                             0.0 if math.isnan(r["psnr_mean"]) else -r["psnr_mean"], r["_order"]))
    table = pd.DataFrame(rows)
    table["rank"] = range(1, len(table) + 1)
    table["vs_baseline"] = table["psnr_mean"] - table["baseline_psnr"]
    top = table.iloc[0]
    tested = [i for i in range(1, len(table)) if not table.at[i, "incomplete"] and not top["incomplete"]
              and not math.isnan(table.at[i, "psnr_mean"])]
    comps = {i: _compare_cells(top["_values"], table.at[i, "_values"], pair_on) for i in tested}
    adjusted = dict(zip(tested, holm([comps[i].p for i in tested])))
    table["test"] = [comps[i].test if i in comps else "" for i in range(len(table))]
    table["diff_to_best"] = [0.0 if i == 0 else -comps[i].diff if i in comps else
                             table.at[i, "psnr_mean"] - top["psnr_mean"] for i in range(len(table))]
    table["p"] = [comps[i].p if i in comps else math.nan for i in range(len(table))]
    table["p_holm"] = [adjusted.get(i, math.nan) for i in range(len(table))]
    table["sig"] = ["best" if i == 0 else "incomplete" if table.at[i, "incomplete"] else mark(adjusted.get(i, math.nan))
                    for i in range(len(table))]
    return table.drop(columns=["_values"])


def rank_strategies(frame: pd.DataFrame, repeats: int = 1) -> list[str]:
    """The report's ranking of KL x teacher-forcing strategies ("kl | tf", best first)."""
    table = strategy_table(frame, ["kl", "tf"], ["seed"], repeats)
    return [f"{r.kl} | {r.tf}" for r in table.itertuples()] if len(table) else []


TRIAL_COLUMNS = {"number": "trial", "state": "state", "val_psnr": "val PSNR", "val_psnr_final": "final PSNR",
                 "val_ssim": "SSIM", "kl": "KL annealing", "tf": "teacher forcing", "seed": "seed",
                 "epochs": "epochs", "duration_s": "duration s", "reason": "reason"}


def trials_table(frame: pd.DataFrame, param_names: list[str]) -> pd.DataFrame:
    """Every trial, for reading: params, state, value, duration, and why it failed or was pruned."""
    if frame.empty:
        return pd.DataFrame(columns=list(TRIAL_COLUMNS.values()))
    cols = [c for c in TRIAL_COLUMNS if c in frame]
    # the objective value only adds a column when it is not the best val PSNR (SSIM studies,
    # multi-objective studies, studies run without the driver's attrs)
    same = (frame["value"].isna() | ((frame["value"] - frame["val_psnr"]).abs() < 1e-9)).all()
    if not same:
        cols.insert(2, "value")
    out = frame.sort_values("number")[cols].rename(columns={**TRIAL_COLUMNS, "value": "objective"})
    for p in param_names:
        values = frame.sort_values("number")[f"param:{p}"]
        # an int parameter left out of some trials (conditional) comes back as floats with NaN
        whole = values.dropna().map(lambda v: isinstance(v, (int, float)) and float(v).is_integer())
        out[p] = values.astype("Int64").values if len(whole) and whole.all() else values.values
    return out


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without the internal ordering columns, for CSV."""
    return frame[[c for c in frame.columns if not c.startswith("_")]]


def _fmt(v: Any) -> str:
    """A cell: PSNR-sized values with 2 decimals, others with 3 significant digits (lr 1.08e-3
    and 1.77e-3 stay apart), integers as integers."""
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.2f}" if 1 <= abs(v) < 1e5 else number(v, digits=3)
    return str(v)


def markdown_table(df: pd.DataFrame, index: bool = False) -> str:
    """GitHub Markdown table (pandas' to_markdown needs tabulate, which we do not ship)."""
    if df.empty:
        return "_(empty)_"
    cols = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for idx, row in df.iterrows():
        cells = ([str(idx)] if index else []) + [_fmt(v) for v in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(lines)


def html_table(df: pd.DataFrame, index: bool = False, cls: str = "table") -> str:
    if df.empty:
        return "<p><em>(empty)</em></p>"
    head = ([df.index.name or ""] if index else []) + [str(c) for c in df.columns]
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for idx, row in df.iterrows():
        cells = ([str(idx)] if index else []) + [_fmt(v) for v in row]
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def scroll_table(df: pd.DataFrame, index: bool = False) -> str:
    """An HTML table in a scrolling box, so a 200-trial table does not push the figures away."""
    return f'<div class="scroll">{html_table(df, index=index)}</div>'


# -- the tables of a study -------------------------------------------------------------------
@dataclass
class StrategyTables:
    cells: pd.DataFrame  # KL x TF
    kl: pd.DataFrame | None = None  # one-factor tables, when both factors vary
    tf: pd.DataFrame | None = None
    importances: dict[str, float] = field(default_factory=dict)
    baseline_name: str = "copy-last"


def strategy_tables(data: Any, importances: bool = True) -> StrategyTables:
    """Every strategy table of a study (data: study.StudyData); raises ReportError when nothing completed."""
    data.require_completed()
    frame, r = data.counted, data.repeats
    out = StrategyTables(strategy_table(frame, ["kl", "tf"], ["seed"], r), baseline_name=data.baseline_name)
    if frame["kl"].nunique() > 1 and frame["tf"].nunique() > 1:
        # a configuration here is one (KL, TF) cell's configuration; pair by the other factor and seed
        out.kl = strategy_table(frame, ["kl"], ["tf", "seed"], r)
        out.tf = strategy_table(frame, ["tf"], ["kl", "seed"], r)
    if importances:
        try:
            out.importances = param_importances(data)
        except ValueError:
            pass
    return out


def param_importances(data: Any) -> dict[str, float]:
    """fANOVA importances of the parameters (Optuna's evaluator); ValueError when nothing varies."""
    import warnings

    import optuna

    from vpsearch.reporting.study import trial_psnr

    done = data.completed
    varying = [p for p in data.param_names if done[f"param:{p}"].map(repr).nunique() > 1]
    if len(done) < 2 or not varying:
        raise ValueError("importances need at least 2 completed trials whose parameters vary")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return optuna.importance.get_param_importances(
                data.study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0), target=trial_psnr)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"importances could not be computed: {e}") from None


def grid_table(cells: pd.DataFrame) -> pd.DataFrame:
    """KL annealing (rows) x teacher forcing (columns); each cell 'mean ± half-width (n) marks'."""
    if cells.empty:
        return pd.DataFrame()
    c = cells.copy()
    c["_kl"] = [o[0] for o in c["_order"]]
    c["_tf"] = [o[1] for o in c["_order"]]
    c["cell"] = [cell_text(r) for r in c.itertuples()]
    grid = c.pivot(index="kl", columns="tf", values="cell")
    grid = grid.loc[c.sort_values("_kl")["kl"].unique(), c.sort_values("_tf")["tf"].unique()]
    grid.index.name, grid.columns.name = "KL annealing \\ teacher forcing", None
    return grid.fillna("—")


def cell_text(r: Any) -> str:
    if math.isnan(r.psnr_mean):
        return f"— ({r.pruned} pruned, {r.failed} failed)"
    best = " (best)" if r.sig == "best" else ""
    flag = " ⚑" if r.incomplete else ""
    sig = "" if r.sig in ("", "best", "incomplete") else f" {r.sig}"
    spread = "" if math.isnan(r.psnr_ci_low) else f" ± {(r.psnr_ci_high - r.psnr_ci_low) / 2:.2f}"
    return f"{r.psnr_mean:.2f}{spread} (n={r.n}){sig}{best}{flag}"


def _ci(mean: float, low: float, high: float, digits: int) -> str:
    if math.isnan(mean):
        return "—"
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def flag_text(r: Any) -> str:
    if not r.incomplete:
        return ""
    lost = [f"{n} {what}" for n, what in ((r.pruned, "pruned"), (r.failed, "failed"), (r.running, "running"))
            if n]
    return f"incomplete: {', '.join(lost) or 'seeds missing'}; mean over the {r.configs_complete} complete " \
           f"configuration(s) of {r.configs} only"


def interval_text(r: Any) -> str:
    """What a cell's interval is over, in words: seed noise, or a mix of configurations."""
    if r.interval_over == "configurations":
        return f"{r.configs_complete} configurations (mixed: their spread, not seed noise)"
    return r.interval_over or r.interval_note


def display_strategies(table: pd.DataFrame, by: list[str], baseline_name: str = "copy-last") -> pd.DataFrame:
    """The strategy table as strings, for Markdown and HTML."""
    names = {"kl": "KL annealing", "tf": "teacher forcing"}
    out = pd.DataFrame({"rank": table["rank"]})
    for c in by:
        out[names.get(c, c)] = table[c]
    out["val PSNR, mean [95% CI]"] = [_ci(r.psnr_mean, r.psnr_ci_low, r.psnr_ci_high, 2) for r in table.itertuples()]
    out["interval over"] = [interval_text(r) for r in table.itertuples()]
    out["n (configs x seeds)"] = table["n"]
    out["complete / pruned / failed"] = [f"{r.complete} / {r.pruned} / {r.failed}" for r in table.itertuples()]
    out[f"vs {baseline_name}"] = ["—" if math.isnan(v) else f"{v:+.2f}" for v in table["vs_baseline"]]
    out["best trial"] = ["—" if r.best_trial < 0 else f"#{r.best_trial}: {r.best_psnr:.2f}" for r in table.itertuples()]
    if table["ssim_mean"].notna().any():
        out["SSIM"] = ["—" if math.isnan(v) else f"{v:.3f}" for v in table["ssim_mean"]]
    out["Δ to best"] = ["" if r.rank == 1 or math.isnan(r.diff_to_best) else f"{r.diff_to_best:+.2f}"
                        for r in table.itertuples()]
    out["p (Holm)"] = ["" if math.isnan(p) else f"{p:.3g}" + (f" {t}" if t else "")
                       for p, t in zip(table["p_holm"], table["test"])]
    out["sig"] = table["sig"]
    out["flag"] = [flag_text(r) for r in table.itertuples()]
    return out


@dataclass(frozen=True)
class TableSpec:
    """A strategy table: its heading, its CSV file, and (CSV frame, display frame) from the tables."""

    title: str
    csv: str
    build: Callable[[StrategyTables], tuple[pd.DataFrame, pd.DataFrame] | None]
    index: bool = False  # the display frame's index is a column (the grid's KL rows)


def _importances(t: StrategyTables) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    if not t.importances:
        return None
    df = pd.DataFrame({"parameter": list(t.importances), "importance": list(t.importances.values())})
    return df, df


# name -> table; the report (Markdown, HTML, CSV) and the dashboard read these
STRATEGY_TABLES: dict[str, TableSpec] = {
    "strategy_grid": TableSpec("Strategy grid: mean best val PSNR ± 95% CI half-width (n: configurations x seeds)",
                               "grid.csv", lambda t: (grid_table(t.cells),) * 2, index=True),
    "strategies": TableSpec("Strategies ranked (KL annealing x teacher forcing)", "strategies.csv",
                            lambda t: (t.cells, display_strategies(t.cells, ["kl", "tf"], t.baseline_name))),
    "strategies_kl": TableSpec("KL annealing alone (over teacher-forcing schedules; paired by schedule and seed)",
                               "strategies_kl.csv", lambda t: None if t.kl is None else
                               (t.kl, display_strategies(t.kl, ["kl"], t.baseline_name))),
    "strategies_tf": TableSpec("Teacher forcing alone (over KL schedules; paired by schedule and seed)",
                               "strategies_tf.csv", lambda t: None if t.tf is None else
                               (t.tf, display_strategies(t.tf, ["tf"], t.baseline_name))),
    "param_importances": TableSpec("Parameter importances (fANOVA, Optuna)", "importances.csv", _importances),
}

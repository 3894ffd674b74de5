"""Strategy comparison tables (pandas) and their Markdown/HTML renderings.

A strategy table has one row per group of completed trials (a KL x teacher-forcing
cell, or one factor alone), with the 95% t-interval of the best validation PSNR over
the group's trials (its seeds), the best single trial, the final-epoch PSNR and SSIM.
Every row is tested against the top row (highest mean): paired by seed where both rows
ran the same seeds, Welch otherwise, Holm-corrected over the rows of the table.
"""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

from vpsearch.reporting.stats import compare, holm, mark, t_interval

PSNR_COLUMNS = ("val_psnr", "val_psnr_final", "val_ssim")


def _pair_values(g: pd.DataFrame, pair_on: list[str]) -> dict[Any, float]:
    """Values keyed for pairing; falls back to unique trial keys when keys repeat or are missing."""
    keys = [tuple(r) for r in g[pair_on].itertuples(index=False)] if pair_on else []
    if keys and not any(pd.isna(k) for key in keys for k in key) and len(set(keys)) == len(keys):
        return dict(zip(keys, g["val_psnr"]))
    return {("trial", n): v for n, v in zip(g["number"], g["val_psnr"])}


def strategy_table(done: pd.DataFrame, by: list[str], pair_on: list[str]) -> pd.DataFrame:
    """One row per group of ``by``; rows sorted best mean first, tested against the top row.

    pair_on: the columns that identify "the same run under another strategy" (the seed for
    KL x TF cells; the other factor and the seed for one-factor tables).
    """
    done = done[done["val_psnr"].notna()]
    rows, values = [], []
    for key, g in done.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        iv, fin, ss = (t_interval(g[c].tolist()) for c in PSNR_COLUMNS)
        best = g.loc[g["val_psnr"].idxmax()]
        configs = int(g["config_hash"].nunique()) if g["config_hash"].notna().all() else len(g)
        rows.append({**dict(zip(by, key)), "n": iv.n, "configs": configs,
                     "psnr_mean": iv.mean, "psnr_ci_low": iv.low, "psnr_ci_high": iv.high, "psnr_sd": iv.sd,
                     "best_trial": int(best["number"]), "best_psnr": float(best["val_psnr"]),
                     "final_mean": fin.mean, "final_ci_low": fin.low, "final_ci_high": fin.high,
                     "ssim_mean": ss.mean, "ssim_ci_low": ss.low, "ssim_ci_high": ss.high,
                     "baseline_psnr": g["baseline_psnr"].mean(),  # nan when no trial recorded it
                     "_order": tuple(int(g[f"_{c}_order"].min()) for c in by if f"_{c}_order" in g)})
        values.append(_pair_values(g, pair_on))
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    order = sorted(range(len(rows)), key=lambda i: (-rows[i]["psnr_mean"], rows[i]["_order"]))
    table = table.iloc[order].reset_index(drop=True)
    values = [values[i] for i in order]
    comps = [compare(values[0], v) for v in values[1:]]
    table["rank"] = range(1, len(table) + 1)
    table["test"] = [""] + [c.test for c in comps]
    table["diff_to_best"] = [0.0] + [-c.diff for c in comps]
    table["p"] = [math.nan] + [c.p for c in comps]
    table["p_holm"] = [math.nan] + holm([c.p for c in comps])
    table["sig"] = ["best"] + [mark(p) for p in table["p_holm"][1:]]
    return table


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
    sig = "" if r.sig in ("", "best") else f" {r.sig}"
    best = " (best)" if r.sig == "best" else ""
    if r.n < 2:
        return f"{r.psnr_mean:.2f} (n=1){best}"
    return f"{r.psnr_mean:.2f} ± {(r.psnr_ci_high - r.psnr_ci_low) / 2:.2f} (n={r.n}){sig}{best}"


def _ci(mean: float, low: float, high: float, digits: int) -> str:
    if math.isnan(mean):
        return "—"
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def display_strategies(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """The strategy table as strings, for Markdown and HTML."""
    names = {"kl": "KL annealing", "tf": "teacher forcing"}
    out = pd.DataFrame({names.get(c, c): table[c] for c in by})
    out["val PSNR, mean [95% CI]"] = [_ci(r.psnr_mean, r.psnr_ci_low, r.psnr_ci_high, 2) for r in table.itertuples()]
    out["n"] = table["n"]
    out["best trial"] = [f"#{r.best_trial}: {r.best_psnr:.2f}" for r in table.itertuples()]
    out["final-epoch PSNR"] = [_ci(r.final_mean, r.final_ci_low, r.final_ci_high, 2) for r in table.itertuples()]
    if table["ssim_mean"].notna().any():
        out["SSIM"] = [_ci(r.ssim_mean, r.ssim_ci_low, r.ssim_ci_high, 3) for r in table.itertuples()]
    out["Δ to best"] = ["" if r.rank == 1 else f"{r.diff_to_best:+.2f}" for r in table.itertuples()]
    out["p (Holm)"] = ["" if math.isnan(p) else f"{p:.3g}" + (f" {t}" if t else "")
                       for p, t in zip(table["p_holm"], table["test"])]
    out["sig"] = table["sig"]
    return out


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
        out[p] = frame.sort_values("number")[f"param:{p}"].values
    return out


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame without the internal ordering columns, for CSV."""
    return frame[[c for c in frame.columns if not c.startswith("_")]]


def _fmt(v: Any) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e-3 or abs(v) >= 1e5 else f"{v:.2f}" if abs(v) >= 1 else f"{v:.3f}"
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

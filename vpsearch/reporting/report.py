"""`vpsearch report`: the study's answer as Markdown, self-contained HTML and CSV.

Which KL annealing and which teacher-forcing schedule work, by how much and how sure:
strategy tables (mean best val PSNR over seeds with 95% t-intervals, tested against the
best strategy), the trials behind them, and the figures. Logged to the study's parent
MLflow run when the study has one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vpsearch.reporting import figures, tables
from vpsearch.reporting.html import esc, page, render, write_atomic
from vpsearch.reporting.study import StudyData
from vpsearch.search.records import StudyRecord
from vpsearch.settings import redact, runs_root, study_tracking_uri

REPORT_FIGURES = ["strategy_means", "frame_psnr", "learning_curves", "schedules", "history", "parallel",
                  "importances"]

METHOD = ("Each cell: best validation PSNR per trial (the best epoch, PSNR averaged over the predicted frames "
          "and sequences), mean over the cell's trials (seeds) with a 95% Student-t interval; n trials. "
          "Marks compare each row with the top row: paired t-test over the seeds both ran (Welch's t-test "
          "when they share fewer than 2), Holm-corrected over the rows of the table; * p<0.05, ** p<0.01, "
          "*** p<0.001; no mark: not significantly different from the best.")


@dataclass
class StrategyTables:
    cells: pd.DataFrame  # KL x TF
    grid: pd.DataFrame  # the same as a KL-rows x TF-columns grid of strings
    kl: pd.DataFrame | None = None  # one-factor tables, when both factors vary
    tf: pd.DataFrame | None = None
    importances: dict[str, float] = field(default_factory=dict)


def strategy_tables(data: StudyData, importances: bool = True) -> StrategyTables:
    done = data.require_completed()
    cells = tables.strategy_table(done, ["kl", "tf"], ["seed"])
    out = StrategyTables(cells, tables.grid_table(cells))
    if done["kl"].nunique() > 1 and done["tf"].nunique() > 1:
        out.kl = tables.strategy_table(done, ["kl"], ["tf", "seed"])
        out.tf = tables.strategy_table(done, ["tf"], ["kl", "seed"])
    try:
        out.importances = figures.param_importances(data) if importances else {}
    except figures.NoFigure:
        pass
    return out


def answer(data: StudyData, t: StrategyTables) -> str:
    """One paragraph that answers the study's question in words."""
    top = t.cells.iloc[0]
    ci = "" if top["n"] < 2 else f" [95% CI {top['psnr_ci_low']:.2f}, {top['psnr_ci_high']:.2f}]"
    text = (f"Best strategy: KL {top['kl']}, teacher forcing {top['tf']}: {top['psnr_mean']:.2f} dB{ci} "
            f"mean best val PSNR over {top['n']} trial(s).")
    others = t.cells.iloc[1:]
    if len(others):
        tested = others[others["p_holm"].notna()]
        sig = int((tested["p_holm"] < 0.05).sum())
        untestable = len(others) - len(tested)
        text += (f" It is significantly better than {sig} of {len(others)} other strategies"
                 + (f" ({untestable} untestable with fewer than 2 trials)" if untestable else "") + ".")
    for name, tab in (("KL annealing", t.kl), ("teacher forcing", t.tf)):
        if tab is not None and len(tab) > 1:
            second = tab.iloc[1]
            text += (f" By {name} alone: {tab.iloc[0][tab.columns[0]]} leads ({tab.iloc[0]['psnr_mean']:.2f} vs "
                     f"{second['psnr_mean']:.2f} dB for {second[tab.columns[0]]}"
                     + (f", p={second['p_holm']:.3g}" if pd.notna(second["p_holm"]) else "") + ").")
    if "baseline_psnr" in top and pd.notna(top["baseline_psnr"]):
        text += f" Copying the last context frame scores {top['baseline_psnr']:.2f} dB on the same sequences."
    return text


def sampler_name(data: StudyData) -> str:
    cfg = StudyRecord.of(data.study).study_config or {}
    sampler = cfg.get("sampler") if isinstance(cfg, dict) else None
    return str(sampler.get("name", "") if isinstance(sampler, dict) else sampler or "")


def summary_lines(data: StudyData) -> list[tuple[str, str]]:
    sampler = sampler_name(data)
    directions = ", ".join(d.name.lower() for d in data.study.directions)
    lines = [("study", data.name), ("storage", redact(data.storage_url)),
             ("objective", f"{data.objective_name()} ({directions})"), ("trials", data.counts_line()),
             ("generated", dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S"))]
    if sampler:
        lines.insert(3, ("sampler", str(sampler)))
    return lines


def _sections(t: StrategyTables) -> list[tuple[str, pd.DataFrame, bool]]:
    out = [("Strategy grid: mean best val PSNR ± 95% CI half-width (n)", t.grid, True),
           ("Strategies ranked (KL annealing x teacher forcing)", tables.display_strategies(t.cells, ["kl", "tf"]),
            False)]
    if t.kl is not None:
        out.append(("KL annealing alone (over teacher-forcing schedules and seeds; paired by schedule and seed)",
                    tables.display_strategies(t.kl, ["kl"]), False))
    if t.tf is not None:
        out.append(("Teacher forcing alone (over KL schedules and seeds; paired by schedule and seed)",
                    tables.display_strategies(t.tf, ["tf"]), False))
    if t.importances:
        out.append(("Parameter importances (fANOVA, Optuna)", pd.DataFrame(
            {"parameter": list(t.importances), "importance": list(t.importances.values())}), False))
    return out


def write_csvs(data: StudyData, t: StrategyTables, out: Path) -> list[Path]:
    paths = []
    for name, df, index in [("strategies.csv", t.cells, False), ("grid.csv", t.grid, True),
                            ("strategies_kl.csv", t.kl, False), ("strategies_tf.csv", t.tf, False),
                            ("trials.csv", data.frame, False)]:
        if df is not None:
            (out / name).write_text(tables.csv_frame(df).to_csv(index=index))
            paths.append(out / name)
    if t.importances:
        pd.Series(t.importances, name="importance").rename_axis("parameter").to_csv(out / "importances.csv")
        paths.append(out / "importances.csv")
    return paths


def markdown(data: StudyData, t: StrategyTables) -> str:
    md = [f"# Study report: {data.name}", ""]
    md += [f"- **{k}**: {v}" for k, v in summary_lines(data)]
    md += ["", f"> {answer(data, t)}", "", f"_Method_: {METHOD}", ""]
    for title, df, index in _sections(t):
        md += [f"## {title}", "", tables.markdown_table(df, index=index), ""]
    md += ["## Figures", "", "Interactive figures (per-frame PSNR per strategy, learning curves, schedules, "
           "optimisation history, parallel coordinates, importances) are in [report.html](report.html); "
           "the numbers are in the CSV files next to this one.", "",
           "## Every trial", "", tables.markdown_table(tables.trials_table(data.frame, data.param_names)), ""]
    return "\n".join(md)


def html_report(data: StudyData, t: StrategyTables) -> str:
    body = [f"<h1>Study report: {esc(data.name)}</h1>",
            '<p class="meta">' + " · ".join(f"<b>{esc(k)}</b>: {esc(v)}" for k, v in summary_lines(data)) + "</p>",
            f'<div class="answer">{esc(answer(data, t))}</div>', f'<p class="meta">{esc(METHOD)}</p>']
    for title, df, index in _sections(t):
        body += [f"<h2>{esc(title)}</h2>", tables.scroll_table(df, index=index)]
    body.append("<h2>Figures</h2>")
    for name in REPORT_FIGURES:
        body.append(render(name, lambda name=name: figures.STUDY_FIGURES[name](data))[0])
    body += ["<h2>Every trial</h2>", tables.scroll_table(tables.trials_table(data.frame, data.param_names))]
    return page(f"{data.name}: study report", "\n".join(body))


def build_report(data: StudyData, out: Path) -> list[Path]:
    """Write report.md, report.html and the CSVs into out; returns the files written."""
    t = strategy_tables(data)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_csvs(data, t, out)
    write_atomic(out / "report.md", markdown(data, t))
    write_atomic(out / "report.html", html_report(data, t))
    return [out / "report.md", out / "report.html", *paths]


def log_report(data: StudyData, paths: list[Path], uri: str | None, root: str | Path | None) -> str:
    """Log the report files to the study's parent MLflow run; returns a line saying what happened.

    The URI: --tracking-uri, else MLFLOW_TRACKING_URI, else the one the study recorded (unless
    its password was redacted), else the embedded default under the runs root.
    """
    record = StudyRecord.of(data.study)
    parent = record.mlflow_parent_run_id
    if not parent:
        return "not logged to MLflow: the study has no parent run (it ran with tracking off)"
    uri = study_tracking_uri(uri, record.mlflow_tracking_uri, root)  # as the study's workers find it
    if uri == "off":
        return "not logged to MLflow: tracking is off"
    from vpsearch.tracking import make_tracker
    try:
        tracker = make_tracker(uri, runs_root(root), data.name)
        try:
            tracker.ensure_parent(record.study_config or {}, sampler_name(data), redact(data.storage_url), parent_run_id=parent)
            tracker.log_study_artifacts(paths, "report")
        finally:
            tracker.close()
    except Exception as e:  # the report is written either way; tracking trouble is a warning
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"warning: report not logged to MLflow ({redact(uri)}): {first}"
    return f"logged to MLflow run {parent} ({redact(uri)}) under report/"

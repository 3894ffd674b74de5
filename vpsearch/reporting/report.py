"""`vpsearch report`: the study's answer as Markdown, self-contained HTML and CSV.

Which KL annealing and which teacher-forcing schedule work, by how much and how sure:
strategy tables (mean best val PSNR over seeds with 95% t-intervals, tested against the
best strategy), the trials behind them, and the figures. Logged to the study's parent
MLflow run when the study has one.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd

from vpsearch.reporting import figures, tables
from vpsearch.reporting.html import esc, page, render, write_atomic, write_page
from vpsearch.reporting.study import StudyData
from vpsearch.search.records import StudyRecord
from vpsearch.settings import redact, runs_root, study_tracking_uri

REPORT_FIGURES = ["strategy_means", "frame_psnr", "learning_curves", "schedules", "history", "parallel",
                  "importances", "replay"]

METHOD = ("A trial's value is its best validation PSNR over epochs (PSNR averaged over the predicted frames and "
          "sequences, mean of the z samples). A configuration's value is the mean over its seeds, counted only "
          "when every seed completed. A strategy's value is the mean over its complete configurations; its 95% "
          "Student-t interval is over the seeds of its one configuration (seed noise) or, when it holds several, "
          "over their means (spread over configurations, not seed noise), and is left out with fewer than two. "
          "n: configurations x seeds. A strategy that lost seeds or configurations to pruning or failure is "
          "flagged: its mean is over the survivors only, so it is ranked after the complete strategies and not "
          "tested. Complete rows are compared with the top row: paired t-test over the seeds both ran (Welch's "
          "t-test when they share fewer than 2), Holm-corrected over the rows; * p<0.05, ** p<0.01, *** p<0.001; "
          "no mark: not distinguishable from the best.")


def verdict(data: StudyData, t: tables.StrategyTables) -> str:
    """The first thing the report says: does the best strategy beat the trivial predictor?"""
    top = t.cells.iloc[0]
    name = "copying the first frame" if data.baseline_name == "copy-first" else "copying the last context frame"
    if pd.isna(top["psnr_mean"]):
        return "No strategy has a configuration whose seeds all completed: nothing can be compared yet."
    if pd.isna(top["baseline_psnr"]):
        return f"The best strategy scores {top['psnr_mean']:.2f} dB; no trial recorded the {data.baseline_name} baseline."
    gain = top["psnr_mean"] - top["baseline_psnr"]
    beats = "beats" if gain > 0 else "does NOT beat"
    return (f"The best strategy {beats} {name}: {top['psnr_mean']:.2f} dB vs {top['baseline_psnr']:.2f} dB on the "
            f"same validation sequences ({gain:+.2f} dB).")


def answer(data: StudyData, t: tables.StrategyTables) -> str:
    """One paragraph that answers the study's question in words, the verdict first."""
    top = t.cells.iloc[0]
    text = verdict(data, t)
    if pd.isna(top["psnr_mean"]):
        return text
    ci = (f" [95% CI over {tables.interval_text(top)} {top['psnr_ci_low']:.2f}, {top['psnr_ci_high']:.2f}]"
          if top["interval_over"] else f" ({top['interval_note']})")
    text += (f" Best strategy: KL {top['kl']}, teacher forcing {top['tf']}: {top['psnr_mean']:.2f} dB{ci}, "
             f"n = {top['n']} (configurations x seeds).")
    if top["incomplete"]:
        text += f" Caution: it is {tables.flag_text(top)}."
    others = t.cells.iloc[1:]
    if len(others):
        complete = others[~others["incomplete"].astype(bool) & others["psnr_mean"].notna()]
        tested = complete[complete["p_holm"].notna()]
        sig = int((tested["p_holm"] < 0.05).sum())
        flagged = int(others["incomplete"].sum())
        untested = len(complete) - len(tested)
        text += (f" Of the {len(complete)} other complete strategies, it is significantly better than {sig}"
                 + (f" ({untested} could not be tested: too few seeds or configurations)" if untested else "")
                 + (f"; {flagged} more lost trials to pruning or failure and are not compared" if flagged else "")
                 + ".")
    for name, tab in (("KL annealing", t.kl), ("teacher forcing", t.tf)):
        if tab is not None and len(tab) > 1 and not pd.isna(tab.iloc[1]["psnr_mean"]):
            first, second = tab.iloc[0], tab.iloc[1]
            caution = " (both incomplete: survivors' means)" if first["incomplete"] and second["incomplete"] else \
                " (incomplete: survivors' mean)" if first["incomplete"] else ""
            a, b = first[tab.columns[0]], second[tab.columns[0]]
            p = f", p={second['p_holm']:.3g}" if pd.notna(second["p_holm"]) else ""
            if round(first["psnr_mean"], 2) == round(second["psnr_mean"], 2):
                text += f" By {name} alone: {a} and {b} tie ({first['psnr_mean']:.2f} dB each{p}){caution}."
            else:
                text += (f" By {name} alone: {a} leads ({first['psnr_mean']:.2f} vs {second['psnr_mean']:.2f} dB "
                         f"for {b}{p}){caution}.")
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


def _sections(t: tables.StrategyTables) -> list[tuple[str, pd.DataFrame, pd.DataFrame, str, bool]]:
    """(title, CSV frame, display frame, CSV name, index) of every table the registry builds here."""
    out = []
    for spec in tables.STRATEGY_TABLES.values():
        built = spec.build(t)
        if built is not None:
            out.append((spec.title, built[0], built[1], spec.csv, spec.index))
    return out


def write_csvs(data: StudyData, t: tables.StrategyTables, out: Path) -> list[Path]:
    paths = []
    for _, numbers, _, name, index in _sections(t):
        (out / name).write_text(tables.csv_frame(numbers).to_csv(index=index))
        paths.append(out / name)
    (out / "trials.csv").write_text(tables.csv_frame(data.frame).to_csv(index=False))
    return [*paths, out / "trials.csv"]


def markdown(data: StudyData, t: tables.StrategyTables) -> str:
    md = [f"# Study report: {data.name}", "", f"> {answer(data, t)}", ""]
    md += [f"- **{k}**: {v}" for k, v in summary_lines(data)]
    md += ["", f"_Method_: {METHOD}", ""]
    for title, _, shown, _, index in _sections(t):
        md += [f"## {title}", "", tables.markdown_table(shown, index=index), ""]
    md += ["## Figures", "", "Interactive figures (per-frame PSNR per strategy, learning curves, schedules, "
           "optimisation history, parallel coordinates, importances, replay) are in [report.html](report.html); "
           "the numbers are in the CSV files next to this one.", "",
           "## Every trial", "", tables.markdown_table(tables.trials_table(data.frame, data.param_names)), ""]
    return "\n".join(md)


def html_report(data: StudyData, t: tables.StrategyTables) -> str:
    body = [f"<h1>Study report: {esc(data.name)}</h1>", f'<div class="answer">{esc(answer(data, t))}</div>',
            '<p class="meta">' + " · ".join(f"<b>{esc(k)}</b>: {esc(v)}" for k, v in summary_lines(data)) + "</p>",
            f'<p class="meta">{esc(METHOD)}</p>']
    for title, _, shown, _, index in _sections(t):
        body += [f"<h2>{esc(title)}</h2>", tables.scroll_table(shown, index=index)]
    body.append("<h2>Figures</h2>")
    for name in REPORT_FIGURES:
        body.append(render(name, lambda name=name: figures.STUDY_FIGURES[name](data))[0])
    body += ["<h2>Every trial</h2>", tables.scroll_table(tables.trials_table(data.frame, data.param_names))]
    return page(f"{data.name}: study report", "\n".join(body), plotly_beside=True)


def build_report(data: StudyData, out: Path) -> list[Path]:
    """Write report.md, report.html and the CSVs into out; returns the files written."""
    t = tables.strategy_tables(data)
    out.mkdir(parents=True, exist_ok=True)
    paths = write_csvs(data, t, out)
    write_atomic(out / "report.md", markdown(data, t))
    pages = write_page(out / "report.html", html_report(data, t))
    return [out / "report.md", *pages, *paths]


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
            # the compact report (Markdown and CSVs): the interactive page and its plotly.js stay on disk
            tracker.log_study_artifacts([p for p in paths if p.suffix not in (".html", ".js")], "report")
        finally:
            tracker.close()
    except Exception as e:  # the report is written either way; tracking trouble is a warning
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"warning: report not logged to MLflow ({redact(uri)}): {first}"
    html_page = next((p for p in paths if p.suffix == ".html"), None)
    return (f"logged to MLflow run {parent} ({redact(uri)}) under report/ (Markdown and CSVs"
            + (f"; the interactive {html_page.name} stays in {html_page.parent}" if html_page else "") + ")")

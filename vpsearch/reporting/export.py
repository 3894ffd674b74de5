"""`vpsearch export-best`: the configuration to retrain with, and the evidence for it.

The folder holds best.yaml (a complete training config: `vpsearch train --config
best.yaml` reruns it as is), report.md / report.html (metrics with intervals over the
configuration's seeds, per-frame PSNR, curves, the GIF, the rerun command, package
versions, git commit, dataset path and fingerprint), environment.json, the run's
outputs and the checkpoint when it was kept.

--by mean-over-seeds (default) picks the configuration (config hash, seed excluded) with
the highest mean best val PSNR over its seeds and exports its best seed; --by single
picks the single best trial. With no repeats in the study the two agree.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pandas as pd

from vpsearch.config import config_from_dict
from vpsearch.errors import UserError
from vpsearch import provenance
from vpsearch.reporting import figures, tables
from vpsearch.reporting.html import esc, img_data_uri, page, render, write_atomic, write_page
from vpsearch.reporting.stats import t_interval
from vpsearch.reporting.study import ReportError, StudyData, resolve_run_dir
from vpsearch.reporting.tables import CellTrials
from vpsearch.search.records import TrialRecord, trial_by_number

By = Literal["mean-over-seeds", "single"]
# run outputs copied next to the report (trainer.py's run-dir layout)
RUN_FILES = ["metrics.csv", "frame_psnr.csv", "samples/best.gif", "samples/best_strip.png", "curves.png",
             "schedules.png", "frame_psnr.png"]


@dataclass
class Choice:
    trial: int  # the trial whose config, run and checkpoint are exported
    group: list[int]  # its configuration's completed trials (seeds)
    by: By
    skipped: list[str] = field(default_factory=list)  # better-looking configurations that lost seeds


@dataclass
class Exported:
    """What the two report renderings share."""

    data: StudyData
    c: Choice
    row: pd.Series  # the exported trial's row of the trial frame
    metrics: pd.DataFrame
    env: dict
    copied: dict[str, Path]  # run-relative name -> copy in the export folder
    yaml_text: str


def choose(data: StudyData, by: By) -> Choice:
    """The trial to export. mean-over-seeds: the configuration with the highest mean over its seeds,
    among those whose seeds all completed (Choice.skipped says which better-looking ones were not);
    single: the best complete trial."""
    done = data.require_completed()
    done = done[done["val_psnr"].notna() & done["number"].isin(list(data.configs))]
    if done.empty:
        raise ReportError(f"study {data.name!r}: no completed trial recorded its training config; nothing to export")
    if by == "single":
        best = done.loc[done["val_psnr"].idxmax()]
        group = done[done["configuration"] == best["configuration"]]
        return Choice(int(best["number"]), group["number"].tolist(), by)
    cells = CellTrials(data.counted, data.repeats)
    complete = cells.complete_configurations()
    skipped = []
    for cid, g in cells.configurations().items():
        if cid in complete:
            continue
        states = g["state"].value_counts()
        lost = ", ".join(f"{n} {s.lower()}" for s, n in states.items() if s != "COMPLETE")
        have = int(states.get("COMPLETE", 0))
        if have:  # a partial mean could look best; it is not evidence of a configuration
            partial = float(g.loc[g["state"] == "COMPLETE", "val_psnr"].mean())
            skipped.append((partial, f"configuration #{cid} ({g.iloc[0]['strategy']}): {have} of "
                                     f"{max(len(g), data.repeats)} seeds complete ({lost or 'seeds missing'}), "
                                     f"partial mean {partial:.2f} dB"))
    if not complete:
        raise ReportError(f"study {data.name!r}: no configuration has all its {data.repeats} seed(s) complete; "
                          "export one trial with --by single")
    means = {cid: (float(g["val_psnr"].mean()), len(g)) for cid, g in complete.items()}
    # highest mean; among equal means, more seeds is better evidence
    cid = max(means, key=lambda c: means[c])
    group = complete[cid]
    return Choice(int(group.loc[group["val_psnr"].idxmax(), "number"]), group["number"].tolist(), by,
                  [why for partial, why in sorted(skipped, reverse=True) if partial > means[cid][0]])


def metrics_table(data: StudyData, c: Choice, test: dict | None = None) -> pd.DataFrame:
    f = data.frame.set_index("number")
    rows = []
    for col, name, digits in [("val_psnr", "best val PSNR (dB)", 2), ("val_psnr_final", "final-epoch val PSNR (dB)", 2),
                              ("val_ssim", "val SSIM at the best epoch", 3),
                              ("baseline_psnr", "copy-last-frame PSNR (dB)", 2)]:
        iv = t_interval(f.loc[c.group, col].tolist())
        own = f.at[c.trial, col]
        if pd.isna(own) and iv.n == 0:
            continue
        ci = "" if iv.n < 2 else f" [{iv.low:.{digits}f}, {iv.high:.{digits}f}]"
        rows.append({"metric": name, f"trial {c.trial}": "—" if pd.isna(own) else f"{own:.{digits}f}",
                     "mean over seeds [95% CI]": "—" if iv.n == 0 else f"{iv.mean:.{digits}f}{ci}", "n": iv.n})
    if test and "psnr" in test:  # the exported checkpoint on unseen sequences: the honest number
        base = "copy-first" if data.baseline_name == "copy-first" else "copy-last"
        for name, key in [(f"test PSNR ({test['sequences']} sequences, {test['horizon']} frames)", "psnr"),
                          (f"test {base} PSNR, same sequences", "baseline"), (f"test gain over {base}", "gain"),
                          ("test PSNR of the first predicted frame", "first_frame_psnr"),
                          (f"test {base} PSNR of the first frame", "first_frame_baseline")]:
            rows.append({"metric": name, f"trial {c.trial}": f"{test[key]:+.2f}" if key == "gain" else
                         f"{test[key]:.2f}", "mean over seeds [95% CI]": "", "n": 1})
    return pd.DataFrame(rows)


def copy_run_outputs(run: Path | None, out: Path, trial: int) -> dict[str, Path]:
    """The run's outputs next to the report, and its checkpoint linked (a hard link: no second copy
    on disk) or, across file systems, copied. A file every completed run writes that is missing is
    an error, never silently left out; a checkpoint the study did not keep is not."""
    copied: dict[str, Path] = {}
    if run is None:
        return copied
    missing = [rel for rel in RUN_FILES if not (run / rel).is_file()]
    if missing:
        raise ReportError(f"trial {trial}'s run folder {run} lacks {', '.join(missing)}: it was moved or cleaned "
                          "since the trial completed; pass --root of the runs folder that holds it")
    for rel in RUN_FILES:
        copied[rel] = Path(shutil.copy2(run / rel, out / Path(rel).name))
    ckpt = run / "checkpoints" / "best.pt"
    if ckpt.is_file():
        target = out / "best.pt"
        target.unlink(missing_ok=True)
        try:
            os.link(ckpt, target)
        except OSError:  # another file system, or links not allowed: one copy
            shutil.copy2(ckpt, target)
        copied["checkpoint"] = target
    return copied


def test_evaluation(ckpt: Path | None, cfg_data_root: str) -> dict[str, float | int | str]:
    """The exported checkpoint on the test split, with its copy-last (or copy-first) baseline: the
    best of many configurations picked on validation overestimates itself (the winner's curse)."""
    if ckpt is None:
        return {"note": "no checkpoint kept for this trial: retrain with the command above to test it"}
    from vpsearch.data import load_split
    from vpsearch.training.checkpoint import model_from_checkpoint
    from vpsearch.training.device import own_random_stream
    from vpsearch.training.engine import evaluate

    try:
        model, cfg, _ = model_from_checkpoint(ckpt, "cpu")
        cfg.data.root = cfg_data_root
        data = load_split(cfg.data, cfg.data.test_split)
        cpu = __import__("torch").device("cpu")
        with own_random_stream(cfg.eval.seed, cpu):  # the draws validation scored on
            ev = evaluate(model, data, cfg, cpu, samples=1, horizon=cfg.eval.n_future,
                          max_sequences=cfg.eval.max_sequences)
    except UserError as e:  # the test split is not on this machine, or it holds no true frames
        return {"note": f"not evaluated on the test split: {e}"}
    return {"psnr": ev.psnr, "baseline": ev.baseline_copy_last_psnr, "gain": ev.psnr - ev.baseline_copy_last_psnr,
            "first_frame_psnr": ev.psnr_per_frame[0], "first_frame_baseline": ev.baseline_per_frame[0],
            "sequences": ev.n_sequences, "horizon": ev.horizon, "split": cfg.data.test_split}


def portable_config(raw: dict, rec: TrialRecord) -> dict:
    """The trial's config as best.yaml: the device, threads and precision it trained with, and a
    data root that resolves from anywhere (absolute, or builtin:)."""
    raw = json.loads(json.dumps(raw))
    if rec.device:
        raw["train"]["device"] = rec.device
    if rec.threads:
        raw["train"]["num_threads"] = rec.threads
    if (rec.provenance or {}).get("amp"):
        raw["train"]["amp"] = rec.provenance["amp"]
    root = str(raw["data"]["root"])
    if not root.startswith("builtin:"):
        raw["data"]["root"] = str(Path(root).expanduser().resolve())
    return raw


def export_best(data: StudyData, out: Path, by: By = "mean-over-seeds", test: bool = True,
                without_run: bool = False) -> tuple[list[Path], Choice]:
    """Write the export folder; returns its files and the choice (with what it skipped).

    The trial's run folder must be found (its outputs are promised), unless without_run: then
    the config, metrics and environment are exported alone (a run on another machine)."""
    c = choose(data, by)
    out.mkdir(parents=True, exist_ok=True)
    row = data.frame.set_index("number").loc[c.trial]
    rec = TrialRecord.of(trial_by_number(data.study, c.trial))
    raw = portable_config(data.configs[c.trial], rec)
    raw["name"] = f"{data.name}-best"
    cfg = config_from_dict(raw, f"study {data.name} trial {c.trial} config")  # validates before writing
    best_yaml = out / "best.yaml"
    command = f"vpsearch train --config {shlex.quote(str(best_yaml.resolve()))}"
    header = (f"# vpsearch export-best: study {data.name}, trial {c.trial} (by {by}; best val PSNR "
              f"{row['val_psnr']:.3f} dB, seed {row['seed']}; trained on {rec.device or '?'} with "
              f"{rec.threads or 'default'} thread(s))\n# rerun: {command}\n")
    write_atomic(best_yaml, header + cfg.to_yaml())

    run = resolve_run_dir(str(row["run_dir"]), data.root)
    if row["run_dir"] and run is None and not without_run:
        raise ReportError(f"trial {c.trial}'s run folder {row['run_dir']} is not under {data.root} (moved, deleted, "
                          "or on another machine): pass --root of the runs folder that holds it, or --without-run "
                          "to export its config and metrics alone")
    copied = copy_run_outputs(run, out, c.trial)
    recorded = rec.provenance or {}
    env = {"study": data.name, "trial": c.trial, "by": by, "seeds_of_config": c.group, "command": command,
           "config_hash": cfg.hash(), "run_dir": str(run) if run else (row["run_dir"] or None),
           "run_dir_found": run is not None,
           "checkpoint": str(copied["checkpoint"]) if "checkpoint" in copied else None,
           "device": rec.device, "threads": rec.threads,
           "provenance": "recorded when the trial trained" if recorded else "collected at export (not recorded)",
           "packages": recorded.get("packages") or provenance.package_versions(),
           "git": recorded.get("git") or provenance.git_commit(),
           "dataset": recorded.get("dataset") or provenance.dataset_info(cfg.data.root),
           "test": test_evaluation(copied.get("checkpoint"), cfg.data.root) if test else {"note": "not asked"}}
    write_atomic(out / "environment.json", json.dumps(env, indent=2, default=str) + "\n")
    group_trials = tables.trials_table(data.frame[data.frame["number"].isin(c.group)], data.param_names)
    (out / "trials.csv").write_text(group_trials.to_csv(index=False))
    ex = Exported(data, c, row, metrics_table(data, c, env["test"]), env, copied, best_yaml.read_text())
    write_atomic(out / "report.md", markdown(ex))
    pages = write_page(out / "report.html", html_page(ex))
    return [best_yaml, out / "report.md", *pages, out / "environment.json", out / "trials.csv",
            *copied.values()], c


def _choice_text(data: StudyData, c: Choice, row: pd.Series) -> str:
    why = (f"the configuration with the highest mean best val PSNR over its {len(c.group)} seed(s); its best seed"
           if c.by == "mean-over-seeds" else "the single trial with the highest best val PSNR")
    text = (f"Trial {c.trial} of study {data.name}: {why}. KL annealing {row['kl']}, teacher forcing {row['tf']}, "
            f"seed {row['seed']}.")
    if c.skipped:
        text += " Skipped (not all seeds complete): " + "; ".join(c.skipped) + "."
    return text


def test_text(env: dict) -> str:
    """What the test split says about the export (or why it was not evaluated)."""
    t = env["test"]
    if "psnr" not in t:
        return t.get("note", "not evaluated on the test split")
    return (f"Evaluated on the {t['split']} split ({t['sequences']} sequences, {t['horizon']} predicted frames): "
            f"{t['psnr']:.2f} dB vs {t['baseline']:.2f} dB for the trivial predictor on the same sequences "
            f"({t['gain']:+.2f} dB); first predicted frame {t['first_frame_psnr']:.2f} vs "
            f"{t['first_frame_baseline']:.2f} dB. The configuration was picked as the best on validation, which "
            "overestimates it (the winner's curse): the test number is the one to quote.")


def _env_lines(env: dict) -> list[tuple[str, str]]:
    git = env["git"]
    ds = env["dataset"]
    fp = ds.get("fingerprint")
    return [("trained on", f"{env['device'] or '?'}, {env['threads'] or 'default'} thread(s)"),
            ("provenance", env["provenance"]),
            ("git commit", f"{git['commit']}" + (" (uncommitted changes)" if git.get("dirty") else "")),
            ("dataset", f"{ds['root']} -> {ds['path'] or ds.get('note')}"),
            ("dataset fingerprint", f"sha256 {fp['sha256']} ({fp['files']} files, {fp['bytes']} bytes; {fp['method']})"
             if fp else "—"),
            ("checkpoint", "best.pt (linked to the trial's run)" if env["checkpoint"] else
             "not kept (only the study's top trials keep checkpoints); retrain with the command above"
             if env["run_dir_found"] else f"the trial's run directory ({env['run_dir'] or 'not recorded'}) is not "
             "on this machine; retrain with the command above"),
            ("packages", ", ".join(f"{k} {v}" for k, v in env["packages"].items()))]


def markdown(ex: Exported) -> str:
    data, c, env, copied = ex.data, ex.c, ex.env, ex.copied
    md = [f"# Best configuration of study {data.name}", "", _choice_text(data, c, ex.row), "",
          "## Rerun", "", "```sh", env["command"], "```", "", "## Metrics", "", tables.markdown_table(ex.metrics), "",
          f"> {test_text(env)}", ""]
    for rel, title in [("samples/best.gif", "Prediction vs ground truth (best epoch)"),
                       ("frame_psnr.png", "Per-frame PSNR"), ("curves.png", "Training curves"),
                       ("schedules.png", "KL weight and teacher-forcing ratio")]:
        if rel in copied:
            md += [f"## {title}", "", f"![{title}]({copied[rel].name})", ""]
    md += ["Interactive per-frame PSNR over the seeds, learning curves and schedules: [report.html](report.html).", "",
           "## Environment", ""] + [f"- **{k}**: {v}" for k, v in _env_lines(env)] + [""]
    return "\n".join(md)


def html_page(ex: Exported) -> str:
    data, c, env, copied = ex.data, ex.c, ex.env, ex.copied
    groups = {f"trial {c.trial}": [c.trial]}
    if len(c.group) > 1:
        groups[f"mean over its {len(c.group)} seeds"] = c.group
    body = [f"<h1>Best configuration of study {esc(data.name)}</h1>",
            f'<div class="answer">{esc(_choice_text(data, c, ex.row))}</div>',
            "<h2>Rerun</h2>", f"<pre>{esc(env['command'])}</pre>", "<h2>Metrics</h2>", tables.scroll_table(ex.metrics),
            f'<p class="answer">{esc(test_text(env))}</p>']
    if "samples/best.gif" in copied:
        body += ["<h2>Prediction vs ground truth (best epoch)</h2>",
                 f'<img class="gif" alt="prediction vs truth" src="{img_data_uri(copied["samples/best.gif"])}">']
    body.append("<h2>Figures</h2>")
    body.append(render("frame_psnr", lambda: figures.frame_psnr(data, groups))[0])
    body.append(render("learning_curves", lambda: figures.learning_curves(data, groups))[0])
    body.append(render("schedules", lambda: figures.schedules(data, {f"trial {c.trial}": [c.trial]}))[0])
    if "metrics.csv" in copied:
        body.append(render("training_curves", lambda: figures.training_curves(copied["metrics.csv"]))[0])
    body += ["<h2>Environment</h2>", "<ul>" + "".join(f"<li><b>{esc(k)}</b>: {esc(v)}</li>"
                                                       for k, v in _env_lines(env)) + "</ul>",
             "<h2>best.yaml</h2>", f"<pre>{esc(ex.yaml_text)}</pre>"]
    return page(f"{data.name}: best configuration", "\n".join(body), plotly_beside=True)

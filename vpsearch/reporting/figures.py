"""Plotly figures of a study. Each returns a Figure or raises NoFigure(reason).

Group figures take ``groups``: label -> trial numbers (a strategy's seeds), so the study
report (every strategy) and the best-config export (one configuration's seeds) draw with
the same code. Bands are 95% t-intervals over the group's trials at each frame or epoch.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import optuna
import plotly.graph_objects as go
from plotly.colors import qualitative
from plotly.subplots import make_subplots

from vpsearch.config import Config, config_from_dict
from vpsearch.fmt import number
from vpsearch.reporting.stats import t_interval
from vpsearch.reporting.study import StudyData, resolve_run_dir
from vpsearch.schedules import KLAnnealing, TeacherForcing

PALETTE = qualitative.Plotly + qualitative.D3 + qualitative.Dark24
HEIGHT = 420
STATE_COLORS = {"COMPLETE": "#1f77b4", "PRUNED": "#ff7f0e", "FAIL": "#d62728", "RUNNING": "#2ca02c",
                "WAITING": "#7f7f7f"}


class NoFigure(Exception):
    """The data cannot support this figure (the reason is shown in its place)."""


WHOLE_AXES = ("epoch", "trial", "frame")  # x axes counted in whole numbers: no tick at 0.5


def _layout(fig: go.Figure, title: str, x: str, y: str) -> go.Figure:
    fig.update_layout(title=title, height=HEIGHT, template="plotly_white", margin=dict(l=60, r=20, t=50, b=50),
                      legend=dict(font=dict(size=10)))
    fig.update_xaxes(title_text=x)
    fig.update_yaxes(title_text=y)
    if x in WHOLE_AXES:
        xs = [float(v) for trace in fig.data if getattr(trace, "x", None) is not None for v in trace.x
              if isinstance(v, (int, float, np.integer, np.floating))]
        span = (max(xs) - min(xs)) if xs else 0
        fig.update_xaxes(tickformat="d", tick0=0, dtick=max(1, math.ceil(span / 12)))
    return fig


def _rgba(color: str, alpha: float) -> str:
    color = color.lstrip("#")
    r, g, b = (int(color[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def _band(fig: go.Figure, x: list, series: list[list[float]], name: str, color: str, **kw) -> None:
    """Mean line with a shaded 95% interval where at least two trials have the point."""
    ivs = [t_interval(v) for v in series]
    mean = [iv.mean for iv in ivs]
    if any(iv.n >= 2 for iv in ivs):
        lo = [iv.low if iv.n >= 2 else iv.mean for iv in ivs]
        hi = [iv.high if iv.n >= 2 else iv.mean for iv in ivs]
        fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], mode="lines", fill="toself",
                                 fillcolor=_rgba(color, 0.15), line=dict(width=0), hoverinfo="skip",
                                 showlegend=False, legendgroup=name, **kw))
    n = max(iv.n for iv in ivs)
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", name=f"{name} (n={n})", legendgroup=name,
                             line=dict(color=color), marker=dict(size=4), **kw))


def strategy_groups(data: StudyData) -> dict[str, list[int]]:
    done = data.completed.sort_values(["_kl_order", "_tf_order", "number"])
    return {s: g["number"].tolist() for s, g in done.groupby("strategy", sort=False)}


def strategy_means(data: StudyData) -> go.Figure:
    """Best val PSNR per KL x TF strategy: mean with 95% CI, and every trial as a dot beside it."""
    done = data.completed[data.completed["val_psnr"].notna()]
    if done.empty:
        raise NoFigure("no completed trial")
    fig = go.Figure()
    tf_order = list(done.sort_values("_tf_order")["tf"].unique())
    kls = list(done.sort_values("_kl_order")["kl"].unique())
    width = 0.7 / len(kls)  # each KL gets a slot within its teacher-forcing group
    for i, kl in enumerate(kls):
        g = done[done["kl"] == kl]
        color, offset = PALETTE[i % len(PALETTE)], (i - (len(kls) - 1) / 2) * width
        ivs = {tf: t_interval(gg["val_psnr"].tolist()) for tf, gg in g.groupby("tf")}
        tfs = [tf for tf in tf_order if tf in ivs]
        fig.add_trace(go.Scatter(
            x=[tf_order.index(t) + offset for t in tfs], y=[ivs[t].mean for t in tfs], mode="markers", name=kl,
            legendgroup=kl, marker=dict(size=12, symbol="diamond", color=color),
            text=[f"{kl} | {t}: n={ivs[t].n}" for t in tfs],
            error_y=dict(type="data", symmetric=False,
                         array=[0 if ivs[t].n < 2 else ivs[t].high - ivs[t].mean for t in tfs],
                         arrayminus=[0 if ivs[t].n < 2 else ivs[t].mean - ivs[t].low for t in tfs])))
        fig.add_trace(go.Scatter(
            x=[tf_order.index(t) + offset + width * 0.3 for t in g["tf"]], y=g["val_psnr"].tolist(), mode="markers",
            name=f"{kl} trials", legendgroup=kl, showlegend=False, marker=dict(size=6, color=_rgba(color, 0.55)),
            text=[f"trial {n}, seed {s}" for n, s in zip(g["number"], g["seed"])]))
    # preset names first, their settings on a second line, so long labels do not collide
    fig.update_xaxes(tickvals=list(range(len(tf_order))), ticktext=[t.replace(" (", "<br>(") for t in tf_order],
                     range=[-0.5, len(tf_order) - 0.5], tickangle=0)
    # the trivial predictor on the same sequences, inside the axis: 0.05 dB must not fill the height
    base = done["baseline_psnr"].dropna()
    if len(base):
        fig.add_hline(y=float(base.mean()), line=dict(color="gray", dash="dot"),
                      annotation_text=f"{data.baseline_name} {float(base.mean()):.2f} dB")
    return _layout(fig, "Best validation PSNR by strategy (mean, 95% CI, trials)", "teacher forcing", "val PSNR (dB)")


def _baseline_per_frame(data: StudyData, numbers: list[int]) -> list[float] | None:
    """Copy-last-frame PSNR per frame from a run's frame_psnr.csv (same sequences for every trial)."""
    for n in numbers:
        run = resolve_run_dir(str(data.frame.set_index("number").at[n, "run_dir"]), data.root)
        path = run / "frame_psnr.csv" if run else None
        if path and path.is_file():
            with path.open() as f:
                return [float(r["baseline_psnr"]) for r in csv.DictReader(f)]
    return None


def frame_psnr(data: StudyData, groups: dict[str, list[int]] | None = None) -> go.Figure:
    groups = groups or strategy_groups(data)
    series = {k: [data.frame_psnr[n] for n in v if n in data.frame_psnr] for k, v in groups.items()}
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise NoFigure("no trial recorded per-frame PSNR")
    fig = go.Figure()
    for i, (label, curves) in enumerate(series.items()):
        length = min(len(c) for c in curves)
        x = list(range(1, length + 1))
        _band(fig, x, [[c[j] for c in curves] for j in range(length)], label, PALETTE[i % len(PALETTE)])
    numbers = [n for v in groups.values() for n in v]
    base = _baseline_per_frame(data, numbers)
    if base:
        fig.add_trace(go.Scatter(x=list(range(1, len(base) + 1)), y=base, name="copy last frame",
                                 line=dict(color="gray", dash="dot")))
    else:
        b = data.frame.set_index("number").loc[numbers, "baseline_psnr"].dropna()
        if len(b):
            fig.add_hline(y=float(b.mean()), line=dict(color="gray", dash="dot"), annotation_text="copy last frame")
    return _layout(fig, "Per-frame validation PSNR at the best epoch (mean, 95% band)", "predicted frame",
                   "PSNR (dB)")


def learning_curves(data: StudyData, groups: dict[str, list[int]] | None = None) -> go.Figure:
    groups = groups or strategy_groups(data)
    fig = go.Figure()
    drawn = 0
    for i, (label, numbers) in enumerate(groups.items()):
        curves = [data.curves[n] for n in numbers if n in data.curves]
        if not curves:
            continue
        epochs = sorted({e for c in curves for e in c})
        _band(fig, epochs, [[c[e] for c in curves if e in c] for e in epochs], label, PALETTE[i % len(PALETTE)])
        drawn += 1
    if not drawn:
        raise NoFigure("no trial reported validation PSNR per epoch")
    label = data.curve_label()
    return _layout(fig, f"{label.removesuffix(' (dB)')} per epoch (mean, 95% band)", "epoch", label)


# how a trial's state shows in the per-trial curves (its colour is its own)
STATE_DASH = {"COMPLETE": "solid", "RUNNING": "dot", "PRUNED": "dash", "FAIL": "dashdot"}


def trial_curves(data: StudyData) -> go.Figure:
    """Every trial's val-PSNR curve, a colour per trial and a legend of trial numbers (the line
    style says its state): the live view of a running study."""
    if not data.curves:
        raise NoFigure("no trial has reported an epoch yet")
    fig = go.Figure()
    states = data.frame.set_index("number")["state"]
    for i, (n, c) in enumerate(sorted(data.curves.items())):
        st = states.get(n, "?")
        fig.add_trace(go.Scatter(
            x=list(c), y=list(c.values()), mode="lines+markers", name=f"trial {n}" + (
                "" if st == "COMPLETE" else f" ({st.lower()})"),
            line=dict(color=PALETTE[i % len(PALETTE)], width=1.8, dash=STATE_DASH.get(st, "solid")),
            marker=dict(size=5), hovertemplate=f"trial {n} ({st.lower()}), epoch %{{x}}: %{{y:.2f}}<extra></extra>"))
    label = data.curve_label()
    fig = _layout(fig, f"{label.removesuffix(' (dB)')} per epoch, every trial", "epoch", label)
    return fig


def _config(raw: dict | None) -> Config | None:
    """A trial's stored config, or None when it does not validate (written by another version)."""
    if raw is None:
        return None
    try:
        cfg = config_from_dict(raw, "trial config")
        KLAnnealing.from_config(cfg)  # iteration-unit schedules need steps_per_epoch
        return cfg
    except ValueError:
        return None


def schedules(data: StudyData, groups: dict[str, list[int]] | None = None) -> go.Figure:
    """KL weight and teacher-forcing ratio per epoch, recomputed from each strategy's config."""
    groups = groups or strategy_groups(data)
    kl_cfgs: dict[str, Config] = {}
    tf_cfgs: dict[str, Config] = {}
    by_number = data.frame.set_index("number")
    for numbers in groups.values():
        for n in numbers:
            cfg = _config(data.configs.get(n))
            if cfg is not None:
                kl_cfgs.setdefault(by_number.at[n, "kl"], cfg)
                tf_cfgs.setdefault(by_number.at[n, "tf"], cfg)
    if not kl_cfgs:
        raise NoFigure("no trial recorded a config this version of vpsearch can read")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("KL weight (multiplies beta)", "teacher-forcing ratio"))
    for i, (label, cfg) in enumerate(kl_cfgs.items()):
        kl = KLAnnealing.from_config(cfg)
        per_epoch = cfg.train.steps_per_epoch if kl.unit == "iteration" else 1
        # iteration schedules are sampled 20 times per epoch so cycles keep their saw-tooth shape
        step = max(1, per_epoch // 20)
        ts = list(range(0, kl.total, step))
        fig.add_trace(go.Scatter(x=[t / per_epoch for t in ts], y=[kl.weight(t) for t in ts], name=f"KL {label}",
                                 line=dict(color=PALETTE[i % len(PALETTE)])), row=1, col=1)
    for i, (label, cfg) in enumerate(tf_cfgs.items()):
        tf = TeacherForcing.from_config(cfg.schedule)
        epochs = list(range(cfg.train.epochs))
        fig.add_trace(go.Scatter(x=epochs, y=[tf.ratio(e) for e in epochs], name=label, line_shape="hv",
                                 line=dict(color=PALETTE[(i + 3) % len(PALETTE)], dash="dash")), row=1, col=2)
    fig = _layout(fig, "Schedules used", "epoch", "")
    fig.update_yaxes(range=[-0.05, 1.05])
    return fig


def _optuna_plot(make: Callable[[], go.Figure], title: str) -> go.Figure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's ExperimentalWarning on target/timeline
        fig = make()
    fig.update_layout(title=title, height=HEIGHT, template="plotly_white")
    return fig


def history(data: StudyData) -> go.Figure:
    """Best val PSNR per trial in the order trials ran, the best so far, and where pruned trials stopped."""
    f = data.frame.sort_values("number")
    done = f[(f["state"] == "COMPLETE") & f["val_psnr"].notna()]
    if done.empty:
        raise NoFigure("no completed trial")
    fig = go.Figure()
    for i, (kl, g) in enumerate(done.sort_values("_kl_order").groupby("kl", sort=False)):
        fig.add_trace(go.Scatter(x=g["number"], y=g["val_psnr"], mode="markers", name=f"KL {kl}",
                                 marker=dict(size=8, color=PALETTE[i % len(PALETTE)]),
                                 text=[f"{s} seed {sd}" for s, sd in zip(g["strategy"], g["seed"])]))
    fig.add_trace(go.Scatter(x=done["number"], y=done["val_psnr"].cummax(), mode="lines", line_shape="hv",
                             name="best so far", line=dict(color="black", width=2)))
    pruned = f[f["state"] == "PRUNED"]
    if len(pruned):
        fig.add_trace(go.Scatter(x=pruned["number"], y=pruned["val_psnr"], mode="markers", name="pruned (best epoch)",
                                 marker=dict(size=8, symbol="x-thin",
                                             line=dict(width=2, color=STATE_COLORS["PRUNED"]))))
    return _layout(fig, "Optimisation history", "trial", "best val PSNR (dB)")


def _short(name: str) -> str:
    """An axis label that fits: the parameter's last dotted part (schedule.kl_anneal_type -> kl_anneal_type)."""
    return name.rsplit(".", 1)[-1]


def parallel(data: StudyData) -> go.Figure:
    """One line per completed trial across its searched params, coloured by best val PSNR.

    Drawn here rather than with Optuna's plot, whose full dotted names overlap and are clipped
    at the figure's edges: short labels tilted so neighbours do not collide, values with 3
    significant digits, categorical axes with their values, log-spaced lr axes."""
    done = data.completed[data.completed["val_psnr"].notna()]
    if done.empty or not data.param_names:
        raise NoFigure("no completed trial with search parameters")
    dims = []
    for p in data.param_names:
        col = done[f"param:{p}"]
        numeric = col.dropna().map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)).all()
        if numeric and col.notna().any():
            values = col.astype(float)
            if values.notna().all() and (values > 0).all() and values.max() / values.min() >= 20:
                # searched on a log scale: equal spacing per decade, ticks in real values
                ticks = [10.0 ** e for e in range(math.floor(math.log10(values.min())),
                                                  math.ceil(math.log10(values.max())) + 1)]
                dims.append(dict(label=_short(p), values=np.log10(values), tickvals=np.log10(ticks),
                                 ticktext=[number(t, 2) for t in ticks]))
            elif values.isna().any():
                # a conditional parameter some trials did not use: drawn at its own tick below the range
                lo, hi = float(values.min()), float(values.max())
                gap = lo - max(hi - lo, abs(lo) or 1.0) * 0.25
                ticks = sorted(set(values.dropna()))
                ticks = ticks if len(ticks) <= 6 else [lo, (lo + hi) / 2, hi]
                dims.append(dict(label=_short(p), values=values.fillna(gap), tickvals=[gap, *ticks],
                                 ticktext=["unused", *(number(t, 3) for t in ticks)]))
            else:
                dims.append(dict(label=_short(p), values=values, tickformat=".3~g"))
        else:
            cats = sorted({str(v) for v in col})
            dims.append(dict(label=_short(p), values=[cats.index(str(v)) for v in col],
                             tickvals=list(range(len(cats))), ticktext=cats, range=[-0.2, len(cats) - 0.8]))
    psnr = done["val_psnr"].astype(float)
    dims.append(dict(label="best val PSNR (dB)", values=psnr, tickformat=".2f"))
    fig = go.Figure(go.Parcoords(
        line=dict(color=psnr, colorscale="Viridis"),  # the last axis is the colour's key
        dimensions=dims, labelangle=-12, labelside="top", labelfont=dict(size=11), tickfont=dict(size=10),
        rangefont=dict(size=9)))
    fig = _layout(fig, "Parallel coordinates: searched params of completed trials (colour: best val PSNR)", "", "")
    # room above the axes for the tilted labels, and at the sides for the outer axes' tick labels
    fig.update_layout(margin=dict(l=80, r=90, t=90, b=30))
    return fig


MIN_IMPORTANCE_TRIALS = 10


def importances(data: StudyData) -> go.Figure:
    from vpsearch.reporting.tables import param_importances

    if len(data.completed) < MIN_IMPORTANCE_TRIALS:
        raise NoFigure(f"importances need at least {MIN_IMPORTANCE_TRIALS} completed trials to mean anything "
                       f"(fANOVA on fewer ranks noise; {len(data.completed)} completed)")
    try:
        imp = param_importances(data)
    except ValueError as e:
        raise NoFigure(str(e)) from None
    names = sorted(imp, key=imp.get)
    fig = go.Figure(go.Bar(x=[imp[n] for n in names], y=names, orientation="h",
                           text=[f"{imp[n]:.2f}" for n in names], marker_color=PALETTE[0]))
    return _layout(fig, "Parameter importances (fANOVA) for best val PSNR", "importance", "")


def timeline(data: StudyData) -> go.Figure:
    if data.frame.empty:
        raise NoFigure("no trial yet")
    return _optuna_plot(lambda: optuna.visualization.plot_timeline(data.study), "Trials over time")


def states(data: StudyData) -> go.Figure:
    counts = data.counts()
    names = [s for s in counts if counts[s] or s in ("COMPLETE", "RUNNING")]
    fig = go.Figure(go.Bar(x=names, y=[counts[s] for s in names], text=[counts[s] for s in names],
                           marker_color=[STATE_COLORS[s] for s in names]))
    return _layout(fig, f"Trials by state ({len(data.frame)} in all)", "", "trials")


def training_curves(metrics_csv: Path) -> go.Figure:
    """A run's per-epoch training columns (metrics.csv): loss terms, schedules, lr."""
    if not metrics_csv.is_file():
        raise NoFigure(f"{metrics_csv.name} not found")
    with metrics_csv.open() as f:
        rows = list(csv.DictReader(f))
    cols = [("loss", "loss"), ("mse", "MSE"), ("kl", "KL"), ("kl_beta", "beta x KL weight (last step)"),
            ("tfr", "teacher-forcing ratio"), ("lr", "lr")]
    fig = make_subplots(rows=2, cols=3, subplot_titles=[t for _, t in cols])
    for i, (key, title) in enumerate(cols):
        pts = [(int(r["epoch"]), float(r[key])) for r in rows if r.get(key) not in ("", None)]
        pts = [(e, v) for e, v in pts if math.isfinite(v)]
        at = dict(row=i // 3 + 1, col=i % 3 + 1)
        fig.add_trace(go.Scatter(x=[e for e, _ in pts], y=[v for _, v in pts], name=title, showlegend=False,
                                 line=dict(color=PALETTE[i])), **at)
        ys = [v for _, v in pts]
        if ys and max(ys) - min(ys) <= 1e-9 * max(1e-30, abs(max(ys))):
            # plotly pads a constant series by +-1, which hides an lr of 2e-3 at "0"
            v = ys[0]
            fig.update_yaxes(range=[v - abs(v) * 0.5 - 1e-12, v + abs(v) * 0.5 + 1e-12], **at)
    fig.update_layout(title="Training curves of the exported run", height=HEIGHT + 120, template="plotly_white",
                      margin=dict(l=60, r=20, t=70, b=40))
    return fig


def replay(data: StudyData) -> go.Figure:
    """What `vpsearch replay` measured on this study (its saved replay.json): pruners, and the
    samplers' best-so-far curves against the random expectation."""
    import json

    from vpsearch.settings import study_dir

    path = study_dir(data.name, data.root) / "replay.json"
    if not path.is_file():
        raise NoFigure(f"no replay was run (vpsearch replay {data.name})")
    r = json.loads(path.read_text())
    fig = make_subplots(rows=1, cols=2, subplot_titles=(
        f"Pruners: epochs saved vs regret (median of {r['pruners'][0]['orders']} orders)"
        if r["pruners"] else "Pruners: not replayed",
        "Samplers: best configuration so far (median over seeds)" if r["samplers"] else "Samplers: not replayed"))
    names = sorted({p["pruner"] for p in r["pruners"]})
    for p in r["pruners"]:
        i = names.index(p["pruner"])
        fig.add_trace(go.Scatter(x=[100 * p["epochs_saved"]], y=[p["regret"]], mode="markers+text",
                                 name=f"{p['pruner']} ({p['workers']} workers)", text=[p["pruner"]],
                                 textposition="top center", marker=dict(size=12, color=PALETTE[i % len(PALETTE)],
                                 symbol="circle" if p["workers"] <= 2 else "diamond")), row=1, col=1)
    for i, smp in enumerate(r["samplers"]):
        fig.add_trace(go.Scatter(x=list(range(1, len(smp["curve"]) + 1)), y=smp["curve"], mode="lines",
                                 name=smp["sampler"], line=dict(color=PALETTE[i % len(PALETTE)])), row=1, col=2)
    fig = _layout(fig, f"Replay of {r['study']} on its recorded curves", "", "")
    fig.update_xaxes(title_text="epochs saved (%)", row=1, col=1)
    fig.update_yaxes(title_text="regret", row=1, col=1)
    fig.update_xaxes(title_text="configurations tried", dtick=max(1, len(r["samplers"][0]["curve"]) // 10)
                     if r["samplers"] else None, row=1, col=2)
    fig.update_yaxes(title_text="best value so far", row=1, col=2)
    return fig


# name -> figure of a whole study; dashboards and the report pick from these by name
STUDY_FIGURES: dict[str, Callable[[StudyData], go.Figure]] = {
    "strategy_means": strategy_means, "frame_psnr": frame_psnr, "learning_curves": learning_curves,
    "schedules": schedules, "history": history, "parallel": parallel, "importances": importances,
    "trial_curves": trial_curves, "timeline": timeline, "states": states, "replay": replay,
}


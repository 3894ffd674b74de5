"""`vpsearch dashboard`: an HTML dashboard of a study laid out by a definition in dashboards/.

A definition (dashboards/study.yaml) names panels (figures of figures.STUDY_FIGURES or
the tables below) and how wide each is on a grid. `--serve` serves the page on
127.0.0.1 and rebuilds it whenever a trial changes state or reports an epoch; the page
polls status.json and reloads itself when the version there changes, so a running
study can be watched.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import http.server
import json
import sys
import threading
from pathlib import Path
from typing import Callable

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

import vpsearch
from vpsearch.config import format_validation_error, read_yaml
from vpsearch.reporting import figures, tables
from vpsearch.reporting.html import esc, page, render, write_atomic
from vpsearch.reporting.study import ReportError, StudyData, load_study, study_data


KPI_NAMES = {"FAIL": "failed", "WAITING": "queued"}


def _summary(data: StudyData) -> str:
    c = data.counts()
    # complete, pruned and failed always (a 0 is news too); other states when there are any
    kpis = [(KPI_NAMES.get(k, k.lower()), v) for k, v in c.items() if v or k in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")]
    done = data.completed[data.completed["val_psnr"].notna()]
    if len(done):
        best = done.loc[done["val_psnr"].idxmax()]
        kpis.append((f"best val PSNR (trial {best['number']})", f"{best['val_psnr']:.2f}"))
    return '<div class="kpis">' + "".join(f'<div class="kpi"><b>{esc(v)}</b>{esc(k)}</div>' for k, v in kpis) + "</div>"


def _registered(name: str) -> Callable[[StudyData], str]:
    """A panel showing one of tables.STRATEGY_TABLES (the report's tables, the same registry)."""
    def panel(data: StudyData) -> str:
        spec = tables.STRATEGY_TABLES[name]
        built = spec.build(tables.strategy_tables(data, importances=name == "param_importances"))
        if built is None:
            raise ReportError(f"{name}: not available for this study")
        return tables.scroll_table(built[1], index=spec.index)
    return panel


def _trials(data: StudyData) -> str:
    return tables.scroll_table(tables.trials_table(data.frame, data.param_names).iloc[::-1])  # newest first


# name -> html of a table panel; figures come from figures.STUDY_FIGURES
TABLE_PANELS: dict[str, Callable[[StudyData], str]] = {
    "summary": _summary, "trials": _trials, **{name: _registered(name) for name in tables.STRATEGY_TABLES}}
PANELS = sorted([*TABLE_PANELS, *figures.STUDY_FIGURES])


class Panel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    show: str = Field(description="a figure or table name (PANELS)")
    span: int = Field(1, ge=1, le=4, description="grid columns the panel covers")
    title: str | None = Field(None, description="heading above the panel")

    @field_validator("show")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in PANELS:
            raise ValueError(f"unknown panel {v!r} (known: {', '.join(PANELS)})")
        return v


class Definition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field("Study {study}", description="{study} is replaced by the study name")
    columns: int = Field(2, ge=1, le=4)
    refresh_seconds: float = Field(5.0, gt=0, description="how often a served page checks for news")
    panels: list[Panel] = Field(min_length=1)


def definition_dirs() -> list[Path]:
    """Where definitions are looked up by name: ./dashboards, then the checkout's dashboards/."""
    return [Path.cwd() / "dashboards", Path(vpsearch.__file__).resolve().parent.parent / "dashboards"]


def load_definition(name_or_path: str) -> Definition:
    path = Path(name_or_path)
    if not path.is_file():
        found = [d / f"{name_or_path}.yaml" for d in definition_dirs() if (d / f"{name_or_path}.yaml").is_file()]
        if not found:
            known = sorted({p.stem for d in definition_dirs() if d.is_dir() for p in d.glob("*.yaml")})
            raise ReportError(f"dashboard definition {name_or_path!r}: no such file, and none of that name in "
                              f"{', '.join(map(str, definition_dirs()))} (known: {', '.join(known) or 'none'})")
        path = found[0]
    try:
        return Definition.model_validate(read_yaml(path))
    except ValidationError as e:
        raise ReportError(format_validation_error(e, str(path))) from None


def signature(study: optuna.Study) -> str:
    """Changes when a trial is added, changes state or reports an epoch: when to rebuild."""
    trials = study.get_trials(deepcopy=False)
    key = [(t.number, t.state.name, len(t.intermediate_values)) for t in trials]
    return hashlib.sha1(json.dumps(key).encode()).hexdigest()[:12]


RELOAD_JS = """<script>
(function () {
  // Served pages poll status.json and reload on a new version; a page opened from disk stays still.
  if (!location.protocol.startsWith("http")) return;
  const version = "%(version)s";
  async function poll() {
    try {
      const r = await fetch("status.json", {cache: "no-store"});
      if (r.ok && (await r.json()).version !== version) { location.reload(); return; }
    } catch (e) { /* server gone or busy: try again later */ }
    setTimeout(poll, %(ms)d);
  }
  setTimeout(poll, %(ms)d);
})();
</script>"""


def render_dashboard(data: StudyData, d: Definition, version: str) -> str:
    panels = []
    for p in d.panels:
        if p.show in TABLE_PANELS:
            try:
                inner = TABLE_PANELS[p.show](data)
            except ReportError as e:
                inner = f'<div class="missing">{esc(p.show)}: {esc(e)}</div>'
        else:
            inner = render(p.show, lambda p=p: figures.STUDY_FIGURES[p.show](data))[0]
        head = f"<h3>{esc(p.title)}</h3>" if p.title else ""
        span = min(p.span, d.columns)
        panels.append(f'<div class="panel" data-panel="{esc(p.show)}" style="grid-column: span {span}">'
                      f"{head}{inner}</div>")
    now = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
    title = d.title.replace("{study}", data.name)
    body = (f"<h1>{esc(title)}</h1><p class=\"meta\">{esc(data.counts_line())} · updated {now} · "
            f'version <span id="version">{version}</span></p>'
            f'<div class="grid" style="grid-template-columns: repeat({d.columns}, minmax(0, 1fr))">'
            + "".join(panels) + "</div>")
    return page(title, body, RELOAD_JS % {"version": version, "ms": int(d.refresh_seconds * 1000)})


def build_dashboard(study: optuna.Study, storage_url: str, d: Definition, out: Path) -> str:
    """Write out/index.html and out/status.json; returns the version written."""
    version = signature(study)
    data = study_data(study, storage_url)
    write_atomic(out / "index.html", render_dashboard(data, d, version))
    write_atomic(out / "status.json", json.dumps({"version": version, "counts": data.counts(),
                                                  "updated": dt.datetime.now().isoformat()}))
    return version


class _Handler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")  # the page and status.json change under the same URL
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # one line per poll would drown the terminal
        pass


class DashboardServer:
    """Serves out/ on 127.0.0.1 (or host) and rebuilds the dashboard when the study changes."""

    def __init__(self, name: str, storage_url: str, d: Definition, out: Path, port: int = 8765,
                 poll_seconds: float | None = None, host: str = "127.0.0.1"):
        self.study = load_study(name, storage_url)
        self.storage_url, self.d, self.out = storage_url, d, out
        self.poll = poll_seconds or d.refresh_seconds
        self.version = build_dashboard(self.study, storage_url, d, out)
        handler = functools.partial(_Handler, directory=str(out))
        self.httpd = http.server.ThreadingHTTPServer((host, port), handler)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self.httpd.serve_forever, daemon=True),
                         threading.Thread(target=self._watch, daemon=True)]

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        host = self.httpd.server_address[0]
        return f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{self.httpd.server_address[1]}/index.html"

    def start(self) -> "DashboardServer":
        for t in self._threads:
            t.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                if signature(self.study) != self.version:
                    self.version = build_dashboard(self.study, self.storage_url, self.d, self.out)
            except Exception as e:  # a storage hiccup must not end the dashboard; say so and retry
                print(f"vpsearch dashboard: rebuild failed, retrying: {e}", file=sys.stderr)

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


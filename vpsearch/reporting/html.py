"""HTML pages that need no network: plotly.js from beside the page or inline, images as data URIs.

Reports are opened from disk on machines without internet. plotly.js is 3.5 MB: a report
folder holds one copy (``plotly-VERSION.min.js``, written once by write_page) that its pages
load by a relative path, so each page stays small; a page served alone (the dashboard) embeds
it. Nothing points outside the folder.
"""

from __future__ import annotations

import base64
import functools
import html
import os
import tempfile
from pathlib import Path
from typing import Callable

import plotly.graph_objects as go

from vpsearch.reporting.figures import NoFigure

PLOTLY_CONFIG = {"displaylogo": False, "responsive": True}

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1400px;
       padding: 16px 28px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 0.92em; }
.answer { background: #f3f8ff; border-left: 4px solid #1f77b4; padding: 8px 14px; margin: 12px 0; }
table.table { border-collapse: collapse; font-size: 0.86em; margin: 8px 0 16px; }
table.table th, table.table td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; white-space: nowrap; }
table.table th { background: #f5f5f5; position: sticky; top: 0; }
table.table tr:nth-child(even) td { background: #fafafa; }
.scroll { max-height: 520px; overflow: auto; }
.figure { margin: 10px 0; min-width: 0; }
.fig-title { font-weight: 600; font-size: 0.98em; margin: 4px 0 0 8px; }
.missing { color: #777; border: 1px dashed #ccc; padding: 12px; font-style: italic; }
.grid { display: grid; gap: 14px; }
.panel { border: 1px solid #e3e3e3; border-radius: 6px; padding: 6px; min-width: 0; overflow: auto; }
.kpis { display: flex; gap: 14px; flex-wrap: wrap; }
.kpi { border: 1px solid #e3e3e3; border-radius: 6px; padding: 8px 16px; min-width: 110px; }
.kpi b { display: block; font-size: 1.5em; }
pre, code { background: #f5f5f5; padding: 2px 5px; border-radius: 3px; }
pre { padding: 10px; overflow-x: auto; }
img.gif { image-rendering: pixelated; max-width: 100%; border: 1px solid #ddd; }
"""


@functools.lru_cache(maxsize=1)
def plotly_js() -> str:
    from plotly.offline import get_plotlyjs
    return get_plotlyjs()


TOOLBAR_ROOM = 40  # px above the plot area: plotly's toolbar (shown on hover, top right) sits there


def figure_html(fig: go.Figure, name: str) -> str:
    """A figure's div and its newPlot call; plotly.js itself comes once from page().

    The figure's title becomes a heading above the figure, where plotly's toolbar (top right,
    on hover) cannot cover it; the top margin keeps subplot titles below the toolbar."""
    title = fig.layout.title.text
    fig = go.Figure(fig)  # a copy: the caller's figure keeps its title
    own = fig.layout.margin.t if fig.layout.margin.t is not None else 100  # plotly's default
    fig.update_layout(title=None, margin=dict(t=max(TOOLBAR_ROOM, own) + 20 * _has_subplot_titles(fig)))
    body = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{name}", config=PLOTLY_CONFIG)
    head = f'<div class="fig-title">{html.escape(title)}</div>' if title else ""
    return f'<div class="figure" data-figure="{html.escape(name)}">{head}{body}</div>'


def _has_subplot_titles(fig: go.Figure) -> bool:
    return any(a.yref == "paper" and (a.y or 0) >= 1 for a in fig.layout.annotations or ())


def missing_html(name: str, reason: str) -> str:
    return (f'<div class="figure missing" data-figure-missing="{html.escape(name)}">'
            f"{html.escape(name)}: not shown, {html.escape(reason)}.</div>")


def render(name: str, make: Callable[[], go.Figure]) -> tuple[str, bool]:
    """(html, drawn): a figure, or a note saying why the data cannot support it."""
    try:
        return figure_html(make(), name), True
    except NoFigure as e:
        return missing_html(name, str(e)), False


def img_data_uri(path: Path) -> str:
    mime = {".gif": "image/gif", ".png": "image/png", ".jpg": "image/jpeg"}.get(path.suffix.lower(), "image/png")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def plotly_file() -> str:
    from plotly.offline import get_plotlyjs_version
    return f"plotly-{get_plotlyjs_version()}.min.js"


def page(title: str, body: str, script: str = "", plotly_beside: bool = False) -> str:
    """A complete page, plotly.js inline or (plotly_beside) loaded from plotly_file() next to it. The
    empty icon link stops browsers asking the server for favicon.ico."""
    lib = (f'<script type="text/javascript" src="{plotly_file()}"></script>' if plotly_beside
           else f'<script type="text/javascript">{plotly_js()}</script>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><link rel=\"icon\" href=\"data:,\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{CSS}</style>"
            f"{lib}</head>\n<body>\n{body}\n{script}\n</body></html>\n")


def write_page(path: Path, text: str) -> list[Path]:
    """Write a page made with plotly_beside, and plotly.js beside it unless already there; the files
    written."""
    lib = path.parent / plotly_file()
    written = []
    if not lib.is_file() or lib.stat().st_size != len(plotly_js().encode()):
        write_atomic(lib, plotly_js())
        written.append(lib)
    write_atomic(path, text)
    return [path, *written]


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a server never sends half a page."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is for everyone who can read the folder
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def esc(text: object) -> str:
    return html.escape(str(text))

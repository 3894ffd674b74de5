"""Reports and dashboards of a study, from the Optuna study alone (MLflow only receives them).

study.py       open a study, one row per trial (strategies: strategies.py, by effective schedule)
stats.py       t-intervals, paired/Welch tests, Holm correction
tables.py      strategy tables (registry STRATEGY_TABLES) and their Markdown/HTML renderings
figures.py     plotly figures (registry STUDY_FIGURES, used by reports and dashboards)
html.py        self-contained pages (plotly.js inline, images as data URIs)
report.py      `vpsearch report`        export.py   `vpsearch export-best`
dashboard.py   `vpsearch dashboard`
recorded.py    a study's curves recorded to replay on; replay.py `vpsearch replay`
"""

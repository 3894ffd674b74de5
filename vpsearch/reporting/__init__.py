"""Reports and dashboards of a study, from the Optuna study alone (MLflow only receives them).

study.py      open a study, one row per trial (strategies read from each trial's config)
stats.py      t-intervals, paired/Welch tests, Holm correction
tables.py     strategy tables and their Markdown/HTML renderings
figures.py    plotly figures (registry STUDY_FIGURES, used by reports and dashboards)
html.py       self-contained pages (plotly.js inline, images as data URIs)
report.py     `vpsearch report`        export.py   `vpsearch export-best`
dashboard.py  `vpsearch dashboard`     provenance.py versions, git commit, dataset fingerprint
"""

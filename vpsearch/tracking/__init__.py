"""Experiment tracking behind a small interface (see base.py); MLflow is the backend."""

from __future__ import annotations

import logging
from pathlib import Path

from vpsearch.settings import artifact_root, runs_root, study_dir, tracking_uri
from vpsearch.tracking.base import StudyTracker, TrialTracker
from vpsearch.tracking.probe import TrackingUnavailable

DEFAULT_KEEP_CHECKPOINTS = 3


def make_tracker(uri: str | None, root: Path | str | None, study_name: str,
                 keep_checkpoints: int | None = DEFAULT_KEEP_CHECKPOINTS) -> StudyTracker:
    """A tracker for one study.

    uri: None -> MLFLOW_TRACKING_URI or the embedded store (sqlite + artifact folder under
    ROOT/mlflow); "off" -> no tracking; http(s)://host:port -> an `mlflow server`, which must
    answer /health now (TrackingUnavailable within ~8 s otherwise, never a hang).
    keep_checkpoints: upload best checkpoints of the top-k trials only (None: all, 0: none).
    """
    if uri == "off":
        return StudyTracker()
    from vpsearch.tracking.probe import apply_env_defaults, check_reachable

    apply_env_defaults()
    resolved = tracking_uri(uri, root)
    if resolved == "off":
        return StudyTracker()
    library_logs_to(study_dir(study_name, root) / "logs" / "mlflow.log")
    if resolved.startswith("sqlite:///"):
        create_sqlite_store(resolved, root)
    check_reachable(resolved)
    from vpsearch.tracking.mlflow_tracker import MLflowStudyTracker

    return MLflowStudyTracker(resolved, runs_root(root), study_name, keep_checkpoints=keep_checkpoints)


LIBRARY_LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine", "huey")


def library_logs_to(path: Path) -> None:
    """MLflow's and Alembic's log lines ("Updating database tables", "Context impl SQLiteImpl")
    go to this file instead of the terminal, where vpsearch's own lines are.

    MLflow gives these loggers a stderr handler when it is imported; replacing it after
    the import keeps MLflow from putting it back."""
    import mlflow  # noqa: F401 - configures its loggers (once); we replace their handlers below

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path)
    except OSError:  # an unwritable study folder: the terminal stays clean, the lines are lost
        handler = logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        for old in logger.handlers:
            old.close()
        logger.handlers = [handler]
        logger.propagate = False


def create_sqlite_store(uri: str, root: Path | str | None = None) -> None:
    """Create (and migrate) an sqlite tracking store once, under a file lock; for the runs root's
    own store, also point its artifact locations at this root (embedded.relocate).

    MLflow builds its tables on the first client call; two processes doing that at once
    (two `study run` on a fresh root) break each other's migration ("duplicate column name").
    """
    import fcntl

    from vpsearch.settings import embedded_uri, make_dir

    db = Path(uri[len("sqlite:///"):])
    make_dir(db.parent, "the MLflow store folder", "pass --root a writable folder or --tracking-uri")
    with open(db.parent / f".{db.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        from mlflow import MlflowClient
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)  # builds the tables
        if uri == embedded_uri(root):
            from vpsearch.tracking.embedded import relocate
            relocate(db, artifact_root(root))


__all__ = ["StudyTracker", "TrialTracker", "TrackingUnavailable", "make_tracker", "DEFAULT_KEEP_CHECKPOINTS"]

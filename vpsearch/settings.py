"""Where things live: the runs root, the study storage, the tracking store.

Embedded defaults put everything under ./runs of the current directory (or --root);
the environment points the same commands at a cluster:
  VPSEARCH_ROOT        runs root (default ./runs)
  VPSEARCH_STORAGE     Optuna storage URL (default: a JournalStorage file under the root)
  MLFLOW_TRACKING_URI  MLflow tracking URI (default: sqlite store + artifact dir under the root)
Command-line flags beat the environment, which beats the defaults.
"""

from __future__ import annotations

import os
from pathlib import Path


def runs_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("VPSEARCH_ROOT") or "runs").expanduser().resolve()


def journal_path(root: str | Path | None = None) -> Path:
    return runs_root(root) / "optuna-journal.log"


def storage_url(storage: str | None = None, root: str | Path | None = None) -> str:
    """Optuna storage URL; 'journal:PATH' (or a bare .log path) names a journal file."""
    return storage or os.environ.get("VPSEARCH_STORAGE") or f"journal:{journal_path(root)}"


def mlflow_dir(root: str | Path | None = None) -> Path:
    return runs_root(root) / "mlflow"


def tracking_uri(uri: str | None = None, root: str | Path | None = None) -> str:
    """MLflow tracking URI; 'off' disables tracking."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{mlflow_dir(root) / 'mlflow.db'}"


def study_tracking_uri(explicit: str | None, recorded: str | None, root: str | Path | None = None) -> str:
    """The tracking URI a study's workers and reports use: --tracking-uri, else
    MLFLOW_TRACKING_URI, else the one the study recorded (unless its password was
    redacted, which cannot be used), else the embedded store under the runs root."""
    usable = recorded if recorded and "***" not in recorded else None
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or usable or tracking_uri(None, root)


def artifact_root(root: str | Path | None = None) -> Path:
    """Artifact folder of the embedded MLflow store."""
    return mlflow_dir(root) / "artifacts"


def study_dir(name: str, root: str | Path | None = None) -> Path:
    """Trial run directories, logs and reports of one study."""
    return runs_root(root) / "studies" / name


def relative_to_root(path: str | Path, root: str | Path | None = None) -> str:
    """A path as recorded in a study: relative to the runs root when inside it (so a copied or
    moved runs folder still finds it), absolute otherwise."""
    p, base = Path(path).resolve(), runs_root(root)
    try:
        return p.relative_to(base).as_posix()
    except ValueError:
        return str(p)


def under_root(recorded: str, root: str | Path | None = None) -> Path:
    """A recorded path on this machine: a relative one lies under the runs root."""
    p = Path(recorded).expanduser()
    return p if p.is_absolute() else runs_root(root) / p


def redact(url: str) -> str:
    """Hide the password of a storage/tracking URL (postgresql://user:***@host/db)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in cred else url
    return url

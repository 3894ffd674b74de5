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
import re
import tempfile
from pathlib import Path

from vpsearch.errors import UserError, os_error


def runs_root(root: str | Path | None = None) -> Path:
    return Path(root or os.environ.get("VPSEARCH_ROOT") or "runs").expanduser().resolve()


def journal_path(root: str | Path | None = None) -> Path:
    return runs_root(root) / "optuna-journal.log"


def storage_url(storage: str | None = None, root: str | Path | None = None) -> str:
    """Optuna storage URL; 'journal:PATH' (or a bare .log path) names a journal file."""
    return storage or os.environ.get("VPSEARCH_STORAGE") or f"journal:{journal_path(root)}"


def mlflow_dir(root: str | Path | None = None) -> Path:
    return runs_root(root) / "mlflow"


EMBEDDED = "embedded"  # how a study records the runs root's own MLflow store: it moves with the root


def embedded_uri(root: str | Path | None = None) -> str:
    """The embedded MLflow store of a runs root (sqlite + artifact folder under ROOT/mlflow)."""
    return f"sqlite:///{mlflow_dir(root) / 'mlflow.db'}"


def tracking_uri(uri: str | None = None, root: str | Path | None = None) -> str:
    """MLflow tracking URI; 'off' disables tracking; 'embedded' (or nothing set) is the runs root's
    own store; postgresql:// gets psycopg2 (with_driver)."""
    chosen = uri or os.environ.get("MLFLOW_TRACKING_URI") or EMBEDDED
    return embedded_uri(root) if chosen == EMBEDDED else with_driver(chosen)


def recorded_tracking_uri(uri: str, root: str | Path | None = None) -> str:
    """The tracking URI as a study records it: 'embedded' for the runs root's own store (so a
    copied or moved runs folder uses its own copy), the URI with its password hidden otherwise."""
    return EMBEDDED if uri == embedded_uri(root) else redact(uri)


def with_driver(url: str) -> str:
    """postgresql:// means psycopg2 (what vpsearch depends on), for study storage and tracking alike:
    SQLAlchemy 2.1 would pick psycopg 3, which is not installed."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            return f"postgresql+psycopg2://{rest}"
    return url


def study_tracking_uri(explicit: str | None, recorded: str | None, root: str | Path | None = None) -> str:
    """The tracking URI a study's workers and reports use: --tracking-uri, else
    MLFLOW_TRACKING_URI, else the one the study recorded (unless its password was
    redacted, which cannot be used), else the embedded store under the runs root."""
    usable = recorded if recorded and "***" not in recorded else None
    if explicit or os.environ.get("MLFLOW_TRACKING_URI"):
        return tracking_uri(explicit, root)
    return tracking_uri(usable, root)


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


def make_dir(path: str | Path, what: str, fix: str, error: type[UserError] = UserError) -> Path:
    """mkdir -p path and check that files can be created in it; otherwise one error naming
    the path, the reason (read-only, a file in the way, disk full) and the fix."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        # an existing read-only folder passes mkdir: try what the caller will do next
        fd, probe = tempfile.mkstemp(dir=path, prefix=".vpsearch-write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise os_error(e, path, f"creating {what}", fix, error) from None
    return path


# query parameters that carry a secret (libpq's password=, and tokens of HTTP proxies)
_SECRET_QUERY = re.compile(r"(?i)([?&](?:password|passwd|pwd|secret|token|access_token)=)([^&#]*)")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*:/*)(.*)$", re.S)


def _userinfo_password(url: str) -> tuple[str, str, str] | None:
    """(before, password, after) of scheme:[//]user:PASSWORD@host..., or None."""
    m = _SCHEME.match(url)
    if not m:
        return None
    prefix, rest = m.groups()
    authority, sep, query = rest.partition("?")
    if "@" not in authority:
        return None
    cred, host = authority.rsplit("@", 1)
    if ":" not in cred:
        return None
    user, password = cred.split(":", 1)
    return f"{prefix}{user}:", password, f"@{host}{sep}{query}"


def redact(url: str) -> str:
    """Hide the passwords of a storage/tracking URL: postgresql://user:***@host/db, ?password=***.

    Works on strings no parser accepts (a missing slash, a bad port), since those end up in
    error messages too."""
    url = _SECRET_QUERY.sub(r"\1***", url)
    parts = _userinfo_password(url)
    return url if parts is None else f"{parts[0]}***{parts[2]}"


def scrub(text: str, url: str) -> str:
    """text (an error message from a driver) with url and each of its passwords hidden."""
    secrets = [m.group(2) for m in _SECRET_QUERY.finditer(url)]
    parts = _userinfo_password(url)
    if parts is not None:
        secrets.append(parts[1])
    text = text.replace(url, redact(url))
    for secret in sorted(filter(None, set(secrets)), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


LOOPBACK = {"127.0.0.1", "localhost", "::1", "ip6-localhost"}


def listen_notice(host: str, port: int) -> list[str]:
    """Lines a server started on host:port prints when other machines can reach it.

    The UI and the dashboard have no authentication: anyone who reaches the port reads
    every run (and in the MLflow UI may edit or delete it), so binding beyond loopback is
    said out loud, with the addresses it really answers on."""
    if host in LOOPBACK or host.startswith("127."):
        return []
    if host in ("0.0.0.0", "::", ""):
        import socket
        where = (f"listening on {host or '0.0.0.0'}:{port}, every interface of this machine "
                 f"(e.g. http://{socket.getfqdn()}:{port}, http://127.0.0.1:{port})")
    else:
        where = f"listening on {host}:{port} (http://{host}:{port})"
    return [f"warning: {where}; this server has no authentication: anyone who can reach the port can read "
            "(and in the MLflow UI change or delete) the runs; bind 127.0.0.1 and use an SSH tunnel, "
            "or put an authenticating proxy in front"]

"""Is the tracking server there? A bounded /health probe and MLflow's HTTP retry defaults.

MLflow's own client retries a refused connection 7 times with exponential backoff
(minutes) before it raises; a study must instead fail fast when the server is missing
at start (within 10 s) and the sender must notice an outage quickly. So the start-up
check is our own probe with short timeouts, and the client's retries are turned off by
default (the sender retries itself, with the journal as the safety net).
"""

from __future__ import annotations

import os
import time

from vpsearch.errors import UserError

PROBE_CONNECT_TIMEOUT = 3.0
PROBE_READ_TIMEOUT = 5.0  # connect + read stays under the 10 s the issue allows

# Defaults only: a user's own MLFLOW_* settings win.
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "60",
    # vpsearch promises to run offline: no usage telemetry from a training process
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # MLflow 3 prints "View run ... at: URL" when a run ends: from the sender thread that would
    # interleave with the study's progress line and worker logs
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


class TrackingUnavailable(UserError):
    """The tracking server cannot be reached (a one-line user error in the CLI)."""


def apply_env_defaults() -> None:
    for key, value in MLFLOW_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def probe(uri: str, connect_timeout: float = PROBE_CONNECT_TIMEOUT,
          read_timeout: float = PROBE_READ_TIMEOUT) -> str | None:
    """None when GET URI/health answers 200, else a short description of what went wrong."""
    import requests

    url = uri.rstrip("/") + "/health"
    try:
        resp = requests.get(url, timeout=(connect_timeout, read_timeout))
    except requests.exceptions.ConnectTimeout:
        return f"no answer to connect within {connect_timeout:.0f} s"
    except requests.exceptions.ReadTimeout:
        return f"connected but no answer within {read_timeout:.0f} s"
    except requests.exceptions.ConnectionError as e:
        text = str(e)
        for hint in ("Connection refused", "Name or service not known", "No route to host",
                     "Temporary failure in name resolution", "Connection reset"):
            if hint in text:
                return hint.lower()
        return "connection failed"
    except requests.exceptions.RequestException as e:
        return type(e).__name__
    if resp.status_code != 200:
        return f"GET /health answered HTTP {resp.status_code}"
    return None


def is_database(uri: str) -> bool:
    """A database server as the tracking store (postgresql://, mysql://, ...), not a local sqlite file."""
    scheme = uri.partition("://")[0]
    return bool(scheme) and "://" in uri and not is_remote(uri) and not scheme.startswith(("sqlite", "file"))


def probe_database(uri: str, timeout: float = PROBE_CONNECT_TIMEOUT + 2) -> str | None:
    """None when a connection opens within timeout, else why not (password hidden)."""
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from vpsearch.settings import scrub

    # libpq / MySQL connect timeouts: without them an unroutable host hangs for minutes
    args = {"connect_timeout": max(2, int(timeout))} if uri.startswith(("postgres", "mysql")) else {}
    engine = None
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=NullPool)
        with engine.connect():
            return None
    except Exception as e:  # noqa: BLE001 - any failure is the answer, said in one line
        err = getattr(e, "orig", None) or e
        return scrub((str(err).strip().splitlines() or [type(err).__name__])[0][:200], uri)
    finally:
        if engine is not None:
            engine.dispose()


def check_reachable(uri: str) -> None:
    """Raise TrackingUnavailable (within ~8 s) if a remote tracking server or database does not answer."""
    if not (is_remote(uri) or is_database(uri)):
        return
    t0 = time.monotonic()
    problem = probe(uri) if is_remote(uri) else probe_database(uri)
    if problem is not None:
        from vpsearch.settings import redact

        what = "server" if is_remote(uri) else "database"
        raise TrackingUnavailable(
            f"MLflow tracking {what} {redact(uri)} is unreachable ({problem}, {time.monotonic() - t0:.1f} s): "
            f"start it, fix --tracking-uri / MLFLOW_TRACKING_URI, or pass --tracking-uri off")


def wait_healthy(uri: str, timeout: float, interval: float = 0.25) -> bool:
    """Poll /health until it answers (for a server we just started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe(uri, connect_timeout=1.0, read_timeout=2.0) is None:
            return True
        time.sleep(interval)
    return False

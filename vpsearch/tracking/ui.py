"""Starting an `mlflow server` process: `vpsearch ui` for the embedded store (and the tests).

The server runs in its own session (process group) because `mlflow server` starts
uvicorn as a child of its own: stopping the group is the only way not to leave an
orphan holding the port.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import IO

from vpsearch.errors import UserError
from vpsearch.settings import redact
from vpsearch.tracking import names
from vpsearch.tracking.probe import wait_healthy

SERVER_ENV = {
    # the GenAI job runner (an extra huey process) is of no use to a training study
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}


def server_command(backend_uri: str, artifacts: Path, host: str = "127.0.0.1", port: int = 5000,
                   default_artifact_root: str | None = None) -> list[str]:
    """`mlflow server` with served artifacts stored under `artifacts`.

    default_artifact_root: None -> artifacts are proxied by the server (mlflow-artifacts:/),
    so clients need no access to the folder (the at-scale setup).
    """
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
           "--serve-artifacts", "--artifacts-destination", artifacts.resolve().as_uri(),
           "--host", host, "--port", str(port), "--workers", "1"]
    if default_artifact_root:
        cmd += ["--default-artifact-root", default_artifact_root]
    return cmd


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerProcess:
    """An `mlflow server` child process: start, wait for /health, stop (whole group)."""

    def __init__(self, cmd: list[str], url: str, log: IO | int | None = subprocess.DEVNULL):
        self.cmd, self.url, self.log = cmd, url, log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "ServerProcess":
        env = {**SERVER_ENV, **os.environ}
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        if not wait_healthy(self.url, timeout):
            code = self.proc.poll()
            self.stop()
            raise RuntimeError(f"mlflow server at {self.url} did not become healthy in {timeout:.0f} s"
                               + (f" (exited with {code})" if code is not None else ""))
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group we created at start
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(5)
        self.proc = None


def study_page(uri: str, base_url: str, name: str | None) -> tuple[str, list[str]]:
    """(the URL of a study's runs table, the other studies' names) in the store at uri.

    name None: the newest study. The page is the model-training runs view with the study's
    saved columns (names.runs_url); with no study yet, the experiments list.
    """
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    studies = [e for e in client.search_experiments(order_by=["creation_time DESC"])
               if names.TAG_STUDY in e.tags]
    if name is not None:
        found = [e for e in studies if e.name == name] or [e for e in [client.get_experiment_by_name(name)] if e]
        if not found:
            known = ", ".join(e.name for e in studies) or "none yet"
            raise UserError(f"no study {name!r} in the MLflow store {redact(uri)} (studies there: {known})")
        studies = found + [e for e in studies if e.name != name]
    if not studies:
        return f"{base_url.rstrip('/')}/#/experiments", []
    exp = studies[0]
    view = names.MLFLOW_SHARED_VIEW + names.VIEW_KEY in exp.tags
    return names.runs_url(base_url, exp.experiment_id, view), [e.name for e in studies[1:]]


def can_open_browser() -> bool:
    """A browser can show a page here: a desktop session, and a person at the terminal."""
    desktop = sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or
                                                           os.environ.get("WAYLAND_DISPLAY"))
    return desktop and sys.stdout.isatty()

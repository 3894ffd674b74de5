"""`vpsearch ui` and `vpsearch sync`: thin commands over vpsearch.tracking."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from types import FrameType

from vpsearch.args import port_number
from vpsearch.errors import UserError
from vpsearch.settings import artifact_root, listen_notice, runs_root, tracking_uri


def cmd_ui(args: argparse.Namespace) -> int:
    from vpsearch.tracking.probe import is_remote
    from vpsearch.tracking import ui

    uri = tracking_uri(args.tracking_uri, args.root)
    if uri == "off":
        raise UserError("tracking is off (MLFLOW_TRACKING_URI=off): there is nothing to show")
    if is_remote(uri):
        print(f"MLflow UI: {uri}  (served by the tracking server itself)", flush=True)
        return 0
    if args.port == 0:  # any free port: pick it here so the address printed is the real one
        args.port = ui.free_port(args.host)
    if not ui.port_free(args.host, args.port):
        raise UserError(f"port {args.port} on {args.host} is in use (another MLflow UI?); pass --port N")
    if uri.startswith("sqlite:///"):
        from vpsearch.tracking import create_sqlite_store
        create_sqlite_store(uri, args.root)  # tables, and artifact locations of a moved runs folder
    arts = artifact_root(args.root)
    arts.mkdir(parents=True, exist_ok=True)
    # a wildcard bind answers on loopback too: probe and show that
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    url = f"http://{shown}:{args.port}"
    server = ui.ServerProcess(ui.server_command(uri, arts, args.host, args.port, default_artifact_root=arts.as_uri()),
                           url, log=None if args.verbose else subprocess.DEVNULL)
    # SIGTERM (e.g. from a supervisor) must stop the server too, like Ctrl-C does
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        for line in listen_notice(args.host, args.port):
            print(line, file=sys.stderr, flush=True)
        server.start(timeout=args.start_timeout)
        print(f"MLflow UI for {runs_root(args.root)}: {url}  (Ctrl-C stops it)", flush=True)
        assert server.proc is not None
        return server.proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def cmd_sync(args: argparse.Namespace) -> int:
    from vpsearch.tracking.sync import describe, sync_spool

    report = sync_spool(args.root, args.tracking_uri, force=args.force, rejected=args.rejected)
    print(describe(report), flush=True)
    return 0 if report.ok else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ui", help="start the MLflow UI on 127.0.0.1 for the runs root's tracking store")
    p.add_argument("--root", help="runs root (default ./runs or VPSEARCH_ROOT)")
    p.add_argument("--port", type=port_number, default=5000)
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--tracking-uri", help="default: MLFLOW_TRACKING_URI or the embedded store under the root")
    p.add_argument("--start-timeout", type=float, default=90.0, help=argparse.SUPPRESS)
    p.add_argument("--verbose", action="store_true", help="show the server's log")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("sync", help="upload tracking data left in the local spool (after an outage or crash)")
    p.add_argument("--root", help="runs root (default ./runs or VPSEARCH_ROOT)")
    p.add_argument("--tracking-uri", help="send to this server instead of the one each run recorded")
    p.add_argument("--force", action="store_true", help="also replay streams whose process still runs")
    p.add_argument("--rejected", action="store_true", help="also replay operations MLflow refused before "
                                                          "(rejected.jsonl), once their cause is fixed")
    p.set_defaults(func=cmd_sync)


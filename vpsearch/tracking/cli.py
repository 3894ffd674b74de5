"""`vpsearch ui` and `vpsearch sync`: thin commands over vpsearch.tracking."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from types import FrameType

from vpsearch.args import examples, port_number
from vpsearch.errors import UserError
from vpsearch.settings import artifact_root, listen_notice, mlflow_dir, runs_root, tracking_uri


def _show(url: str, others: list[str], args: argparse.Namespace, where: str) -> None:
    """Print the page (and open it in a browser where one can show it)."""
    print(f"MLflow UI for {where}: {url}", flush=True)
    if others:
        print(f"other studies there: {', '.join(others)} (vpsearch ui NAME)", flush=True)
    from vpsearch.tracking import ui

    if not args.no_browser and ui.can_open_browser():
        import webbrowser
        webbrowser.open(url)


def cmd_ui(args: argparse.Namespace) -> int:
    from vpsearch.tracking import library_logs_to, ui
    from vpsearch.tracking.probe import is_remote

    uri = tracking_uri(args.tracking_uri, args.root)
    if uri == "off":
        raise UserError("tracking is off (MLFLOW_TRACKING_URI=off): there is nothing to show")
    library_logs_to(mlflow_dir(args.root) / "ui.log")
    if is_remote(uri):
        url, others = ui.study_page(uri, uri, args.name)
        _show(url, others, args, "the tracking server (it serves the UI itself)")
        return 0
    if args.port == 0:  # any free port: pick it here so the address printed is the real one
        args.port = ui.free_port(args.host)
    if not ui.port_free(args.host, args.port):
        raise UserError(f"port {args.port} on {args.host} is in use (another MLflow UI?); pass --port N")
    if uri.startswith("sqlite:///"):
        from vpsearch.tracking import create_sqlite_store
        create_sqlite_store(uri, args.root)  # once, here (not by the server too); a moved root's locations
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
        # MLflow takes tens of seconds to come up on a small machine: say so before the wait
        print(f"starting MLflow on {url} for {runs_root(args.root)} (up to {args.start_timeout:g} s)...",
              file=sys.stderr, flush=True)
        server.start(timeout=args.start_timeout)
        page, others = ui.study_page(uri, url, args.name)
        _show(page, others, args, f"{runs_root(args.root)} (Ctrl-C stops it)")
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
    p = sub.add_parser("ui", help="the MLflow UI on a study's runs: objective, baseline, params, state",
                       description="Start the MLflow UI for the runs root's tracking store (or point at the "
                                   "tracking server) and print the page of a study's runs: the objective, the "
                                   "copy-last baseline, the searched params and the state, best first.",
                       epilog=examples("vpsearch ui quickstart", "vpsearch ui --root /scratch/runs --port 5001"))
    p.add_argument("name", metavar="NAME", nargs="?", help="study name (default: the newest study)")
    p.add_argument("--root", metavar="FOLDER", help="runs root (default: VPSEARCH_ROOT, else ./runs)")
    p.add_argument("--port", type=port_number, default=5000, help="port to serve on; 0: any free one (default: 5000)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--tracking-uri", metavar="URI", help="tracking store or server (default: MLFLOW_TRACKING_URI, "
                                                         "else the embedded store under the root)")
    p.add_argument("--no-browser", action="store_true", help="only print the page's address; a browser opens it "
                                                             "only on a desktop session anyway (default: off)")
    p.add_argument("--start-timeout", type=float, default=90.0, help=argparse.SUPPRESS)
    p.add_argument("--verbose", action="store_true", help="show the server's log (default: off)")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser("sync", help="upload tracking data left in the local spool (after an outage or crash)",
                       description="Upload tracking data left in the local spool (after an outage or a crash).",
                       epilog=examples("vpsearch sync", "vpsearch sync --rejected --root /scratch/runs"))
    p.add_argument("--root", metavar="FOLDER", help="runs root (default: VPSEARCH_ROOT, else ./runs)")
    p.add_argument("--tracking-uri", metavar="URI", help="send to this server instead of the one each run recorded "
                                                         "(default: the recorded one)")
    p.add_argument("--force", action="store_true", help="also replay streams whose process still runs (default: off)")
    p.add_argument("--rejected", action="store_true", help="also replay operations MLflow refused before "
                                                          "(rejected.jsonl), once their cause is fixed (default: off)")
    p.set_defaults(func=cmd_sync)


"""Subcommands of the reporting layer: report, export-best, dashboard (thin calls into the library).

Every one reads the study from --storage (default: VPSEARCH_STORAGE, else the journal
file under the runs root) and writes under runs/studies/NAME/ unless --out says where.
User errors (no such study, no completed trial, bad definition) raise ReportError, which
the main CLI prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from vpsearch.args import examples, port_number
from vpsearch.errors import UserError
from vpsearch.settings import listen_notice, make_dir, runs_root, storage_url, study_dir


def _common(p: argparse.ArgumentParser, kind: str) -> None:
    p.add_argument("name", metavar="NAME", help="study name (vpsearch study list)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage: journal:PATH or an RDB URL (default: "
                                                    "VPSEARCH_STORAGE, else journal:ROOT/optuna-journal.log)")
    p.add_argument("--root", metavar="FOLDER", help="runs root (default: VPSEARCH_ROOT, else ./runs)")
    p.add_argument("--out", metavar="FOLDER", help=f"output folder (default: ROOT/studies/NAME/{kind})")


def _out_dir(args: argparse.Namespace, kind: str) -> Path:
    """The output folder (created, writable), or one line naming it and --out."""
    out = Path(args.out) if args.out else study_dir(args.name, args.root) / kind
    return make_dir(out, f"the {kind} folder", "pass --out a writable folder")


def cmd_report(args: argparse.Namespace) -> int:
    from vpsearch.reporting.report import build_report, log_report
    from vpsearch.reporting.study import open_study_data

    url = storage_url(args.storage, args.root)
    data = open_study_data(args.name, url, runs_root(args.root))
    data.require_completed()  # fail before creating any folder
    out = _out_dir(args, "report")
    paths = build_report(data, out)
    print(f"report of study {args.name} ({data.counts_line()}) written to {out}:")
    for p in paths:
        print(f"  {p.name}")
    print(log_report(data, paths, args.tracking_uri, args.root))
    return 0


def cmd_export_best(args: argparse.Namespace) -> int:
    from vpsearch.reporting.export import export_best
    from vpsearch.reporting.study import open_study_data

    data = open_study_data(args.name, storage_url(args.storage, args.root), runs_root(args.root))
    data.require_completed()
    out = _out_dir(args, "best")
    paths, choice = export_best(data, out, args.by, test=not args.no_test, without_run=args.without_run)
    for why in choice.skipped:
        print(f"skipped {why}: not all its seeds completed")
    print(f"best configuration of study {args.name} (by {args.by}) exported to {out}:")
    for p in paths:
        print(f"  {p.name}")
    print(f"rerun: vpsearch train --config {out / 'best.yaml'}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from vpsearch.reporting.dashboard import DashboardServer, build_dashboard, load_definition
    from vpsearch.reporting.study import load_study

    url = storage_url(args.storage, args.root)
    definition = load_definition(args.definition)
    study = load_study(args.name, url)  # before any folder is made
    out = _out_dir(args, "dashboard")
    if not args.serve:
        build_dashboard(study, url, definition, out)
        print(f"dashboard of study {args.name} written to {out / 'index.html'}")
        return 0
    try:
        server = DashboardServer(args.name, url, definition, out, args.port, args.poll, args.host).start()
    except OSError as e:  # port in use, most likely
        raise UserError(f"cannot serve on {args.host}:{args.port}: {e.strerror or e}") from None
    for line in listen_notice(args.host, server.port):
        print(line, file=sys.stderr, flush=True)
    print(f"serving the dashboard of study {args.name} at {server.url} (rebuilt as trials finish; Ctrl-C stops)",
          flush=True)
    # `docker compose stop` and service managers send SIGTERM: stop as cleanly as on Ctrl-C
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("vpsearch dashboard: stopped", file=sys.stderr)
    finally:
        server.stop()
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    import json

    from vpsearch.reporting import replay
    from vpsearch.reporting.recorded import RecordedStudy
    from vpsearch.reporting.study import load_study

    path = Path(args.name)
    if path.suffix == ".json" or path.is_file():
        rec = RecordedStudy.load(path)
        out = Path(args.out) if args.out else path.with_suffix(".replay.json")
    else:
        rec = RecordedStudy.from_study(load_study(args.name, storage_url(args.storage, args.root)))
        out = Path(args.out) if args.out else study_dir(args.name, args.root) / "replay.json"
    if args.record:
        print(f"recording of {rec.name} ({len(rec.trials)} trials) written to {rec.save(Path(args.record))}",
              file=sys.stderr)
    pruners = args.pruner or ([] if args.sampler else replay.DEFAULT_PRUNERS)
    samplers = args.sampler or ([] if args.pruner else replay.DEFAULT_SAMPLERS)
    replay.check_names(pruners, samplers)
    done = replay.run_replay(rec, pruners, samplers, args.orders, args.workers or [2, 8], args.seeds,
                             racing=not args.sampler, stop_sampler=replay.DEFAULT_STOP_SAMPLER if not args.pruner
                             else None, skip_refused=not args.pruner)
    result = replay.as_json(done, rec)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(replay.format_tables(done, rec))
        print(f"\nsaved to {out}" + ("; `vpsearch report` shows it as a figure" if out.name == "replay.json" else ""))
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="strategy tables, figures and CSVs of a study (Markdown, HTML)",
                       description="Which KL-annealing and teacher-forcing strategy works best, with 95% intervals "
                                   "over seeds: tables, figures and CSVs (Markdown and HTML), also logged to the "
                                   "study's MLflow run.",
                       epilog=examples("vpsearch report quickstart", "vpsearch report annealing_vs_tfr --out report/"))
    _common(p, "report")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI to log the report to the study's parent "
                                                         "run; 'off' skips logging (default: MLFLOW_TRACKING_URI, "
                                                         "else the study's, else the embedded store)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export-best", help="best config (best.yaml) with its metrics, plots, GIF and environment",
                       description="The best configuration as best.yaml (which `vpsearch train --config` reruns as "
                                   "is), with its metrics, plots, GIF, the exact command and the environment.",
                       epilog=examples("vpsearch export-best quickstart",
                                       "vpsearch train --config runs/studies/quickstart/best/best.yaml"))
    _common(p, "best")
    p.add_argument("--by", choices=["mean-over-seeds", "single"], default="mean-over-seeds",
                   help="best configuration by its mean over seeds (default), or the single best trial")
    p.add_argument("--no-test", action="store_true", help="do not evaluate the exported checkpoint on the test "
                                                          "split (default: evaluate it, with its baseline)")
    p.add_argument("--without-run", action="store_true", help="export the config and metrics even when the "
                   "trial's run folder is not here (trained on another machine); default: that is an error")
    p.set_defaults(func=cmd_export_best)

    p = sub.add_parser("dashboard", help="HTML dashboard of a study from a definition in dashboards/",
                       description="An HTML dashboard of a study laid out by a definition in dashboards/; --serve "
                                   "serves it and refreshes it as trials finish.",
                       epilog=examples("vpsearch dashboard quickstart", "vpsearch dashboard quickstart --serve "
                                                                        "--definition compact"))
    _common(p, "dashboard")
    p.add_argument("--definition", default="study", help="definition name in dashboards/ or a YAML path "
                                                         "(default: study)")
    p.add_argument("--serve", action="store_true", help="serve on 127.0.0.1 and refresh as trials finish (default: off: write once)")
    p.add_argument("--host", default="127.0.0.1", help="interface for --serve (default 127.0.0.1: this machine "
                                                       "only; 0.0.0.0 in a container whose port is published)")
    p.add_argument("--port", type=port_number, default=8765, help="port for --serve; 0: any free port (default: 8765)")
    p.add_argument("--poll", type=float, default=None, metavar="SECONDS",
                   help="seconds between study checks (default: the definition's refresh_seconds)")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("replay", help="what pruning and Bayesian search would have saved, replayed on a study's "
                                      "own recorded curves (a study run with pruner none)",
                       description="What pruning, racing over seeds, the stop rule and Bayesian search would have "
                                   "saved, replayed on a study's own recorded curves (a study run with pruner none). "
                                   "Racing is replayed with the pruners, the stop rule with the samplers.",
                       epilog=examples("vpsearch replay annealing_vs_tfr",
                                       "vpsearch replay studies/recorded/pushing_grid.json --pruner median "
                                       "--pruner schedule_aware --orders 50"))
    p.add_argument("name", metavar="NAME", help="study name, or a recorded study file (.json)")
    p.add_argument("--storage", metavar="URL", help="Optuna storage (default: VPSEARCH_STORAGE, else the journal "
                                                    "under --root)")
    p.add_argument("--root", metavar="FOLDER", help="runs root (default: VPSEARCH_ROOT, else ./runs)")
    p.add_argument("--out", help="where the replay's JSON goes (default: ROOT/studies/NAME/replay.json, which "
                                 "`vpsearch report` shows)")
    p.add_argument("--pruner", action="append", metavar="NAME", help="replay this pruner (repeatable; default: "
                   "none, median, hyperband, patient and schedule_aware, unless --sampler is given)")
    p.add_argument("--sampler", action="append", metavar="NAME", help="replay this sampler (repeatable; default: "
                   "random, tpe, gp, cmaes and skopt, unless --pruner is given)")
    p.add_argument("--orders", type=_positive, default=20, help="random trial orders per pruner (default 20)")
    p.add_argument("--workers", type=_positive, action="append", help="simulated parallel workers (repeatable; "
                   "default: 2 and 8)")
    p.add_argument("--seeds", type=_positive, default=20, help="seeds per sampler (default 20; the stop rule "
                   "is replayed on half as many)")
    p.add_argument("--record", metavar="FILE", help="also write the study's recording (curves, params, seeds) "
                                                  "to FILE, to replay later or elsewhere (default: none)")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables (default: off)")
    p.set_defaults(func=cmd_replay)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n

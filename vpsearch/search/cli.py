"""Subcommands of the search layer: `study run|create|status|check` and `worker` (thin calls into library code)."""

from __future__ import annotations

import argparse
import json

from vpsearch.args import positive_int


def cmd_study_run(args: argparse.Namespace) -> int:
    from vpsearch import settings
    from vpsearch.search.launcher import RunOptions, run_study

    settings.make_dir(settings.runs_root(args.root), "the runs root (trial folders, logs, tracking spool)",
                      "pass --root (or set VPSEARCH_ROOT to) a writable folder")
    return run_study(RunOptions(args.study_file, workers=args.workers, devices=args.devices, storage=args.storage,
                                tracking_uri=args.tracking_uri, root=args.root, threads=args.threads,
                                storage_wait=args.storage_wait))


def cmd_study_create(args: argparse.Namespace) -> int:
    from vpsearch.search.launcher import RunOptions, create_study

    return create_study(RunOptions(args.study_file, storage=args.storage, tracking_uri=args.tracking_uri,
                                   root=args.root, storage_wait=args.storage_wait))


def cmd_study_status(args: argparse.Namespace) -> int:
    from vpsearch import settings
    from vpsearch.search.status import status_json, status_table
    from vpsearch.search.storage import load_optuna_study, require_existing
    from vpsearch.search.worker import open_study_storage

    url = settings.storage_url(args.storage, args.root)
    require_existing(url)  # reading a study creates nothing
    store, plan = open_study_storage(url, args.name, args.storage_wait)
    trials = load_optuna_study(store, args.name).get_trials(deepcopy=False)
    if args.json:
        print(json.dumps(status_json(plan, trials), indent=2, default=str))
    else:
        print(f"study {plan.name} in {store.shown} (sampler {plan.spec.sampler.name}, pruner {plan.spec.pruner.name})")
        print(status_table(plan, trials))
    return 0


def cmd_study_check(args: argparse.Namespace) -> int:
    from vpsearch.search.plan import load_study

    plan = load_study(args.study_file)
    print(f"{args.study_file}: ok: study {plan.name}, {plan.n_trials} trials "
          f"({len(plan.space)} parameters, {plan.spec.repeats} seed(s) each), sampler {plan.spec.sampler.name}, "
          f"pruner {plan.spec.pruner.name}, base {plan.spec.base} with {plan.base.train.epochs} epochs")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from vpsearch import settings
    from vpsearch.search.storage import require_existing
    from vpsearch.search.worker import WorkerOptions, run_worker

    url = settings.storage_url(args.storage, args.root)
    require_existing(url)  # a worker joins a study; it never creates the store
    settings.make_dir(settings.runs_root(args.root), "the runs root (trial folders, tracking spool)",
                      "pass --root (or set VPSEARCH_ROOT to) a writable folder")
    run_worker(WorkerOptions(args.study, url, device=args.device,
                             threads=args.threads, tracking_uri=args.tracking_uri, root=args.root, slot=args.slot,
                             deadline=args.deadline, parent_pid=args.parent_pid, storage_wait=args.storage_wait,
                             max_trials=args.max_trials))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", help="Optuna storage URL: journal:PATH (default runs/optuna-journal.log), "
                                     "sqlite:///PATH (one worker) or postgresql://USER:PASS@HOST/DB "
                                     "(env VPSEARCH_STORAGE)")
    p.add_argument("--root", help="runs root for storage, tracking and trial outputs (default ./runs, "
                                  "env VPSEARCH_ROOT)")
    p.add_argument("--storage-wait", type=float, default=60.0, metavar="SECONDS",
                   help="keep retrying an unreachable storage this long, with backoff (default 60)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser("study", help="hyperparameter studies: run, create, status, check")
    ssub = study.add_subparsers(dest="study_cmd", required=True, metavar="ACTION")

    p = ssub.add_parser("run", help="create or resume a study and run its trials on local workers")
    p.add_argument("study_file", metavar="STUDY.yaml")
    p.add_argument("--workers", type=positive_int, help="worker processes (default: the study's workers)")
    p.add_argument("--devices", help="cpu, auto, cuda, or cuda:0,cuda:1 (one worker per GPU)")
    p.add_argument("--threads", type=positive_int, help="CPU threads per worker (default: cores / workers)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI or 'off' (env MLFLOW_TRACKING_URI)")
    _common(p)
    p.set_defaults(func=cmd_study_run)

    p = ssub.add_parser("create", help="create (or check and update) a study for `vpsearch worker`s to join; "
                                       "starts no workers")
    p.add_argument("study_file", metavar="STUDY.yaml")
    p.add_argument("--tracking-uri", help="MLflow tracking URI the workers log to, or 'off' (env MLFLOW_TRACKING_URI)")
    _common(p)
    p.set_defaults(func=cmd_study_create)

    p = ssub.add_parser("status", help="table of a study's trials")
    p.add_argument("name", help="study name")
    p.add_argument("--json", action="store_true",
                   help="print JSON: each trial's number, state, value, params, seed, reason")
    _common(p)
    p.set_defaults(func=cmd_study_status)

    p = ssub.add_parser("check", help="validate a study YAML without running anything")
    p.add_argument("study_file", metavar="STUDY.yaml")
    p.set_defaults(func=cmd_study_check)

    p = sub.add_parser("worker", help="join a study: pull and train its trials until none is left")
    p.add_argument("--study", required=True, help="study name (its YAML is stored in the storage)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, auto, or cuda:free (a GPU of this machine "
                                                    "that no other worker holds; PostgreSQL storage)")
    p.add_argument("--threads", type=positive_int, help="CPU threads for training")
    p.add_argument("--tracking-uri", help="MLflow tracking URI or 'off' (default: the study's)")
    _common(p)
    # set by `study run` for the workers it spawns
    p.add_argument("--slot", type=int, help=argparse.SUPPRESS)
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    p.add_argument("--max-trials", type=positive_int, help="stop after this many trials")
    p.set_defaults(func=cmd_worker)

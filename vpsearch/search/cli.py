"""Search-layer subcommands: `study run|submit|create|status|list|check` and `worker` (thin calls into library code)."""

from __future__ import annotations

import argparse
import json

from vpsearch.args import examples, positive_int


def cmd_study_run(args: argparse.Namespace) -> int:
    from vpsearch.search.launcher import RunOptions, run_study

    return run_study(RunOptions(args.study_file, workers=args.workers, devices=args.devices, storage=args.storage,
                                tracking_uri=args.tracking_uri, root=args.root, threads=args.threads,
                                storage_wait=args.storage_wait, trials_per_device=args.trials_per_device))


def cmd_study_submit(args: argparse.Namespace) -> int:
    from vpsearch.search.slurm import SubmitOptions, submit
    from vpsearch.search.spec import StudyError

    if not args.slurm:
        raise StudyError("study submit: give --slurm (the one scheduler vpsearch submits to)")
    return submit(SubmitOptions(args.study_file, workers=args.workers, gpus_per_worker=args.gpus_per_worker,
                                trials_per_device=args.trials_per_device or 1, cpus_per_task=args.cpus_per_task,
                                partition=args.partition, time=args.time, account=args.account,
                                sbatch_args=args.sbatch_args, dry_run=args.dry_run, storage=args.storage,
                                tracking_uri=args.tracking_uri, root=args.root, storage_wait=args.storage_wait))


def cmd_study_create(args: argparse.Namespace) -> int:
    from vpsearch.search.launcher import RunOptions, create_study

    return create_study(RunOptions(args.study_file, storage=args.storage, tracking_uri=args.tracking_uri,
                                   root=args.root, storage_wait=args.storage_wait))


def cmd_study_status(args: argparse.Namespace) -> int:
    from vpsearch import settings
    from vpsearch.search.status import search_lines, status_json, status_table
    from vpsearch.search import slurm_jobs
    from vpsearch.search.records import StudyRecord
    from vpsearch.search.storage import load_optuna_study, require_existing
    from vpsearch.search.worker import open_study_storage

    url = settings.storage_url(args.storage, args.root)
    require_existing(url)  # reading a study creates nothing
    store, plan = open_study_storage(url, args.name, args.storage_wait)
    study = load_optuna_study(store, args.name)
    trials = study.get_trials(deepcopy=False)
    record = StudyRecord.of(study)
    jobs = record.slurm_jobs or []
    if args.json:
        out = status_json(plan, trials)
        out.update(raced_out=record.raced_out or {}, stopped=record.stopped)
        if jobs:
            out["slurm"] = slurm_jobs.status_json(jobs)
        print(json.dumps(out, indent=2, default=str))
    else:
        print(f"study {plan.name} in {store.shown} (sampler {plan.spec.sampler.name}, pruner {plan.spec.pruner.name})")
        print(status_table(plan, trials))
        for line in [*search_lines(plan, trials, record.raced_out, record.stopped), *slurm_jobs.status_lines(jobs)]:
            print(line)
    return 0


def cmd_study_list(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vpsearch import settings
    from vpsearch.search.status import study_rows
    from vpsearch.search.storage import open_storage, study_names

    url = settings.storage_url(args.storage, args.root)
    rows = []
    if not url.startswith("journal:") or Path(url[len("journal:"):]).is_file():  # reading creates nothing
        store = open_storage(url, wait=args.storage_wait)
        names = store.call(lambda: study_names(store), "listing studies")
        rows = study_rows(store, names)
        print(f"studies in {store.shown}:" if rows else f"no study in {store.shown} yet")
    else:
        print(f"no study under {settings.runs_root(args.root)} yet (no {url[len('journal:'):]})")
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    files = sorted(Path("studies").glob("*.yaml"))
    if files:
        from vpsearch.fmt import first_comment

        print("study files in ./studies (vpsearch study run FILE):")
        width = max(len(str(f)) for f in files)
        for f in files:
            print(f"  {str(f).ljust(width)}  {first_comment(f)}")
    return 0


def cmd_study_check(args: argparse.Namespace) -> int:
    from vpsearch.search.plan import load_study

    plan = load_study(args.study_file)
    print(f"{args.study_file}: ok: study {plan.name}, {plan.n_trials} trials "
          f"({len(plan.space)} parameters, {plan.spec.repeats} seed(s) each), sampler {plan.spec.sampler.name}, "
          f"pruner {plan.spec.pruner.name}, base {plan.spec.base} with {plan.base.train.epochs} epochs")
    if plan.spec.pruner.name == "schedule_aware":
        from vpsearch.search.pruners import unjudged_configurations

        checked, never = unjudged_configurations(plan)  # load_study refused the study if any is never judged
        print(f"pruner schedule_aware: {checked - len(never)} of {checked} checked configurations can be judged "
              "(and so pruned) before their last epoch")
    if not args.no_estimate:
        from vpsearch.data.builtin import resolve_root
        from vpsearch.search.launcher import worker_layout
        from vpsearch.search.timing import estimate_study

        devices, threads = worker_layout(plan.spec)
        resolve_root(plan.base.data.root)  # built-in data made once, as study run would
        print(estimate_study(plan, devices[0], threads).line(plan.n_trials, len(devices)))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from vpsearch import settings
    from vpsearch.search.storage import require_existing
    from vpsearch.search.worker import WorkerOptions, check_sharing, run_worker

    check_sharing(args.device, args.trials_per_device or 1)  # before the storage: the argument is wrong anyway
    url = settings.storage_url(args.storage, args.root)
    require_existing(url)  # a worker joins a study; it never creates the store
    settings.make_dir(settings.runs_root(args.root), "the runs root (trial folders, tracking spool)",
                      "pass --root (or set VPSEARCH_ROOT to) a writable folder")
    run_worker(WorkerOptions(args.study, url, device=args.device,
                             threads=args.threads, tracking_uri=args.tracking_uri, root=args.root, slot=args.slot,
                             deadline=args.deadline, parent_pid=args.parent_pid, storage_wait=args.storage_wait,
                             max_trials=args.max_trials, trials_per_device=args.trials_per_device or 1))
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage: journal:PATH, sqlite:///PATH (one worker) or postgresql://USER:PASS@HOST/DB "
                        "(default: VPSEARCH_STORAGE, else journal:ROOT/optuna-journal.log)")
    p.add_argument("--root", metavar="FOLDER", help="runs root for storage, tracking and trial outputs "
                                                    "(default: VPSEARCH_ROOT, else ./runs)")
    p.add_argument("--storage-wait", type=float, default=60.0, metavar="SECONDS",
                   help="keep retrying an unreachable storage this long, with backoff (default: 60)")


def _positive(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {n}")
    return n


def _per_device(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--trials-per-device", type=_positive, metavar="K",
                   help=f"{what}; size K from a trial's peak memory, docs/scale-out.md (default: 1)")


def _study_file(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_file", metavar="STUDY.yaml", help="the study: search space, objective, sampler, budget "
                                                           "(shipped ones in studies/)")


def _tracking(p: argparse.ArgumentParser, who: str = "",
              default: str = "MLFLOW_TRACKING_URI, else the embedded store under the root") -> None:
    p.add_argument("--tracking-uri", metavar="URI", help=f"MLflow tracking URI {who}or 'off' (default: {default})")


def add_commands(sub: argparse._SubParsersAction) -> None:
    study = sub.add_parser("study", help="hyperparameter studies: run, status, list, check, create, submit",
                           description="Hyperparameter studies: many trials of one search, in parallel.",
                           epilog=examples("vpsearch study run studies/quickstart.yaml",
                                           "vpsearch study status quickstart"))
    ssub = study.add_subparsers(dest="study_cmd", required=True, metavar="ACTION")

    p = ssub.add_parser("run", help="create or resume a study and run its trials on local workers",
                        description="Create (or resume) a study and run its trials on local worker processes, "
                                    "with live progress; ends with the best trial and what to run next.",
                        epilog=examples("vpsearch study run studies/quickstart.yaml",
                                        "vpsearch study run studies/annealing_vs_tfr.yaml --devices cuda:0,cuda:1"))
    _study_file(p)
    p.add_argument("--workers", type=positive_int, metavar="N", help="worker processes (default: the study's "
                                                                     "workers)")
    p.add_argument("--devices", metavar="DEVICES", help="cpu, auto, cuda, or cuda:0,cuda:1 (one worker per GPU) "
                                                        "(default: the study's devices)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads per worker (default: the study's "
                                                                     "threads_per_worker, else cores / workers)")
    _per_device(p, "K workers on each device (the CPU counts as one), instead of --workers")
    _tracking(p)
    _common(p)
    p.set_defaults(func=cmd_study_run)

    p = ssub.add_parser("submit", help="create or join a study and run its workers as a Slurm job array",
                        description="Create or join a study and run its workers as a Slurm job array.",
                        epilog=examples("vpsearch study submit studies/bayes_bair.yaml --slurm --workers 8 "
                                        "--storage postgresql://vp:PASS@db/optuna --dry-run"))
    _study_file(p)
    p.add_argument("--slurm", action="store_true", help="submit to Slurm with sbatch (required)")
    p.add_argument("--workers", type=_positive, metavar="N", help="array tasks (default: the study's workers)")
    p.add_argument("--gpus-per-worker", type=int, metavar="G",
                   help="GPUs per array task (--gres=gpu:G); 0: CPU workers (default: 0 for a `devices: cpu` "
                        "study, else 1)")
    _per_device(p, "K worker processes on each GPU of a task (G x K per task)")
    p.add_argument("--cpus-per-task", type=_positive, metavar="C",
                   help="CPU cores per array task, shared by its workers (default: one per worker)")
    p.add_argument("--partition", metavar="P", help="Slurm partition (default: the cluster's)")
    p.add_argument("--time", metavar="T", help="time limit per task, e.g. 1-00:00:00 (default: the partition's)")
    p.add_argument("--account", metavar="A", help="Slurm account (default: yours)")
    p.add_argument("--sbatch-arg", dest="sbatch_args", action="append", default=[], metavar="ARG",
                   help="extra sbatch option, repeatable (--sbatch-arg=--mem=32G); replaces a generated one "
                        "of the same name (--sbatch-arg=--gres=gpu:a100:1) (default: none)")
    p.add_argument("--dry-run", action="store_true", help="print the sbatch script; create and submit nothing "
                                                          "(default: off)")
    _tracking(p, "the workers log to, ")
    _common(p)
    p.set_defaults(func=cmd_study_submit)

    p = ssub.add_parser("create", help="create (or check and update) a study for `vpsearch worker`s to join; "
                                       "starts no workers",
                        description="Create (or check and update) a study in the storage for `vpsearch worker`s "
                                    "on any machine to join; starts no workers.",
                        epilog=examples("vpsearch study create studies/bayes_bair.yaml "
                                        "--storage postgresql://vp:PASS@db/optuna"))
    _study_file(p)
    _tracking(p, "the workers log to, ")
    _common(p)
    p.set_defaults(func=cmd_study_create)

    p = ssub.add_parser("status", help="table of a study's trials (the best marked)",
                        description="A study's trials: state, value, time, params, why one failed or was pruned; "
                                    "the best marked *.",
                        epilog=examples("vpsearch study status quickstart", "vpsearch study status quickstart --json"))
    p.add_argument("name", metavar="NAME", help="study name (vpsearch study list)")
    p.add_argument("--json", action="store_true",
                   help="print JSON: each trial's number, state, value, params, seed, reason (default: off)")
    _common(p)
    p.set_defaults(func=cmd_study_status)

    p = ssub.add_parser("list", help="the studies in the storage, and the study files in ./studies",
                        description="The studies in the storage (trials, best value) and the study files in "
                                    "./studies.",
                        epilog=examples("vpsearch study list", "vpsearch study list --root /scratch/runs"))
    _common(p)
    p.set_defaults(func=cmd_study_list)

    p = ssub.add_parser("check", help="validate a study YAML and estimate its time here (nothing is written)",
                        description="Validate a study YAML and estimate how long it takes on this machine (a probe of a few training steps; nothing is written).",
                        epilog=examples("vpsearch study check studies/quickstart.yaml"))
    p.add_argument("--no-estimate", action="store_true",
                   help="skip the time probe (a few seconds of training on this machine) (default: off)")
    _study_file(p)
    p.set_defaults(func=cmd_study_check)

    p = sub.add_parser("worker", help="join a study: pull and train its trials until none is left",
                       description="Join a study from any machine: pull and train its trials until none is left.",
                       epilog=examples("vpsearch worker --study bayes_bair --storage postgresql://vp:PASS@db/optuna "
                                       "--device cuda:free"))
    p.add_argument("--study", required=True, metavar="NAME", help="study name; its YAML is stored in the storage "
                                                                  "(required)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, auto, or cuda:free (a GPU of this machine "
                                                    "that no other worker holds; PostgreSQL storage) (default: auto)")
    p.add_argument("--threads", type=positive_int, metavar="N", help="CPU threads for training (default: torch's)")
    _per_device(p, "with --device cuda:free: claim one of K slots of a GPU, so K workers share it")
    _tracking(p, default="MLFLOW_TRACKING_URI, else the study's")
    _common(p)
    # set by `study run` for the workers it spawns
    p.add_argument("--slot", type=int, help=argparse.SUPPRESS)
    p.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    p.add_argument("--max-trials", type=positive_int, metavar="N", help="stop after this many trials "
                                                                        "(default: until none is left)")
    p.set_defaults(func=cmd_worker)

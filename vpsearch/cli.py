"""The `vpsearch` command: thin subcommands calling library code.

Layers that add subcommands (search, tracking, reporting) expose
``add_commands(subparsers)`` in their own ``cli`` module, listed in EXTENSIONS.
Errors of vpsearch's own types (vpsearch.errors: bad config, data, checkpoint, argument)
print one line and exit 2; any other exception is a bug and shows its traceback.
VPSEARCH_DEBUG=1 shows the traceback of every error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

from vpsearch.args import Parser, positive_int
from vpsearch.errors import UserError, VpsearchError

EXTENSIONS = ["vpsearch.search.cli", "vpsearch.tracking.cli", "vpsearch.reporting.cli"]
SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a Unix tool cut off by `head` exits with


def add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", "-c", required=required, help="shipped config name (e.g. pushing-small) or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable: --set train.epochs=3")


def cmd_train(args: argparse.Namespace) -> int:
    from vpsearch.config import load_config
    from vpsearch.training import fit
    from vpsearch.training.run_dir import prepare_run_dir

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / "train" / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    prepare_run_dir(out, resume=args.resume, overwrite=args.overwrite)
    result = fit(cfg, out, resume=args.resume, force=args.force)
    print(json.dumps({"run_dir": str(result.run_dir), "best_val_psnr": round(result.best_psnr, 4),
                      "best_epoch": result.best_epoch, "epochs": result.epochs_done,
                      "seconds": round(result.seconds, 1), "best_checkpoint": str(result.best_checkpoint)}, indent=2))
    return 0


def _load_for_inference(args: argparse.Namespace, split_default: str):
    import torch

    from vpsearch.training.device import select_device
    from vpsearch.training.predict import open_for_inference

    device = select_device(args.device)
    model, cfg, data = open_for_inference(args.checkpoint, device, args.data, args.split or split_default)
    torch.manual_seed(args.seed)
    return model, cfg, data, device


def _horizon(value: str | None):
    if value is None or value == "all":
        return value
    try:
        n = int(value)
    except ValueError:
        raise UserError(f"--n-future {value!r}: expected a positive integer or 'all'") from None
    if n < 1:
        raise UserError(f"--n-future {value!r}: expected a positive integer or 'all'")
    return n


def cmd_evaluate(args: argparse.Namespace) -> int:
    from vpsearch.training.predict import evaluation_json

    model, cfg, data, device = _load_for_inference(args, "test")
    horizon = _horizon(args.n_future) if args.n_future else cfg.eval.n_future
    out = evaluation_json(model, cfg, data, device, args.samples, horizon, args.max_sequences)
    out["checkpoint"] = str(args.checkpoint)
    out["split"] = args.split
    print(json.dumps(out, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from vpsearch.training.predict import rollout_to_files

    model, cfg, data, device = _load_for_inference(args, "test")
    horizon = _horizon(args.n_future) if args.n_future else cfg.eval.n_future
    written = rollout_to_files(model, cfg, data, device, Path(args.out), horizon, args.n_sequences,
                               Path(args.submission) if args.submission else None)
    print(json.dumps({"out": args.out, "videos": written, "submission": args.submission}, indent=2))
    return 0


def cmd_data_make(args: argparse.Namespace) -> int:
    kwargs = {k: v for k, v in vars(args).items() if k in args.gen_keys and v is not None}
    if args.kind == "pushing":
        from vpsearch.data.generators.pushing import make_pushing as make
    else:
        from vpsearch.data.generators.dancer import make_dancer as make
    t0 = time.perf_counter()
    try:
        out = make(Path(args.out), **kwargs)
    except FileExistsError as e:  # the generator refuses to replace a folder it did not write
        raise UserError(f"{e}; pass an empty or new --out") from None
    print(f"wrote {args.kind} data to {out} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_data_verify(args: argparse.Namespace) -> int:
    from vpsearch.config import load_config
    from vpsearch.data.verify import verify_data

    cfg = load_config(args.config, args.overrides)
    report = verify_data(cfg.data, rebuild=not args.check_only, prune=args.prune)
    print("\n".join(report.lines))
    return 0 if report.all_fresh else 1


def cmd_config_show(args: argparse.Namespace) -> int:
    from vpsearch.config import load_config

    print(load_config(args.config, args.overrides).to_yaml(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vpsearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one config into a run directory")
    add_config_args(p)
    p.add_argument("--out", help="run directory (default runs/train/NAME-TIME)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--force", action="store_true", help="with --resume: continue although training fields of the "
                                                        "config changed (the model must stay the same)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUT (its checkpoints, "
                                                            "metrics and samples are deleted)")
    p.set_defaults(func=cmd_train)

    for name, func, helptext in (("evaluate", cmd_evaluate, "evaluate a checkpoint; prints JSON"),
                                 ("predict", cmd_predict, "roll out sequences to GIFs/strips (and a submission)")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--checkpoint", required=True)
        p.add_argument("--data", help="dataset root (default: the one in the checkpoint's config)")
        p.add_argument("--split", default="test", help="train, val or test (default test)")
        p.add_argument("--device", default="auto")
        p.add_argument("--seed", type=int, default=0, help="seed of the prior samples")
        p.add_argument("--n-future", help="frames to predict, or 'all' (default: the config's eval.n_future)")
        if name == "evaluate":
            p.add_argument("--samples", type=positive_int, default=1, help="z samples per sequence (best/mean of N)")
            p.add_argument("--max-sequences", type=positive_int, default=10**9)
        else:
            p.add_argument("--out", required=True)
            p.add_argument("--n-sequences", type=positive_int, default=None, help="how many (default: all)")
            p.add_argument("--submission", help="also write the Kaggle-style CSV here")
        p.set_defaults(func=func)

    data = sub.add_parser("data", help="built-in datasets, frame caches").add_subparsers(dest="data_cmd", required=True)
    make = data.add_parser("make", help="generate a built-in dataset on disk")
    make_sub = make.add_subparsers(dest="kind", required=True)
    gens = {"pushing": ["train", "validate", "test", "seed"],
            "dancer": ["train_frames", "val_frames", "test_videos", "seed"]}
    for kind, keys in gens.items():
        p = make_sub.add_parser(kind, help=f"the {kind} dataset")
        p.add_argument("--out", required=True)
        for k in keys:
            p.add_argument("--" + k.replace("_", "-"), dest=k, type=int)
        p.set_defaults(func=cmd_data_make, gen_keys=keys)
    p = data.add_parser("verify", help="check every file of a dataset against its frame caches; rebuild stale ones",
                        description="Loading checks folder mtimes and a sample of the files; this stats every file "
                                    "of the config's train, validation and test splits.")
    add_config_args(p, required=False)
    p.add_argument("--check-only", action="store_true", help="report only; exit 1 when a cache is stale or missing")
    p.add_argument("--prune", action="store_true", help="remove caches of older vpsearch formats")
    p.set_defaults(func=cmd_data_verify)

    cfg = sub.add_parser("config", help="shipped configs").add_subparsers(dest="config_cmd", required=True)
    p = cfg.add_parser("show", help="print a resolved config")
    add_config_args(p)
    p.set_defaults(func=cmd_config_show)

    for mod in EXTENSIONS:
        try:
            ext = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        ext.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe must surface here, not at exit
        return status
    except KeyboardInterrupt:
        print("vpsearch: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`vpsearch ... --json | head`): nothing to say to anyone; point
        # stdout at /dev/null so the interpreter's final flush does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return SIGPIPE_STATUS
    except VpsearchError as e:
        if os.environ.get("VPSEARCH_DEBUG", "") not in ("", "0"):
            traceback.print_exc()
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"vpsearch: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""The `vpsearch` command: thin subcommands calling library code.

Layers that add subcommands (search, tracking, reporting) expose
``add_commands(subparsers)`` in their own ``cli`` module, listed in EXTENSIONS.
User errors (bad config, data, checkpoint, argument) print one line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from vpsearch.config import ConfigError

EXTENSIONS = ["vpsearch.search.cli", "vpsearch.tracking.cli", "vpsearch.reporting.cli"]


class UserError(Exception):
    """An error caused by the user's input; shown as one line, no traceback."""


def user_error_types() -> tuple[type[BaseException], ...]:
    from vpsearch.data.base import DataError
    from vpsearch.training.checkpoint import CheckpointError
    from vpsearch.training.engine import NonFiniteLossError
    return (UserError, ConfigError, DataError, CheckpointError, NonFiniteLossError, ValueError, FileNotFoundError)


def add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", "-c", required=required, help="shipped config name (e.g. pushing-small) or YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable: --set train.epochs=3")


def cmd_train(args: argparse.Namespace) -> int:
    from vpsearch.config import load_config
    from vpsearch.training import fit

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / "train" / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    result = fit(cfg, out, resume=args.resume)
    print(json.dumps({"run_dir": str(result.run_dir), "best_val_psnr": round(result.best_psnr, 4),
                      "best_epoch": result.best_epoch, "epochs": result.epochs_done,
                      "seconds": round(result.seconds, 1), "best_checkpoint": str(result.best_checkpoint)}, indent=2))
    return 0


def _load_for_inference(args: argparse.Namespace, split_default: str):
    import torch

    from vpsearch.data import load_split
    from vpsearch.training.checkpoint import model_from_checkpoint
    from vpsearch.training.device import select_device

    device = select_device(args.device)
    model, cfg, _ = model_from_checkpoint(args.checkpoint, device)
    if args.data:
        cfg.data.root = args.data
    split = {"train": cfg.data.train_split, "val": cfg.data.val_split, "validate": cfg.data.val_split,
             "test": cfg.data.test_split}.get(args.split or split_default, args.split or split_default)
    torch.manual_seed(args.seed)
    return model, cfg, load_split(cfg.data, split), device


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
    from vpsearch.training.predict import evaluation_json, frame_table

    model, cfg, data, device = _load_for_inference(args, "test")
    horizon = _horizon(args.n_future) if args.n_future else cfg.eval.n_future
    out = evaluation_json(model, cfg, data, device, args.samples, horizon, args.max_sequences)
    out["checkpoint"] = str(args.checkpoint)
    out["split"] = args.split
    # the per-frame view for a person on stderr; stdout stays one JSON document
    print(frame_table(out, "copy-first" if cfg.data.n_past == 1 else "copy-last"), file=sys.stderr)
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
    out = make(Path(args.out), **kwargs)
    print(f"wrote {args.kind} data to {out} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from vpsearch.config import load_config

    print(load_config(args.config, args.overrides).to_yaml(), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vpsearch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one config into a run directory")
    add_config_args(p)
    p.add_argument("--out", help="run directory (default runs/train/NAME-TIME)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
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
            p.add_argument("--samples", type=int, default=1, help="z samples per sequence (best/mean of N)")
            p.add_argument("--max-sequences", type=int, default=10**9)
        else:
            p.add_argument("--out", required=True)
            p.add_argument("--n-sequences", type=int, default=None, help="how many (default: all)")
            p.add_argument("--submission", help="also write the Kaggle-style CSV here")
        p.set_defaults(func=func)

    data = sub.add_parser("data", help="built-in datasets").add_subparsers(dest="data_cmd", required=True)
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
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("vpsearch: interrupted", file=sys.stderr)
        return 130
    except user_error_types() as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"vpsearch: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

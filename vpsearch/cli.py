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
import shlex
import sys
import time
import traceback
from pathlib import Path

import vpsearch
from vpsearch import fmt
from vpsearch.args import Parser, examples, positive_int
from vpsearch.errors import UserError, VpsearchError

EXTENSIONS = ["vpsearch.search.cli", "vpsearch.tracking.cli", "vpsearch.reporting.cli"]
SIGPIPE_STATUS = 141  # 128 + SIGPIPE: what a Unix tool cut off by `head` exits with

DESCRIPTION = """\
Find good hyperparameters for conditional-VAE video prediction (SVG-style models on robot
pushing or pose-conditioned dance video): train one config, or run a study of many trials
in parallel, watch them in MLflow, and compare KL-annealing and teacher-forcing strategies
with confidence intervals over seeds.

start here:
  vpsearch study run studies/quickstart.yaml   a few short trials on built-in data (make demo)
  vpsearch report quickstart                   which strategy won, how sure we are
  vpsearch ui                                  the trials' curves and GIFs in MLflow
  vpsearch train -c pushing-small              one training run, no search"""


def add_config_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--config", "-c", required=required, metavar="CONFIG",
                   help="shipped config name (vpsearch config list) or a YAML path" + ("" if required else
                                                                                         " (default: none)"))
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable, applied after the YAML: --set train.epochs=3 (default: none)")


def cmd_train(args: argparse.Namespace) -> int:
    from vpsearch.config import load_config
    from vpsearch.training import fit
    from vpsearch.training.run_dir import prepare_run_dir

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / "train" / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    made = not out.exists()
    prepare_run_dir(out, resume=args.resume, overwrite=args.overwrite)
    try:
        result = fit(cfg, out, resume=args.resume, force=args.force)
    except BaseException:
        if made and out.is_dir() and not any(out.iterdir()):  # refused before it wrote: leave no trace
            out.rmdir()
        raise
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    if args.json:
        print(json.dumps({"run_dir": str(result.run_dir), "best_val_psnr": round(result.best_psnr, 4),
                          "baseline_psnr": round(best["baseline_psnr"], 4) if "baseline_psnr" in best else None,
                          "best_epoch": result.best_epoch, "epochs": result.epochs_done,
                          "seconds": round(result.seconds, 1), "best_checkpoint": str(result.best_checkpoint)},
                         indent=2))
        return 0
    for line in train_summary(result, best):
        print(line)
    return 0


def train_summary(result, best: dict) -> list[str]:
    """The end of `vpsearch train`: the best value against copy-last, and what to run next."""
    lines = [f"trained {result.epochs_done} epochs in {fmt.duration(result.seconds)}; outputs in {result.run_dir}"]
    if result.early_stopped_at is not None:
        lines.append(f"stopped early after epoch {result.early_stopped_at}: validation had not improved since "
                     f"epoch {result.best_epoch} (train.early_stop)")
    if result.best_epoch < 0:
        lines.append("no evaluation ran (eval.every is larger than the epochs), so there is no best checkpoint")
        return lines
    base = best.get("baseline_psnr")
    gain = f"; copy-last baseline {base:.2f} dB: {result.best_psnr - base:+.2f} dB" if base is not None else ""
    lines.append(f"best val PSNR {result.best_psnr:.2f} dB at epoch {result.best_epoch}{gain}")
    ckpt, pred = shlex.quote(str(result.best_checkpoint)), shlex.quote(str(result.run_dir / "predictions"))
    lines += ["next:", f"  vpsearch evaluate --checkpoint {ckpt} --samples 5",
              f"  vpsearch predict --checkpoint {ckpt} --out {pred}"]
    return lines


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


GENERATORS = {  # kind -> (count options with their defaults' meaning, the config that trains on it)
    "pushing": (["train", "validate", "test", "seed"], "pushing-small"),
    "dancer": (["train_frames", "val_frames", "test_videos", "seed"], "dancer-small"),
}


def _counts(counts: dict[str, int]) -> str:
    """The manifest's counts in words: 'train 2000, validate 64, test 256 sequences'."""
    if all("_" not in k for k in counts):
        return ", ".join(f"{k} {n}" for k, n in counts.items()) + " sequences"
    return ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in counts.items())  # train frames 3000, ...


def cmd_data_make(args: argparse.Namespace) -> int:
    keys, config = GENERATORS[args.kind]
    kwargs = {k: v for k, v in vars(args).items() if k in keys and v is not None}
    if args.kind == "pushing":
        from vpsearch.data.generators.pushing import make_pushing as make
    else:
        from vpsearch.data.generators.dancer import make_dancer as make
    t0 = time.perf_counter()
    try:
        out = make(Path(args.out), **kwargs)
    except FileExistsError as e:  # the generator refuses to replace a folder it did not write
        raise UserError(f"{e}; pass an empty or new --out") from None
    manifest = json.loads((Path(out) / "vpsearch-dataset.json").read_text())
    print(f"wrote {args.kind} data to {out} in {time.perf_counter() - t0:.1f}s: {_counts(manifest['counts'])}")
    print(f"next: vpsearch train -c {config} --set data.root={out}")
    return 0


def cmd_data_from_video(args: argparse.Namespace) -> int:
    from vpsearch.data.from_video import make_dance_from_video

    report = make_dance_from_video(Path(args.from_video), Path(args.out), poses=args.poses,
                                   detector_python=args.detector_python, height=args.height, width=args.width)
    print("\n".join(report.lines()))
    print(f"wrote the dance layout to {args.out}")
    print(f"next: vpsearch train -c dancer-real-small --set data.root={shlex.quote(str(args.out))}")
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


def cmd_config_list(args: argparse.Namespace) -> int:
    from vpsearch.config import CONFIG_DIR, shipped_configs

    names = shipped_configs()
    width = max(map(len, names))
    print("shipped training configs (vpsearch train -c NAME; vpsearch config show -c NAME):")
    for name in names:
        print(f"  {name.ljust(width)}  {fmt.first_comment(CONFIG_DIR / f'{name}.yaml')}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="vpsearch", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"vpsearch {vpsearch.__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train one config into a run folder (no search, no tracking)",
                       description="Train one config: checkpoints, metrics.csv, curves and GIFs in the run folder.",
                       epilog=examples("vpsearch train -c pushing-small --out runs/one",
                                       "vpsearch train -c bair --set data.root=/data/bair --set train.epochs=50"))
    add_config_args(p)
    p.add_argument("--out", metavar="FOLDER", help="run folder (default: runs/train/CONFIG-DATE-TIME)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt (default: off)")
    p.add_argument("--force", action="store_true", help="with --resume: continue although training fields of the "
                                                        "config changed; the model must stay the same (default: off)")
    p.add_argument("--overwrite", action="store_true", help="replace the run already in OUT: its checkpoints, "
                                                            "metrics and samples are deleted (default: off)")
    p.add_argument("--json", action="store_true", help="print a JSON summary instead of the lines for people "
                                                       "(default: off)")
    p.set_defaults(func=cmd_train)

    for name, func, helptext in (("evaluate", cmd_evaluate, "score a checkpoint on a split (PSNR, SSIM, copy-last "
                                                           "baseline); prints JSON"),
                                 ("predict", cmd_predict, "roll out sequences to labelled GIFs and strips "
                                                         "(and a submission CSV)")):
        ex = ("vpsearch evaluate --checkpoint runs/one/checkpoints/best.pt --samples 5",
              "vpsearch evaluate --checkpoint runs/one/checkpoints/best.pt --split val --n-future all") \
            if name == "evaluate" else \
            ("vpsearch predict --checkpoint runs/one/checkpoints/best.pt --out runs/one/predictions",
             "vpsearch predict --checkpoint best.pt --data /data/dance --out pred --submission pred/submission.csv")
        p = sub.add_parser(name, help=helptext, description=helptext[0].upper() + helptext[1:] + ".",
                           epilog=examples(*ex))
        p.add_argument("--checkpoint", required=True, metavar="FILE",
                       help="a checkpoint written by train or a study (required)")
        p.add_argument("--data", metavar="FOLDER", help="dataset root (default: the one in the checkpoint's config)")
        p.add_argument("--split", default="test", help="train, val or test (default: test)")
        p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default: auto)")
        p.add_argument("--seed", type=int, default=0, help="seed of the prior samples (default: 0)")
        p.add_argument("--n-future", metavar="N", help="frames to predict, or 'all' (default: the config's "
                                                       "eval.n_future)")
        if name == "evaluate":
            p.add_argument("--samples", type=positive_int, default=1, metavar="N",
                           help="z samples per sequence; reports their mean and the best of N (default: 1)")
            p.add_argument("--max-sequences", type=positive_int, default=10**9, metavar="N",
                           help="score at most N sequences (default: all)")
        else:
            p.add_argument("--out", required=True, metavar="FOLDER", help="where the GIFs and strips go (required)")
            p.add_argument("--n-sequences", type=positive_int, default=None, metavar="N",
                           help="how many sequences (default: all)")
            p.add_argument("--submission", metavar="FILE", help="also write the Kaggle-style CSV here (default: none)")
        p.set_defaults(func=func)

    data = sub.add_parser("data", help="built-in datasets and frame caches: make, verify",
                          description="Built-in datasets, and the full check of a dataset's frame caches.",
                          epilog=examples("vpsearch data make pushing --out data/pushing --train 2000",
                                          "vpsearch data verify --set data.root=/data/bair"))
    data_sub = data.add_subparsers(dest="data_cmd", required=True, metavar="ACTION")
    make = data_sub.add_parser(
        "make", help="generate a built-in dataset on disk", description="Generate a built-in dataset on disk.",
        epilog=examples("vpsearch data make pushing --out data/pushing --train 2000",
                        "vpsearch data make dancer --out data/dancer"))
    make_sub = make.add_subparsers(dest="kind", required=True, metavar="KIND")
    from inspect import signature

    from vpsearch.data.generators.dancer import make_dancer
    from vpsearch.data.generators.pushing import make_pushing

    for kind, make_fn in (("pushing", make_pushing), ("dancer", make_dancer)):
        keys, config = GENERATORS[kind]
        defaults = signature(make_fn).parameters
        what = ("robot-pushing sequences with actions (the BAIR layout)" if kind == "pushing" else
                "a dancing figure with pose labels (the dance lab's layout)")
        p = make_sub.add_parser(kind, help=what, description=f"Generate {what}.",
                                epilog=examples(f"vpsearch data make {kind} --out data/{kind}",
                                                f"vpsearch train -c {config} --set data.root=data/{kind}"))
        p.add_argument("--out", required=True, metavar="FOLDER", help="dataset folder to write (required)")
        for k in keys:
            unit = "seed" if k == "seed" else k.replace("_", " ") if "_" in k else f"{k} sequences"
            p.add_argument("--" + k.replace("_", "-"), dest=k, type=int, metavar="N",
                           help=f"{unit} (default: {defaults[k].default})")
        p.set_defaults(func=cmd_data_make)
    p = make_sub.add_parser(
        "dance", help="a real video in the dance layout, the pose from a detector",
        description="Convert a real video (or a folder of frames) to the dance layout: frames cropped to the "
                    "layout's 1:2 shape around the person, the pose of a real detector drawn as the labels (limbs "
                    "dimmed by the detector's confidence), split in time into train, validation and test.",
        epilog=examples("vpsearch data make dance --from-video clip.mp4 --out data/clip",
                        "vpsearch data make dance --from-video clip.mp4 --out data/clip --detector-python "
                        "mp/bin/python"))
    p.add_argument("--from-video", required=True, metavar="FILE", help="video file or folder of frames (required)")
    p.add_argument("--out", required=True, metavar="FOLDER", help="dataset folder to write (required)")
    p.add_argument("--poses", metavar="FILE", help="keypoints JSON of any detector (vpsearch/data/pose_detector.py "
                                                   "writes it; default: run MediaPipe)")
    p.add_argument("--detector-python", metavar="PYTHON", help="a Python with mediapipe to run the detector "
                                                               "(default: this one)")
    p.add_argument("--height", type=int, default=64, metavar="N", help="frame height written (default: 64)")
    p.add_argument("--width", type=int, default=128, metavar="N", help="frame width written (default: 128)")
    p.set_defaults(func=cmd_data_from_video)

    p = data_sub.add_parser(
        "verify", help="check every file of a dataset against its frame caches; rebuild stale ones",
        description="Check every file of the config's train, validation and test splits against their frame "
                    "caches (loading checks only folder mtimes and a sample of the files), rebuild the stale "
                    "and missing caches, and list caches of older formats.",
        epilog=examples("vpsearch data verify --set data.root=/data/bair",
                        "vpsearch data verify -c pushing-small --check-only"))
    add_config_args(p, required=False)
    p.add_argument("--check-only", action="store_true",
                   help="report only, rebuild nothing; exit 1 when a cache is stale or missing (default: off)")
    p.add_argument("--prune", action="store_true", help="remove caches of older vpsearch formats (default: off)")
    p.set_defaults(func=cmd_data_verify)

    cfg = sub.add_parser("config", help="shipped configs: list, show", description="Shipped training configs.",
                         epilog=examples("vpsearch config list", "vpsearch config show -c bair --set model.z_dim=32"))
    csub = cfg.add_subparsers(dest="config_cmd", required=True, metavar="ACTION")
    p = csub.add_parser("list", help="the shipped configs and what each is for",
                        description="The shipped training configs and what each is for.",
                        epilog=examples("vpsearch config list"))
    p.set_defaults(func=cmd_config_list)
    p = csub.add_parser("show", help="print a resolved config (YAML, then overrides)",
                        description="Print a resolved config: the YAML, then the overrides.",
                        epilog=examples("vpsearch config show -c pushing-small",
                                        "vpsearch config show -c bair --set 'train={epochs: 5}'"))
    add_config_args(p)
    p.set_defaults(func=cmd_config_show)

    for mod in EXTENSIONS:  # part of the package: one that fails to import is a bug to see, not a missing command
        importlib.import_module(mod).add_commands(sub)
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

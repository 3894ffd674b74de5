"""Typed training configuration: the one place where every default lives.

A config is resolved in three layers: the model defaults below, then a YAML file
(a shipped name such as ``pushing-small`` or a path), then dotted command-line
overrides (``train.epochs=3``). The resolved config is written next to every run.

Shape convention used across the package: a batch of video is ``(B, T, C, H, W)``
float in [0, 1]; conditions are ``(B, T, D)`` vectors (actions) or
``(B, T, C, H, W)`` images (pose labels).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from vpsearch.errors import ConfigError  # noqa: F401  (callers catch it as vpsearch.config.ConfigError too)
from vpsearch.schedules import resolve_units

CONFIG_DIR = Path(__file__).parent / "configs"


class Section(BaseModel):
    # Unknown keys are typos, not extensions: refuse them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Section):
    format: Literal["bair", "dance"] = "bair"
    # A directory in that format, or "builtin:pushing" / "builtin:dancer" (generated on first use).
    root: str = "builtin:pushing"
    height: int = Field(64, ge=8)
    width: int = Field(64, ge=8)
    n_past: int = Field(2, ge=1, description="context frames given to the model")
    n_future: int = Field(10, ge=1, description="frames predicted during training")
    window_stride: int = Field(1, ge=1, description="frames between training window starts "
                               "(the dance lab: the window length, non-overlapping)")
    train_split: str = "train"
    val_split: str = "validate"
    test_split: str = "test"
    cache_dir: str | None = Field(None, description="uint8 frame cache; default ROOT/.vpsearch-cache")
    # Training augmentation (vpsearch/data/augment.py), drawn per window, the same for all its
    # frames. hflip: mirror frames and pose labels together (image conditions only: BAIR's
    # actions are in robot coordinates). colour_jitter: channel permutation plus per-channel
    # gain/offset up to this strength, frames only (the future's colours follow the context).
    hflip: bool = False
    colour_jitter: float = Field(0.0, ge=0, le=1)
    # shift: frames and labels moved together by up to this many pixels (per window: a camera a
    # little elsewhere). label_jitter: each label alone moved by up to this many pixels per frame
    # (a detector's jitter), so the model does not trust a keypoint to the pixel. Image conditions only.
    shift: int = Field(0, ge=0)
    label_jitter: int = Field(0, ge=0)
    # the context frames of a training window come from up to this many frames earlier, so the
    # model learns to use a given frame far from the one it predicts (a dance test video
    # rolls out 629 frames from its first one)
    anchor_gap: int = Field(0, ge=0)
    # dance only: use this fraction of the training windows for the first fast_train_epochs
    fast_train_fraction: float = Field(1.0, gt=0, le=1)
    fast_train_epochs: int = Field(0, ge=0)

    @property
    def window(self) -> int:
        return self.n_past + self.n_future


# Frames a compositing output head may copy (vpsearch.models.compose): "anchor" the last
# context frame, "previous" x_{t-1}, "warped" x_{t-1} moved along a predicted flow.
CompositeSource = Literal["anchor", "previous", "warped"]
# Condition rows of the step predicting frame t: row t, row t-1, or both side by side.
CondIndex = Literal["current", "previous", "both"]


def _distinct(sources: list[str]) -> list[str]:
    if len(set(sources)) != len(sources):
        raise ValueError("each source at most once")
    return sources


CompositeSources = Annotated[list[CompositeSource], AfterValidator(_distinct)]


class CompositeOptions(Section):
    """The compositing output head both model families share (vpsearch/models/compose.py)."""

    # composite: frames whose pixels the output may copy. The decoder then also paints one
    # mask per source (and a flow for "warped") and x_t = per-pixel softmax blend of
    # [painted, sources...] (CDNA, SAVP, vid2vid): a static background is copied, not
    # repainted blurrily. []: the direct sigmoid output, as the labs had it.
    composite: CompositeSources = Field(default_factory=list)
    max_flow: float = Field(4.0, gt=0, description="largest warp per step, in pixels")
    # initial mask logit of every source over the painted pixels: > 0 starts the model as a
    # copier (the last frame, unmoved) that learns where to paint; 0 starts an even blend. A
    # mapping gives each source its own ({anchor: 4, warped: 2}: the given frame wins wherever
    # nothing teaches the head otherwise); sources it leaves out start at 0.
    copy_bias: float | dict[CompositeSource, float] = 0.0

    @model_validator(mode="after")
    def _bias_for_composed_sources(self) -> "CompositeOptions":
        if isinstance(self.copy_bias, dict) and set(self.copy_bias) - set(self.composite):
            raise ValueError(f"copy_bias: {sorted(set(self.copy_bias) - set(self.composite))} not in composite "
                             f"{self.composite}")
        return self


class SVGModelConfig(CompositeOptions):
    """SVG (Denton & Fergus 2018) for action-conditioned or unconditioned video."""

    name: Literal["svg"] = "svg"
    prior: Literal["learned", "fixed"] = "learned"  # SVG-LP or SVG-FP
    backbone: Literal["vgg64", "dcgan64"] = "vgg64"
    g_dim: int = Field(128, ge=1, description="frame embedding size (encoder output)")
    z_dim: int = Field(64, ge=1, description="latent size per step")
    rnn_size: int = Field(256, ge=1)
    predictor_layers: int = Field(2, ge=1)
    posterior_layers: int = Field(1, ge=1)
    prior_layers: int = Field(1, ge=1)
    nf: int = Field(64, ge=4, description="channels of the first encoder block")
    # Skip maps for the decoder: from the last context frame (SVG) or the previous frame.
    skip_from: Literal["last_context", "previous"] = "last_context"
    # Which rows of the condition feed the step that predicts frame t, per kind of column:
    # current (row t), previous (row t-1) or both (t-1 and t). In the BAIR format row t of
    # actions.csv is the command applied AFTER frame t (it moves the arm from frame t to
    # t+1) and row t of endeffector_positions.csv the position AT frame t, so frame t follows
    # from action t-1 and shows position t. Applied by one rule (models/base.py select_cond)
    # in training and generation alike.
    action_index: CondIndex = "previous"
    position_index: CondIndex = "current"
    # the step's condition (those rows) and the pixel coordinates, tiled as maps into every
    # decoder stage (CoordConv): the decoder can draw the arm where the position says, not
    # only where the 1x1 frame embedding lets it. False: SVG's decoder, as the lab had it.
    cond_to_decoder: bool = False

    @model_validator(mode="before")
    @classmethod
    def _one_cond_index(cls, data: Any) -> Any:
        # configs and checkpoints from before per-kind indices: model.cond_index applied to
        # every column, which both kinds set to it reproduce exactly
        if isinstance(data, dict) and "cond_index" in data:
            data = dict(data)
            old = data.pop("cond_index")
            data.setdefault("action_index", old)
            data.setdefault("position_index", old)
        return data


class DanceModelConfig(CompositeOptions):
    """The pose-conditioned lab model: spatial latent, all maps at frame resolution."""

    name: Literal["dance"] = "dance"
    f_dim: int = Field(128, ge=1, description="RGB frame features")
    l_dim: int = Field(32, ge=1, description="label (pose image) features")
    n_dim: int = Field(12, ge=1, description="channels of the spatial latent z")
    d_out_dim: int = Field(192, ge=1, description="decoder fusion output")
    # both: the labels of frames t-1 and t, so the step sees how the pose moved
    cond_index: CondIndex = "current"
    # last_context: the fusion also sees the features of the last given frame at every step
    # (SVG's skips from the last context frame), so appearance cannot drift over a long
    # rollout; none: only the previous frame, as in the lab.
    anchor: Literal["none", "last_context"] = "none"
    # batch: BatchNorm, as in the lab; its running statistics, gathered from small training
    # batches, normalise generation. group: GroupNorm, statistics of each frame's own maps,
    # so training and generation normalise alike whatever the batch.
    norm: Literal["batch", "group"] = "batch"
    # k: a step that continues from a true frame (the first predicted frame of a video; in
    # training, the teacher-forced steps) may warp only the pixels within k of where the pose
    # label changed between t-1 and t: a true frame matches its label, so only what the pose
    # moved can move, and a sub-pixel flow next to a still body cannot drag and blur a textured
    # background. A step that continues from the model's own frame may warp any pixel (that
    # frame can stray from its label anywhere). None: no gate. Needs cond_index both.
    flow_gate: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _gate_needs_flow_and_both_labels(self) -> "DanceModelConfig":
        if self.flow_gate is not None and ("warped" not in self.composite or self.cond_index != "both"):
            raise ValueError(f"flow_gate: {self.flow_gate} gates the flow by the labels of t-1 and t; it needs "
                             f"'warped' in composite (got {self.composite}) and cond_index both "
                             f"(got {self.cond_index!r})")
        return self


ModelConfig = Annotated[Union[SVGModelConfig, DanceModelConfig], Field(discriminator="name")]
MODEL_FOR_FORMAT = {"bair": "svg", "dance": "dance"}  # the model family each data format trains


def with_model_name(data: Any) -> Any:
    """A model section without `name` (or no section) takes the data format's family, so the
    section is checked field by field (an unknown key, a wrong type) instead of failing on the
    missing tag with "Unable to extract tag using discriminator"."""
    if not isinstance(data, dict):
        return data
    section = data.get("data")
    fmt = section.get("format", "bair") if isinstance(section, dict) else "bair"
    model = data.get("model", {})
    if isinstance(model, dict) and "name" not in model and fmt in MODEL_FOR_FORMAT:
        return {**data, "model": {"name": MODEL_FOR_FORMAT[fmt], **model}}
    return data


class ScheduleConfig(Section):
    """Teacher forcing and KL annealing; names follow the lab arguments users know."""

    tfr: float = Field(1.0, ge=0, le=1, description="initial teacher-forcing ratio")
    tfr_start_decay_epoch: int = Field(10, ge=0)
    tfr_decay_step: float = Field(0.1, ge=0)
    tfr_lower_bound: float = Field(0.0, ge=0, le=1)
    # batch: one coin per batch (the labs); step: one coin per time step (scheduled sampling)
    tfr_mode: Literal["batch", "step"] = "batch"
    # epoch: the ratio changes once per epoch (the labs); iteration: at every step, same slope.
    # A decay over fewer than 2 epochs is switched to iteration (schedules.resolve_units).
    tfr_unit: Literal["epoch", "iteration"] = "epoch"
    # A step fed the model's own previous frame (teacher forcing off) re-encodes it. False:
    # the loss of later steps also trains the earlier steps through that frame (backprop
    # through the rollout); True: the fed-back frame is a constant, each step learns from its
    # own error only. Measured in benchmarks/feedback_gradients.py (README, loss section).
    detach_predictions: bool = False
    kl_anneal_type: Literal["none", "monotonic", "cyclical"] = "cyclical"
    kl_anneal_cycle: int = Field(3, ge=1, description="cycles over training (cyclical)")
    kl_anneal_ratio: float = Field(0.5, gt=0, le=1, description="fraction of a cycle spent rising")
    # epoch: one weight per epoch; iteration: one per step. A cycle (or monotonic ramp) that
    # rises over fewer than 2 epochs is switched to iteration and the resolved config says so.
    kl_anneal_unit: Literal["epoch", "iteration"] = "epoch"


class LossConfig(Section):
    # loss = sum over predicted steps of [ MSE_t + beta * w(t) * KL_t ], w(t) in [0, 1] from the
    # KL annealing schedule. MSE_t is the mean over pixels and batch (nn.MSELoss).
    beta: float = Field(1e-4, ge=0, description="KL weight once annealing reaches 1")
    # sum_batchmean: KL summed over latent elements, divided by batch (the labs; beta ~1e-4)
    # mean: KL averaged over latent elements and batch (beta ~1)
    kl_reduction: Literal["sum_batchmean", "mean"] = "sum_batchmean"
    # + flow_penalty * sum over steps of the mean flow size (|dx| + |dy|, pixels) of a warping
    # head (model.composite with "warped"): moving what does not move then costs, so the flow
    # next to a moving body falls to zero instead of dragging a textured background along
    flow_penalty: float = Field(0.0, ge=0)


class OptimConfig(Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(0.002, gt=0)
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd only")
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float | None = Field(None, gt=0, description="max global grad norm")
    lr_schedule: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: list[int] = Field(default_factory=lambda: [2, 5], description="epochs (multistep)")
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0)
    # step: the schedule moves every optimiser step (like KL and teacher forcing per iteration);
    # epoch: one value per epoch, as the labs' code (and vpsearch before 0.2) set it
    lr_unit: Literal["step", "epoch"] = "step"


class TrainConfig(Section):
    epochs: int = Field(300, ge=1)
    steps_per_epoch: int | None = Field(600, ge=1, description="None: one pass over the windows")
    batch_size: int = Field(12, ge=1)
    seed: int = 1
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    # auto: bf16 on GPUs that have it (else fp16 with loss scaling), bf16 on CPUs that run it natively
    # and faster, else fp32 (none); resolved per run by training/precision.py
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"
    channels_last: bool = False
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads (default: the physical cores; "
                                                            "a study: cores / workers)")
    progress: bool = True
    # a few training frames are memorised in a few epochs: stop once validation has not improved
    # for this many validations in a row (best.pt keeps the best epoch)
    early_stop: int | None = Field(None, ge=1, description="stop after N validations without a better "
                                                          "eval.best_metric (default: never)")


class EvalConfig(Section):
    every: int = Field(1, ge=1, description="validate every N epochs (and at the last)")
    samples: int = Field(1, ge=1, description="z samples per sequence (best/mean of N)")
    # rollout length: a number of frames, None for data.n_future, "all" for the rest of each
    # validation video (the dance protocol: 629 frames from the first one)
    n_future: int | Literal["all"] | None = Field(None, description="frames to predict at evaluation")
    max_sequences: int = Field(64, ge=1, description="validation windows in all")
    # one long validation video (the dance protocol) scored on one stretch is a noisy judge of a
    # configuration: with a fixed n_future it can be scored on several consecutive stretches
    windows_per_video: int = Field(1, ge=1, description="consecutive non-overlapping validation windows "
                                                        "per video (a fixed eval.n_future only)")
    batch_size: int = Field(16, ge=1)
    gif_sequences: int = Field(4, ge=1)
    # validation draws z from a stream of its own: every epoch (and every trial of one model) is
    # scored on the same draws, and how often it runs (eval.every) leaves training's draws alone
    seed: int = Field(0, description="seed of validation's prior draws")
    # what "best" means: best.pt, the pictures, frame_psnr.csv and best_epoch follow it (a study
    # sets its objective here); one of the objective metrics of training/history.py
    best_metric: str = Field("val_psnr", description="val_psnr, val_ssim or val_psnr_best_of_n")
    best_direction: Literal["maximize", "minimize"] = "maximize"


class Config(Section):
    name: str = "run"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=SVGModelConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        family = MODEL_FOR_FORMAT[self.data.format]
        if self.model.name != family:
            raise ValueError(f"model.name {self.model.name!r} does not fit data.format "
                             f"{self.data.format!r} (expected {family!r})")
        if (self.data.shift or self.data.label_jitter) and self.data.format == "bair":
            raise ValueError("data.shift and data.label_jitter move pose-label images; BAIR's actions are vectors")
        if self.data.hflip and self.data.format == "bair":
            raise ValueError("data.hflip: BAIR actions and positions are in robot coordinates, which a "
                             "mirrored frame would contradict (image conditions only)")
        if self.loss.flow_penalty and "warped" not in self.model.composite:
            raise ValueError(f"loss.flow_penalty: {self.loss.flow_penalty:g} needs a flow to weigh, but "
                             f"model.composite {self.model.composite} has no 'warped'")
        if self.train.amp == "fp16" and self.train.device.strip().lower() == "cpu":
            raise ValueError("train.amp: fp16 needs a CUDA device, and train.device is cpu; use auto, bf16 or none")
        if isinstance(self.eval.n_future, int) and self.eval.n_future < 1:
            raise ValueError("eval.n_future must be >= 1, None or 'all'")
        if self.schedule.tfr_lower_bound > self.schedule.tfr:
            raise ValueError(f"schedule.tfr_lower_bound: {self.schedule.tfr_lower_bound:g} is above schedule.tfr "
                             f"({self.schedule.tfr:g})")
        if self.schedule.kl_anneal_unit == "iteration" and self.train.steps_per_epoch is None:
            raise ValueError("schedule.kl_anneal_unit: iteration needs train.steps_per_epoch set")
        # the schedules own their arithmetic; the resolved config records the units that run
        kl_unit, tf_unit = resolve_units(self.schedule, self.train.epochs, self.train.steps_per_epoch)
        if (kl_unit, tf_unit) != (self.schedule.kl_anneal_unit, self.schedule.tfr_unit):
            self.schedule.kl_anneal_unit, self.schedule.tfr_unit = kl_unit, tf_unit
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values (for MLflow params and tables)."""
        return flatten(self.to_dict())

    def hash(self, exclude_seed: bool = True) -> str:
        """Stable hash of the config; repeats that differ only in seed share it."""
        d = self.to_dict()
        d.pop("name", None)
        if exclude_seed:
            d["train"].pop("seed", None)
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"config {name_or_path!r}: no such file and no shipped config of that "
                      f"name (shipped: {', '.join(shipped_configs())})")


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError as e:  # a checkpoint, an image or an archive given as a config
        raise ConfigError(f"{path}: not a text (UTF-8) YAML file (byte 0x{e.object[e.start]:02x} at offset "
                          f"{e.start}); expected a YAML config") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top, got {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected section.key=value")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {item!r}: empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {item!r}: {p} is a value, not a section")
            node = nxt
        key = parts[-1]
        old = node.get(key)
        if isinstance(value, dict) and isinstance(old, dict) and value.get("name", old.get("name")) == old.get("name"):
            node[key] = merge(node[key], value)  # train={epochs: 2} changes epochs, keeps the rest
        else:
            node[key] = value
    return data


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """base with update's keys applied recursively (mappings merge, everything else replaces).

    A section that names another variant (model={name: dance, ...} over an svg model) replaces."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"] if not str(x).startswith("function-after"))
    # pydantic puts the union tag in the location (model.svg.z_dim); drop it
    loc = loc.replace("model.svg.", "model.").replace("model.dance.", "model.")
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    got = first.get("input")
    got_s = "" if first["type"] in ("extra_forbidden", "missing") or isinstance(got, dict) else f", got {got!r}"
    named = re.match(r"([a-z_]+\.[a-z_.]+): (.*)", msg)
    if not loc and named:  # a cross-field check names its own field first
        loc, msg, got_s = named.group(1), named.group(2), ""
    return f"{source}: field {loc or '<top>'}: {msg}{got_s}{extra}"


def config_from_dict(data: dict[str, Any], source: str = "config") -> Config:
    data = with_model_name(data)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, source)) from None


def with_base(data: dict[str, Any], path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config's `base: NAME` (a shipped config or a path) under it: its sections merged key by key,
    so a variant states only what it changes."""
    if "base" not in data:
        return data
    base_path = resolve_config_path(data.pop("base"))
    if base_path in seen + (path,):
        raise ConfigError(f"{path}: field base: {base_path} is based on itself")
    merged = with_base(read_yaml(base_path), base_path, seen + (path,))
    for key, value in data.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_config(name_or_path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- YAML (shipped name or path) <- dotted overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        data = with_base(read_yaml(path), path)
        source = str(path)
    if overrides:
        data = apply_overrides(data, list(overrides))
        source += " + overrides"
    return config_from_dict(data, source)

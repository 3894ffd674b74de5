"""Strategy names of a study's trials, defined by their effective schedules.

A KL-annealing strategy is the sequence of KL weights its trials train with, step by
step over the budget (schedules.py kl_signature); a teacher-forcing strategy
likewise. Settings that differ on paper but train identically (cyclical with one cycle
and monotonic with the same ratio; a decay that starts after the last epoch and no decay)
are one strategy and one row. Each strategy is named after its simplest member, with
only the settings that tell the study's strategies apart.

A study that samples teacher forcing from a continuous range gives every trial a schedule of its
own; past MAX_NAMED schedules they are binned by the share of teacher-forced steps over the
budget (its mean ratio), into TF_BINS ranges of equal counts, named by that range.
"""

from __future__ import annotations

from dataclasses import dataclass

from vpsearch.config import Config, ScheduleConfig
from vpsearch.schedules import TeacherForcing, kl_signature, tf_signature

KL_ORDER = {"none": 0, "monotonic": 1, "cyclical": 2}
MAX_NAMED = 6  # teacher-forcing schedules named one by one; more are binned
TF_BINS = 3


@dataclass(frozen=True)
class Strategy:
    label: str
    order: tuple  # where the strategy sits in tables: simplest first


def _kl_key(s: ScheduleConfig) -> tuple:
    return (KL_ORDER.get(s.kl_anneal_type, 9), s.kl_anneal_cycle if s.kl_anneal_type == "cyclical" else 0,
            s.kl_anneal_ratio if s.kl_anneal_type != "none" else 0, s.kl_anneal_unit)


def _tf_key(cfg: Config) -> tuple:
    s = cfg.schedule
    fixed = TeacherForcing.from_config(s).first_decayed_epoch(cfg.train.epochs) is None
    return (0 if fixed else 1, -s.tfr, -s.tfr_decay_step if not fixed else 0,
            s.tfr_start_decay_epoch if not fixed else 0, s.tfr_lower_bound if not fixed else 0, s.tfr_mode)


def _varies(reps: list[ScheduleConfig], kind: str, key: str) -> bool:
    return len({getattr(s, key) for s in reps if s.kl_anneal_type == kind}) > 1


def kl_label(s: ScheduleConfig, reps: list[ScheduleConfig]) -> str:
    """'none', 'monotonic', 'cyclical', with cycle/ratio/unit only where the strategies differ in them."""
    kind = s.kl_anneal_type
    parts = [kind]
    if kind == "cyclical" and _varies(reps, kind, "kl_anneal_cycle"):
        parts.append(f"M={s.kl_anneal_cycle}")
    if kind in ("cyclical", "monotonic") and _varies(reps, kind, "kl_anneal_ratio"):
        parts.append(f"r={s.kl_anneal_ratio:g}")
    if kind != "none" and _varies(reps, kind, "kl_anneal_unit"):
        parts.append(f"per {s.kl_anneal_unit}")
    return " ".join(parts)


def tf_label(cfg: Config, reps: list[Config]) -> str:
    """Teacher forcing as users name it: initial ratio, decay start, decay step (floor, mode if they vary)."""
    s = cfg.schedule
    if TeacherForcing.from_config(s).first_decayed_epoch(cfg.train.epochs) is None:
        label = f"tfr {s.tfr:g} fixed"
    else:
        label = f"tfr {s.tfr:g} -{s.tfr_decay_step:g}/ep after ep {s.tfr_start_decay_epoch}"
        if len({r.schedule.tfr_lower_bound for r in reps}) > 1:
            label += f" floor {s.tfr_lower_bound:g}"
    if _coins_matter(cfg) and len({r.schedule.tfr_mode for r in reps if _coins_matter(r)}) > 1:
        label += f" ({s.tfr_mode})"
    return label


def _coins_matter(cfg: Config) -> bool:
    """One coin per batch or per step differ only where the ratio is strictly between 0 and 1."""
    tf = TeacherForcing.from_config(cfg.schedule)
    return any(0 < tf.ratio(e) < 1 for e in range(cfg.train.epochs + 1))


def name_strategies(configs: dict[int, Config]) -> tuple[dict[int, Strategy], dict[int, Strategy]]:
    """(KL strategy, teacher-forcing strategy) of each trial number, by effective schedule."""
    kl_groups: dict[str, list[int]] = {}
    tf_groups: dict[str, list[int]] = {}
    for n, cfg in configs.items():
        kl_groups.setdefault(kl_signature(cfg), []).append(n)
        tf_groups.setdefault(tf_signature(cfg), []).append(n)
    kl_reps = {sig: min((configs[n] for n in ns), key=lambda c: _kl_key(c.schedule)) for sig, ns in kl_groups.items()}
    tf_reps = {sig: min((configs[n] for n in ns), key=_tf_key) for sig, ns in tf_groups.items()}
    kl_all = [c.schedule for c in kl_reps.values()]
    tf_all = list(tf_reps.values())
    kl_names = _unique({sig: kl_label(rep.schedule, kl_all) for sig, rep in kl_reps.items()})
    tf_names = _unique({sig: tf_label(rep, tf_all) for sig, rep in tf_reps.items()})
    kl_out = {n: Strategy(kl_names[sig], _kl_key(kl_reps[sig].schedule)) for sig, ns in kl_groups.items() for n in ns}
    if len(tf_groups) > MAX_NAMED:
        return kl_out, binned_teacher_forcing(configs)
    tf_out = {n: Strategy(tf_names[sig], _tf_key(tf_reps[sig])) for sig, ns in tf_groups.items() for n in ns}
    return kl_out, tf_out


def forced_share(cfg: Config) -> float:
    """The mean teacher-forcing ratio over the budget's epochs: the share of steps fed true frames."""
    tf = TeacherForcing.from_config(cfg.schedule)
    return sum(tf.ratio(e) for e in range(cfg.train.epochs)) / max(1, cfg.train.epochs)


def binned_teacher_forcing(configs: dict[int, Config]) -> dict[int, Strategy]:
    """Trials in TF_BINS ranges of their forced share with (about) equal counts: 'tf share 0.12-0.35'."""
    share = {n: round(forced_share(c), 2) for n, c in configs.items()}
    values = sorted(set(share.values()))
    per = -(-len(values) // TF_BINS)
    bins = [values[i:i + per] for i in range(0, len(values), per)]
    out = {}
    for n, v in share.items():
        k = next(i for i, b in enumerate(bins) if v in b)
        lo, hi = bins[k][0], bins[k][-1]
        out[n] = Strategy(f"tf share {lo:.2f}" if lo == hi else f"tf share {lo:.2f}-{hi:.2f}", (k,))
    return out


def _unique(labels: dict[str, str]) -> dict[str, str]:
    """Different schedules must not share a name (settings the label leaves out can still differ)."""
    seen: dict[str, int] = {}
    out = {}
    for sig, label in labels.items():
        seen[label] = seen.get(label, 0) + 1
        out[sig] = label if seen[label] == 1 else f"{label} #{seen[label]}"
    return out

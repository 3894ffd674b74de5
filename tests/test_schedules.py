import math
from types import SimpleNamespace

import pytest
import torch

from vpsearch.config import OptimConfig, load_config
from vpsearch.schedules import (KLAnnealing, LearningRate, TeacherForcing, kl_signature, lr_factor,
                                         tf_signature)


def test_teacher_forcing_follows_the_lab_rule():
    tf = TeacherForcing(initial=1.0, start_decay_epoch=10, decay_step=0.1, lower_bound=0.3)
    # epoch 10 still trains at the initial ratio; decrements start after it
    assert [tf.ratio(e) for e in (0, 9, 10)] == [1.0, 1.0, 1.0]
    assert tf.ratio(11) == pytest.approx(0.9)
    assert tf.ratio(15) == pytest.approx(0.5)
    assert tf.ratio(17) == pytest.approx(0.3)
    assert tf.ratio(100) == pytest.approx(0.3)  # lower bound holds


def test_teacher_forcing_mask_modes():
    g = torch.Generator().manual_seed(0)
    batch = TeacherForcing(mode="batch")
    m = batch.mask(0.5, 4, 12, g)
    assert m.shape == (4, 12) and (m.all() or (~m).all())  # one coin for the whole batch
    assert batch.mask(1.0, 3, 5, g).all() and not batch.mask(0.0, 3, 5, g).any()
    step = TeacherForcing(mode="step")
    m = step.mask(0.5, 64, 50, g)
    assert 0.4 < m.float().mean().item() < 0.6  # independent coins per sample and step
    assert not (m.all(0) | (~m).all(0)).all()


def test_kl_annealing_values():
    none = KLAnnealing(kind="none", total=10)
    assert [none.weight(t) for t in (0, 5, 9)] == [1.0, 1.0, 1.0]
    mono = KLAnnealing(kind="monotonic", ratio=0.5, total=10)
    assert [mono.weight(t) for t in (0, 1, 4, 5, 9)] == pytest.approx([0.0, 0.2, 0.8, 1.0, 1.0])
    cyc = KLAnnealing(kind="cyclical", cycles=2, ratio=0.5, total=8)  # period 4, rise over 2
    assert [cyc.weight(t) for t in range(8)] == pytest.approx([0, 0.5, 1, 1, 0, 0.5, 1, 1])
    # non-integer period (10 epochs, 3 cycles: period 10/3)
    cyc3 = KLAnnealing(kind="cyclical", cycles=3, ratio=1.0, total=10)
    assert cyc3.weight(4) == pytest.approx((4 - 10 / 3) / (10 / 3))


def test_kl_annealing_per_iteration_counts_steps():
    cfg = load_config("pushing-small", ["train.epochs=2", "train.steps_per_epoch=5",
                                        "schedule.kl_anneal_unit=iteration",
                                        "schedule.kl_anneal_type=monotonic", "schedule.kl_anneal_ratio=1.0"])
    kl = KLAnnealing.from_config(cfg)
    assert kl.total == 10
    assert kl.at(epoch=1, step_in_epoch=2, steps_per_epoch=5) == pytest.approx(0.7)
    per_epoch = KLAnnealing.from_config(load_config("pushing-small", ["train.epochs=4",
                                                                      "schedule.kl_anneal_type=monotonic",
                                                                      "schedule.kl_anneal_ratio=1.0"]))
    assert per_epoch.at(epoch=2, step_in_epoch=3, steps_per_epoch=5) == pytest.approx(0.5)


def test_cycle_length_in_epochs():
    assert KLAnnealing(kind="cyclical", cycles=3, total=30).cycle_length_epochs() == 10
    assert KLAnnealing(kind="cyclical", cycles=2, total=100, unit="iteration").cycle_length_epochs(10) == 5


def test_lr_factor():
    step = OptimConfig(lr_schedule="multistep", milestones=[2, 5], gamma=0.1)
    assert [lr_factor(e, step, 10) for e in (0, 1, 2, 4, 5, 9)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cos = OptimConfig(lr_schedule="cosine")
    assert lr_factor(0, cos, 10) == 1.0 and lr_factor(5, cos, 10) == pytest.approx(0.5)
    warm = OptimConfig(warmup_epochs=3)
    assert [lr_factor(e, warm, 10) for e in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert math.isclose(lr_factor(7, OptimConfig(), 10), 1.0)


def test_the_learning_rate_moves_every_step():
    cos = OptimConfig(lr=0.01, lr_schedule="cosine")
    cfg = SimpleNamespace(optim=cos, train=SimpleNamespace(epochs=4))
    lr = LearningRate.from_config(cfg)
    within = [lr.at(1, i, 10) for i in range(10)]
    assert all(a > b for a, b in zip(within, within[1:]))  # a curve inside the epoch, not a step
    # epoch 1, step 5 of 10 is 1.5 / 4 of the way: 0.5 (1 + cos(0.375 pi))
    assert within[5] == pytest.approx(0.01 * 0.5 * (1 + math.cos(math.pi * 1.5 / 4)))
    assert lr.at(0, 0, 10) == pytest.approx(0.01) and lr.at(3, 9, 10) == pytest.approx(
        0.01 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))
    staircase = LearningRate.from_config(SimpleNamespace(optim=cos.model_copy(update={"lr_unit": "epoch"}),
                                                         train=SimpleNamespace(epochs=4)))
    assert [staircase.at(1, i, 10) for i in range(10)] == pytest.approx([0.01 * 0.5 * (1 + math.cos(math.pi / 4))] * 10)
    # warm-up per step ramps to the full rate at the end of the warm-up epochs; milestones stay epochs
    warm = OptimConfig(warmup_epochs=2)
    ramp = [lr_factor(e, warm, 10, i, 4) for e in range(3) for i in range(4)]
    assert ramp[:8] == pytest.approx([(t + 1) / 9 for t in range(8)]) and ramp[8:] == [1.0] * 4
    multi = OptimConfig(lr_schedule="multistep", milestones=[2], gamma=0.1)
    assert [lr_factor(e, multi, 4, 3, 4) for e in range(4)] == pytest.approx([1, 1, 0.1, 0.1])


def test_the_optimiser_follows_the_schedule_inside_an_epoch(tiny_cfg):
    from vpsearch.training.engine import train_epoch
    from vpsearch.training.trainer import prepare_training

    s = prepare_training(tiny_cfg("optim.lr_schedule=cosine", "train.epochs=2", "train.steps_per_epoch=3"))
    seen = []
    train_epoch(s.ctx, s.train_set, s.windows, s.sampler.epoch(3), 1, length=s.length,
                on_step=lambda i: seen.append(s.optimizer.param_groups[0]["lr"]))
    assert seen == pytest.approx([s.ctx.lr.at(1, i, 3) for i in range(3)]) and seen[0] > seen[1] > seen[2]


def test_nine_cycles_in_nine_epochs_are_counted_per_iteration():
    # once per epoch that schedule is [0, ..., 0]: no KL at all (the dance_tpe case)
    per_epoch = KLAnnealing(kind="cyclical", cycles=9, ratio=0.5, total=9)
    assert [per_epoch.weight(e) for e in range(9)] == [0.0] * 9
    cfg = load_config("dancer-small", ["train.epochs=9", "schedule.kl_anneal_type=cyclical", "schedule.kl_anneal_cycle=9"])
    assert cfg.schedule.kl_anneal_unit == "iteration"  # recorded in the resolved config
    kl = KLAnnealing.from_config(cfg)
    steps = cfg.train.steps_per_epoch
    weights = [kl.at(e, i, steps) for e in range(cfg.train.epochs) for i in range(steps)]
    assert max(weights) == 1.0 and weights.count(0.0) == 9  # each cycle rises from 0 to 1 again
    assert weights[steps // 2 - 1] == pytest.approx((steps // 2 - 1) / (steps / 2))
    # a cycle with room to rise per epoch stays per epoch
    assert load_config("dancer-small", ["schedule.kl_anneal_type=cyclical",
                                        "schedule.kl_anneal_cycle=2"]).schedule.kl_anneal_unit == "epoch"


def test_a_too_fast_schedule_without_steps_per_epoch_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"field schedule.kl_anneal_cycle: cyclical KL annealing with 40 cycles "
                                         r"over 70 epochs rises for 0.88 epoch\(s\) per cycle.*train.steps_per_epoch"):
        load_config("dance", ["schedule.kl_anneal_cycle=40", "schedule.kl_anneal_ratio=0.5"])
    with pytest.raises(ValueError, match=r"field schedule.tfr_decay_step: teacher forcing decays from 1 to 0 in "
                                         r"1 epoch\(s\)"):
        load_config("dance", ["schedule.tfr_decay_step=1.0"])


def test_teacher_forcing_decay_faster_than_two_epochs_goes_per_iteration():
    cfg = load_config("pushing-small", ["train.epochs=6", "train.steps_per_epoch=4", "schedule.tfr_start_decay_epoch=1",
                                        "schedule.tfr_decay_step=0.6", "schedule.tfr_lower_bound=0.0"])
    assert cfg.schedule.tfr_unit == "iteration"  # from 1 to 0 in 1.7 epochs
    tf = TeacherForcing.from_config(cfg.schedule)
    # the same slope, step by step; at each epoch's first step the per-epoch value
    assert [tf.at(0, i, 4) for i in range(4)] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert [tf.at(1, i, 4) for i in range(4)] == pytest.approx([1.0, 0.85, 0.7, 0.55])
    assert [tf.at(2, i, 4) for i in range(4)] == pytest.approx([0.4, 0.25, 0.1, 0.0])
    assert TeacherForcing(decay_step=0.1, start_decay_epoch=2).first_decayed_epoch(10) == 3
    assert TeacherForcing(decay_step=0.1, start_decay_epoch=9).first_decayed_epoch(10) is None  # after the budget
    assert TeacherForcing(decay_step=0.0).first_decayed_epoch(10) is None


def test_identical_effective_schedules_have_one_signature():
    def cfg(*o):
        return load_config("pushing-small", ["train.epochs=4", "train.steps_per_epoch=6", *o])
    one_cycle = cfg("schedule.kl_anneal_type=cyclical", "schedule.kl_anneal_cycle=1", "schedule.kl_anneal_ratio=0.5")
    mono = cfg("schedule.kl_anneal_type=monotonic", "schedule.kl_anneal_ratio=0.5")
    two = cfg("schedule.kl_anneal_type=cyclical", "schedule.kl_anneal_cycle=2", "schedule.kl_anneal_ratio=0.5")
    assert kl_signature(one_cycle) == kl_signature(mono) != kl_signature(two)
    never = cfg("schedule.tfr_start_decay_epoch=10", "schedule.tfr_decay_step=0.1")  # starts after the budget
    fixed = cfg("schedule.tfr_decay_step=0.0")
    assert tf_signature(never) == tf_signature(fixed) != tf_signature(cfg("schedule.tfr_start_decay_epoch=1"))
    # coins per step or per batch: the same while the ratio is 1, not once it is in between
    assert tf_signature(cfg("schedule.tfr_decay_step=0.0", "schedule.tfr_mode=step")) == tf_signature(fixed)
    half = cfg("schedule.tfr=0.5", "schedule.tfr_decay_step=0.0", "schedule.tfr_lower_bound=0.0")
    assert tf_signature(cfg("schedule.tfr=0.5", "schedule.tfr_decay_step=0.0", "schedule.tfr_lower_bound=0.0",
                            "schedule.tfr_mode=step")) != tf_signature(half)


def test_settled_and_cycle_of():
    kl = KLAnnealing(kind="cyclical", cycles=3, ratio=0.5, total=15)  # period 5, ramp 2.5
    assert [kl.settled(e) for e in range(6)] == [False, False, False, True, True, False]
    assert [kl.cycle_of(e) for e in (0, 4, 5, 9, 10, 14)] == [0, 0, 1, 1, 2, 2]
    it = KLAnnealing(kind="cyclical", cycles=2, ratio=0.5, total=40, unit="iteration")  # 4 epochs of 10 steps
    assert [it.settled(e, 10) for e in range(4)] == [False, True, False, True]  # ramps end at steps 10, 30
    assert [it.cycle_of(e, 10) for e in range(4)] == [0, 0, 1, 1]
    assert KLAnnealing(kind="monotonic", ratio=1.0, total=10).rise_epochs() == 10
    assert KLAnnealing(kind="none").rise_epochs() == math.inf

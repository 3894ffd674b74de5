import math

import pytest
import torch

from vpsearch.config import OptimConfig, load_config
from vpsearch.training.schedules import KLAnnealing, TeacherForcing, lr_factor


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

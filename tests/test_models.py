import pytest
import torch

from vpsearch.config import DanceModelConfig, SVGModelConfig
from vpsearch.models import DataShape, build_model
from vpsearch.models.base import cond_at
from vpsearch.training.engine import sequence_loss

SVG_VARIANTS = [(b, p) for b in ("vgg64", "dcgan64") for p in ("learned", "fixed")]


@pytest.mark.parametrize("backbone,prior", SVG_VARIANTS)
@pytest.mark.parametrize("cond_dim", [0, 7])
def test_svg_shapes_forward_backward(backbone, prior, cond_dim):
    torch.manual_seed(0)
    model = build_model(SVGModelConfig(backbone=backbone, prior=prior, nf=8, g_dim=16, z_dim=4, rnn_size=16),
                        DataShape(cond_dim=cond_dim))
    frames = torch.rand(3, 5, 3, 64, 64)
    cond = torch.randn(3, 5, cond_dim) if cond_dim else None
    teacher = torch.tensor([[True] * 5, [False] * 5, [True, False] * 2 + [True]])
    preds, stats = model(frames, cond, 2, teacher)
    assert preds.shape == (3, 4, 3, 64, 64)
    assert len(stats) == 4 and stats[0].mu_q.shape == (3, 4)
    assert ((preds >= 0) & (preds <= 1)).all()
    loss, _, _ = sequence_loss(preds, frames, stats, beta=1e-2, reduction="sum_batchmean")
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    if prior == "fixed":
        assert all((g.mu_p == 0).all() and (g.logvar_p == 0).all() for g in stats)


@pytest.mark.parametrize("batch", [1, 2, 5])
def test_batch_size_is_free_and_generation_shapes(batch):
    model = build_model(SVGModelConfig(backbone="dcgan64", nf=8, g_dim=16, z_dim=4, rnn_size=16),
                        DataShape(cond_dim=7)).eval()
    out = list(model.generate(torch.rand(batch, 2, 3, 64, 64), torch.randn(batch, 12, 7), 10))
    assert len(out) == 10 and out[0].shape == (batch, 3, 64, 64)


def test_dance_model_shapes_forward_backward():
    cfg = DanceModelConfig(f_dim=16, l_dim=8, n_dim=4, d_out_dim=24)
    model = build_model(cfg, DataShape(height=32, width=64, cond_channels=3))
    frames, labels = torch.rand(2, 6, 3, 32, 64), torch.rand(2, 6, 3, 32, 64)
    preds, stats = model(frames, labels, 1, torch.zeros(2, 6, dtype=torch.bool))
    assert preds.shape == (2, 5, 3, 32, 64)
    assert stats[0].mu_q.shape == (2, 4, 32, 64)  # spatial latent at frame resolution
    assert ((preds >= 0) & (preds <= 1)).all()
    sequence_loss(preds, frames, stats, 1e-3, "mean")[0].backward()
    assert all(p.grad is not None for p in model.parameters())
    gen = list(model.eval().generate(frames[:, :1], labels, 5))
    assert len(gen) == 5 and gen[-1].shape == (2, 3, 32, 64)


def test_condition_index_is_one_rule():
    cond = torch.arange(5.0).view(1, 5, 1)
    assert cond_at(cond, 3, "current").item() == 3.0
    assert cond_at(cond, 3, "previous").item() == 2.0


def test_generation_uses_the_same_condition_row_as_training():
    """The step predicting frame t must see c_t in training and generation alike."""
    model = build_model(SVGModelConfig(backbone="dcgan64", nf=8, g_dim=16, z_dim=4, rnn_size=16),
                        DataShape(cond_dim=1)).eval()
    seen = []
    orig = model.step

    def spy(prev, target, cond, state, t, n_past):
        seen.append((t, cond[0, 0].item()))
        return orig(prev, target, cond, state, t, n_past)

    model.step = spy
    cond = torch.arange(6.0).view(1, 6, 1)
    with torch.no_grad():
        model(torch.rand(1, 6, 3, 64, 64), cond, 2, torch.ones(1, 6, dtype=torch.bool))
        train_seen, seen[:] = list(seen), []
        list(model.generate(torch.rand(1, 2, 3, 64, 64), cond, 4))
    assert train_seen == seen == [(t, float(t)) for t in range(1, 6)]


def test_svg_refuses_other_frame_sizes():
    with pytest.raises(ValueError, match="64x64"):
        build_model(SVGModelConfig(), DataShape(height=32, width=64))

import pytest
import torch

from vpsearch.config import DanceModelConfig, SVGModelConfig
from vpsearch.models import DataShape, build_model
from vpsearch.models.base import cond_at, whole
from vpsearch.models.compose import Compositor, change_gate, recording_flow, warp
from vpsearch.models.dance import FrameGroupNorm
from vpsearch.training.engine import sequence_loss

SVG_VARIANTS = [(b, p) for b in ("vgg64", "dcgan64") for p in ("learned", "fixed")]
BAIR_COND = (("action", 4), ("position", 3))  # the BAIR loader's columns: actions.csv, then positions
BAIR = DataShape(cond_dim=7, cond_parts=BAIR_COND)


def tiny_svg(**kw) -> SVGModelConfig:
    return SVGModelConfig(**{"backbone": "dcgan64", "nf": 8, "g_dim": 16, "z_dim": 4, "rnn_size": 16, **kw})


@pytest.mark.parametrize("backbone,prior", SVG_VARIANTS)
@pytest.mark.parametrize("cond_dim", [0, 7])
def test_svg_shapes_forward_backward(backbone, prior, cond_dim):
    torch.manual_seed(0)
    model = build_model(SVGModelConfig(backbone=backbone, prior=prior, nf=8, g_dim=16, z_dim=4, rnn_size=16),
                        DataShape(cond_dim=cond_dim, cond_parts=BAIR_COND if cond_dim else ()))
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
                        BAIR).eval()
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


def test_condition_rows_are_one_rule():
    cond = torch.arange(5.0).view(1, 5, 1)
    assert cond_at(cond, 3, whole("current")).item() == 3.0
    assert cond_at(cond, 3, whole("previous")).item() == 2.0
    assert cond_at(cond, 3, whole("both")).flatten().tolist() == [2.0, 3.0]  # c_{t-1} then c_t


def bair_rows(frames: int) -> torch.Tensor:
    """(1, T, 7): action columns hold 10 * t + column, position columns 100 + 10 * t + column."""
    t = torch.arange(frames, dtype=torch.float32).view(1, frames, 1)
    return torch.cat([10 * t + torch.arange(4.0), 100 + 10 * t + torch.arange(4.0, 7.0)], 2)


@pytest.mark.parametrize("action,position,expect", [
    ("previous", "current", lambda t: [10 * (t - 1) + c for c in range(4)] + [100 + 10 * t + c for c in range(4, 7)]),
    ("current", "previous", lambda t: [10 * t + c for c in range(4)] + [100 + 10 * (t - 1) + c for c in range(4, 7)]),
    ("both", "current", lambda t: [10 * (t - 1) + c for c in range(4)] + [10 * t + c for c in range(4)]
     + [100 + 10 * t + c for c in range(4, 7)]),
    ("previous", "both", lambda t: [10 * (t - 1) + c for c in range(4)] + [100 + 10 * (t - 1) + c for c in range(4, 7)]
     + [100 + 10 * t + c for c in range(4, 7)]),
])
def test_generation_uses_the_same_condition_rows_as_training(action, position, expect):
    """Action and position columns are indexed apart, by one rule, in training and generation."""
    model = build_model(tiny_svg(action_index=action, position_index=position), BAIR).eval()
    assert model.predictor.embed.in_features == 16 + 4 + len(expect(1))
    seen = []
    orig = model.step

    def spy(prev, target, cond, state, t, n_past, own):
        seen.append((t, cond[0].tolist()))
        return orig(prev, target, cond, state, t, n_past, own)

    model.step = spy
    cond = bair_rows(6)
    with torch.no_grad():
        model(torch.rand(1, 6, 3, 64, 64), cond, 2, torch.ones(1, 6, dtype=torch.bool))
        train_seen, seen[:] = list(seen), []
        list(model.generate(torch.rand(1, 2, 3, 64, 64), cond, 4))
    assert train_seen == seen == [(t, [float(v) for v in expect(t)]) for t in range(1, 6)]


def test_condition_parts_must_cover_the_columns():
    with pytest.raises(ValueError, match="do not add up"):
        DataShape(cond_dim=7, cond_parts=(("action", 4),))
    with pytest.raises(ValueError, match="kind 'torque'"):
        build_model(tiny_svg(), DataShape(cond_dim=2, cond_parts=(("torque", 2),)))


def test_old_checkpoints_keep_their_condition_rows():
    """Before per-kind indices one model.cond_index served every column: loading such a
    config and data shape must give the same rows."""
    from vpsearch.config import config_from_dict, load_config

    old = load_config("pushing-small").to_dict()
    del old["model"]["action_index"], old["model"]["position_index"]
    old["model"]["cond_index"] = "current"
    cfg = config_from_dict(old)
    assert (cfg.model.action_index, cfg.model.position_index) == ("current", "current")
    shape = DataShape.from_dict({"channels": 3, "height": 64, "width": 64, "cond_dim": 7, "cond_channels": 0})
    model = build_model(cfg.model, shape)
    assert cond_at(bair_rows(4), 2, model.cond_parts)[0].tolist() == bair_rows(4)[0, 2].tolist()


COMPOSITES = [[], ["anchor"], ["previous"], ["warped"], ["anchor", "warped"], ["anchor", "previous", "warped"]]


@pytest.mark.parametrize("backbone", ["vgg64", "dcgan64"])
@pytest.mark.parametrize("composite", COMPOSITES)
def test_svg_composite_shapes_forward_backward(backbone, composite):
    torch.manual_seed(0)
    model = build_model(tiny_svg(backbone=backbone, composite=composite), BAIR)
    frames, cond = torch.rand(2, 5, 3, 64, 64), torch.randn(2, 5, 7)
    preds, stats = model(frames, cond, 2, torch.tensor([[True, True, True, False, False]] * 2))
    assert preds.shape == (2, 4, 3, 64, 64) and ((preds >= 0) & (preds <= 1)).all()
    sequence_loss(preds, frames, stats, 1e-2, "sum_batchmean")[0].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    head = model.decoder.upc5[-1]
    assert head.out_channels == 3 + Compositor.extra_channels(composite)
    gen = list(model.eval().generate(frames[:, :2], cond, 3))
    assert len(gen) == 3 and gen[0].shape == (2, 3, 64, 64)


def force_source(model, source: str | None) -> None:
    """Make the decoder head output constant logits: a mask picking `source` (None: all zero)."""
    head = model.decoder.upc5[-1]
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        if source is not None:
            head.bias[3 + 1 + model.cfg.composite.index(source)] = 50.0


@pytest.mark.parametrize("source", ["anchor", "previous", "warped"])
def test_svg_composite_copies_the_source_its_mask_picks(source):
    """A head whose mask picks the last context frame repeats it; one picking the previous
    frame (or its zero-flow warp) repeats the model's own last output: copy-last exactly."""
    model = build_model(tiny_svg(composite=["anchor", "previous", "warped"]), BAIR).eval()
    force_source(model, source)
    context = torch.rand(2, 2, 3, 64, 64)
    frames = list(model.generate(context, torch.randn(2, 8, 7), 6))
    for f in frames:
        assert torch.allclose(f, context[:, 1], atol=1e-4)  # bilinear resampling rounds a little


def test_svg_composite_off_is_the_plain_sigmoid_decoder():
    torch.manual_seed(0)
    plain = build_model(tiny_svg(), DataShape())
    head = plain.decoder.upc5[-1]
    assert head.out_channels == 3 and plain.compositor.sources == []
    force_source(plain, None)
    out = list(plain.eval().generate(torch.rand(1, 2, 3, 64, 64), None, 2))
    assert all(torch.allclose(f, torch.full_like(f, 0.5)) for f in out)  # sigmoid(0)


def make_prior_equal_posterior(model) -> None:
    """q = p = N(0, I): the training pass and generation then draw the same z from one seed."""
    for m in (model.posterior.mu, model.posterior.logvar):
        torch.nn.init.zeros_(m.weight)
        torch.nn.init.zeros_(m.bias)


@pytest.mark.parametrize("composite", COMPOSITES)
def test_training_on_own_frames_equals_generation(composite):
    """With teacher forcing off, forward() is generate(): same frames, same conditions."""
    torch.manual_seed(0)
    model = build_model(tiny_svg(composite=composite, prior="fixed"), BAIR).eval()
    make_prior_equal_posterior(model)
    frames, cond = torch.rand(2, 7, 3, 64, 64), torch.randn(2, 7, 7)
    with torch.no_grad():
        torch.manual_seed(1)
        preds, _ = model(frames, cond, 2, torch.zeros(2, 7, dtype=torch.bool))
        torch.manual_seed(1)
        gen = torch.stack(list(model.generate(frames[:, :2], cond, 5)), 1)
    assert torch.allclose(preds[:, 1:], gen, atol=1e-5)  # preds[:, 0] is frame 1, a context frame


def test_svg_refuses_other_frame_sizes():
    with pytest.raises(ValueError, match="64x64"):
        build_model(SVGModelConfig(), DataShape(height=32, width=64))


DANCE_OPTIONS = dict(cond_index="both", anchor="last_context", composite=["anchor", "previous", "warped"])


def test_dance_options_shapes_forward_backward_and_generation():
    cfg = DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8, **DANCE_OPTIONS)
    model = build_model(cfg, DataShape(height=16, width=24, cond_channels=3))
    frames, labels = torch.rand(2, 5, 3, 16, 24), torch.rand(2, 5, 3, 16, 24)
    preds, stats = model(frames, labels, 1, torch.tensor([[True, False] * 2 + [True]] * 2))
    assert preds.shape == (2, 4, 3, 16, 24) and ((preds >= 0) & (preds <= 1)).all()
    sequence_loss(preds, frames, stats, 1.0, "sum_batchmean")[0].backward()
    assert all(p.grad is not None for p in model.parameters())
    gen = list(model.eval().generate(frames[:, :1], labels, 4))
    assert len(gen) == 4 and gen[0].shape == (2, 3, 16, 24)


def record_own(model) -> list:
    """The `own` argument of every step the model takes, as a list (None or a list of bools)."""
    seen, orig_step = [], model.step

    def step(*a):
        seen.append(None if a[6] is None else a[6].tolist())
        return orig_step(*a)

    model.step = step
    return seen


def test_steps_are_told_which_frames_they_continue_from_are_the_models_own():
    """own: None while every step continues from true frames; per sample in training (the
    teacher mask, context steps always true); in generation the first predicted step
    continues from the last given frame, every later one from an own frame."""
    cfg = DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8, **DANCE_OPTIONS)
    model = build_model(cfg, DataShape(height=8, width=8, cond_channels=3))
    frames, labels = torch.rand(2, 5, 3, 8, 8), torch.rand(2, 5, 3, 8, 8)
    seen = record_own(model)
    teacher = torch.tensor([[False, False, True, False, True], [False, False, False, True, True]])
    model(frames, labels, 2, teacher)  # steps 1, 2 continue from context frames 0, 1
    assert seen == [None, None, [True, False], None]
    seen.clear()
    list(model.eval().generate(frames[:, :2], labels, 3))
    assert seen == [None, None, [True, True], [True, True]]  # warm-up step, then frames 2, 3, 4


@pytest.mark.parametrize("norm, alike", [("batch", False), ("group", True)])
def test_dance_norm_decides_whether_training_and_generation_normalise_alike(norm, alike):
    """model.norm: with BatchNorm a frame's prediction depends on the rest of the training
    batch and differs in eval mode (running statistics); GroupNorm depends on the frame
    alone, so a training step and a generation step given the same inputs agree."""
    torch.manual_seed(0)
    cfg = DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8, norm=norm, **DANCE_OPTIONS)
    model = build_model(cfg, DataShape(height=16, width=24, cond_channels=3))
    frames, labels = torch.rand(3, 3, 3, 16, 24), torch.rand(3, 3, 3, 16, 24)
    teacher = torch.ones(3, 3, dtype=torch.bool)
    with torch.no_grad():
        model.posterior[-1].bias[cfg.n_dim:] = -40.0  # q's variance ~0: z = its mean, no random draw

    def first_sample(batch: int, train: bool) -> torch.Tensor:
        model.train(train)
        with torch.no_grad():
            return model(frames[:batch], labels[:batch], 1, teacher[:batch])[0][0]

    alone, in_batch, generating = first_sample(1, True), first_sample(3, True), first_sample(1, False)
    kinds = {"batch" if isinstance(m, torch.nn.BatchNorm2d) else "group"
             for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))}
    assert kinds == {norm}
    assert torch.allclose(alone, in_batch, atol=1e-5) is alike
    assert torch.allclose(alone, generating, atol=1e-5) is alike


def test_frame_group_norm_keeps_values_and_layout_of_channels_last_maps():
    norm = FrameGroupNorm(4, 12)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    x = torch.randn(2, 12, 5, 7)
    out = norm(x.contiguous(memory_format=torch.channels_last))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, torch.nn.functional.group_norm(x, 4, norm.weight, norm.bias), atol=1e-5)


def test_dance_posterior_starts_at_the_prior():
    model = build_model(DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8), DataShape(height=32, width=64, cond_channels=3))
    _, stats = model(torch.rand(2, 4, 3, 32, 64), torch.rand(2, 4, 3, 32, 64), 1, torch.ones(2, 4, dtype=torch.bool))
    assert all((g.mu_q == 0).all() and (g.logvar_q == 0).all() for g in stats)  # KL = 0 at step 0


def logits_for(choice: int, sources: list[str], flow=(0.0, 0.0), channels=3, shape=(1, 4, 5)) -> torch.Tensor:
    """A generator output whose mask picks candidate `choice` (0 painted, 1.. the sources)."""
    out = torch.zeros(shape[0], channels + Compositor.extra_channels(sources), *shape[1:])
    out[:, channels + choice] = 50.0
    if "warped" in sources:
        k = 1 + len(sources)
        out[:, channels + k] = torch.atanh(torch.tensor(flow[0] / 4.0))
        out[:, channels + k + 1] = torch.atanh(torch.tensor(flow[1] / 4.0))
    return out


def test_compositor_copies_the_chosen_source():
    sources = ["anchor", "previous", "warped"]
    comp = Compositor(sources, 3, max_flow=4.0)
    anchor, prev = torch.rand(1, 3, 4, 5), torch.rand(1, 3, 4, 5)
    pixels = {"anchor": anchor, "previous": prev}
    assert torch.allclose(comp(logits_for(0, sources), pixels), torch.full_like(anchor, 0.5))  # sigmoid(0)
    assert torch.allclose(comp(logits_for(1, sources), pixels), anchor)
    assert torch.allclose(comp(logits_for(2, sources), pixels), prev)
    assert torch.allclose(comp(logits_for(3, sources), pixels), prev, atol=1e-5)  # zero flow: no move
    moved = comp(logits_for(3, sources, flow=(1.0, 0.0)), pixels)
    assert torch.allclose(moved[..., :4], prev[..., 1:], atol=1e-4)  # each pixel fetched from x + 1
    assert Compositor([], 3, 4.0)(torch.zeros(1, 3, 4, 5), {}).eq(0.5).all()


def test_a_nan_flow_does_not_crash_the_backward():
    """A diverged model (lr 1e6) paints a NaN flow; CPU grid_sample's backward segfaults on NaN
    coordinates, which killed study workers instead of failing the trial (run in a child process)."""
    import subprocess
    import sys

    code = ("import torch; from vpsearch.models.compose import Compositor\n"
            "out = torch.zeros(2, 3 + 4 + 2, 8, 8); out[:, 3 + 4:] = float('nan'); out.requires_grad_()\n"
            "x = torch.rand(2, 3, 8, 8)\n"
            "frame = Compositor(['anchor', 'previous', 'warped'], 3, 2.0)(out, {'anchor': x, 'previous': x})\n"
            "frame.sum().backward(); print(torch.isfinite(frame).all().item())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "True"  # finite masks: the warped candidate samples in place


def test_warp_moves_by_whole_pixels_in_both_axes():
    x = torch.arange(2 * 3 * 4 * 5.0).view(2, 3, 4, 5)
    down = torch.zeros(2, 2, 4, 5)
    down[:, 1] = 1.0
    assert torch.allclose(warp(x, down)[..., :3, :], x[..., 1:, :], atol=1e-4)
    assert torch.allclose(warp(x, torch.zeros(2, 2, 4, 5)), x, atol=1e-5)


def test_anchor_is_the_given_frame_for_the_whole_rollout():
    """A model that always copies its anchor must reproduce the context frame forever."""
    cfg = DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8, anchor="last_context", composite=["anchor"])
    model = build_model(cfg, DataShape(height=8, width=8, cond_channels=3)).eval()
    head = model.generator[-1]
    torch.nn.init.zeros_(head.weight)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[3 + 1] = 50.0  # the anchor's mask logit
    first = torch.rand(1, 1, 3, 8, 8)
    frames = list(model.generate(first, torch.rand(1, 30, 3, 8, 8), 29))
    assert len(frames) == 29 and all(torch.allclose(f, first[:, 0]) for f in frames)


def test_generation_encodes_each_label_once_with_both_rows():
    cfg = DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8, cond_index="both")
    model = build_model(cfg, DataShape(height=8, width=8, cond_channels=3)).eval()
    calls = []
    orig = model.encode_cond
    model.encode_cond = lambda c: calls.append(1) or orig(c)
    list(model.generate(torch.rand(1, 1, 3, 8, 8), torch.rand(1, 12, 3, 8, 8), 11))
    assert len(calls) == 12  # labels 0..11, each once, though every step uses two


@pytest.mark.parametrize("detach", [False, True])
def test_fed_back_frames_are_constants_only_when_detached(detach):
    """detach_predictions: the own frame re-encoded for the next step carries no gradient;
    the values, and so the loss, are the same either way."""
    torch.manual_seed(0)
    cfg = DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8, **DANCE_OPTIONS)
    model = build_model(cfg, DataShape(height=8, width=8, cond_channels=3))
    fed, made = [], []
    orig_encode, orig_step = model.encode, model.step
    model.encode = lambda x: fed.append(x) or orig_encode(x)

    def step(*a):
        out = orig_step(*a)
        made.append(out[0])
        return out

    model.step = step
    frames, labels = torch.rand(2, 5, 3, 8, 8), torch.rand(2, 5, 3, 8, 8)
    own_frames = torch.zeros(2, 5, dtype=torch.bool)
    torch.manual_seed(1)
    preds, _ = model(frames, labels, 1, own_frames, detach)
    own = fed[1:]  # fed[0] is the batched encoding of the true frames
    assert len(own) == 3 and all(x.requires_grad != detach for x in own)
    # the last step's output reaches back to the first step's only without detaching
    g = torch.autograd.grad(made[-1].sum(), made[0], allow_unused=True, retain_graph=True)[0]
    assert g is None if detach else g.abs().sum() > 0
    torch.manual_seed(1)
    again, _ = model(frames, labels, 1, own_frames, not detach)
    assert torch.equal(preds, again)


@pytest.mark.parametrize("family", ["svg", "dance"])
def test_copy_bias_starts_the_model_as_a_copier(family):
    """An untrained model with a large copy_bias repeats the last given frame (copy-last);
    without it, it paints its own pixels into the blend."""
    torch.manual_seed(0)
    if family == "svg":
        cfg = tiny_svg(composite=["anchor", "warped"], copy_bias=30.0)
        model, context, cond = build_model(cfg, BAIR), torch.rand(2, 2, 3, 64, 64), torch.randn(2, 5, 7)
    else:
        cfg = DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8, composite=["anchor", "warped"], copy_bias=30.0)
        model, context, cond = (build_model(cfg, DataShape(height=8, width=8, cond_channels=3)),
                                torch.rand(2, 1, 3, 8, 8), torch.rand(2, 4, 3, 8, 8))
    frames = list(model.eval().generate(context, cond, 3))
    assert all(torch.allclose(f, context[:, -1], atol=1e-3) for f in frames)
    model = build_model(cfg.model_copy(update={"copy_bias": 0.0}),
                        BAIR if family == "svg" else DataShape(height=8, width=8, cond_channels=3)).eval()
    assert not torch.allclose(next(iter(model.generate(context, cond, 1))), context[:, -1], atol=1e-2)


def test_copy_bias_per_source_sets_each_sources_starting_logit():
    """copy_bias {anchor: 4, warped: 2}: the head starts with those mask logits and a zero
    flow; a source the mapping leaves out starts at 0; an unknown source is refused."""
    cfg = DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8, composite=["anchor", "previous", "warped"],
                           copy_bias={"anchor": 4, "warped": 2})
    head = build_model(cfg, DataShape(height=8, width=8, cond_channels=3)).generator[-1]
    assert head.bias[4:9].tolist() == [4.0, 0.0, 2.0, 0.0, 0.0]  # [3] is the painted pixels' logit
    assert (head.weight[7:9] == 0).all()
    with pytest.raises(ValueError, match=r"copy_bias: \['previous'\] not in composite \['anchor', 'warped'\]"):
        DanceModelConfig(composite=["anchor", "warped"], copy_bias={"previous": 4})


def test_side_maps_tile_the_vector_beside_the_coordinates():
    from vpsearch.models.backbones import side_maps

    maps = side_maps(torch.tensor([[5.0, -2.0]]), torch.zeros(1, 8, 3, 4))
    assert maps.shape == (1, 4, 3, 4)
    assert (maps[0, 0] == 5).all() and (maps[0, 1] == -2).all()
    assert maps[0, 2, 0].tolist() == pytest.approx([-1, -1 / 3, 1 / 3, 1]) and (maps[0, 2, :, 0] == -1).all()
    assert maps[0, 3, :, 0].tolist() == [-1, 0, 1] and (maps[0, 3, 0] == -1).all()


@pytest.mark.parametrize("backbone", ["vgg64", "dcgan64"])
@pytest.mark.parametrize("cond", [0, 7])
def test_condition_reaches_the_decoder_as_maps(backbone, cond):
    torch.manual_seed(0)
    cfg = tiny_svg(backbone=backbone, cond_to_decoder=True, composite=["anchor", "warped"])
    model = build_model(cfg, BAIR if cond else DataShape())
    frames = torch.rand(2, 5, 3, 64, 64)
    c = torch.randn(2, 5, 7) if cond else None
    preds, stats = model(frames, c, 2, torch.ones(2, 5, dtype=torch.bool))
    assert preds.shape == (2, 4, 3, 64, 64)
    sequence_loss(preds, frames, stats, 1e-2, "sum_batchmean")[0].backward()
    assert all(p.grad is not None for p in model.parameters())
    if cond:  # the decoder alone, same g and skips: a different condition draws differently
        g, (_, skips) = torch.randn(2, 16), model.encoder(frames[:, 0])
        a = model.decoder(g, skips, torch.zeros(2, 7))
        b = model.decoder(g, skips, torch.ones(2, 7))
        assert not torch.allclose(a, b)


def test_recording_flow_collects_each_steps_mean_flow_size_only_while_on():
    """loss.flow_penalty's measure: mean over pixels and batch of |dx| + |dy| in pixels, one
    entry per call of a warping head, differentiable; nothing is kept outside the context."""
    head = Compositor(["anchor", "warped"], 3, max_flow=4.0)
    model = torch.nn.Sequential(torch.nn.Identity(), head)
    out = torch.zeros(2, 3 + 3 + 2, 4, 5)
    out[:, 6] = torch.atanh(torch.tensor(0.25))  # dx = 1 px everywhere
    out[:, 7, :2] = torch.atanh(torch.tensor(-0.125))  # dy = -0.5 px on half the rows
    out.requires_grad_(True)
    pixels = {"anchor": torch.rand(2, 3, 4, 5), "previous": torch.rand(2, 3, 4, 5)}
    with recording_flow(model) as sizes:
        head(out, pixels)
        head(out, pixels)
    head(out, pixels)
    assert [round(float(s.detach()), 5) for s in sizes] == [1.25, 1.25] and head.flow_sizes is None
    assert torch.autograd.grad(sizes[0], out)[0][:, 6].abs().sum() > 0


def test_change_gate_marks_what_changed_and_its_reach_only():
    before = torch.zeros(1, 3, 6, 7)
    after = before.clone()
    after[0, 1, 2, 3] = 1.0  # one label pixel drawn
    after[0, :, 5, 0] = 0.02  # compression noise: 0.06 summed over channels, below the threshold
    exact = change_gate(before, after, 0)
    assert exact.shape == (1, 1, 6, 7) and exact.sum() == 1 and exact[0, 0, 2, 3] == 1
    near = change_gate(before, after, 1)
    assert near.sum() == 9 and near[0, 0, 1:4, 2:5].eq(1).all()  # the 3x3 square around it
    assert change_gate(after, before, 2).sum() == 25  # an erased pixel changed too


def test_flow_gate_stills_the_flow_off_the_labels_change_after_a_true_frame():
    """model.flow_gate: a step continuing from a true frame warps only the pixels whose label
    changed from t-1 to t (here, the right half); one continuing from the model's own frame
    may warp any pixel; in training (per sample) and generation alike."""
    torch.manual_seed(0)
    cfg = DanceModelConfig(f_dim=8, l_dim=4, n_dim=2, d_out_dim=8, cond_index="both", flow_gate=0,
                           composite=["anchor", "warped"])
    model = build_model(cfg, DataShape(height=8, width=8, cond_channels=3))
    torch.nn.init.normal_(model.generator[-1].weight)  # a flow everywhere before the gate
    labels = torch.zeros(2, 4, 3, 8, 8)
    labels[:, 1::2, :, :, 4:] = 1.0  # the right half flickers at every step; the left never changes
    gates = []
    orig = model.compositor.forward
    model.compositor.forward = lambda out, pixels, gate=None: gates.append(gate) or orig(out, pixels, gate)
    frames = torch.rand(2, 4, 3, 8, 8)
    teacher = torch.tensor([[False, False, True, False], [False, False, False, False]])
    with torch.no_grad(), recording_flow(model) as sizes:
        model(frames, labels, 1, teacher)
        list(model.eval().generate(frames[:, :1], labels, 3))
    gated = [[g is not None and bool(g[i, ..., :4].eq(0).all() and g[i, ..., 4:].eq(1).all()) for i in range(2)]
             for g in gates]
    ungated = [[g is None or bool(g[i].eq(1).all()) for i in range(2)] for g in gates]  # None: no gate at all
    # training steps 1-3 (step 2: sample 0 teacher-forced), then generation steps 1-3
    assert gated == [[True, True], [True, False], [False, False], [True, True], [False, False], [False, False]]
    assert ungated == [[not a, not b] for a, b in gated]
    assert [g is None for g in gates] == [False, False, True, False, True, True]  # all own: not even computed
    assert len(sizes) == 6 and all(s > 0 for s in sizes)  # the right half still moves

    comp = Compositor(["warped"], 3, max_flow=4.0)
    prev = torch.rand(1, 3, 4, 5)
    out = logits_for(1, ["warped"], flow=(1.0, 0.0))  # the mask picks the warped frame
    half = torch.zeros(1, 1, 4, 5)
    half[..., 3:] = 1.0
    moved = comp(out, {"previous": prev}, half)
    assert torch.allclose(moved[..., :3], prev[..., :3], atol=1e-5)  # gated off: unmoved
    assert torch.allclose(moved[..., 3], prev[..., 4], atol=1e-4)  # gated on: fetched from x + 1


def test_flow_gate_refuses_a_model_without_both_labels_or_a_flow():
    with pytest.raises(ValueError, match="flow_gate: 1 .* cond_index both \\(got 'current'\\)"):
        DanceModelConfig(composite=["anchor", "warped"], flow_gate=1)
    with pytest.raises(ValueError, match="needs 'warped' in composite \\(got \\['anchor'\\]\\)"):
        DanceModelConfig(composite=["anchor"], cond_index="both", flow_gate=0)

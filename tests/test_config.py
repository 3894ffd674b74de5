import pytest

from vpsearch.config import Config, ConfigError, load_config, shipped_configs


def test_shipped_configs_load_and_have_the_lab_defaults():
    assert {"bair", "pushing-small", "dance"} <= set(shipped_configs())
    bair = load_config("bair")
    assert (bair.model.g_dim, bair.model.z_dim, bair.model.rnn_size) == (128, 64, 256)  # not swapped
    assert (bair.optim.lr, bair.train.batch_size, bair.data.n_past, bair.data.n_future) == (0.002, 12, 2, 10)
    assert bair.loss.beta == 1e-4
    dance = load_config("dance")
    assert (dance.data.height, dance.data.width, dance.data.window) == (32, 64, 16)
    assert (dance.model.f_dim, dance.model.l_dim, dance.model.n_dim, dance.model.d_out_dim) == (128, 32, 12, 192)
    assert dance.optim.milestones == [2, 5] and dance.optim.grad_clip == 1.0
    assert bair.model.composite == [] and dance.model.composite == []  # the labs' direct output


def test_overrides_apply_after_yaml():
    cfg = load_config("pushing-small", ["train.epochs=3", "data.root=/x/y", "optim.grad_clip=null",
                                        "model.z_dim=8", "train.steps_per_epoch=5"])
    assert cfg.train.epochs == 3 and cfg.data.root == "/x/y" and cfg.optim.grad_clip is None
    assert cfg.model.z_dim == 8 and cfg.train.steps_per_epoch == 5


@pytest.mark.parametrize("override,needle", [
    ("train.epochs=abc", "field train.epochs"),
    ("model.zdim=3", "field model.zdim: unknown key"),
    ("schedule.kl_anneal_type=sometimes", "field schedule.kl_anneal_type"),
    ("train.batch_size=0", "field train.batch_size"),
    ("nosection.x=1", "field nosection: unknown key"),
    ("train.epochs", "expected section.key=value"),
    ("model.composite=[anchor, anchor]", "field model.composite: each source at most once, got ['anchor', 'anchor']"),
    ("model.composite=[background]", "field model.composite"),
])
def test_bad_overrides_name_the_field(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config("pushing-small", [override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_yaml_names_the_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ not valid YAML"):
        load_config(p)
    p.write_text("- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(p)
    with pytest.raises(ConfigError, match="no such file and no shipped config"):
        load_config(tmp_path / "missing.yaml")


def test_family_mismatch_is_refused():
    with pytest.raises(ConfigError, match="does not fit data.format"):
        load_config("pushing-small", ["data.format=dance"])


def test_round_trip_and_hash():
    cfg = load_config("pushing-small")
    again = Config.model_validate(cfg.to_dict())
    assert again == cfg
    other_seed = load_config("pushing-small", ["train.seed=7"])
    assert other_seed.hash() == cfg.hash()  # repeats share the hash
    assert load_config("pushing-small", ["optim.lr=0.01"]).hash() != cfg.hash()
    assert cfg.flat()["model.z_dim"] == cfg.model.z_dim


def test_a_config_based_on_another_states_only_what_it_changes(tmp_path):
    from vpsearch.config import ConfigError, load_config

    variant = tmp_path / "v.yaml"
    variant.write_text("base: dancer-small\nname: v\ndata: {shift: 3}\ntrain: {epochs: 2}\n")
    cfg, base = load_config(variant), load_config("dancer-small")
    assert (cfg.name, cfg.data.shift, cfg.train.epochs) == ("v", 3, 2)
    assert cfg.data.n_future == base.data.n_future and cfg.model == base.model  # the rest from the base
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ConfigError, match="based on itself"):
        load_config(loop)
    assert load_config("dancer-real-small").data.window_stride == 1  # the shipped variant loads

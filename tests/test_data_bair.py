"""BAIR-format loader: generated files, the cache, and every malformed-input case."""

import shutil

import numpy as np
import pytest
from PIL import Image

from vpsearch.config import DataConfig
from vpsearch.data import DataError, load_split
from vpsearch.data import cache as cache_mod
from vpsearch.data.bair import load_bair


@pytest.fixture()
def root(pushing_root, tmp_path):
    """A private copy of the tiny pushing set that a test may damage."""
    dst = tmp_path / "bair"
    shutil.copytree(pushing_root, dst, ignore=shutil.ignore_patterns(".vpsearch-cache"))
    return dst


def cfg_for(root):
    return DataConfig(format="bair", root=str(root))


def first_seq(root, split="train"):
    return sorted((root / split).rglob("0.png"))[0].parent


def test_loads_generated_data_exactly(root):
    data = load_bair(root, "train", cfg_for(root))
    assert len(data) == 8 and data.frames.shape == (8 * 30, 64, 64, 3) and data.cond_dim == 7
    assert data.cond_parts == [("action", 4), ("position", 3)]  # the model indexes the two apart
    seq = root / "train" / data.names[2]
    png = np.asarray(Image.open(seq / "5.png").convert("RGB"))
    assert np.array_equal(data.frames[data.starts[2] + 5], png)
    actions = np.loadtxt(seq / "actions.csv", delimiter=",")
    pos = np.loadtxt(seq / "endeffector_positions.csv", delimiter=",")
    assert np.allclose(data.cond[data.starts[2] + 7], np.concatenate([actions[7], pos[7]]), atol=1e-6)
    windows = data.windows(12, 1)
    assert len(windows) == 8 * 19
    batch = data.batch(windows[:3], 12)
    assert batch["frames"].shape == (3, 12, 3, 64, 64) and batch["cond"].shape == (3, 12, 7)
    assert 0 <= batch["frames"].min() and batch["frames"].max() <= 1


def test_natural_order_of_sequence_names(root):
    names = load_bair(root, "train", cfg_for(root)).names
    nums = [int(n.rsplit("/", 1)[1]) for n in names]
    assert nums == sorted(nums)


def test_second_load_never_decodes_and_changes_rebuild(root, monkeypatch):
    load_bair(root, "train", cfg_for(root))

    def boom(*a, **k):
        raise AssertionError("decoded a PNG although the cache is valid")

    monkeypatch.setattr("vpsearch.data.bair.read_rgb", boom)
    again = load_bair(root, "train", cfg_for(root))
    assert isinstance(again.frames, np.memmap)
    monkeypatch.undo()
    seq = first_seq(root)
    img = Image.fromarray(np.zeros((64, 64, 3), np.uint8))
    img.save(seq / "0.png")
    rebuilt = load_bair(root, "train", cfg_for(root))
    assert rebuilt.frames[0].max() == 0
    assert len(list((root / ".vpsearch-cache").glob("bair-train-*"))) == 1  # stale cache removed


def test_unconditional_data_has_no_cond(root):
    for p in (root / "validate").rglob("*.csv"):
        p.unlink()
    data = load_bair(root, "validate", cfg_for(root))
    assert data.cond is None and data.cond_dim == 0 and data.cond_parts is None
    assert "cond" not in data.batch(data.windows(12), 12)


def test_frames_are_resized_to_the_config(root):
    data = load_bair(root, "test", DataConfig(format="bair", root=str(root), height=32, width=48))
    assert data.frame_shape == (32, 48, 3)


def damage(kind, root):
    seq = first_seq(root)
    if kind == "corrupt":
        (seq / "3.png").write_bytes(b"\x89PNG garbage")
        return seq / "3.png"
    if kind == "gap":
        (seq / "5.png").unlink()
        return seq / "5.png"
    if kind == "size":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(seq / "7.png")
        return seq / "7.png"
    if kind == "columns":
        (seq / "actions.csv").write_text("1,2,3\n" * 30)
        return seq / "actions.csv"
    if kind == "rows":
        (seq / "endeffector_positions.csv").write_text("0,0,0\n" * 5)
        return seq / "endeffector_positions.csv"
    if kind == "text":
        lines = (seq / "actions.csv").read_text().splitlines()
        lines[4] = "0.1,abc,0,1"
        (seq / "actions.csv").write_text("\n".join(lines))
        return seq / "actions.csv"
    if kind == "nan":
        lines = (seq / "actions.csv").read_text().splitlines()
        lines[2] = "0.1,nan,0,1"
        (seq / "actions.csv").write_text("\n".join(lines))
        return seq / "actions.csv"
    if kind == "missing_csv":
        (seq / "actions.csv").unlink()
        return seq
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,needle", [
    ("corrupt", "corrupt or unreadable"), ("gap", "missing frame"), ("size", "frame size 32x32 differs"),
    ("columns", "has 3 columns, expected 4"), ("rows", "5 rows, expected at least 30"),
    ("text", "line 5 holds a non-numeric value"), ("nan", "line 3 holds a non-finite value"),
    ("missing_csv", "same condition files"),
])
def test_bad_data_is_named_in_one_line(root, kind, needle):
    named = damage(kind, root)
    with pytest.raises(DataError) as e:
        data = load_bair(root, "train", cfg_for(root))
        data.frames[:].sum()
    msg = str(e.value)
    assert needle in msg and str(named) in msg and "\n" not in msg


def test_empty_or_missing_split(root, tmp_path):
    with pytest.raises(DataError, match="split directory not found"):
        load_bair(root, "nosplit", cfg_for(root))
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="no sequence folder holding 0.png"):
        load_bair(root, "empty", cfg_for(root))


def test_builtin_root_is_generated_once(monkeypatch, tmp_path):
    from vpsearch.data import builtin

    monkeypatch.setenv("VPSEARCH_DATA_HOME", str(tmp_path))
    calls = []

    def fake(out):
        from vpsearch.data.generators.pushing import make_pushing
        calls.append(out)
        return make_pushing(out, train=2, validate=1, test=1)

    monkeypatch.setitem(builtin.GENERATORS, "pushing", fake)
    a = builtin.resolve_root("builtin:pushing")
    b = builtin.resolve_root("builtin:pushing")
    assert a == b and len(calls) == 1 and (a / "vpsearch-dataset.json").is_file()
    data = load_split(DataConfig(root="builtin:pushing"), "train")
    assert len(data) == 2
    with pytest.raises(DataError, match="unknown built-in dataset"):
        builtin.resolve_root("builtin:nothing")


def test_natural_order_across_folders_and_depths(root):
    train = root / "train"
    old = sorted((p.parent for p in train.rglob("0.png")), key=lambda p: int(p.name))
    moves = {"traj_10/0": old[0], "traj_2/10": old[1], "traj_2/2": old[2], "traj_2/9": old[3]}
    for new, src in moves.items():
        (train / new).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(src, train / new)
    data = load_bair(root, "train", cfg_for(root))
    rest = [f"traj_0_to_255.tfrecords/{i}" for i in range(4, 8)]
    assert data.names == rest + ["traj_2/2", "traj_2/9", "traj_2/10", "traj_10/0"]
    png = np.asarray(Image.open(train / "traj_10/0/3.png").convert("RGB"))
    assert np.array_equal(data.frames[data.starts[7] + 3], png)


def test_truncated_png_fails_at_decode_naming_the_file(root):
    # the header is intact, so only decoding the pixels can find the damage
    bad = first_seq(root) / "4.png"
    bad.write_bytes(bad.read_bytes()[:60])
    with pytest.raises(DataError) as e:
        load_bair(root, "train", cfg_for(root))
    assert str(bad) in str(e.value) and "corrupt or unreadable" in str(e.value)
    assert "\n" not in str(e.value)
    assert not list((root / ".vpsearch-cache").glob("*bair-train*"))  # no half-built cache left


def test_infinite_value_is_named_with_its_line(root):
    path = first_seq(root) / "endeffector_positions.csv"
    lines = path.read_text().splitlines()
    lines[9] = "0.1,inf,0.2"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="line 10 holds a non-finite value") as e:
        load_bair(root, "train", cfg_for(root))
    assert str(path) in str(e.value)


def test_extra_csv_rows_are_ignored(root):
    seq = first_seq(root)
    with open(seq / "actions.csv", "a") as f:
        f.write("9,9,9,9\n" * 5)
    data = load_bair(root, "train", cfg_for(root))
    i = data.names.index(seq.relative_to(root / "train").as_posix())
    expect = np.loadtxt(seq / "actions.csv", delimiter=",")[:30]
    assert np.allclose(data.cond[data.starts[i]:data.starts[i + 1], :4], expect, atol=1e-6)


@pytest.mark.parametrize("drop,dim", [("endeffector_positions.csv", 4), ("actions.csv", 3)])
def test_one_csv_gives_that_condition_alone(root, drop, dim):
    for p in (root / "test").rglob(drop):
        p.unlink()
    data = load_bair(root, "test", cfg_for(root))
    seq = root / "test" / data.names[0]
    kept = "actions.csv" if dim == 4 else "endeffector_positions.csv"
    assert data.cond_dim == dim and data.cond_parts == [("action" if dim == 4 else "position", dim)]
    assert load_bair(root, "test", cfg_for(root)).cond_parts == data.cond_parts  # from the cache too
    assert np.allclose(data.cond[:30], np.loadtxt(seq / kept, delimiter=","), atol=1e-6)

"""Dance-layout loader: generated files, numeric order, test videos and malformed input."""

import shutil

import numpy as np
import pytest
from PIL import Image

from vpsearch.config import DataConfig
from vpsearch.data import DataError
from vpsearch.data.dance import load_dance


@pytest.fixture()
def root(dancer_root, tmp_path):
    dst = tmp_path / "dance"
    shutil.copytree(dancer_root, dst, ignore=shutil.ignore_patterns(".vpsearch-cache"))
    return dst


def cfg(root, **kw):
    return DataConfig(format="dance", root=str(root), height=32, width=64, n_past=1, n_future=15, **kw)


def test_train_val_test_shapes_and_alignment(root):
    train = load_dance(root, "train", cfg(root))
    assert train.names == ["train"] and train.frames.shape == (96, 32, 64, 3) and train.cond_kind == "image"
    assert len(train.windows(16, 16)) == 6  # non-overlapping 16-frame windows
    label = Image.open(root / "train/train_label/17.png").convert("RGB").resize((64, 32), Image.NEAREST)
    assert np.array_equal(train.cond[17], np.asarray(label))  # label t sits beside frame t
    val = load_dance(root, "validate", cfg(root))  # 'validate' is an alias of val
    assert val.names == ["val"] and len(val.frames) == 40
    test = load_dance(root, "test", cfg(root))
    assert test.names == ["0", "1"] and list(test.lengths) == [40, 40]
    batch = test.batch(np.array([[1, 0]]), 5)
    assert batch["frames"].shape == (1, 5, 3, 32, 64) and batch["cond"].shape == (1, 5, 3, 32, 64)


def test_real_test_layout_has_only_the_first_frame(root):
    shutil.rmtree(root / "test/test_gt")  # the real set withholds every later frame
    test = load_dance(root, "test", cfg(root))
    assert test.truth_frames == [1, 1] and test.known_frames(0) == 1
    assert test.frames[test.starts[0] + 1:test.starts[1]].max() == 0


def test_numeric_order_with_frame_prefix(tmp_path):
    for sub in ("img", "label"):
        d = tmp_path / f"train/train_{sub}"
        d.mkdir(parents=True)
        for k in (10, 2, 1):
            Image.fromarray(np.full((8, 16, 3), k, np.uint8)).save(d / f"frame{k}.png")
    data = load_dance(tmp_path, "train", DataConfig(format="dance", root=str(tmp_path), height=8, width=16))
    assert [int(data.frames[i, 0, 0, 0]) for i in range(3)] == [1, 2, 10]


def damage(kind, root):
    img, lab = root / "train/train_img", root / "train/train_label"
    if kind == "no_label":
        (lab / "5.png").unlink()
        return img / "5.png"
    if kind == "no_frame":
        (img / "6.png").unlink()
        return lab / "6.png"
    if kind == "size":
        Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(img / "9.png")
        return img / "9.png"
    if kind == "name":
        shutil.copy(img / "1.png", img / "extra.png")
        return img / "extra.png"
    if kind == "empty":
        shutil.rmtree(img)
        img.mkdir()
        return img
    if kind == "corrupt":
        (img / "3.png").write_bytes(b"nope")
        return img / "3.png"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind,needle", [
    ("no_label", "frame without its label"), ("no_frame", "label without its frame"),
    ("size", "frame size 10x10 differs"), ("name", "not a frame number"), ("empty", "empty folder"),
    ("corrupt", "corrupt or unreadable PNG"),
])
def test_bad_data_is_named(root, kind, needle):
    named = damage(kind, root)
    with pytest.raises(DataError) as e:
        load_dance(root, "train", cfg(root))
    assert needle in str(e.value) and str(named) in str(e.value) and "\n" not in str(e.value)


def test_test_video_with_a_different_label_count(root):
    (root / "test/test_label/1/39.png").unlink()
    (root / "test/test_gt/1/39.png").unlink()
    with pytest.raises(DataError, match=r"test_label/1: 39 labels, expected 40"):
        load_dance(root, "test", cfg(root))
    with pytest.raises(DataError, match=r"test_label/0: 40 labels, expected 39"):
        load_dance(root, "test", cfg(root), expected_test_len=39)


def test_missing_test_folder_is_refused(root):
    shutil.rmtree(root / "test")
    with pytest.raises(DataError, match="test_label: folder not found"):
        load_dance(root, "test", cfg(root))

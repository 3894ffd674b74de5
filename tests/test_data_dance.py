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
        for k in (10, 2, 1, 3, 4, 5, 6, 7, 8, 9):  # numbered without gaps (a gap is an error)
            Image.fromarray(np.full((8, 16, 3), k, np.uint8)).save(d / f"frame{k}.png")
    data = load_dance(tmp_path, "train", DataConfig(format="dance", root=str(tmp_path), height=8, width=16))
    assert [int(data.frames[i, 0, 0, 0]) for i in range(10)] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]


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


def test_frames_are_the_files_resized_bilinear(root):
    val = load_dance(root, "val", cfg(root))
    want = Image.open(root / "val/val_img/23.png").convert("RGB").resize((64, 32), Image.BILINEAR)
    assert np.array_equal(val.frames[23], np.asarray(want))


def test_generated_test_split_uses_the_truth_frames(root):
    test = load_dance(root, "test", cfg(root))  # test_gt present: every frame is real
    assert test.truth_frames == [40, 40]
    want = Image.open(root / "test/test_gt/1/30.png").convert("RGB").resize((64, 32), Image.BILINEAR)
    assert np.array_equal(test.frames[test.starts[1] + 30], np.asarray(want))


def test_second_load_never_decodes_and_an_edit_rebuilds(root, monkeypatch):
    load_dance(root, "val", cfg(root))

    def boom(*a, **k):
        raise AssertionError("decoded a PNG although the cache is valid")

    monkeypatch.setattr("vpsearch.data.dance.read_rgb", boom)
    assert len(load_dance(root, "val", cfg(root)).frames) == 40
    monkeypatch.undo()
    Image.fromarray(np.full((64, 128, 3), 7, np.uint8)).save(root / "val/val_label/12.png")
    val = load_dance(root, "val", cfg(root))
    assert (val.cond[12] == 7).all()
    assert len(list((root / ".vpsearch-cache").glob("dance-val-*"))) == 1  # the stale cache is gone


def test_truncated_png_is_named(root):
    path = root / "val/val_img/7.png"
    path.write_bytes(path.read_bytes()[:200])  # header intact, pixel data cut off
    with pytest.raises(DataError, match="corrupt or unreadable PNG") as e:
        load_dance(root, "val", cfg(root))
    assert str(path) in str(e.value)


def test_two_files_with_one_frame_number_are_refused(root):
    for sub in ("img", "label"):
        shutil.copy(root / f"val/val_{sub}/3.png", root / f"val/val_{sub}/frame3.png")
    with pytest.raises(DataError, match="same frame number as") as e:
        load_dance(root, "val", cfg(root))
    assert "val_img/" in str(e.value) and "3.png" in str(e.value)


def test_dot_files_are_not_frames(root):
    (root / "val/val_img/._5.png").write_bytes(b"AppleDouble")  # left by copies from macOS
    assert len(load_dance(root, "val", cfg(root)).frames) == 40


def test_test_video_without_labels_is_refused(root):
    shutil.copytree(root / "test/test_img/1", root / "test/test_img/2")
    with pytest.raises(DataError, match=r"test_img/2: test video without labels"):
        load_dance(root, "test", cfg(root))


def test_mixed_label_sizes_in_a_test_video_are_named(root):
    odd = root / "test/test_label/0/11.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(odd)
    with pytest.raises(DataError, match="frame size 30x20 differs from 128x64") as e:
        load_dance(root, "test", cfg(root))
    assert str(odd) in str(e.value)

"""Data edge cases (issue 12, item 7): numbering gaps, 16-bit PNGs, evaluation horizons and batch
sizes that the data cannot serve, refused before any training."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vpsearch.config import DataConfig
from vpsearch.data.base import DataError
from vpsearch.data.dance import load_dance
from vpsearch.data.images import read_rgb
from vpsearch.training import Reporter, fit


def write_png16(path: Path, values: np.ndarray, color_type: int) -> Path:
    """A 16-bit PNG written byte by byte (Pillow cannot write 16-bit RGB): 0 gray, 2 RGB, 6 RGBA."""
    h, w = values.shape[:2]
    raw = b"".join(b"\x00" + values[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


# -- dance numbering gap ------------------------------------------------------------------------------
@pytest.fixture()
def dance_copy(tmp_path, dancer_root) -> Path:
    dst = tmp_path / "dance"
    shutil.copytree(dancer_root, dst, ignore=shutil.ignore_patterns(".vpsearch-cache"))
    return dst


def test_a_numbering_gap_in_a_dance_video_is_named(dance_copy):
    for sub in ("val_img", "val_label"):  # frame 20 gone from both: the pairing alone cannot see it
        (dance_copy / "val" / sub / "20.png").unlink()
    cfg = DataConfig(format="dance", root=str(dance_copy), height=64, width=128)
    with pytest.raises(DataError) as e:
        load_dance(dance_copy, "val", cfg)
    msg = str(e.value)
    assert str(dance_copy / "val" / "val_img") in msg and "frame 20 is missing" in msg
    assert "19.png is followed by 21.png" in msg and "\n" not in msg


def test_a_gap_in_a_test_video_is_named(dance_copy):
    (dance_copy / "test" / "test_label" / "1" / "7.png").unlink()
    with pytest.raises(DataError, match=r"test_label/1: frame 7 is missing"):
        load_dance(dance_copy, "test", DataConfig(format="dance", root=str(dance_copy), height=64, width=128))


def test_frames_may_start_at_one_and_use_a_prefix(tmp_path):
    from vpsearch.data.dance import numbered_pngs
    for n in (1, 2, 3):
        Image.new("RGB", (4, 4)).save(tmp_path / f"frame{n}.png")
    assert [p.name for p in numbered_pngs(tmp_path)] == ["frame1.png", "frame2.png", "frame3.png"]


# -- 16-bit PNG ------------------------------------------------------------------------------------
def test_a_16_bit_grayscale_png_is_scaled_not_saturated(tmp_path):
    values = np.array([[0, 257 * 60], [30000, 65535]], np.uint16)
    img = read_rgb(write_png16(tmp_path / "g16.png", values, 0), (2, 2))
    assert img.dtype == np.uint8 and img.shape == (2, 2, 3)
    assert img[..., 0].tolist() == [[0, 60], [117, 255]]  # value / 257, rounded
    assert (img[..., 0] == img[..., 2]).all()


@pytest.mark.parametrize("color_type,channels", [(2, 3), (6, 4)])
def test_16_bit_colour_pngs_keep_their_values(tmp_path, color_type, channels):
    values = np.full((2, 2, channels), 30000, np.uint16)
    img = read_rgb(write_png16(tmp_path / "c16.png", values, color_type), (2, 2))
    assert (img == 117).all()


def test_a_16_bit_png_is_resized_after_conversion(tmp_path):
    values = np.full((8, 8), 257 * 200, np.uint16)
    img = read_rgb(write_png16(tmp_path / "g16.png", values, 0), (4, 4))
    assert img.shape == (4, 4, 3) and (img == 200).all()


# -- what the data cannot serve, refused before training -------------------------------------------------
class Epochs(Reporter):
    def __init__(self):
        self.seen = []

    def report(self, epoch, metrics):
        self.seen.append(epoch)
        return False


def test_an_eval_horizon_longer_than_the_validation_videos_is_refused_up_front(tiny_cfg, tmp_path):
    heard = Epochs()
    with pytest.raises(DataError) as e:  # the pushing videos have 30 frames: 2 given + 40 to predict cannot fit
        fit(tiny_cfg("eval.n_future=40"), tmp_path / "run", reporter=heard)
    msg = str(e.value)
    assert "eval.n_future=40" in msg and "data.n_past=2" in msg and "30 frames" in msg, msg
    assert heard.seen == [] and not (tmp_path / "run" / "checkpoints").exists()


def test_a_batch_larger_than_the_training_windows_is_refused_up_front(tiny_cfg, tmp_path):
    heard = Epochs()
    with pytest.raises(DataError) as e:  # 8 videos x 19 windows of 12 frames
        fit(tiny_cfg("train.batch_size=500"), tmp_path / "run", reporter=heard)
    msg = str(e.value)
    assert "train.batch_size=500" in msg and "152 training windows" in msg, msg
    assert heard.seen == []


def test_a_batch_as_large_as_the_windows_trains(tiny_cfg, tmp_path):
    res = fit(tiny_cfg("train.batch_size=152", "train.epochs=1", "train.steps_per_epoch=1"), tmp_path / "run")
    assert res.epochs_done == 1

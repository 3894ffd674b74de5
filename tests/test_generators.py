"""Built-in generators: exact layout, determinism, and data that is neither trivial nor noise."""

import hashlib
import json

import numpy as np
from PIL import Image

from vpsearch.data.generators.dancer import make_dancer
from vpsearch.data.generators.pushing import make_pushing


def digest(paths):
    return hashlib.sha1(b"".join(p.read_bytes() for p in paths)).hexdigest()


def psnr(a, b):
    mse = ((a.astype(float) - b.astype(float)) / 255) ** 2
    return 10 * np.log10(1 / max(mse.mean(), 1e-10))


def test_pushing_layout(pushing_root):
    seqs = sorted(p.parent for p in (pushing_root / "train").rglob("0.png"))
    assert len(seqs) == 8 and all(s.parent.name == "traj_0_to_255.tfrecords" for s in seqs)
    s = seqs[0]
    assert sorted(int(p.stem) for p in s.glob("*.png")) == list(range(30))
    assert np.loadtxt(s / "actions.csv", delimiter=",").shape == (30, 4)
    pos = np.loadtxt(s / "endeffector_positions.csv", delimiter=",")
    assert pos.shape == (30, 3)
    im = Image.open(s / "0.png")
    assert im.size == (64, 64) and im.mode == "RGB"
    meta = json.loads((pushing_root / "vpsearch-dataset.json").read_text())
    assert meta["seed"] == 3


def test_pushing_is_deterministic_per_seed(tmp_path):
    a = make_pushing(tmp_path / "a", train=2, validate=1, test=1, seed=11)
    b = make_pushing(tmp_path / "b", train=2, validate=1, test=1, seed=11)
    c = make_pushing(tmp_path / "c", train=2, validate=1, test=1, seed=12)
    files = lambda r: sorted(p for p in r.rglob("*") if p.is_file() and p.suffix in (".png", ".csv"))  # noqa: E731
    assert [p.relative_to(a) for p in files(a)] == [p.relative_to(b) for p in files(b)]
    assert digest(files(a)) == digest(files(b)) and digest(files(a)) != digest(files(c))


def test_pushing_copy_last_is_far_from_perfect(pushing_root):
    vals = []
    for s in sorted(p.parent for p in (pushing_root / "train").rglob("0.png")):
        last = np.asarray(Image.open(s / "1.png"))
        vals += [psnr(last, np.asarray(Image.open(s / f"{t}.png"))) for t in range(2, 12)]
    assert 15 < np.mean(vals) < 32  # things move: copying the last context frame is imperfect


def test_dancer_layout(dancer_root):
    assert len(list((dancer_root / "train/train_img").glob("*.png"))) == 96
    assert len(list((dancer_root / "train/train_label").glob("*.png"))) == 96
    assert len(list((dancer_root / "val/val_img").glob("*.png"))) == 40
    for i in (0, 1):
        assert [p.name for p in (dancer_root / f"test/test_img/{i}").glob("*.png")] == ["0.png"]
        assert len(list((dancer_root / f"test/test_label/{i}").glob("*.png"))) == 40
        assert len(list((dancer_root / f"test/test_gt/{i}").glob("*.png"))) == 40
    label = np.asarray(Image.open(dancer_root / "val/val_label/0.png").convert("RGB"))
    colours = {tuple(c) for c in label.reshape(-1, 3) if c.any()}
    assert len(colours) >= 12  # a colour per limb; 12+ joints make 11+ limbs


def test_dancer_is_deterministic_and_varies_between_videos(tmp_path):
    kw = dict(train_frames=16, val_frames=8, test_videos=2, test_frames=8)
    a, b = make_dancer(tmp_path / "a", seed=1, **kw), make_dancer(tmp_path / "b", seed=1, **kw)
    pa = sorted(p for p in a.rglob("*.png"))
    assert digest(pa) == digest(sorted(b.rglob("*.png")))
    f0 = np.asarray(Image.open(a / "test/test_gt/0/0.png"))
    f1 = np.asarray(Image.open(a / "test/test_gt/1/0.png"))
    assert psnr(f0, f1) < 20  # backgrounds and palettes differ between videos


def test_dancer_copy_first_is_far_from_perfect(dancer_root):
    first = np.asarray(Image.open(dancer_root / "val/val_img/0.png").resize((64, 32)))
    vals = [psnr(first, np.asarray(Image.open(dancer_root / f"val/val_img/{k}.png").resize((64, 32))))
            for k in range(1, 40)]
    assert np.mean(vals) < 30

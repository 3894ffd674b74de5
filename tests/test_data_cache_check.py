"""Opening a frame cache checks folder mtimes and a sample of files, not every file (issue 14,
item 3); `vpsearch data verify` is the full check and rebuilds what is stale."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from tests.conftest import vp
from vpsearch.config import DataConfig
from vpsearch.data import manifest
from vpsearch.data.bair import bair_source, load_bair
from vpsearch.data.cache import verify


@pytest.fixture()
def root(pushing_root, tmp_path):
    dst = tmp_path / "bair"
    shutil.copytree(pushing_root, dst, ignore=shutil.ignore_patterns(".vpsearch-cache"))
    return dst


@pytest.fixture()
def sampled(monkeypatch):
    """Every split counts as large: the quick check draws `SAMPLE` files (0 here: folders only)."""
    monkeypatch.setattr(manifest, "FULL_CHECK_MAX", 0)
    monkeypatch.setattr(manifest, "SAMPLE", 0)


def cfg(root):
    return DataConfig(format="bair", root=str(root))


def seq(root, i=0):
    return sorted((root / "train").rglob("0.png"))[i].parent


def no_decode(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("decoded a PNG although the cache is valid")
    monkeypatch.setattr("vpsearch.data.bair.read_rgb", boom)


def no_listing(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("listed the split although the cache is valid")
    monkeypatch.setattr("vpsearch.data.bair.find_sequences", boom)


def test_a_valid_cache_opens_without_listing_and_stats_folders_only(root, sampled, monkeypatch):
    first = load_bair(root, "train", cfg(root))
    statted = []

    class CountingOs(SimpleNamespace):  # the manifest module's os, counting its stat calls
        def __getattr__(self, name):
            return getattr(os, name)

    monkeypatch.setattr(manifest, "os", CountingOs(stat=lambda p: statted.append(str(p)) or os.stat(p)))
    no_listing(monkeypatch)
    again = load_bair(root, "train", cfg(root))
    assert np.array_equal(first.frames, again.frames) and again.names == first.names
    folders = {str(p) for p in (root / "train").rglob("*") if p.is_dir()} | {str(root / "train")}
    assert statted and {os.path.normpath(p) for p in statted} == folders  # one stat per folder, no file


def test_an_added_or_removed_sequence_rebuilds(root, sampled, monkeypatch):
    before = load_bair(root, "train", cfg(root))
    shutil.copytree(seq(root, 0), seq(root, 0).parent / "999")
    assert len(load_bair(root, "train", cfg(root))) == len(before) + 1
    shutil.rmtree(seq(root, 1))
    shutil.rmtree(seq(root, 2))
    assert len(load_bair(root, "train", cfg(root))) == len(before) - 1
    assert len(list((root / ".vpsearch-cache").glob("bair-train-*"))) == 1  # the stale caches are gone


def test_a_folder_touched_without_a_change_keeps_the_cache(root, sampled, monkeypatch):
    load_bair(root, "train", cfg(root))
    (seq(root) / "tmp.txt").write_text("x")
    (seq(root) / "tmp.txt").unlink()  # the folder's mtime moved, its files did not
    no_decode(monkeypatch)
    load_bair(root, "train", cfg(root))  # lists again, finds the same files: no decoding
    no_listing(monkeypatch)
    load_bair(root, "train", cfg(root))  # and the folder's new mtime is recorded


def test_an_in_place_edit_is_caught_by_the_sample_or_by_verify(root, monkeypatch):
    load_bair(root, "train", cfg(root))
    path = seq(root) / "0.png"
    folder = os.stat(path.parent)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)  # rewritten in place, same name
    os.utime(path.parent, ns=(folder.st_atime_ns, folder.st_mtime_ns))  # the folder's mtime stays
    monkeypatch.setattr(manifest, "FULL_CHECK_MAX", 0)
    monkeypatch.setattr(manifest, "SAMPLE", 0)
    assert load_bair(root, "train", cfg(root)).frames[0].max() > 0  # unsampled: the old frame is served
    v = verify(bair_source(root, "train", cfg(root)), rebuild=False)
    assert v.state == "stale" and v.diff.changed == [f"{seq(root).relative_to(root / 'train').as_posix()}/0.png"]
    assert v.rebuilt is None and load_bair(root, "train", cfg(root)).frames[0].max() > 0  # report only
    monkeypatch.setattr(manifest, "SAMPLE", 10**6)  # a sample that holds every file
    assert load_bair(root, "train", cfg(root)).frames[0].max() == 0


def test_a_copied_dataset_keeps_its_cache(root, tmp_path, monkeypatch):
    load_bair(root, "train", cfg(root))
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)  # copy2: mtimes kept; the manifest's paths are relative
    no_decode(monkeypatch)
    assert len(load_bair(moved, "train", cfg(moved))) == 8


def test_data_verify_reports_rebuilds_and_prunes(root):
    ok = vp("data", "verify", "--set", f"data.root={root}")
    assert ok.returncode == 0, ok.stderr
    assert [ln.split(":")[0] for ln in ok.stdout.splitlines()] == ["train", "validate", "test"]
    assert all("missing; built as" in ln for ln in ok.stdout.splitlines())
    again = vp("data", "verify", "--set", f"data.root={root}", "--check-only")
    assert again.returncode == 0 and all("cache fresh" in ln for ln in again.stdout.splitlines()), again.stdout
    assert "train: 256 files checked" in again.stdout  # 8 sequences x (30 frames + 2 CSV)

    (seq(root) / "actions.csv").write_text("0,0,0,0\n" * 30)
    old = root / ".vpsearch-cache" / "bair-train-0123456789abcdef"  # a version-0 cache
    old.mkdir()
    (old / "frames.npy").write_bytes(b"0" * 2**20)
    stale = vp("data", "verify", "--set", f"data.root={root}", "--check-only")
    assert stale.returncode == 1
    line = next(ln for ln in stale.stdout.splitlines() if ln.startswith("train:"))
    assert "stale" in line and "1 changed" in line and "actions.csv" in line and "not rebuilt" in line
    assert f"unused cache {old} (1 MB, an older format): --prune removes it" in stale.stdout
    fixed = vp("data", "verify", "--set", f"data.root={root}", "--prune")
    assert fixed.returncode == 0 and "rebuilt as" in fixed.stdout and not old.exists(), fixed.stdout
    data = load_bair(root, "train", cfg(root))
    assert data.cond[data.starts[data.names.index(seq(root).relative_to(root / "train").as_posix())], :4].max() == 0


def test_data_verify_skips_a_missing_split_and_names_bad_data(root):
    shutil.rmtree(root / "test")
    out = vp("data", "verify", "--set", f"data.root={root}")
    assert out.returncode == 0 and "test: skipped" in out.stdout and "split directory not found" in out.stdout
    (seq(root) / "5.png").unlink()
    bad = vp("data", "verify", "--set", f"data.root={root}")
    assert bad.returncode == 2 and "5.png: missing frame" in bad.stderr


def built_cache(root):
    load_bair(root, "train", cfg(root))
    (cache,) = [p for p in (root / ".vpsearch-cache").iterdir() if p.name.startswith("bair-train-")]
    return cache


def truncate(path, keep: int) -> None:
    with path.open("r+b") as f:
        f.truncate(keep)


@pytest.mark.parametrize("harm", ["truncated frames", "garbage meta", "missing starts"])
def test_a_damaged_cache_is_rebuilt_on_open_with_one_line(root, harm, caplog):
    """Issue 29, item 2: a truncated frames.npy or a garbage meta.json had raised mmap and JSON
    tracebacks at every open until the cache was deleted by hand."""
    cache = built_cache(root)
    expected = load_bair(root, "train", cfg(root)).frames[:].copy()
    if harm == "truncated frames":
        truncate(cache / "frames.npy", (cache / "frames.npy").stat().st_size // 2)
        why = "frames.npy is"
    elif harm == "garbage meta":
        (cache / "meta.json").write_text("{not json")
        why = "meta.json is not the JSON a build writes"
    else:
        (cache / "starts.npy").unlink()
        why = "starts.npy is missing"
    with caplog.at_level("WARNING", logger="vpsearch.data.cache"):
        data = load_bair(root, "train", cfg(root))
    assert np.array_equal(data.frames[:], expected)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"frame cache {cache} is damaged ({why}") and line.endswith("rebuilding it from the frames")


def test_data_verify_finds_a_truncated_cache_and_exits_non_zero(root):
    cache = built_cache(root)
    truncate(cache / "frames.npy", 4096)
    check = vp("data", "verify", "--set", f"data.root={root}", "--check-only")
    assert check.returncode == 1, check.stdout + check.stderr
    line = next(ln for ln in check.stdout.splitlines() if ln.startswith("train:"))
    assert f"damaged ({cache}): frames.npy is 4096 bytes" in line and line.endswith("not rebuilt (--check-only)")
    fixed = vp("data", "verify", "--set", f"data.root={root}")
    assert fixed.returncode == 1 and "; rebuilt as" in fixed.stdout  # rebuilt, and still worth a look
    assert vp("data", "verify", "--set", f"data.root={root}", "--check-only").returncode == 0
    assert load_bair(root, "train", cfg(root)).frames.shape[0] == 8 * 30

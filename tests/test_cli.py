"""Every foundation subcommand end to end on tiny generated data, through the real entry point."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TINY_SVG


def vp(*args, cwd=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "vpsearch.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"vpsearch {' '.join(map(str, args))} -> {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def trained(pushing_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    sets = [x for o in [*TINY_SVG, f"data.root={pushing_root}"] for x in ("--set", o)]
    proc = vp("train", "--config", "pushing-small", *sets, "--out", out, "--json")
    return out, json.loads(proc.stdout)


def test_train_prints_where_outputs_are(trained):
    out, summary = trained
    assert summary["run_dir"] == str(out)
    assert Path(summary["best_checkpoint"]).is_file()
    assert (out / "metrics.csv").is_file() and (out / "samples" / "best.gif").is_file()


def test_train_tells_a_person_what_it_does_and_what_to_run_next(pushing_root, tmp_path):
    sets = [x for o in [*TINY_SVG, f"data.root={pushing_root}", "train.progress=true"] for x in ("--set", o)]
    proc = vp("train", "--config", "pushing-small", *sets, "--out", tmp_path / "run")
    out, err = proc.stdout.strip().splitlines(), proc.stderr.strip().splitlines()
    # first (on stderr, with the bar: stdout keeps only the result): the data (path, split sizes),
    # device, threads, output folder, in one line
    assert err[0].startswith(f"training pushing-small on {pushing_root}: 8 train / 4 val sequences")
    assert "device cpu, fp32, 1 thread;" in err[0] and err[0].endswith(f"output {tmp_path / 'run'}")
    assert "evaluating=" in proc.stderr  # the progress bar shows the evaluation, not a still 100%
    # last: the best value against copy-last, then the commands to run next
    best = out[-4]
    assert re.fullmatch(r"best val PSNR [\d.]+ dB at epoch \d; copy-last baseline [\d.]+ dB: [+-][\d.]+ dB", best)
    assert out[-3:] == ["next:", f"  vpsearch evaluate --checkpoint {tmp_path / 'run/checkpoints/best.pt'} --samples 5",
                        f"  vpsearch predict --checkpoint {tmp_path / 'run/checkpoints/best.pt'} "
                        f"--out {tmp_path / 'run/predictions'}"]


def test_evaluate_prints_metrics_with_their_baseline(trained):
    out, _ = trained
    proc = vp("evaluate", "--checkpoint", out / "checkpoints/best.pt", "--split", "test", "--samples", "2")
    res = json.loads(proc.stdout)
    assert res["n_sequences"] == 4 and res["samples"] == 2
    first = res["first_frame"]
    assert first["psnr"] == res["psnr_per_frame"][0] and first["baseline_psnr"] == res["baseline_per_frame"][0]
    assert res["gain_db"] == pytest.approx(res["psnr"] - res["baseline_copy_last_psnr"])
    table = proc.stderr.strip().splitlines()  # every frame of the 10, model beside copy-last
    assert table[0].split() == ["frame", "model", "copy-last", "gain"] and len(table) == 12
    assert table[1].split() == ["1", f"{first['psnr']:.2f}", f"{first['baseline_psnr']:.2f}", f"{first['gain_db']:+.2f}"]
    assert table[-1].split()[:4] == ["mean", f"{res['psnr']:.2f}", f"{res['baseline_copy_last_psnr']:.2f}",
                                     f"{res['gain_db']:+.2f}"]
    assert len(res["psnr_per_frame"]) == 10 and len(res["ssim_per_frame"]) == 10
    for key in ("psnr", "ssim", "baseline_copy_last_psnr", "psnr_best_of_n"):
        assert isinstance(res[key], float)
    assert res["psnr_best_of_n"] >= res["psnr"] - 1e-9  # best of 2 is never below their mean


def test_predict_writes_gifs_and_strips(trained, tmp_path):
    out, _ = trained
    res = json.loads(vp("predict", "--checkpoint", out / "checkpoints/best.pt", "--out", tmp_path / "pred",
                        "--n-sequences", "2").stdout)
    assert len(res["videos"]) == 2
    gifs = sorted((tmp_path / "pred").glob("*.gif"))
    strips = sorted((tmp_path / "pred").glob("*_strip.png"))
    assert len(gifs) == 2 and len(strips) == 2
    import imageio.v2 as imageio
    assert len(imageio.mimread(gifs[0])) == 2 + 10  # the context frames, then one per predicted frame


def test_config_show_resolves_overrides():
    proc = vp("config", "show", "--config", "bair", "--set", "model.z_dim=32")
    assert "z_dim: 32" in proc.stdout and "g_dim: 128" in proc.stdout


@pytest.mark.parametrize("args,needle", [
    (["train", "--config", "pushing-small", "--set", "train.epochs=zero"], "field train.epochs"),
    (["train", "--config", "nope"], "no such file and no shipped config"),
    (["evaluate", "--checkpoint", "missing.pt"], "missing.pt: no such file"),
    (["train", "--config", "pushing-small", "--set", "data.root=/does/not/exist"], "/does/not/exist"),
])
def test_user_errors_are_one_line(args, needle, tmp_path):
    proc = vp(*args, cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_data_make_writes_the_format(tmp_path):
    proc = vp("data", "make", "pushing", "--out", tmp_path / "p", "--train", 2, "--validate", 1, "--test", 1)
    assert "wrote pushing data" in proc.stdout and "train 2, validate 1, test 1 sequences" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == f"next: vpsearch train -c pushing-small --set data.root={tmp_path / 'p'}"
    seqs = [p.parent for p in (tmp_path / "p" / "train").rglob("0.png")]
    assert len(seqs) == 2 and (seqs[0] / "actions.csv").is_file()

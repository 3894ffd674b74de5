"""train.amp=auto resolved by the device (issue 25): the rule, the probe's cache, the refusals
that come before anything is written, and where the resolved value shows."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from vpsearch import machine
from vpsearch.config import ConfigError
from vpsearch.training import precision
from vpsearch.training.precision import decide, with_precision

CPU = torch.device("cpu")


def test_cuda_auto_picks_bf16_where_supported_else_fp16_with_the_scaler():
    assert decide("auto", "cuda", cuda_bf16=True, native_bf16=(), ratio=None).amp == "bf16"
    fp16 = decide("auto", "cuda", cuda_bf16=False, native_bf16=(), ratio=None)
    assert fp16.amp == "fp16" and "loss scaling" in fp16.reason
    assert decide("none", "cuda", True, (), None).amp == "none"  # an explicit choice stands


def test_cpu_auto_needs_the_flag_and_a_faster_probe():
    assert decide("auto", "cpu", False, (), None).amp == "none"
    fast = decide("auto", "cpu", False, ("avx512_bf16",), ratio=0.5)
    assert fast.amp == "bf16" and "2.0x" in fast.reason and fast.shown.startswith("bf16 (native avx512_bf16, 2.0x")
    # the flag is there but the convolution runs no faster: fp32
    slow = decide("auto", "cpu", False, ("amx_bf16",), ratio=1.02)
    assert slow.amp == "none" and "1.02x" in slow.reason and slow.shown.startswith("fp32")
    assert decide("auto", "cpu", False, ("avx512_bf16",), ratio=precision.BF16_FASTER + 0.01).amp == "none"
    assert decide("bf16", "cpu", False, (), ratio=20.0).amp == "bf16"  # runs as asked (and warns, below)


def test_fp16_on_a_cpu_is_refused_at_validation_and_at_resolution(tiny_cfg):
    with pytest.raises(ConfigError, match="train.amp: fp16 needs a CUDA device, and train.device is cpu"):
        tiny_cfg("train.amp=fp16", "train.device=cpu")
    cfg = tiny_cfg("train.amp=fp16")  # device auto: known only once the device is picked
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        with_precision(cfg, CPU)


def test_fp16_on_a_cpu_leaves_no_run_folder(tiny_cfg, tmp_path):
    from vpsearch.training import fit

    with pytest.raises(ConfigError):
        fit(tiny_cfg("train.amp=fp16"), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def fake_cpu(monkeypatch, flags: tuple[str, ...], ratio: float):
    monkeypatch.setattr(machine, "cpu", lambda: machine.CPU("Test CPU 9000", frozenset(flags), 2, 2))
    calls = []
    monkeypatch.setattr(precision, "probe_ratio", lambda cfg: calls.append(cfg) or ratio)
    return calls


def test_auto_on_a_cpu_without_native_bf16_runs_fp32_without_probing(monkeypatch, tiny_cfg):
    calls = fake_cpu(monkeypatch, ("avx2",), ratio=0.1)
    cfg, chosen = with_precision(tiny_cfg("train.amp=auto"), CPU)
    assert (cfg.train.amp, chosen.asked, calls) == ("none", "auto", [])
    assert "no native bf16" in chosen.reason


def test_auto_with_native_bf16_follows_the_probe(monkeypatch, tiny_cfg):
    fake_cpu(monkeypatch, ("avx2", "avx512_bf16"), ratio=0.6)
    assert with_precision(tiny_cfg("train.amp=auto"), CPU)[0].train.amp == "bf16"
    fake_cpu(monkeypatch, ("avx2", "avx512_bf16"), ratio=1.4)
    assert with_precision(tiny_cfg("train.amp=auto"), CPU)[0].train.amp == "none"


def test_explicit_bf16_on_an_emulating_cpu_warns_once_with_the_slowdown(monkeypatch, tiny_cfg, caplog):
    fake_cpu(monkeypatch, ("avx2",), ratio=14.25)
    monkeypatch.setattr(precision, "_warned", set())
    with caplog.at_level(logging.WARNING, logger="vpsearch.training.precision"):
        for _ in range(3):
            assert with_precision(tiny_cfg("train.amp=bf16"), CPU)[0].train.amp == "bf16"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "Test CPU 9000 has no native bf16" in warnings[0] and "14.2x slower than fp32" in warnings[0]


def test_the_probe_measures_once_per_machine_and_shape(monkeypatch, tiny_cfg, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(precision, "_memo", {})
    timed = []
    monkeypatch.setattr(precision, "_time", lambda conv, x, bf16: timed.append((tuple(x.shape), bf16)) or
                        (1.0 if bf16 else 2.0))
    cfg = tiny_cfg()
    assert precision.probe_ratio(cfg) == 0.5
    b, c, h, w = precision.probe_shape(cfg)
    assert timed == [((b, c, h, w), True), ((b, c, h, w), False)] and (c, h, w) == (8, 32, 32)
    stored = json.loads((tmp_path / "vpsearch" / "precision.json").read_text())
    assert list(stored.values()) == [0.5] and "8x32x32" in next(iter(stored))
    monkeypatch.setattr(precision, "_memo", {})  # a new process: read from the file, not timed again
    assert precision.probe_ratio(cfg) == 0.5 and len(timed) == 2
    precision.probe_ratio(tiny_cfg("train.batch_size=2"))  # another shape is probed anew
    assert len(timed) == 4


def test_a_garbage_probe_cache_is_measured_again(monkeypatch, tiny_cfg, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(precision, "_memo", {})
    (tmp_path / "vpsearch").mkdir()
    (tmp_path / "vpsearch" / "precision.json").write_text("[not json")
    ratio = precision.probe_ratio(tiny_cfg())  # the real probe, a fraction of a second
    assert 0 < ratio < 100
    assert json.loads((tmp_path / "vpsearch" / "precision.json").read_text())


def test_the_resolved_precision_is_what_the_run_records(monkeypatch, tiny_cfg, tmp_path, capsys):
    from vpsearch.config import config_from_dict
    from vpsearch.training import fit

    fake_cpu(monkeypatch, ("avx2",), ratio=3.0)
    res = fit(tiny_cfg("train.amp=auto", "train.progress=true", "train.epochs=1"), tmp_path / "run")
    written = config_from_dict(__import__("yaml").safe_load((res.run_dir / "config.yaml").read_text()), "x")
    assert written.train.amp == "none"
    first = capsys.readouterr().err.splitlines()[0]
    assert "device cpu, fp32 (this CPU has no native bf16), 1 thread;" in first
    stored = torch.load(res.best_checkpoint, weights_only=True)["config"]
    assert stored["train"]["amp"] == "none"


def test_inference_of_a_gpu_fp16_checkpoint_on_a_cpu_resolves_auto(monkeypatch, tiny_cfg):
    fake_cpu(monkeypatch, ("avx2",), ratio=3.0)
    cfg = tiny_cfg("train.amp=fp16")
    resolved, chosen = with_precision(cfg, CPU, inference=True)
    assert (resolved.train.amp, chosen.asked) == ("none", "auto")
    assert cfg.train.amp == "fp16"  # the caller's config is not rewritten


def test_cpu_facts_from_proc_and_sys(tmp_path):
    model, flags = machine._cpuinfo("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 avx512_bf16\n"
                                    "processor\t: 1\nmodel name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 avx512_bf16\n")
    assert model == "AMD EPYC 7B13" and {"avx2", "avx512_bf16"} <= flags
    for cpu, siblings in {0: "0,2", 1: "1,3", 2: "0,2", 3: "1,3"}.items():  # 2 cores x 2 hyper-threads
        (tmp_path / f"cpu{cpu}" / "topology").mkdir(parents=True)
        (tmp_path / f"cpu{cpu}" / "topology" / "thread_siblings_list").write_text(siblings + "\n")
    assert machine._physical_cores({0, 1, 2, 3}, tmp_path) == 2
    assert machine._physical_cores({0, 2}, tmp_path) == 1  # affinity on one core's two threads
    described = machine.CPU(model, flags, 2, 2).describe()
    assert described == "AMD EPYC 7B13, 2 cores (avx2, avx512_bf16)"
    assert machine.CPU(model, flags, 2, 2).native_bf16 == ("avx512_bf16",)


def test_threads_default_to_the_usable_physical_cores(monkeypatch):
    monkeypatch.setattr(machine, "cpu", lambda: machine.CPU("x", frozenset(), 8, 6))
    assert machine.threads_per_worker(1) == 6 and machine.threads_per_worker(4) == 1
    assert machine.threads_per_worker(2, cores=16) == 8
    from vpsearch.training.device import set_threads

    before = torch.get_num_threads()
    try:
        assert set_threads(None) == 6 and torch.get_num_threads() == 6
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_run_resumes_at_another_precision(tiny_cfg, tmp_path):
    """A checkpoint from a machine where auto meant bf16 continues on one where it means fp32."""
    from vpsearch.training import fit
    from vpsearch.training.reporter import Reporter

    class FirstEpochOnly(Reporter):
        def report(self, epoch, metrics):
            return True

    first = fit(tiny_cfg("train.amp=bf16"), tmp_path / "run", reporter=FirstEpochOnly())
    assert first.epochs_done == 1
    res = fit(tiny_cfg("train.amp=none"), tmp_path / "run", resume=True)
    assert res.epochs_done == 2 and [r["epoch"] for r in res.history] == [0, 1]
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)["config"]["train"]["amp"] == "none"

"""GPU-side logic, checked on CPU: device choice, one worker per GPU, mixed precision rules."""

import pytest
import torch

from vpsearch.training import device as dev


def test_auto_picks_cuda_only_when_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert dev.select_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert dev.select_device("auto") == torch.device("cuda")
    assert dev.select_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ValueError, match="only 2 CUDA device"):
        dev.select_device("cuda:2")


def test_cuda_requested_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        dev.select_device("cuda:0")
    with pytest.raises(ValueError, match="expected auto, cpu, cuda or cuda:N"):
        dev.select_device("tpu")


def test_one_worker_per_gpu(monkeypatch):
    assert dev.split_devices("cuda:0,cuda:1", None) == ["cuda:0", "cuda:1"]
    assert dev.split_devices("cuda:0,cuda:1", 4) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert dev.split_devices("cpu", 3) == ["cpu", "cpu", "cpu"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert dev.split_devices("cuda", None) == ["cuda:0", "cuda:1", "cuda:2"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ValueError, match="no CUDA device"):
        dev.split_devices("cuda", None)


def test_cpu_threads_are_split_between_workers():
    assert dev.threads_per_worker(2, cores=2) == 1
    assert dev.threads_per_worker(1, cores=2) == 2
    assert dev.threads_per_worker(3, cores=16) == 5
    assert dev.threads_per_worker(8, cores=2) == 1


def test_mixed_precision_rules():
    cpu = torch.device("cpu")
    with dev.autocast(cpu, "bf16"):
        y = torch.nn.Linear(4, 4)(torch.rand(2, 4))
    assert y.dtype == torch.bfloat16
    with dev.autocast(cpu, "none"):
        assert torch.nn.Linear(4, 4)(torch.rand(2, 4)).dtype == torch.float32
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        dev.autocast(cpu, "fp16")
    assert not dev.grad_scaler(cpu, "fp16").is_enabled()  # the scaler only runs for CUDA fp16

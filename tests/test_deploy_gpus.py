"""`vpsearch worker --device cuda:free`: the compose workers of one host all see every GPU and
each claims one nobody else holds, with a lock in the study's PostgreSQL (no GPU needed here:
the claim works on GPU UUIDs, given by hand)."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from postgres import postgres_or_skip
from test_study_run import cli, wait_for, write_study

from vpsearch.search.gpus import claim_gpu
from vpsearch.search.spec import StudyError
from vpsearch.search.storage import open_storage

pytestmark = pytest.mark.postgres
UUIDS = ["GPU-8d1f-aaaa", "GPU-8d1f-bbbb"]
HOLDER = f"""
import sys, time
from vpsearch.search.gpus import claim_gpu
from vpsearch.search.storage import open_storage
index, conn = claim_gpu(open_storage(sys.argv[1]), {UUIDS!r})
print(index, flush=True)
time.sleep(120)
"""


def test_each_worker_claims_its_own_gpu_and_a_killed_one_frees_it():
    with postgres_or_skip() as pg:
        url = pg.create_database("optuna")
        open_storage(url)  # Optuna's tables, made once (as `study create` does before workers start)
        holders = [subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True)
                   for _ in UUIDS]
        try:
            got = {int(h.stdout.readline()): h for h in holders}
            assert sorted(got) == [0, 1]  # two workers, two GPUs: one each
            with pytest.raises(StudyError, match=r"all 2 GPU\(s\) here are held by other vpsearch workers"):
                claim_gpu(open_storage(url), UUIDS)
            got[0].send_signal(signal.SIGKILL)  # the worker on GPU 0 dies: its connection, and claim, go
            got[0].wait(timeout=30)
            index, conn = wait_for(lambda: _try_claim(url), timeout=30, what="GPU 0 to be free again")
            assert index == 0
            conn.close()
        finally:
            for h in holders:
                h.kill()
                h.wait(timeout=30)


def _try_claim(url: str):
    try:
        return claim_gpu(open_storage(url), UUIDS)
    except StudyError:
        return None


def test_cuda_free_without_a_gpu_or_postgres_is_one_clear_line(tmp_path, pushing_root):
    study_file = write_study(tmp_path / "s.yaml", pushing_root)
    journal = f"journal:{tmp_path / 'journal.log'}"
    assert subprocess.run(cli("study", "create", str(study_file), "--storage", journal, "--tracking-uri", "off"),
                          capture_output=True, timeout=120).returncode == 0
    with pytest.raises(StudyError, match=r"--device cuda:free needs a PostgreSQL storage"):
        claim_gpu(open_storage(journal), UUIDS)
    r = subprocess.run(cli("worker", "--study", "tiny", "--storage", journal, "--device", "cuda:free"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    import torch
    if not torch.cuda.is_available():  # a GPU machine gets the PostgreSQL line instead
        assert r.stderr.strip() == ("vpsearch: error: --device cuda:free: no CUDA device is visible here "
                                    "(use --device cpu)")
    else:
        assert "needs a PostgreSQL storage" in r.stderr

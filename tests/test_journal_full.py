"""The journal survives a full disk and a write cut off part-way (search/journal_file.py): a failed
append leaves no partial record, a torn record is set aside into PATH.torn (never dropped) and
the study goes on from the rest; a full disk is one line naming the storage."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from test_stored_work import tmpfs
from test_study_run import QUIET, open_study, run_cli, write_study
from vpsearch.search.storage import StorageFull, open_storage


def journal_with_trials(path, n: int = 3) -> None:
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:{path}").storage,
                                direction="maximize")
    for k in range(n):
        study.add_trial(optuna.trial.create_trial(value=float(k), params={}, distributions={}))


def completed(path) -> list[float]:
    study = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}").storage)
    return [t.value for t in study.get_trials(states=(TrialState.COMPLETE,))]


def test_a_torn_last_record_is_set_aside_and_the_study_goes_on(tmp_path, capsys):
    path = tmp_path / "journal.log"
    journal_with_trials(path)
    whole = path.read_bytes()
    torn = b'{"op_code":5,"worker_id":"w","study_id":0,"datetime_start":"2026-12-0'  # a write cut off
    path.write_bytes(whole + torn)
    assert completed(path) == [0.0, 1.0, 2.0]
    assert f"last record was cut off ({len(torn)} bytes" in capsys.readouterr().err
    assert path.read_bytes() == whole  # the torn bytes left the journal ...
    aside = (tmp_path / "journal.log.torn").read_bytes()
    assert aside.endswith(torn + b"\n") and aside.startswith(f"# vpsearch set aside {len(torn)} bytes".encode())  # ... into .torn
    more = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}").storage)
    more.add_trial(optuna.trial.create_trial(value=9.0, params={}, distributions={}))
    assert completed(path) == [0.0, 1.0, 2.0, 9.0]  # appends after it land on a line of their own


def test_a_record_appended_onto_a_torn_one_is_salvaged(tmp_path, capsys):
    """What older versions left after a full disk: the next append joined the torn line."""
    path = tmp_path / "journal.log"
    journal_with_trials(path, 2)
    lines = path.read_bytes().splitlines(keepends=True)
    joined = lines[-2]  # a record that was torn, then appended again whole onto the torn line ...
    garbled = b"".join(lines[:-2]) + joined[: len(joined) // 2] + joined + lines[-1]  # ... and one after it
    path.write_bytes(garbled)
    with pytest.raises(ValueError):  # Optuna's own reader gives up on such a file
        JournalStorage(JournalFileBackend(str(path)))
    assert completed(path) == [0.0, 1.0]  # the joined record is kept on its own
    assert "1 torn record(s) in the journal set aside" in capsys.readouterr().err
    assert path.read_bytes() == b"".join(lines)
    assert joined[: len(joined) // 2] in (tmp_path / "journal.log.torn").read_bytes()


def test_a_full_disk_is_one_line_and_leaves_no_partial_record(tmp_path):
    with tmpfs(tmp_path / "small", "size=256k", "a small disk") as disk:
        path = disk / "journal.log"
        journal_with_trials(path, 1)
        before = path.read_bytes()
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as f:  # take every free block
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        store = open_storage(f"journal:{path}")
        study = optuna.load_study(study_name="s", storage=store.storage)
        big = {f"a{k}": "x" * 100 for k in range(200)}  # a record larger than what is left
        with pytest.raises(StorageFull, match=r"storage journal:.*: no space left on device while adding a "
                                              r"trial; free space"):
            store.call(lambda: study.add_trial(optuna.trial.create_trial(value=5.0, params={}, distributions={},
                                                                         user_attrs=big)), "adding a trial")
        assert path.read_bytes() == before  # not a byte of the failed record stays
        filler.unlink()
        study.add_trial(optuna.trial.create_trial(value=5.0, params={}, distributions={}, user_attrs=big))
        assert completed(path) == [0.0, 5.0]


@pytest.mark.slow
def test_a_study_whose_disk_fills_resumes_to_completion_with_every_completed_trial_kept(tmp_path, pushing_root):
    with tmpfs(tmp_path / "disk", "size=48m", "a small disk") as disk:
        root = disk / "runs"
        study_file = write_study(tmp_path / "s.yaml", pushing_root, budget={"n_trials": 4, "epochs": 1,
                                                                             "steps_per_epoch": 1})
        url = f"journal:{root / 'optuna-journal.log'}"
        filler = disk / "filler"
        filled = threading.Event()

        def fill_after_the_first_trial() -> None:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                try:
                    if any(t.state == TrialState.COMPLETE for t in open_study(url, "tiny").get_trials()):
                        break
                except Exception:
                    pass  # the study is not created yet
                time.sleep(0.2)
            with open(filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * (1 << 16))
                except OSError:
                    filled.set()
        threading.Thread(target=fill_after_the_first_trial, daemon=True).start()
        first = run_cli("study", "run", str(study_file), "--root", str(root), "--workers", "1", *QUIET, timeout=400)
        assert filled.wait(60)
        kept = [t.number for t in open_study(url, "tiny").get_trials(states=(TrialState.COMPLETE,))]
        assert kept, first.stdout + first.stderr
        assert "Traceback" not in first.stderr, first.stderr[-3000:]
        for log in (root / "studies/tiny/logs").glob("*.log"):  # the worker's own handler had crashed writing
            assert "Traceback" not in log.read_text(), log.read_text()[-3000:]  # error.txt on the full disk
        assert first.returncode != 0 or len(kept) == 4
        journal_before = (root / "optuna-journal.log").read_bytes()
        filler.unlink()
        again = run_cli("study", "run", str(study_file), "--root", str(root), "--workers", "1", *QUIET, timeout=400)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
        study = open_study(url, "tiny")
        done = [t.number for t in study.get_trials(states=(TrialState.COMPLETE,))]
        assert set(kept) <= set(done) and len(done) == 4  # every completed trial kept, the rest re-run
        assert not [t for t in study.get_trials() if t.state == TrialState.RUNNING]
        assert (root / "optuna-journal.log").read_bytes().startswith(journal_before.rsplit(b"\n", 1)[0])
        status = run_cli("study", "status", "tiny", "--root", str(root))
        assert status.returncode == 0 and "4/4 finished" in status.stdout, status.stdout + status.stderr
        shutil.rmtree(root, ignore_errors=True)

"""Exit codes and error lines of the `vpsearch` command (issue 12, item 6).

A vpsearch error (bad input) is one line and exit status 2; anything else is a bug and
keeps its traceback; VPSEARCH_DEBUG=1 shows the traceback of both.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import vpsearch
from conftest import one_line, vp
from vpsearch import cli, settings
from vpsearch.config import ConfigError, load_config
from vpsearch.data.base import DataError
from vpsearch.errors import UserError, VpsearchError
from vpsearch.reporting.study import ReportError
from vpsearch.search.spec import StudyError
from vpsearch.tracking import TrackingUnavailable
from vpsearch.training.checkpoint import CheckpointError
from vpsearch.training.engine import NonFiniteLossError


# -- which errors are one line --------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ConfigError, DataError, CheckpointError, StudyError, ReportError,
                                 TrackingUnavailable, NonFiniteLossError, UserError])
def test_every_user_error_type_is_a_vpsearch_error(cls):
    assert issubclass(cls, VpsearchError)


def _patched_main(monkeypatch, exc: BaseException, env_debug: str | None = None) -> int:
    def boom(args):
        raise exc
    monkeypatch.setattr(cli, "cmd_config_show", boom)
    if env_debug is None:
        monkeypatch.delenv("VPSEARCH_DEBUG", raising=False)
    else:
        monkeypatch.setenv("VPSEARCH_DEBUG", env_debug)
    return cli.main(["config", "show", "-c", "bair"])


def test_a_vpsearch_error_is_one_line_with_status_2(monkeypatch, capsys):
    assert _patched_main(monkeypatch, DataError("data.root /x: no such directory\nsecond line")) == 2
    err = capsys.readouterr().err
    assert err == "vpsearch: error: data.root /x: no such directory\n"


def test_any_other_error_keeps_its_traceback(monkeypatch):
    # a ValueError from pandas/numpy/pydantic inside library code is a bug, not a user error
    with pytest.raises(ValueError, match="inside a library"):
        _patched_main(monkeypatch, ValueError("inside a library"))
    with pytest.raises(FileNotFoundError):
        _patched_main(monkeypatch, FileNotFoundError(2, "No such file", "/lib/x"))


def test_vpsearch_debug_shows_the_traceback_of_user_errors_too(monkeypatch, capsys):
    assert _patched_main(monkeypatch, ConfigError("bad field"), env_debug="1") == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ConfigError: bad field" in err
    assert err.rstrip().endswith("vpsearch: error: bad field")


def test_a_folder_given_as_checkpoint_is_one_line(tmp_path):
    one_line(vp("evaluate", "--checkpoint", tmp_path, cwd=tmp_path), "is a folder, not a checkpoint file")


# -- arguments --------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,needle", [
    (["ui", "--port", "99999"], "--port: expected a port number 0..65535, got 99999"),
    (["dashboard", "x", "--serve", "--port", "-1"], "--port: expected a port number 0..65535, got -1"),
    (["evaluate", "--checkpoint", "x.pt", "--samples", "0"], "--samples: expected an integer >= 1, got 0"),
    (["evaluate", "--checkpoint", "x.pt", "--max-sequences", "0"], "--max-sequences: expected an integer >= 1"),
    (["predict", "--checkpoint", "x.pt", "--out", "o", "--n-sequences", "0"], "--n-sequences: expected an int"),
    (["study", "run", "s.yaml", "--workers", "0"], "--workers: expected an integer >= 1, got 0"),
    (["study", "run", "s.yaml", "--threads", "many"], "--threads: expected an integer >= 1, got 'many'"),
    (["train", "-c", "bair", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_line(args, needle, tmp_path):
    one_line(vp(*args, cwd=tmp_path), needle)


def test_a_binary_config_file_is_named(tmp_path):
    path = tmp_path / "weights.yaml"
    path.write_bytes(b"\x00\x01\xff\xfePK\x03\x04")
    err = one_line(vp("config", "show", "-c", path, cwd=tmp_path), str(path))
    assert "not a text (UTF-8) YAML file" in err
    with pytest.raises(ConfigError, match="weights.yaml"):
        load_config(path)


def test_a_binary_study_file_is_named(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xff")
    one_line(vp("study", "check", path, cwd=tmp_path), f"{path}: not a text (UTF-8) YAML file")


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    # `vpsearch config show ... | head -0`: the reader is gone before we write
    proc = subprocess.Popen([sys.executable, "-m", "vpsearch.cli", "config", "show", "-c", "bair"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    rc = proc.wait(60)
    assert "Traceback" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err, err
    assert rc == 141  # 128 + SIGPIPE, like other Unix tools cut off by `head`


# -- study run --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_study_run_exits_non_zero_when_no_trial_completed(tmp_path, pushing_root):
    from test_study_run import QUIET, write_study
    # every lr of the range blows the loss up: each trial FAILs with the non-finite reason
    study = write_study(tmp_path / "s.yaml", pushing_root, name="allfail",
                        budget={"n_trials": 1, "epochs": 1, "steps_per_epoch": 2},
                        search_space={"optim.lr": {"type": "float", "low": 1e6, "high": 1e7, "log": True}},
                        overrides=["model.nf=8", "model.g_dim=16", "model.z_dim=4", "model.rnn_size=16",
                                   "train.batch_size=4", "eval.max_sequences=4", "train.amp=none",
                                   "train.channels_last=false", f"data.root={pushing_root}", "optim.grad_clip=null"])
    root = tmp_path / "my runs"  # a space: the printed commands must still run as pasted
    proc = vp("study", "run", study, "--root", root, "--workers", "1", *QUIET, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    assert "no trial of study allfail completed" in proc.stderr
    # issue 29, item 6: the hint had omitted --root, and paths with spaces were left unquoted
    assert proc.stderr.strip().endswith(f"the reasons: vpsearch study status allfail --root '{root}'")
    assert f"vpsearch report allfail --root '{root}'" in proc.stdout
    assert "1 failed" in proc.stderr or "FAIL" in proc.stdout


def test_a_train_refused_before_writing_leaves_no_out_folder(tmp_path):
    """Issue 29, item 6: a failed validation had left an empty --out folder behind."""
    out = tmp_path / "a run"
    proc = vp("train", "-c", "pushing-small", "--set", f"data.root={tmp_path / 'nowhere'}", "--out", out, cwd=tmp_path)
    assert proc.returncode == 2 and "nowhere" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


def test_a_model_section_without_name_names_the_real_error(tmp_path):
    """Issue 29, item 4: "Unable to extract tag using discriminator 'name'" hid the unknown key."""
    path = tmp_path / "c.yaml"
    path.write_text("data: {format: bair, root: builtin:pushing}\nmodel: {nf: 8, typo_key: 3}\n")
    one_line(vp("config", "show", "-c", path, cwd=tmp_path), f"{path}: field model.typo_key: unknown key")
    path.write_text("data: {format: dance, root: builtin:dancer}\nmodel: {f_dim: fast}\n")
    one_line(vp("config", "show", "-c", path, cwd=tmp_path), f"{path}: field model.f_dim: Input should be a valid integer")
    path.write_text("data: {format: dance, root: builtin:dancer}\n")  # no model section: the format's family
    shown = vp("config", "show", "-c", path, cwd=tmp_path)
    assert shown.returncode == 0 and "\n  name: dance\n" in shown.stdout


# -- servers without authentication --------------------------------------------------------------
def test_listen_notice_says_where_a_server_really_listens():
    lines = settings.listen_notice("127.0.0.1", 5000)
    assert lines == []
    lines = settings.listen_notice("0.0.0.0", 5000)
    assert any("no authentication" in x for x in lines)
    assert any("every interface" in x and ":5000" in x for x in lines)
    lines = settings.listen_notice("192.0.2.7", 8765)
    assert any("no authentication" in x for x in lines) and any("http://192.0.2.7:8765" in x for x in lines)
    assert settings.listen_notice("::1", 1) == [] and settings.listen_notice("localhost", 1) == []


def test_ui_on_a_public_host_warns_before_starting(tmp_path, monkeypatch, capsys):
    from vpsearch.tracking import cli as tcli
    from vpsearch.tracking import ui

    started = {}

    class FakeServer:
        def __init__(self, cmd, url, log=None):
            started["cmd"] = cmd
            self.proc = None

        def start(self, timeout):
            raise KeyboardInterrupt  # as if Ctrl-C right after start

        def stop(self):
            pass

    monkeypatch.setattr(ui, "ServerProcess", FakeServer)
    monkeypatch.setattr(ui, "port_free", lambda h, p: True)
    monkeypatch.setattr(tcli.signal, "signal", lambda *a: None)
    assert cli.main(["ui", "--root", str(tmp_path), "--host", "0.0.0.0", "--port", "5077"]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert "no authentication" in text and "0.0.0.0:5077" in text
    assert started["cmd"][started["cmd"].index("--host") + 1] == "0.0.0.0"
    # said before the wait for MLflow, not after it (issue 26, item 5: ~45 s of silence)
    assert f"starting MLflow on http://127.0.0.1:5077 for {tmp_path} (up to " in out.err


# -- overrides and secrets ---------------------------------------------------------------------------
def test_a_section_override_merges_into_the_section():
    cfg = load_config("pushing-small", ["train={epochs: 2}"])
    shipped = load_config("pushing-small")
    assert cfg.train.epochs == 2
    assert cfg.train.batch_size == shipped.train.batch_size == 8  # not reset to the default 12
    assert cfg.train.steps_per_epoch == shipped.train.steps_per_epoch == 60
    # a later dotted override still wins over an earlier mapping and vice versa
    assert load_config("pushing-small", ["train={epochs: 2}", "train.epochs=5"]).train.epochs == 5
    assert load_config("pushing-small", ["train.epochs=5", "train={epochs: 2}"]).train.epochs == 2


@pytest.mark.parametrize("url,shown", [
    ("postgresql://vp:s3cret@db:5432/optuna", "postgresql://vp:***@db:5432/optuna"),
    ("postgresql://db/optuna?user=vp&password=s3cret", "postgresql://db/optuna?user=vp&password=***"),
    ("postgresql://db/optuna?password=s3cret&sslmode=require", "postgresql://db/optuna?password=***&sslmode=require"),
    ("postgresql://vp:p@ss:w@rd@db/optuna", "postgresql://vp:***@db/optuna"),
    ("journal:/runs/j.log", "journal:/runs/j.log"),
])
def test_redact_hides_passwords_in_userinfo_and_query(url, shown):
    assert settings.redact(url) == shown


def test_an_unparsable_storage_url_is_never_echoed_with_its_password(tmp_path):
    for url in ("postgresql:/vp:s3cretpw@db/optuna", "postgresql://vp:s3cretpw@db:notaport/optuna", "postgresql://vp:s3cretpw@[db/optuna",
                "postgresql+nodriver://vp:s3cretpw@db/optuna", "postgresql://db/optuna?password=s3cretpw&port=x"):
        proc = vp("study", "status", "x", "--storage", url, "--storage-wait", "0", cwd=tmp_path)
        assert "s3cretpw" not in proc.stdout + proc.stderr, proc.stderr
        one_line(proc, "storage postgresql")


# -- layering -----------------------------------------------------------------------------------------
LAYERS = {"data": 0, "models": 0, "training": 1, "search": 2, "tracking": 2, "reporting": 3}
TOP = {"errors": -1, "args": -1, "fmt": -1, "settings": -1, "config": -1, "provenance": 1, "cli": 4}
# the config asks the schedule objects (pure code, no torch) whether an epoch-counted schedule is too
# short to count per epoch: the rule lives once, in schedules.py (imported inside the validator)
ALLOWED = {("vpsearch.config", "vpsearch.schedules")}


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("vpsearch"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("vpsearch")}
    return out


def _level(module: str) -> int | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None
    return LAYERS.get(parts[1], TOP.get(parts[1]))


def test_lower_layers_never_import_upper_ones():
    pkg = Path(vpsearch.__file__).parent
    bad = []
    for path in pkg.rglob("*.py"):
        mod = "vpsearch." + ".".join(path.relative_to(pkg).with_suffix("").parts)
        level = _level(mod)
        if level is None:
            continue
        for imp in _imports(path):
            lvl = _level(imp)
            if lvl is not None and lvl > level and (mod, imp) not in ALLOWED:
                bad.append(f"{mod} imports {imp}")
    assert not bad, bad


def test_errors_module_imports_nothing_of_vpsearch():
    assert not _imports(Path(vpsearch.__file__).parent / "errors.py")


def test_dashboard_on_a_public_host_warns_and_names_the_real_port(tmp_path, monkeypatch, capsys):
    from vpsearch.reporting import dashboard

    class FakeServer:
        def __init__(self, name, url, d, out, port, poll, host):
            self.port, self.url = 40123, "http://127.0.0.1:40123/index.html"  # --port 0: the OS chose

        def start(self):
            return self

        def stop(self):
            pass

    def interrupted(seconds):
        raise KeyboardInterrupt

    monkeypatch.setattr(dashboard, "DashboardServer", FakeServer)
    monkeypatch.setattr("vpsearch.reporting.study.load_study", lambda name, url: None)
    monkeypatch.setattr("time.sleep", interrupted)
    monkeypatch.setattr("signal.signal", lambda *a: None)
    assert cli.main(["dashboard", "s", "--root", str(tmp_path), "--serve", "--host", "0.0.0.0", "--port", "0"]) == 0
    err = capsys.readouterr().err
    assert "no authentication" in err and "0.0.0.0:40123" in err

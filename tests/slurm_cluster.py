"""A throwaway one-node Slurm cluster for tests: munged, slurmctld and slurmd on localhost.

    from slurm_cluster import slurm_or_skip     # tests/ is on sys.path under pytest
    with slurm_or_skip() as cluster:     # skips (or fails in CI) with the reason if it cannot start
        env = cluster.env()              # SLURM_CONF set: sbatch, squeue, scancel use this cluster

Everything lives in a temp dir: a munge key and socket of its own, slurm.conf, state and
spool dirs, logs. The node is this machine with its CPUs and no GPUs; no cgroups
(proctrack/linuxproc, task/none) and no accounting (sacct says it is disabled; scontrol
shows a job for MinJobAge after it ends). Slurm's daemons run as root here (SlurmUser root).
Needs Debian's slurmctld, slurmd, slurm-client and munge (.ci/run installs them).
VPSEARCH_REQUIRE_SLURM=1 (set by .ci/run) turns "cannot start, skipped" into a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

from postgres import free_port

NODE = "vpnode"
KILL_WAIT = 30  # Slurm's default: seconds between SIGTERM and SIGKILL of a cancelled job
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
SBIN = os.pathsep.join(("/usr/sbin", "/sbin"))  # the daemons live here; a non-login PATH may lack it


class SlurmUnavailable(RuntimeError):
    """The daemons could not be started here; the message says why."""


class SlurmCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vpsearch-slurm-"))
        self.dir.chmod(0o755)
        self.conf = self.dir / "slurm.conf"
        self.socket = self.dir / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}

    def env(self, **extra: str) -> dict[str, str]:
        path = os.environ.get("PATH", "") + os.pathsep + SBIN
        return {**os.environ, "PATH": path, "SLURM_CONF": str(self.conf), **extra}

    def write_config(self) -> None:
        d = self.dir
        for sub in ("state", "spool", "munge"):
            (d / sub).mkdir(mode=0o755)
        self.conf.write_text(f"""\
ClusterName=vpsearchtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={self.socket}
CredType=cred/munge
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'slurmctld.log'}
SlurmdLogFile={d / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
KillWait={KILL_WAIT}
NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname=localhost CPUs={os.cpu_count() or 1} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _start(self, name: str, cmd: list[str]) -> None:
        log = (self.dir / f"{name}.out").open("w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env())

    def _why(self, name: str) -> str:
        lines = []
        for f in (self.dir / f"{name}.out", self.dir / f"{name}.log"):
            if f.is_file():
                lines += [ln for ln in f.read_text(errors="replace").splitlines() if "error" in ln.lower()]
        return lines[-1].strip() if lines else "no error logged"

    def start(self, timeout: float = 60) -> None:
        path = self.env()["PATH"]
        missing = [b for b in BINARIES if shutil.which(b, path=path) is None]
        if missing:
            raise SlurmUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurmctld slurmd "
                                   "slurm-client munge, or run .ci/run)")
        if os.geteuid() != 0:
            raise SlurmUnavailable("the test cluster runs Slurm's daemons as root (SlurmUser root); not root here")
        self.write_config()
        key = self.dir / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        m = self.dir / "munge"
        self._start("munged", ["munged", "--foreground", "--force", f"--socket={self.socket}", f"--key-file={key}",
                               f"--pid-file={m / 'munged.pid'}", f"--log-file={m / 'munged.log'}",
                               f"--seed-file={m / 'munged.seed'}"])
        self._wait(lambda: self.socket.exists(), "munged", timeout)
        self._start("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.conf)])
        self._start("slurmd", ["slurmd", "-D", "-N", NODE, "-f", str(self.conf)])
        self._wait(self._node_idle, "slurmd", timeout)

    def _node_idle(self) -> bool:
        r = subprocess.run(["sinfo", "-h", "-n", NODE, "-o", "%T"], capture_output=True, text=True,
                           env=self.env(), timeout=30)
        return r.returncode == 0 and r.stdout.strip() == "idle"

    def _wait(self, ready, what: str, timeout: float) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise SlurmUnavailable(f"{name} exited with status {p.returncode}: {self._why(name)}")
            if ready():
                return
            time.sleep(0.3)
        raise SlurmUnavailable(f"{what} not ready after {timeout:.0f}s: {self._why(what)}")

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env(), timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)}: {r.stderr.strip()}")
        return r

    def queue(self) -> list[str]:
        """Lines 'JOBID|STATE' of every job still known to squeue, array tasks one per line."""
        return self.run("squeue", "-h", "-r", "-o", "%i|%T").stdout.split()

    def stop(self) -> None:
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--user", "root", check=False)  # jobs first: their steps outlive slurmd
            end = time.monotonic() + KILL_WAIT + 15
            while self.queue() and time.monotonic() < end:
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is not None and p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(timeout=10)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def slurm_or_skip() -> Iterator[SlurmCluster]:
    import pytest

    cluster = SlurmCluster()
    try:
        try:
            t0 = time.monotonic()
            cluster.start()
            cluster.started_in = time.monotonic() - t0
        except (SlurmUnavailable, OSError, subprocess.SubprocessError) as e:
            msg = f"no Slurm test cluster: {e}"
            if os.environ.get("VPSEARCH_REQUIRE_SLURM") == "1":
                pytest.fail(f"{msg} (VPSEARCH_REQUIRE_SLURM=1)")
            pytest.skip(msg)
        yield cluster
    finally:
        cluster.remove()

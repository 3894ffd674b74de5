"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, a free 127.0.0.1 port, stop and remove.

    from postgres import postgres_or_skip   # tests/ is on sys.path under pytest
    with postgres_or_skip() as pg:          # skips the test if the binaries are absent
        url = pg.create_database("optuna")  # postgresql+psycopg2://vp:vp@127.0.0.1:PORT/optuna

Uses the binaries under /usr/lib/postgresql/*/bin (Debian's `postgresql` package; .ci/run
installs it) or $PG_BIN. As root, the server runs as the `postgres` (else `nobody`)
user, because initdb refuses root. fsync is off: the cluster lives for one test session.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

USER, PASSWORD = "vp", "vp"


def find_bin() -> Path | None:
    candidates = [os.environ.get("PG_BIN", "")] + sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    def __init__(self, bin_dir: Path, port: int | None = None):
        self.bin = bin_dir
        self.port = port or free_port()
        # not under pytest's 0700 tmp dirs: the unprivileged server user must reach it
        self.dir = Path(tempfile.mkdtemp(prefix="vpsearch-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.run_as: str | None = None
        if os.geteuid() == 0:
            self.run_as = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bin / args[0]), *args[1:]]
        return ["runuser", "-u", self.run_as, "--", *cmd] if self.run_as else cmd

    def init(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.run_as:
            entry = pwd.getpwnam(self.run_as)
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        subprocess.run(self._cmd("initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
                                 "--auth=scram-sha-256", "-E", "UTF8", "--no-sync"),
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
        subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "-t", "60",
                                 "start"), check=True, capture_output=True, timeout=90)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                           capture_output=True, timeout=60)

    def url(self, db: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname="postgres")
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        conn.close()
        return self.url(name)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@contextlib.contextmanager
def postgres_server(port: int | None = None) -> Iterator[Postgres]:
    bin_dir = find_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL binaries not found")
    pg = Postgres(bin_dir, port)
    try:
        pg.init()
        t0 = time.monotonic()
        pg.start()
        pg.started_in = time.monotonic() - t0
        yield pg
    finally:
        pg.remove()


@contextlib.contextmanager
def postgres_or_skip(port: int | None = None) -> Iterator[Postgres]:
    import pytest

    if find_bin() is None:
        pytest.skip("PostgreSQL is not installed (initdb/pg_ctl not under /usr/lib/postgresql/*/bin or $PG_BIN); "
                    "`apt-get install postgresql` or run .ci/run")
    with postgres_server(port) as pg:
        yield pg

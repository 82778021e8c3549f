"""A throwaway PostgreSQL server (Debian's `postgresql` package) for Dagster's instance storage:
initdb into a fresh directory, pg_ctl start on a loopback port, pg_ctl stop at the end. The
server refuses to run as root, so as root it runs as the `postgres` system user."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def postgres_bin() -> Path | None:
    """The directory of initdb/pg_ctl: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server() -> Iterator[dict]:
    """Yields Dagster's `postgres_db` settings for a running server."""
    bindir = postgres_bin()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    as_root = os.geteuid() == 0
    # Outside pytest's tmp_path: its parents are private to root, and the server runs as postgres.
    base = Path(tempfile.mkdtemp(prefix="run-pipeline-pg-"))
    data, sockets = base / "data", base / "sock"
    sockets.mkdir()
    user = "postgres" if as_root else None
    if as_root:
        base.chmod(0o755)
        shutil.chown(base, user, user)
        shutil.chown(sockets, user, user)

    def run(*cmd: str, timeout: float = 120) -> None:
        full = ["runuser", "-u", user, "--", *cmd] if as_root else list(cmd)
        done = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {done.stdout}{done.stderr}")

    port = _free_port()
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w", "-t", "60", "-o",
            f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", "start")
        try:
            # SQLAlchemy 2.1 defaults postgresql:// to psycopg 3; dagster-postgres brings psycopg2.
            yield {"username": "postgres", "password": "", "hostname": "127.0.0.1", "db_name": "postgres",
                   "port": port, "scheme": "postgresql+psycopg2"}
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(base, ignore_errors=True)

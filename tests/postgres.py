"""A real, throw-away PostgreSQL server for the distributed tests, on loopback.

Debian's ``postgresql`` package provides the binaries (installed here when missing and when we
may: root with apt-get); the server runs from a temporary data directory as the ``postgres``
user, because PostgreSQL refuses to run as root. Where none of that is possible the tests skip
with the reason (and fail under CI, see tests/conftest.py).

``AUTOML_TEST_POSTGRES_BIN`` names the folder of the binaries (``initdb``, ``pg_ctl``,
``createdb``) where they are elsewhere: then that folder alone is looked in, and nothing is
installed (tests/test_ci_fixtures.py points it at an empty folder).

The server asks for a password (scram-sha-256), as a shared one would: the URL carries it, so
the tests also see where automl could leak it.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

DATABASES = ("automl", "mlflow")  # Optuna's and MLflow's tables apart: both keep an alembic_version


BIN_ENV = "AUTOML_TEST_POSTGRES_BIN"


def _binaries() -> Path | None:
    if os.environ.get(BIN_ENV):
        folder = Path(os.environ[BIN_ENV])
        return folder if (folder / "initdb").is_file() else None
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    which = shutil.which("initdb")
    return Path(which).resolve().parent if which else None


def _install() -> str | None:
    """Install Debian's postgresql package; returns why not where it cannot."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "PostgreSQL is not installed and cannot be installed here (needs root and apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "postgresql"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            return f"installing PostgreSQL failed: {' '.join(command)}: {done.stderr.strip()[-300:]}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server():
    """Yields the SQLAlchemy URL, password included, of a fresh database ``automl`` (beside it,
    ``mlflow``), or a string starting with "skip: "."""
    folder = Path(tempfile.mkdtemp(prefix="automl-postgres-"))  # not under pytest's 0700 folders
    try:
        yield from _serve(folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _serve(folder: Path):
    password = f"pw{secrets.token_hex(12)}"  # distinctive: the secrets test greps for it
    binaries = _binaries()
    if binaries is None and os.environ.get(BIN_ENV):
        yield f"skip: no PostgreSQL binaries in {BIN_ENV}={os.environ[BIN_ENV]}"
        return
    if binaries is None:
        reason = _install()
        binaries = _binaries()
        if binaries is None:
            yield f"skip: {reason or 'PostgreSQL binaries not found after installing'}"
            return
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # the server will not run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
        folder.chmod(0o777)
    data, port = folder / "data", _free_port()
    env = {**os.environ, "PGPASSWORD": password}
    run = lambda *args: subprocess.run([*as_postgres, *args], capture_output=True, text=True, timeout=120,  # noqa: E731
                                       env=env)
    pwfile = folder / "pwfile"
    pwfile.write_text(password + "\n")
    if as_postgres:
        shutil.chown(pwfile, "postgres")
    init = run(str(binaries / "initdb"), "-D", str(data), "-U", "automl", "--auth=scram-sha-256",
               "--pwfile", str(pwfile), "-E", "UTF8")
    pwfile.unlink()
    if init.returncode != 0:
        yield f"skip: initdb failed: {init.stderr.strip()[-300:]}"
        return
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
    start = run(str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w",
                "start")
    if start.returncode != 0:
        yield f"skip: PostgreSQL did not start: {start.stderr.strip()[-300:]}"
        return
    try:
        for database in DATABASES:
            created = run(str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "automl", database)
            assert created.returncode == 0, created.stderr
        yield f"postgresql://automl:{password}@127.0.0.1:{port}/{DATABASES[0]}"
    finally:
        run(str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")

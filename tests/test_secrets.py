"""A password in the storage and tracking URLs is never shown or stored: a real PostgreSQL server
that asks for one, a study created, a search with two worker processes, a tune and an export,
then every place automl writes to is searched for the password."""

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import sqlalchemy
from mlflow import MlflowClient
from sqlalchemy.engine import make_url

from automl.secrets import masked, passwords, scrubbed

from .conftest import ROOT, SPACES

AUTOML = [sys.executable, "-m", "automl.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("url, shown", [
    ("postgresql://automl:s3cr%40t@db.example:5432/automl", "postgresql://automl:***@db.example:5432/automl"),
    ("postgresql+psycopg://u@h/db?password=s3cret&sslmode=require", "postgresql+psycopg://u@h/db?password=%2A%2A%2A&sslmode=require"),
    ("http://alice:s3cret@mlflow.example:5000/base?x=1", "http://alice:***@mlflow.example:5000/base?x=1"),
    ("mysql://u:s3cret@h:notaport/db", "mysql://u:***@h:notaport/db"),  # no parser accepts it: masked all the same
    ("journal:automl.journal", "journal:automl.journal"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("https://mlflow.example", "https://mlflow.example"),
])
def test_a_url_is_shown_with_its_password_masked(url, shown):
    assert masked(url) == shown
    assert all(secret not in scrubbed(f"cannot use {url}", url) for secret in passwords([url]))


def _run(args: list[str], cwd: Path, log: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    t0 = time.time()
    done = subprocess.run([*AUTOML, *args], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    log += [done.stdout, done.stderr]
    print("TIMING", args[:2], time.time() - t0, file=sys.stderr)
    return done


def _worker_command_lines(parent: int) -> list[str]:
    """The command lines of ``parent``'s child processes, as ``ps`` shows them to every user."""
    lines = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if f"PPid:\t{parent}\n" in status.read_text():
                lines.append(status.with_name("cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # the process ended meanwhile
            pass
    return lines


def _file_texts(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and every member of the zip files among them (model.keras)."""
    texts = {}
    for path in (p for p in folder.rglob("*") if p.is_file()):
        texts[str(path)] = path.read_bytes()
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                texts.update({f"{path}!{name}": archive.read(name) for name in archive.namelist()})
    return texts


def _database_rows(url: str) -> str:
    """Every row of every table, as text: what any reader of the database sees."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return "\n".join(str(connection.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')).fetchall())
                             for table in sqlalchemy.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_password_in_storage_and_tracking_urls_is_never_shown_or_stored(tmp_path, postgres_url):
    password = make_url(postgres_url).password
    tracking = postgres_url.rsplit("/", 1)[0] + "/mlflow"  # MLflow in PostgreSQL too, same password
    store = ["--storage", postgres_url, "--tracking-uri", tracking]
    what = ["--space", str(SPACES / "quick.yaml"), "--data", "digits", "--study", "s", "--trials", "3",
            "--epochs", "1"]
    log: list[str] = []

    created = _run(["study", "create", *what, *store], tmp_path, log)
    assert created.returncode == 0, created.stderr[-3000:]
    assert "--storage postgresql://automl:***@" in created.stdout  # the hint names where, not the secret

    with open(tmp_path / "search.out", "w") as out, open(tmp_path / "search.err", "w") as err:
        search = subprocess.Popen([*AUTOML, "search", *what, "--workers", "2", "--quiet", *store], cwd=tmp_path,
                                  env=ENV, stdout=out, stderr=err, text=True)
        commands: set[str] = set()
        while search.poll() is None:
            commands.update(c for c in _worker_command_lines(search.pid) if " worker " in c)
            time.sleep(0.2)
    log += [(tmp_path / "search.out").read_text(), (tmp_path / "search.err").read_text()]
    assert search.returncode == 0, log[-1][-3000:]
    assert len(commands) >= 2  # both workers were seen running

    tuned = _run(["tune", "--space", str(SPACES / "quick.yaml"), "--data", "digits", "--study", "t",
                  "--budget", "30", "--coarse-epochs", "1", "--quiet", *store], tmp_path, log)
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    exported = _run(["export", "--study", "s", "--out", "exported", "--storage", postgres_url], tmp_path, log)
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert json.loads((tmp_path / "exported" / "automl.json").read_text())["storage"].startswith("postgresql://automl:***@")

    wrong = postgres_url.replace(password, "pwWRONG" + password[::-1])  # the wrong one is a secret too
    refused = _run(["trials", "--study", "s", "--storage", wrong], tmp_path, log)
    assert refused.returncode == 2 and refused.stderr.startswith("automl: error: --storage postgresql://automl:***@")
    assert "password authentication failed" in refused.stderr

    client = MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert {r.data.tags.get("automl.kind") for r in runs} >= {"search", "tune"}
    stored = [json.dumps([r.data.params, r.data.tags]) for r in runs]
    assert any("postgresql://automl:***@" in text for text in stored)  # the params say where, masked
    artifacts = tmp_path / "downloaded"
    for run in runs:
        client.download_artifacts(run.info.run_id, "", str(artifacts / run.info.run_id))
    files = _file_texts(tmp_path)  # automl-out (models, tune export, report), exported/, artifacts
    assert any(name.endswith("final/model.keras") for name in files) and (artifacts.exists())
    databases = [_database_rows(postgres_url), _database_rows(tracking)]

    for secret in (password, wrong.split(":")[2].split("@")[0]):
        assert not [c for c in commands if secret in c], "a worker's command line"
        assert not [text for text in log if secret in text], "a printed line"
        assert not [text for text in stored if secret in text], "an MLflow param or tag"
        assert not [name for name, data in files.items() if secret.encode() in data], "a file or artifact"
        assert not [rows for rows in databases if secret in rows], "the Optuna or MLflow database"

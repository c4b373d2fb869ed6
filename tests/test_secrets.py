"""A password in the storage and tracking URLs is never shown or stored: a real PostgreSQL server
that asks for one, a study created, a search with two worker processes, a tune and an export,
then every place automl prints or writes to is searched for the password."""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import sqlalchemy
from mlflow import MlflowClient
from sqlalchemy.engine import make_url

from automl.cli import main
from automl.secrets import masked, passwords, scrubbed

from .conftest import ROOT, SPACES


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


def _watch_workers(seen: set[str], stop: threading.Event) -> None:
    while not stop.is_set():
        seen.update(c for c in _worker_command_lines(os.getpid()) if " worker " in c)
        time.sleep(0.2)


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
def test_a_password_in_storage_and_tracking_urls_is_never_shown_or_stored(tmp_path, postgres_url, capfd,
                                                                          monkeypatch):
    """The commands run in this process (the framework loads once), their workers as processes of
    their own; capfd holds every line any of them prints."""
    monkeypatch.chdir(tmp_path)
    password = make_url(postgres_url).password
    tracking = postgres_url.rsplit("/", 1)[0] + "/mlflow"  # MLflow in PostgreSQL too, same password
    store = ["--storage", postgres_url, "--tracking-uri", tracking]
    what = ["--space", str(SPACES / "quick.yaml"), "--data", "digits", "--study", "s", "--trials", "2",
            "--epochs", "1"]

    assert main(["study", "create", *what, *store]) == 0
    assert "--storage postgresql://automl:***@" in capfd.readouterr().out  # the hint says where, not the secret
    commands: set[str] = set()
    stop = threading.Event()
    watcher = threading.Thread(target=_watch_workers, args=(commands, stop))
    watcher.start()
    try:
        assert main(["search", *what, "--workers", "2", "--quiet", *store]) == 0
    finally:
        stop.set()
        watcher.join()
    assert len(commands) >= 2  # both workers were seen running
    # Through the coarse search (a stage run with its own trials). On a busy machine this small a
    # budget may stop the tune there (exit 3); either way it has logged what this test reads.
    assert main(["tune", "--space", str(SPACES / "quick.yaml"), "--data", "digits", "--study", "t", "--budget", "30",
                 "--coarse-epochs", "1", "--until", "coarse", "--quiet", *store]) in (0, 3)
    assert main(["export", "--study", "s", "--out", "exported", "--storage", postgres_url]) == 0
    assert json.loads((tmp_path / "exported" / "automl.json").read_text())["storage"].startswith(
        "postgresql://automl:***@")
    printed = capfd.readouterr()
    wrong = postgres_url.replace(password, "pwWRONG" + password[::-1])  # a wrong one is a secret too
    assert main(["trials", "--study", "s", "--storage", wrong]) == 2
    refused = capfd.readouterr()
    assert refused.err.startswith("automl: error: --storage postgresql://automl:***@")
    assert "password authentication failed" in refused.err
    log = [printed.out, printed.err, refused.out, refused.err]

    client = MlflowClient(tracking)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
    assert {r.data.tags.get("automl.kind") for r in runs} >= {"search", "tune"}
    assert {r.data.tags.get("automl.stage") for r in runs} >= {"sanity", "coarse"}
    stored = [json.dumps([r.data.params, r.data.tags]) for r in runs]
    assert any("postgresql://automl:***@" in text for text in stored)  # the params say where, masked
    artifacts = tmp_path / "downloaded"
    for run in runs:
        client.download_artifacts(run.info.run_id, "", str(artifacts / run.info.run_id))
    files = _file_texts(tmp_path)  # automl-out (models, derived spaces), exported/, every run's artifacts
    assert [name for name in files if name.endswith("config.yaml")] and str(tmp_path / "exported/model.keras") in files
    databases = [_database_rows(postgres_url), _database_rows(tracking)]

    for secret in (password, make_url(wrong).password):
        assert not [c for c in commands if secret in c], "a worker's command line"
        assert not [text for text in log if secret in text], "a printed line"
        assert not [text for text in stored if secret in text], "an MLflow param or tag"
        assert not [name for name, data in files.items() if secret.encode() in data], "a file or artifact"
        assert not [rows for rows in databases if secret in rows], "the Optuna or MLflow database"


def _process_tree(root: int) -> list[int]:
    """``root`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = int(re.search(r"^PPid:\s+(\d+)$", status.read_text(), re.M).group(1))
        except (OSError, AttributeError):  # the process ended meanwhile
            continue
        children.setdefault(ppid, []).append(int(status.parent.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def test_automl_ui_shows_the_tracking_uri_masked_and_keeps_it_off_mlflows_command_line(tmp_path, postgres_url):
    """`automl ui --tracking-uri` with a password, over the real PostgreSQL: its line says where
    with the password masked, and neither MLflow's process (automl ui execs it) nor the server
    process MLflow starts once it has reached the database carries the URI on its command line,
    which every user can read."""
    password = make_url(postgres_url).password
    tracking = postgres_url.rsplit("/", 1)[0] + "/mlflow"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "MLFLOW_WORKERS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "automl.cli", "ui", "--tracking-uri", tracking, "--port", str(port)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        first = proc.stdout.readline()
        assert first == f"MLflow UI for {masked(tracking)} on http://127.0.0.1:{port} (Ctrl-C stops it)\n"
        assert "automl:***@127.0.0.1" in first
        for _ in range(600):  # until MLflow, past its database, has started its server (uvicorn)
            lines = _command_lines(_process_tree(proc.pid))
            if any(" -m uvicorn " in line for line in lines.values()):
                break
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            time.sleep(0.2)
        else:
            pytest.fail(f"MLflow started no server: {lines}")
        assert "-m mlflow ui --host 127.0.0.1" in lines[proc.pid]  # automl ui became MLflow's UI
        assert not [line for line in lines.values() if password in line], "a command line"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    assert password not in first + output, "a printed line"


def _command_lines(pids: list[int]) -> dict[int, str]:
    lines = {}
    for pid in pids:
        with contextlib.suppress(OSError):  # the process ended meanwhile
            lines[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return lines

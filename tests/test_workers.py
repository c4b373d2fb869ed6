"""Many worker processes on one study: local workers on the journal file with recycling, and
three workers on a real PostgreSQL server, one of them killed mid-trial."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback

from automl.hpo import records
from automl.hpo.records import TrialRecord
from automl.hpo.storage import load_study
from automl.hpo.study import FINISHED

from .conftest import ROOT, SPACES

AUTOML = [sys.executable, "-m", "automl.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "AUTOML_HEARTBEAT_SECONDS": "1"}


def _runs(tracking_uri: str, experiment: str):
    client = MlflowClient(tracking_uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def test_local_workers_one_per_gpu_share_the_study_and_are_recycled(tmp_path):
    """--gpus 0,1 pins one worker to each GPU (here, with none, they train on the CPU)."""
    probe = tmp_path / "probe"  # what each process's Keras saw (tests/framework_probe/sitecustomize.py)
    probe.mkdir()
    env = {**ENV, "PYTHONPATH": f"{ROOT / 'tests' / 'framework_probe'}:{ROOT}", "AUTOML_TEST_PROBE": str(probe)}
    done = subprocess.run([*AUTOML, "search", "--space", str(SPACES / "quick.yaml"), "--data", "digits",
                           "--trials", "6", "--epochs", "1", "--gpus", "0,1", "--recycle", "2", "--quiet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ended = re.findall(r"worker (\d+) on GPU (\d): ran \d+ trials", done.stdout)  # each says so as it exits
    assert len(ended) >= 3 and len({pid for pid, _ in ended}) == len(ended)  # 6 trials, 2 per process: recycled
    seen = {path.stem: json.loads(path.read_text()) for path in probe.glob("*.json")}
    assert set(seen) >= {pid for pid, _ in ended}
    assert {seen[pid]["CUDA_VISIBLE_DEVICES"] for pid, _ in ended} == {"0", "1"}  # one GPU each, both used
    study = load_study("quick-digits", f"journal:{tmp_path}/automl.journal")
    assert len(_finished(study)) >= 6
    runs = _runs(f"sqlite:///{tmp_path}/mlflow.db", "quick-digits")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert sorted(int(r.data.tags["automl.trial"]) for r in children) == [t.number for t in study.trials]
    assert not [r for r in runs if r.info.status == "RUNNING"]


TIMEOUT = 90.0  # the processes' start counts in it: three TensorFlow imports at once took 48 s on a busy host
# After the deadline: the running trials end (1 epoch), then the last worker out and the search
# close their runs, test the best model and log it. Seconds on a quiet machine; this allows for a busy one.
CLOSING = 30.0


@pytest.mark.slow
def test_a_time_bounded_search_keeps_its_workers_until_the_deadline_and_a_worker_started_apart_joins(tmp_path):
    """``automl search --timeout 90 --workers 2`` with no --trials, and ``automl worker`` started on
    its own once the search has started: all three run trials and start none after the deadline the
    study keeps; the search ends within a trial of it. A worker started later exits at once."""
    storage = f"journal:{tmp_path}/automl.journal"
    search = subprocess.Popen([*AUTOML, "search", "--space", str(SPACES / "quick.yaml"), "--data", "digits",
                               "--epochs", "1", "--timeout", str(TIMEOUT), "--workers", "2", "--study", "timed"],
                              cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(240):  # the search has started: its deadline is in the study
        if (tmp_path / "automl.journal").exists() and records.search_deadline(load_study("timed", storage)):
            break
        time.sleep(0.5)
    joined = subprocess.Popen([*AUTOML, "worker", "--study", "timed", "--quiet"], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = search.communicate(timeout=600)
    ended = time.time()
    assert search.returncode == 0, output[-3000:]
    joined_output, _ = joined.communicate(timeout=120)
    assert joined.returncode == 0, joined_output[-3000:]

    study = load_study("timed", storage)
    deadline, trials = records.search_deadline(study), study.trials
    pool = {f"{socket.gethostname()}:{pid}" for pid in re.findall(r"worker (\d+) started", output)}
    apart = f"{socket.gethostname()}:{joined.pid}"
    assert len(pool) == 2  # the first two ran to the deadline: none had to be replaced
    assert {TrialRecord.of(t).worker for t in trials} == pool | {apart}, output[-2000:] + joined_output[-1000:]
    assert all(t.datetime_start.timestamp() <= deadline for t in trials)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    longest = max(t.duration.total_seconds() for t in _finished(study))
    assert ended - deadline <= longest + CLOSING, (ended - deadline, longest)

    late = subprocess.run([*AUTOML, "worker", "--study", "timed"], cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert late.returncode == 0 and re.fullmatch(
        r"worker \d+: ran 0 trials of timed: the search is over \(its time ran out at \d\d:\d\d:\d\d\)",
        late.stdout.strip()), late.stdout + late.stderr[-2000:]
    assert len(study.trials) == len(load_study("timed", storage).trials)


@pytest.fixture
def mlflow_server(tmp_path, postgres_url):
    """``mlflow server`` on loopback over the PostgreSQL database ``mlflow``, as docs/distributed.md runs it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = postgres_url.rsplit("/", 1)[0] + "/mlflow"
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend,
                             "--artifacts-destination", str(tmp_path / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("mlflow server did not start")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_three_workers_on_postgres_reach_the_target_though_one_is_killed(tmp_path, postgres_url, mlflow_server):
    """As docs/distributed.md runs them: automl study create, then a search and two workers join
    (one pinned with --gpu, which on this CPU machine changes nothing else)."""
    tracking = mlflow_server
    store = ["--storage", postgres_url, "--tracking-uri", tracking]
    what = ["--space", str(SPACES / "quick.yaml"), "--data", "digits", "--study", "pg", "--trials", "12",
            "--epochs", "2"]
    created = subprocess.run([*AUTOML, "study", "create", *what, *store], cwd=tmp_path, env=ENV,
                             capture_output=True, text=True, timeout=300)
    assert created.returncode == 0, created.stderr[-3000:]
    assert "study pg: created, target 12 finished trials" in created.stdout
    assert [r.info.status for r in _runs(tracking, "pg")] == ["SCHEDULED"]  # no trial runs yet

    search = subprocess.Popen([*AUTOML, "search", *what, "--quiet", *store], cwd=tmp_path, env=ENV,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker = [*AUTOML, "worker", "--study", "pg", *store, "--quiet"]
    doomed = subprocess.Popen(worker, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    survivor = subprocess.Popen([*worker, "--gpu", "0"], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    study = load_study("pg", postgres_url)
    killed_trial = _kill_mid_trial(doomed, study)
    output, _ = search.communicate(timeout=600)
    assert search.returncode == 0, output[-3000:]
    survivor.wait(timeout=600)
    assert survivor.returncode == 0

    study = load_study("pg", postgres_url)
    assert len(_finished(study)) >= 12
    killed = study.trials[killed_trial]
    assert killed.state == optuna.trial.TrialState.FAIL  # failed by the heartbeat of the others
    retried = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == killed.number]
    assert retried and retried[0].params == killed.params  # retried once with the same configuration
    runs = _runs(tracking, "pg")
    assert not [r for r in runs if r.info.status == "RUNNING"]
    killed_runs = [r for r in runs if r.data.tags.get("automl.trial") == str(killed_trial)]
    assert [r.info.status for r in killed_runs] == ["FAILED"]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]  # one for all: closed by the last out
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.metrics["finished_trials"] == len(_finished(study))
    # automl's best (records.ranking: ties to the earlier trial), not Optuna's best_trial, which a
    # relational storage may break ties for otherwise
    best = records.best_trial(study)
    assert best.value == study.best_value
    assert parents[0].data.tags["automl.best_trial"] == str(best.number)


def _kill_mid_trial(proc: subprocess.Popen, study: optuna.Study) -> int:
    """SIGKILL ``proc`` one epoch into a trial of its own; returns that trial's number."""
    me = f"{socket.gethostname()}:{proc.pid}"
    for _ in range(300):
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        mine = [t.number for t in running if t.user_attrs.get("worker") == me]
        if mine:
            time.sleep(2)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return mine[0]
        time.sleep(0.5)
    pytest.fail("the worker never started a trial")


def test_ctrl_c_stops_every_worker_cleanly_and_the_same_command_resumes(tmp_path):
    command = [*AUTOML, "search", "--space", str(SPACES / "quick.yaml"), "--data", "digits", "--trials", "3",
               "--epochs", "2", "--workers", "2"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    for line in proc.stdout:  # Ctrl-C, as a terminal sends it to the whole group, once both train
        if line.startswith("  trial") and "epoch 1/" in line:
            os.killpg(proc.pid, signal.SIGINT)
            break
    proc.communicate(timeout=300)
    assert proc.returncode == 130
    study = load_study("quick-digits", f"journal:{tmp_path}/automl.journal")
    assert not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    assert not [r for r in _runs(f"sqlite:///{tmp_path}/mlflow.db", "quick-digits") if r.info.status == "RUNNING"]

    resumed = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(_finished(load_study("quick-digits", f"journal:{tmp_path}/automl.journal"))) >= 3


def test_a_worker_for_a_study_that_is_not_a_search_exits_2_in_one_line(tmp_path, capsys):
    import automl
    from automl.cli import main

    storage = f"journal:{tmp_path}/j.journal"
    optuna.create_study(study_name="plain", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(f"{tmp_path}/j.journal")))
    automl.create_study(SPACES / "quick.yaml", "digits", study="made", trials=2, storage=storage,
                        tracking_uri=f"sqlite:///{tmp_path}/m.db", out=str(tmp_path / "out"))
    assert main(["worker", "--study", "plain", "--storage", storage]) == 2
    assert main(["worker", "--study", "missing", "--storage", storage]) == 2
    elsewhere = f"sqlite:///{tmp_path}/elsewhere.db"  # not where the search logs: no trial may run there
    assert main(["worker", "--study", "made", "--storage", storage, "--tracking-uri", elsewhere]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "not a search study" in err[0] and "no such study" in err[1]
    assert "no MLflow experiment made there" in err[2]
    assert not load_study("made", storage).get_trials(states=FINISHED)

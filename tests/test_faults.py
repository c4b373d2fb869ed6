"""Nothing lost, nothing left RUNNING: real SIGKILLs, a real torn journal, a real full disk, a
real MLflow failure, a real out-of-memory and two real processes at once."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from automl.hpo.storage import load_study, open_storage

from .conftest import ROOT, SPACES

AUTOML = [sys.executable, "-m", "automl.cli"]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
QUICK = str(SPACES / "quick.yaml")
COMPLETE, FAIL, RUNNING = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL,
                           optuna.trial.TrialState.RUNNING)


def _runs(tracking_uri: str, experiment: str):
    client = MlflowClient(tracking_uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)


def _quiet_objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0, 1)


# --- the journal: torn lines and dead trials, at the storage level (no training) --------------


def test_a_torn_last_line_is_cut_off_before_the_next_append_and_every_finished_trial_stays_readable(tmp_path):
    path = tmp_path / "automl.journal"
    study = optuna.create_study(study_name="s", storage=open_storage(f"journal:{path}"))
    study.optimize(_quiet_objective, n_trials=3)
    params = [t.params for t in study.trials]
    whole = path.read_bytes()
    last = whole.rstrip(b"\n").rsplit(b"\n", 1)[1]  # trial 2's end
    with open(path, "r+b") as f:  # that write cut short, as a crash or a full disk leaves it
        f.truncate(len(whole) - len(last) // 2 - 1)
    assert not path.read_bytes().endswith(b"\n")

    again = optuna.load_study(study_name="s", storage=open_storage(f"journal:{path}"))
    again.optimize(_quiet_objective, n_trials=2)
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(line) for line in lines[:-1])  # no line glued onto a fragment
    plain = optuna.storages.JournalStorage(JournalFileBackend(str(path)))  # Optuna's own reader, from scratch
    trials = optuna.load_study(study_name="s", storage=plain).trials
    assert [t.state for t in trials] == [COMPLETE, COMPLETE, FAIL, COMPLETE, COMPLETE]
    assert [t.params for t in trials[:3]] == params
    # trial 2, whose end was torn off, was RUNNING with no live owner: failed, and retried as trial 3
    assert RetryHeartbeatStaleTrialCallback.retried_trial_number(trials[3]) == 2 and trials[3].params == params[2]


def test_a_trial_whose_process_died_is_failed_and_retried_once_with_its_parameters(tmp_path):
    """A real process takes a trial and is SIGKILLed in it; the next optimize on the journal
    fails it at once (its lock is free) and runs it again with the same parameters."""
    path = tmp_path / "automl.journal"
    optuna.create_study(study_name="s", storage=open_storage(f"journal:{path}"))
    script = (f"import optuna, time\nfrom automl.hpo.storage import load_study\n"
              f"s = load_study('s', 'journal:{path}')\n"
              "def f(t):\n    t.suggest_float('x', 0, 1)\n    print('in', flush=True)\n    time.sleep(600)\n"
              "s.optimize(f, n_trials=1)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "in\n"
    alive = load_study("s", f"journal:{path}")
    alive.optimize(_quiet_objective, n_trials=1)  # a live owner's trial is left alone
    assert [t.state for t in alive.trials] == [RUNNING, COMPLETE]
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    study = load_study("s", f"journal:{path}")
    study.optimize(_quiet_objective, n_trials=2)
    killed, retried = study.trials[0], [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert killed.state == FAIL
    assert len(retried) == 1 and retried[0].state == COMPLETE and retried[0].params == killed.params
    assert not list((tmp_path / "automl.journal.locks").iterdir())  # no lock file left behind


# --- real searches ----------------------------------------------------------------------------


def _search(*args: str) -> list[str]:
    return [*AUTOML, "search", "--space", QUICK, "--data", "digits", "--epochs", "1", "--pruner", "none", *args]


def _wait_for(proc: subprocess.Popen, text: str) -> list[str]:
    """Read ``proc``'s output until a line containing ``text``; returns the lines read."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if text in line:
            return seen
    pytest.fail(f"never printed {text!r}:\n{''.join(seen)[-3000:]}")


def _no_run_running(tracking_uri: str, experiment: str) -> list:
    runs = _runs(tracking_uri, experiment)
    assert runs and not [r.info.run_name for r in runs if r.info.status == "RUNNING"]
    return runs


@pytest.mark.slow
def test_a_search_killed_mid_trial_is_finished_by_the_next_one(tmp_path):
    """kill -9 of `automl search` on the default journal, then the same command: the dead trial
    is failed and retried with its parameters, every MLflow run is closed, the best model tested."""
    command = _search("--trials", "1", "--study", "k")
    proc = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    _wait_for(proc, "trial 0 (0/1 finished)")
    time.sleep(2)  # into its training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    storage, tracking = f"journal:{tmp_path}/automl.journal", f"sqlite:///{tmp_path}/mlflow.db"
    assert [t.state for t in load_study("k", storage).trials] == [RUNNING]

    rerun = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    study = load_study("k", storage)
    killed = study.trials[0]
    assert killed.state == FAIL
    retried = [t for t in study.trials if RetryHeartbeatStaleTrialCallback.retried_trial_number(t) == 0]
    assert len(retried) == 1 and retried[0].state == COMPLETE and retried[0].params == killed.params
    assert study.user_attrs["best_test"]["trial"] == study.best_trial.number
    runs = _no_run_running(tracking, "k")
    killed_runs = [r for r in runs if r.data.tags.get("automl.trial") == "0"]
    assert [(r.info.status, r.data.tags["automl.state"]) for r in killed_runs] == [("FAILED", "FAIL")]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in parents] == ["FINISHED"] and "test_accuracy" in parents[0].data.metrics

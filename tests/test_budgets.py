"""Wall-clock bounds, end to end: ``automl search --timeout`` (the tune's ``--budget`` is checked on
the tune run of tests/test_tune.py)."""

import os
import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient

from automl.hpo.storage import load_study

from .conftest import ROOT

TIMEOUT = 25.0
# The first trial (the default configuration) trains 1 epoch, about 4 s with tracing on a quiet
# machine, so it completes within the timeout; later ones draw 1 or 200 epochs, and a 200-epoch trial outlasts it.
SPACE = """
model:
  stem: [{filters: 8, kernel_size: 3}]
  stages: [{family: vgg, filters: 16, convs: 1}]
training:
  epochs: {choice: [1, 200], default: 1}
  batch_size: 128
"""
# What the search does after the pruned trial's last epoch, bounded by no timeout: close that
# trial's MLflow run, test the best model once on 360 images, log it to MLflow, close the parent
# run, print the table. Seconds on a quiet machine; this allows for a busy one.
CLOSING = 30.0


@pytest.mark.slow
def test_a_search_stops_starting_trials_at_its_timeout_and_prunes_the_running_one(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    command = [sys.executable, "-m", "automl.cli", "search", "--space", "space.yaml", "--data", "digits",
               "--trials", "100", "--timeout", str(TIMEOUT), "--quiet"]
    done = subprocess.run(command, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=600)
    ended = time.time()
    assert done.returncode == 0, done.stderr[-3000:]

    study = load_study("space-digits", f"journal:{tmp_path}/automl.journal")
    trials = study.trials
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    # The search's clock starts after its MLflow parent run opened and before its first trial started.
    opened = client.get_run(study.user_attrs["mlflow_parent_run_id"]).info.start_time / 1000
    earliest, deadline = opened + TIMEOUT, trials[0].datetime_start.timestamp() + TIMEOUT
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and 100 > len(trials)
    assert len(trials) >= 2, f"the first trial took {trials[0].duration}, past the timeout: the machine is too busy"
    assert all(t.datetime_start.timestamp() <= deadline for t in trials)  # no trial starts after the timeout
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials[:-1])

    last = trials[-1]  # running at the deadline: pruned at its next epoch end, though it planned more
    assert last.state == optuna.trial.TrialState.PRUNED
    assert last.user_attrs["fail_reason"].startswith("the search's time ran out after epoch")
    run = client.get_run(last.user_attrs["mlflow_run_id"])
    assert run.data.tags["automl.state"] == "PRUNED" and run.info.status != "RUNNING"
    epoch_ends = [m.timestamp / 1000 for m in sorted(client.get_metric_history(run.info.run_id, "val_accuracy"),
                                                      key=lambda m: m.step)]
    assert len(epoch_ends) < last.user_attrs["config"]["training"]["epochs"]
    assert epoch_ends[-1] >= earliest and (len(epoch_ends) == 1 or epoch_ends[-2] <= deadline)
    epoch = max(b - a for a, b in zip([last.datetime_start.timestamp(), *epoch_ends], epoch_ends, strict=False))
    assert ended - deadline <= epoch + CLOSING

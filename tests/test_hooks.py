"""Search hooks (automl/hpo/hooks.py), honoured by both backends: the first trials run first, the
parent MLflow run is named, nested and tagged as asked, and a speed floor prunes every trial it
covers, in this process or in worker processes."""

import os
import socket

import optuna
import pytest
from mlflow import MlflowClient

from automl.hpo.driver import run_search
from automl.hpo.hooks import SearchHooks, SpeedFloor, from_specs, to_specs
from automl.hpo.records import TrialRecord
from automl.hpo.settings import SearchSettings
from automl.space import FixedSuggester, SearchSpace

from .conftest import SPACES

QUICK = str(SPACES / "quick.yaml")
BACKENDS = ["optuna", "keras-tuner"]
UNREACHABLE = SpeedFloor(images_per_second=1e9)


def _settings(tmp_path, backend: str, study: str, **options) -> SearchSettings:
    return SearchSettings(space=QUICK, data="digits", study=study, backend=backend, trials=2, epochs=1,
                          storage=f"journal:{tmp_path}/automl.journal", tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                          out=str(tmp_path / "out"), verbose=False, **options)


def test_trial_callbacks_travel_as_specs():
    specs = to_specs([SpeedFloor(250.0)])
    assert specs == [{"kind": "speed_floor", "images_per_second": 250.0}]
    assert from_specs(specs) == [SpeedFloor(250.0)]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_first_trials_run_first_and_the_parent_run_is_named_nested_and_tagged(tmp_path, digits, backend):
    settings = _settings(tmp_path, backend, "hooked")
    client = MlflowClient(settings.tracking_uri)
    tune_run = client.create_run(client.create_experiment("hooked"), run_name="tune").info.run_id
    first = {"training.optimizer.name": "sgd", "training.optimizer.learning_rate": 0.01, "training.batch_size": 128,
             "model.stages.0.family": "resnet"}
    hooks = SearchHooks(run_name="coarse", nest_under=tune_run, tags={"automl.stage": "coarse"}, log_model=False,
                        first_trials=[first])
    trials = run_search(settings, digits, hooks).trials

    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    config, space = TrialRecord.of(trials[0]).config, SearchSpace.load(QUICK)
    assert config == space.materialize(space.suggest_all(FixedSuggester(first)))  # the rest at the defaults
    assert config["training"]["optimizer"]["name"] == "sgd" and config["model"]["stages"][0]["family"] == "resnet"
    assert {k: trials[0].params[k] for k in ("training.optimizer.learning_rate", "training.batch_size")} == {
        "training.optimizer.learning_rate": 0.01, "training.batch_size": 128}
    parents = [r for r in client.search_runs([client.get_experiment_by_name("hooked").experiment_id])
               if r.data.tags.get("automl.kind") == "search"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_name == "coarse" and parent.info.status == "FINISHED"
    assert parent.data.tags["mlflow.parentRunId"] == tune_run and parent.data.tags["automl.stage"] == "coarse"
    assert "automl.best_trial" not in parent.data.tags  # log_model=False: no model logged
    assert not [m for m in client.search_logged_models([parent.info.experiment_id])
                if m.source_run_id == parent.info.run_id]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_speed_floor_no_trial_reaches_prunes_every_trial_after_the_default_configuration_ran_first(
        tmp_path, digits, backend):
    settings = _settings(tmp_path, backend, "floored")
    trials = run_search(settings, digits, SearchHooks(trial_callbacks=[UNREACHABLE])).trials

    assert TrialRecord.of(trials[0]).config == SearchSpace.load(QUICK).default()  # no first trials given
    assert [t.state for t in trials] == [optuna.trial.TrialState.PRUNED] * 2
    reasons = [TrialRecord.of(t).fail_reason for t in trials]
    assert all(r.startswith("trains ") and "images/s, below the 1000000000" in r for r in reasons), reasons
    client = MlflowClient(settings.tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("floored").experiment_id])
    assert sorted(r.data.tags["automl.state"] for r in runs if "automl.trial" in r.data.tags) == ["PRUNED"] * 2


@pytest.mark.slow
def test_worker_processes_build_the_trial_callbacks_from_the_study(tmp_path, digits):
    settings = _settings(tmp_path, "optuna", "floored-workers", workers=2)
    trials = run_search(settings, digits, SearchHooks(trial_callbacks=[UNREACHABLE])).trials

    assert len(trials) >= 2 and {t.state for t in trials} == {optuna.trial.TrialState.PRUNED}
    assert all("below the 1000000000" in TrialRecord.of(t).fail_reason for t in trials)
    workers = {TrialRecord.of(t).worker for t in trials}
    assert f"{socket.gethostname()}:{os.getpid()}" not in workers  # run by the pool's workers, not here

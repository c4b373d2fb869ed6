"""`automl search` end to end, as a user runs it: real training on digits, a real Optuna journal,
a real MLflow SQLite database, then export and predict."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from PIL import Image

from .conftest import SPACES

QUICK = str(SPACES / "quick.yaml")


def automl(*args, cwd, check=True, timeout=900):
    proc = subprocess.run([sys.executable, "-m", "automl.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("automl:") or "Traceback" in line]


def mlflow_runs(folder, study):
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    experiment = client.get_experiment_by_name(study)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def load_study(folder, name):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(folder / "automl.journal")))
    return optuna.load_study(study_name=name, storage=storage)


@pytest.fixture(scope="module", params=["optuna", "keras-tuner"])
def searched(request, tmp_path_factory):
    """The issue's acceptance command: 8 trials of 5 epochs on digits, in a fresh folder."""
    folder = tmp_path_factory.mktemp(request.param)
    start = time.perf_counter()
    proc = automl("search", "--space", QUICK, "--data", "digits", "--trials", "8", "--epochs", "5",
                  "--backend", request.param, "--study", "digits-search", cwd=folder)
    return request.param, folder, proc, time.perf_counter() - start


@pytest.mark.slow
def test_search_reaches_target_with_a_good_model(searched):
    backend, folder, proc, seconds = searched
    study = load_study(folder, "digits-search")
    finished = [t for t in study.trials if t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 8
    best = max((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    # Trials rank on validation; the test split is used once, for the best trial's model.
    assert all("test_accuracy" not in t.user_attrs.get("metrics", {}) for t in study.trials)
    tested = study.user_attrs["best_test"]
    assert tested["trial"] == best.number and tested["test_accuracy"] >= 0.95, (backend, tested)
    assert "trials:" in proc.stdout and "epoch 5/5" in proc.stdout and f"trial {best.number} COMPLETE" in proc.stdout
    assert f"best trial {best.number}: test accuracy {tested['test_accuracy']:.4f}" in proc.stdout
    print(f"{backend}: {seconds:.0f} s, best test accuracy {tested['test_accuracy']:.4f}")


@pytest.mark.slow
def test_mlflow_has_a_parent_with_a_child_per_trial(searched):
    backend, folder, _, _ = searched
    runs = mlflow_runs(folder, "digits-search")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 8
    assert all(r.info.status != "RUNNING" for r in runs)
    assert {r.data.tags["automl.backend"] for r in children} == {backend}
    assert sorted(int(r.data.tags["automl.trial"]) for r in children) == list(range(8))
    complete = [r for r in children if r.data.tags["automl.state"] == "COMPLETE"]
    run = complete[0]
    assert "training.optimizer.name" in run.data.params and "val_accuracy" in run.data.metrics
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert len(history) >= 1 and [m.step for m in history] == list(range(len(history)))
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "learning_curves.png"} <= artifacts
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.metrics["finished_trials"] == 8
    assert "test_accuracy" in parent.data.metrics and "automl.best_trial" in parent.data.tags
    logged = client.search_logged_models([parent.info.experiment_id])
    assert any(m.source_run_id == parent.info.run_id for m in logged)


@pytest.mark.slow
def test_trials_export_and_predict(searched, tmp_path):
    _, folder, _, _ = searched
    listing = json.loads(automl("trials", "--study", "digits-search", "--format", "json", cwd=folder).stdout)
    assert len(listing) >= 8 and {"number", "state", "value", "duration_s"} <= set(listing[0])
    csv = automl("trials", "--study", "digits-search", "--format", "csv", cwd=folder).stdout
    assert csv.splitlines()[0].startswith("number,state,value")
    import automl as api  # the Python API reads the same study

    frame = api.trials("digits-search", storage=f"journal:{folder}/automl.journal")
    assert len(frame) == len(listing) and set(frame["state"]) <= {"COMPLETE", "PRUNED", "FAIL"}

    out = tmp_path / "best"
    automl("export", "--study", "digits-search", "--out", str(out), cwd=folder)
    info = json.loads((out / "automl.json").read_text())
    assert info["input_shape"] == [8, 8, 1] and info["class_names"] == [str(i) for i in range(10)]
    assert info["config"]["model"]["stages"] and info["versions"]["keras"]
    assert (out / "model.keras").is_file() and (out / "saved_model" / "saved_model.pb").is_file()

    # raw digits (0-16) as 8-bit PNGs: preprocessing is inside the model, so raw pixels go in
    import keras
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = tmp_path / "images"
    images.mkdir()
    for i in range(30):
        Image.fromarray(digits.images[i].astype(np.uint8), mode="L").save(images / f"d{i:02d}_{digits.target[i]}.png")
    np.savez(tmp_path / "few.npz", x=digits.images[:4].astype("float32"))
    lines = automl("predict", "--model", str(out), "--input", str(images), str(tmp_path / "few.npz"),
                   str(images / "d00_0.png"), cwd=folder).stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 30 + 4 + 1
    assert all(abs(sum(r["probabilities"].values()) - 1) < 1e-3 for r in records)
    expected = np.argmax(keras.models.load_model(out / "model.keras").predict(
        digits.images[:30].astype("float32")[..., None], verbose=0), axis=1)
    assert [r["index"] for r in records[:30]] == expected.tolist()
    assert [r["index"] for r in records[30:34]] == expected[:4].tolist()
    correct = sum(r["class"] == r["input"].split("_")[-1].removesuffix(".png") for r in records[:30])
    assert correct >= 25

    # the exported model predicts exactly as the trial's own model
    study = load_study(folder, "digits-search")
    best = max((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: t.value)
    x = digits.images[:32].astype("float32")[..., None]
    np.testing.assert_allclose(keras.models.load_model(out / "model.keras").predict(x, verbose=0),
                               keras.models.load_model(folder / best.user_attrs["model_path"]).predict(x, verbose=0),
                               atol=1e-6)


def test_interrupt_then_resume_completes_the_study(tmp_path):
    args = [sys.executable, "-m", "automl.cli", "search", "--space", QUICK, "--trials", "3", "--epochs", "2",
            "--pruner", "none", "--study", "resume"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    for line in proc.stdout:  # interrupt in the middle of the second trial
        if line.startswith("  trial 1 epoch 1/2"):
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    runs = mlflow_runs(tmp_path, "resume")
    assert runs and all(r.info.status != "RUNNING" for r in runs)
    killed = [r for r in runs if r.data.tags.get("automl.trial") == "1"]
    assert killed[0].info.status == "KILLED" and killed[0].data.tags["automl.state"] == "FAIL"

    automl("search", "--space", QUICK, "--trials", "3", "--epochs", "2", "--pruner", "none", "--study", "resume",
           cwd=tmp_path)
    study = load_study(tmp_path, "resume")
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3
    assert states[1] == optuna.trial.TrialState.FAIL  # the interrupted trial, recorded as failed
    runs = mlflow_runs(tmp_path, "resume")
    assert all(r.info.status != "RUNNING" for r in runs)
    assert len([r for r in runs if "mlflow.parentRunId" not in r.data.tags]) == 1  # the same parent run

    # the target is the study's total: asking again for 3 runs nothing new
    again = automl("search", "--space", QUICK, "--trials", "3", "--epochs", "2", "--study", "resume", cwd=tmp_path)
    assert "3/3 trials finished" in again.stdout and len(load_study(tmp_path, "resume").trials) == len(states)


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path, write_space):
    space = write_space(
        """
        model:
          stages: [{family: vgg, filters: 8, convs: 1}]
          batch_norm: false
        training:
          epochs: 1
          optimizer:
            name: sgd
            learning_rate: {choice: [10.0, 0.05]}
        regularization:
          l2: 10.0  # with rate 10 each step multiplies the weights by -199: NaN within the first epoch
        """
    )
    automl("search", "--space", str(space), "--trials", "2", "--sampler", "random", "--seed", "0",
           "--pruner", "none", "--study", "nan", "--quiet", cwd=tmp_path)
    study = load_study(tmp_path, "nan")
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    assert failed and all(t.user_attrs["fail_reason"].startswith("nan_loss") for t in failed)
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 2
    failed_runs = [r for r in mlflow_runs(tmp_path, "nan") if r.data.tags.get("automl.state") == "FAIL"]
    assert len(failed_runs) == len(failed) and failed_runs[0].data.tags["automl.fail_reason"].startswith("nan_loss")


@pytest.mark.parametrize("args, message", [
    (["search", "--space", QUICK, "--storage", "redis://x"], "--storage redis://x: unsupported"),
    (["search", "--space", QUICK, "--sampler", "annealing"], "--sampler: unknown sampler 'annealing'"),
    (["search", "--space", QUICK, "--pruner", "patient"], "--pruner: unknown pruner 'patient'"),
    (["search", "--space", QUICK, "--backend", "keras-tuner", "--sampler", "tpe"],
     "the keras-tuner backend takes random, bayesian, hyperband"),
    (["search", "--space", "nope.yaml"], "nope.yaml: cannot read file"),
    (["search", "--space", QUICK, "--data", "nope"], "unknown data set 'nope'"),
    (["trials", "--study", "ghost"], "--study ghost: no such study"),
    (["export", "--study", "ghost", "--out", "x"], "--study ghost: no such study"),
    (["predict", "--model", "nowhere", "--input", "a.png"], "--model nowhere: not an exported model folder"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    proc = automl(*args, cwd=tmp_path, check=False)
    lines = error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr[-2000:]


def test_a_study_resumes_only_with_its_own_space(tmp_path, write_space):
    space = write_space("model:\n  stages: [{family: vgg, filters: 4, convs: 1}]\ntraining: {epochs: 1}\n")
    automl("search", "--space", str(space), "--trials", "1", "--study", "s", "--quiet", cwd=tmp_path)
    proc = automl("search", "--space", QUICK, "--trials", "2", "--study", "s", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "this study was made with space" in error_lines(proc.stderr)[0]
    assert len(load_study(tmp_path, "s").trials) == 1  # nothing was added to it


def test_keras_tuner_hyperband_runs_its_brackets(tmp_path):
    # Hyperband's oracle samples only parameters declared before the search: undeclared, it
    # stopped before its first trial, and the search "finished" with none
    automl("search", "--space", QUICK, "--data", "digits", "--trials", "4", "--epochs", "3", "--backend", "keras-tuner",
           "--sampler", "hyperband", "--study", "hb", cwd=tmp_path)
    trials = load_study(tmp_path, "hb").trials
    epochs = [t.user_attrs["epochs_run"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(epochs) == 4 and min(epochs) < 3 == max(epochs), epochs  # a low rung, then the full budget

"""automl tune on real digits: seven stages under one MLflow run, resumed after Ctrl-C, reported
and exported; and the planted faults it must catch early, with the right diagnosis."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from sklearn.datasets import load_digits

from automl.cli import main
from automl.hpo import records as study_records
from automl.hpo.storage import load_study
from automl.recipe.plan import STAGES as ALL_STAGES

from .conftest import ROOT, SPACES

# one worker runs this module: its tests share one tune (a module fixture), set up once
pytestmark = pytest.mark.xdist_group(name="tune")

STAGES = [s for s in ALL_STAGES if s != "transfer"]  # quick.yaml has no backbone

STUDY = "quick-digits-tune"
BUDGET = 100
TUNE = [sys.executable, "-m", "automl.cli", "tune", "--space", str(SPACES / "quick.yaml"), "--data", "digits",
        "--budget", str(BUDGET), "--coarse-epochs", "2"]


def _records(storage: str, study: str) -> dict:
    return study_records.stage_records(load_study(study, storage))


def _planned(records: dict) -> list[str]:
    """The stages a finished tune ran: the recipe's, with the loop's rounds (diagnose-2, refine-2,
    ...) after refine, each round a diagnose and a refine."""
    rounds = [name for name in records if "-" in name]
    assert len(rounds) % 2 == 0 and all(records[r]["kind"] in ("diagnose", "refine") for r in rounds)
    return STAGES[:-1] + rounds + STAGES[-1:]


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A tune interrupted during its coarse search, then resumed to the end, then run once more."""
    work = tmp_path_factory.mktemp("tune")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(TUNE, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:  # Ctrl-C once the coarse search has finished a trial (a loaded host may fit only 2)
        seen.append(line)
        if re.match(r"trial 1 \(", line):
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=300)
    interrupted = {"rc": proc.returncode, "output": "".join(seen) + rest,
                   "records": _records(f"journal:{work}/automl.journal", STUDY),
                   "mlflow_running": _running_runs(work)}
    runs, walls = [], []
    for _ in range(2):
        start = time.perf_counter()
        runs.append(subprocess.run(TUNE, cwd=work, env=env, capture_output=True, text=True, timeout=600))
        walls.append(time.perf_counter() - start)
    runs[0].wall_seconds = walls[0]  # the resumed tune's wall clock, start-up included
    return work, interrupted, runs[0], runs[1]


def _running_runs(work) -> int:
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment = client.get_experiment_by_name(STUDY)
    return len(client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'"))


def test_ctrl_c_keeps_finished_stages_and_closes_every_run(tuned):
    _, interrupted, _, _ = tuned
    assert interrupted["rc"] == 130, interrupted["output"][-2000:]
    assert set(interrupted["records"]) == {"sanity", "overfit", "lr_range"}
    assert interrupted["mlflow_running"] == 0


def test_the_resumed_tune_skips_finished_stages_and_continues_the_coarse_search(tuned):
    work, _, resumed, _ = tuned
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for stage in ("sanity", "overfit", "lr_range"):
        assert f"{stage}: done before" in resumed.stdout
    kept = re.search(rf"study {STUDY}/coarse: (\d+) trials finished", resumed.stdout)
    assert kept and int(kept.group(1)) >= 1  # the trial from before the interruption counts
    records = _records(f"journal:{work}/automl.journal", STUDY)
    assert list(records) == _planned(records) and all(r["ok"] for r in records.values())
    assert records["lr_range"]["outputs"]["curves"]["adam"]["suggested"] > 0
    # Coarse trains 2 of the 15 epochs quick.yaml's configurations plan: curves cut that short ask
    # for more epochs (undertrained) unless the trial already fits (healthy), never for a bigger
    # model (underfit); nor do 2 epochs with dropout overfit digits. Undertrained doubles refine's epochs.
    diagnosed = records["diagnose"]
    readings = list(diagnosed["outputs"]["verdicts"].values())
    assert readings and {r["verdict"] for r in readings} <= {"undertrained", "healthy"}
    assert all("after 2 of the 15 epochs" in r["why"] for r in readings if r["verdict"] == "undertrained")
    assert diagnosed["verdict"] in {r["verdict"] for r in readings}
    assert diagnosed["outputs"]["epochs"] == (12 if diagnosed["verdict"] == "undertrained" else 6)


def test_the_final_model_is_tested_once_and_exported(tuned):
    work, _, _, _ = tuned
    final = _records(f"journal:{work}/automl.journal", STUDY)["final"]
    assert final["measured"]["test_accuracy"] >= 0.9
    info = json.loads((work / "automl-out" / STUDY / "model" / "automl.json").read_text())
    assert info["metrics"]["test_accuracy"] == pytest.approx(final["measured"]["test_accuracy"])
    study = load_study(STUDY, f"journal:{work}/automl.journal")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]  # the final model only


def test_mlflow_shows_one_tune_run_with_a_child_per_stage_and_the_trials_under_the_searches(tuned):
    work, _, _, _ = tuned
    client = MlflowClient(f"sqlite:///{work}/mlflow.db")
    experiment = client.get_experiment_by_name(STUDY)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    tops = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [(r.info.run_name, r.info.status) for r in tops] == [("tune", "FINISHED")]
    stages = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == tops[0].info.run_id]
    assert sorted(r.data.tags["automl.stage"] for r in stages) == sorted(_planned(_records(
        f"journal:{work}/automl.journal", STUDY)))
    assert all(r.data.tags["mlflow.note.content"] for r in stages)
    for run in stages:
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == run.info.run_id]
        if run.data.tags["automl.stage"].split("-")[0] in ("coarse", "refine"):
            study = load_study(f"{STUDY}/{run.data.tags['automl.stage']}", f"journal:{work}/automl.journal")
            finished = {str(t.number) for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"}
            logged = {r.data.tags["automl.trial"] for r in trials}
            assert finished and finished <= logged and len(logged) <= len(study.trials)  # Ctrl-C may beat a run
        else:
            assert not trials
    diagnosed = [r for r in runs if "automl.diagnosis" in r.data.tags]
    assert 1 <= len(diagnosed) <= 3
    assert "tune_seconds" in tops[0].data.metrics and "test_accuracy" in tops[0].data.metrics


def test_the_tune_keeps_to_its_budget(tuned):
    work, _, resumed, _ = tuned
    records = _records(f"journal:{work}/automl.journal", STUDY)
    before = sum(records[stage]["seconds"] for stage in ("sanity", "overfit", "lr_range"))  # the first run's
    # The budget covers the stages: each takes its share of what is left (an overrun comes out of
    # the later ones), a search starts no trial past its share and prunes its running one at the
    # next epoch end, and the final stops before an epoch that would not fit. Outside it: the
    # process's start-up, at most an epoch past the final's share, the final's test and export, and
    # the report; each a few seconds on 2 CPU cores, so 40% of the budget is room enough.
    spent = before + resumed.wall_seconds
    assert spent <= 1.4 * BUDGET, {stage: (r["seconds"], r["budget"]) for stage, r in records.items()}


def test_a_finished_tune_run_again_does_nothing(tuned):
    work, _, _, again = tuned
    assert again.returncode == 0
    ran = _planned(_records(f"journal:{work}/automl.journal", STUDY))
    assert all(f"{stage}: done before" in again.stdout for stage in ran)
    assert not re.search(r"epoch \d+/\d+", again.stdout)  # nothing trained


def test_the_report_explains_each_stage_with_its_figures(tuned, tmp_path):
    work, _, _, _ = tuned
    text = (work / "automl-out" / STUDY / "report.md").read_text()
    for stage in _planned(_records(f"journal:{work}/automl.journal", STUDY)):
        assert f"## {stage}\n" in text
    assert "**The loop** ran" in text
    for figure in ("lr_range.png", "optimization_history.png", "param_importances_coarse.png", "curves_final.png"):
        assert f"report_files/{figure}" in text and (work / "automl-out" / STUDY / "report_files" / figure).is_file()
    out = tmp_path / "report.html"
    assert main(["report", "--study", STUDY, "--storage", f"journal:{work}/automl.journal", "--out", str(out)]) == 0
    html = out.read_text()
    assert html.count("data:image/png;base64,") >= 4 and "<table>" in html


# --- planted faults: the tune stops early, says why, exits 3 -----------------------------


def _tune(tmp_path, *args) -> int:
    return main(["tune", "--storage", f"journal:{tmp_path}/j.journal", "--tracking-uri",
                 f"sqlite:///{tmp_path}/m.db", "--out", str(tmp_path / "out"), "--budget", "60", "--quiet",
                 "--study", "planted", *args])


def _stopped(tmp_path, stage: str, verdict: str) -> None:
    records = _records(f"journal:{tmp_path}/j.journal", "planted")
    assert list(records)[-1] == stage and records[stage]["verdict"] == verdict and not records[stage]["ok"]
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    runs = client.search_runs([client.get_experiment_by_name("planted").experiment_id])
    top = next(r for r in runs if r.info.run_name == "tune")
    assert top.info.status == "FAILED" and top.data.tags["automl.stopped_at"] == stage
    assert not any(r.info.status == "RUNNING" for r in runs)


def test_raw_0_255_inputs_stop_the_tune_at_sanity(tmp_path, capsys):
    bunch = load_digits()
    data = tmp_path / "raw.npz"
    np.savez(data, x_train=(bunch.images * 255 / 16).astype("float32"), y_train=bunch.target)  # float: unscaled
    assert _tune(tmp_path, "--space", str(SPACES / "quick.yaml"), "--data", str(data)) == 3
    err = capsys.readouterr().err
    assert "sanity" in err and "normalize" in err
    _stopped(tmp_path, "sanity", "unscaled_inputs")


def test_a_learning_rate_range_far_too_high_stops_the_tune_at_overfit(tmp_path, write_space, capsys):
    space = write_space("""
        model:
          batch_norm: false
          stem: [{filters: 16, kernel_size: 3}]
          stages: [{family: vgg, filters: 32, convs: 1}]
        training:
          epochs: 5
          optimizer:
            name: adam  # steps of about the learning rate each: the logits blow up (SGD's units just die)
            learning_rate: {float: [5.0, 10.0], log: true, default: 10.0}  # 10: the schema's largest
    """)
    assert _tune(tmp_path, "--space", str(space), "--data", "digits") == 3
    err = capsys.readouterr().err
    assert "overfit" in err and "lower the learning-rate range" in err
    _stopped(tmp_path, "overfit", "diverged")


def test_labels_shuffled_against_their_images_stop_the_tune_before_any_search(tmp_path, capsys):
    bunch = load_digits()
    data = tmp_path / "shuffled.npz"
    labels = np.random.default_rng(0).permutation(bunch.target)
    np.savez(data, x_train=(bunch.images * 255 / 16).astype("uint8"), y_train=labels)
    assert _tune(tmp_path, "--space", str(SPACES / "quick.yaml"), "--data", str(data)) == 3
    err = capsys.readouterr().err
    assert "no signal" in err
    _stopped(tmp_path, "overfit", "no_signal")
    assert not (tmp_path / "out" / "planted" / "spaces").exists()  # no search was started


def test_until_runs_the_checks_only(tmp_path):
    assert _tune(tmp_path, "--space", str(SPACES / "quick.yaml"), "--data", "digits", "--until", "overfit") == 0
    assert list(_records(f"journal:{tmp_path}/j.journal", "planted")) == ["sanity", "overfit"]


def test_a_bad_space_exits_2_before_anything_is_written(tmp_path, write_space, capsys):
    space = write_space("model:\n  stages: [{family: vgg, filters: {int: [8, 4]}}]\n")
    assert _tune(tmp_path, "--space", str(space), "--data", "digits") == 2
    assert "space.yaml:2" in capsys.readouterr().err
    assert not (tmp_path / "j.journal").exists() and not (tmp_path / "m.db").exists()




@pytest.mark.parametrize("options, named", [(["--backend", "keras-tuner", "--workers", "2"], "--workers"),
                                            (["--sampler", "bayesian"], "--sampler"), (["--until", "nope"], "--until")])
def test_options_the_searches_would_refuse_are_refused_before_anything_runs(tmp_path, capsys, options, named):
    assert _tune(tmp_path, "--space", str(SPACES / "quick.yaml"), "--data", "digits", *options) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"automl: error: {named}")
    assert not (tmp_path / "j.journal").exists() and not (tmp_path / "m.db").exists()


def test_the_keras_tuner_backend_runs_the_search_stages(tmp_path):
    assert _tune(tmp_path, "--space", str(SPACES / "quick.yaml"), "--data", "digits", "--backend", "keras-tuner",
                 "--until", "coarse", "--coarse-epochs", "1") == 0
    records = _records(f"journal:{tmp_path}/j.journal", "planted")
    assert list(records) == ["sanity", "overfit", "lr_range", "coarse"] and records["coarse"]["ok"]
    coarse = load_study("planted/coarse", f"journal:{tmp_path}/j.journal")
    assert study_records.StudyInfo.of(coarse).backend == "keras-tuner"
    assert [study_records.TrialRecord.of(t).keras_tuner_trial is not None for t in coarse.trials] == \
        [True] * len(coarse.trials) and coarse.trials

"""automl/hpo/records.py on real in-memory Optuna studies: what a study keeps reads back as written,
under the keys earlier versions wrote, and the one ranking orders trials by the study's direction."""

import math

import optuna
import pytest

from automl.hpo import records
from automl.hpo.records import StudyInfo, TrialRecord

COMPLETE, PRUNED, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL


def _study(direction: str = "maximize") -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction=direction)


def test_a_trial_record_reads_back_as_written():
    study = _study()
    record = TrialRecord(config={"training": {"batch_size": 32}}, model_path="out/trial-0/model.keras",
                         metrics={"val_accuracy": 0.9}, best_epoch=2, params=1234, fit_seconds=3.5,
                         epoch_seconds=[2.0, 0.75, 0.75], epochs_run=3, history={"val_accuracy": [0.5, 0.8, 0.9]},
                         trial_seconds=4.25, mlflow_run_id="abc", rss_mb=512.5, worker="host:42", oom_batch_size=64)
    trial = study.ask()
    TrialRecord(worker="host:42").write(trial)  # piecemeal, as a trial writes it
    record.write(trial)
    study.tell(trial, 0.9)
    assert TrialRecord.of(study.trials[0]) == record
    assert set(study.trials[0].user_attrs) == set(record.attrs())  # nothing empty is stored
    assert "fail_reason" not in record.attrs() and "history" in record.attrs()


def test_a_record_reads_the_keys_earlier_versions_wrote_and_ignores_others():
    study = _study()
    study.add_trial(optuna.trial.create_trial(state=COMPLETE, value=0.5, user_attrs={
        "model_path": "m.keras", "metrics": {"val_accuracy": 0.5}, "epochs_run": 2, "someone_elses": 1}))
    record = TrialRecord.of(study.trials[0])
    assert (record.model_path, record.metrics, record.epochs_run, record.config) == ("m.keras",
                                                                                     {"val_accuracy": 0.5}, 2, None)
    study.add_trial(TrialRecord(fail_reason="too slow", keras_tuner_trial="07").frozen(state=PRUNED))
    assert TrialRecord.of(study.trials[1]) == TrialRecord(fail_reason="too slow", keras_tuner_trial="07")


# trial 2 kept no model; 6 ties with 1 and comes after it in either direction
@pytest.mark.parametrize("direction, order", [("maximize", [3, 1, 6, 0]), ("minimize", [0, 1, 6, 3])])
def test_the_ranking_keeps_complete_trials_with_a_model_best_first(direction, order):
    study = _study(direction)
    kept = TrialRecord(model_path="m.keras")
    for state, value, record in [(COMPLETE, 0.2, kept), (COMPLETE, 0.5, kept), (COMPLETE, 0.99, TrialRecord()),
                                 (COMPLETE, 0.9, kept), (PRUNED, None, kept), (FAIL, None, TrialRecord()),
                                 (COMPLETE, 0.5, kept)]:
        study.add_trial(record.frozen(state=state, value=value))
    assert [t.number for t in records.ranking(study)] == order
    assert records.best_trial(study).number == order[0]
    assert records.best_trial(_study(direction)) is None


def test_steady_epoch_seconds_leave_the_first_epoch_out():
    assert TrialRecord(epoch_seconds=[5.0, 1.0, 2.0, 1.5]).steady_epoch_seconds == 1.5  # the median
    assert TrialRecord(epoch_seconds=[5.0, 1.0, 2.0, 1.5]).first_epoch_extra == 3.5  # tracing
    assert TrialRecord(epoch_seconds=[2.0]).steady_epoch_seconds == 2.0
    assert TrialRecord(epoch_seconds=[2.0]).first_epoch_extra == 0.0
    assert TrialRecord(fit_seconds=10.0, epochs_run=4).steady_epoch_seconds == 2.5  # a study from before epoch_seconds
    assert math.isnan(TrialRecord().steady_epoch_seconds)


def test_the_study_attributes_read_back_as_written():
    study = _study()
    info = StudyInfo(space="quick.yaml", data="digits", objective="val_accuracy", backend="optuna",
                     input_shape=[8, 8, 1], num_classes=10, pixel_scale=16.0)
    info.write(study)
    assert StudyInfo.of(study) == info and "kind" not in study.user_attrs
    assert study.user_attrs["space"] == "quick.yaml"  # the key earlier versions wrote and read

    assert records.parent_run(study) is None and records.search_settings(study) is None
    records.set_parent_run(study, "run-1")
    records.set_search_settings(study, {"trials": 3})
    records.set_best_test(study, {"trial": 2, "test_accuracy": 0.97})
    records.set_search_deadline(study, 1.8e9)
    records.set_trial_hooks(study, [{"kind": "speed_floor", "images_per_second": 100.0}])
    assert records.log_model(study)  # unless a search said otherwise
    records.set_log_model(study, False)
    records.write_stage_record(study, "coarse", {"ok": True})
    records.write_stage_record(study, "final", {"ok": False})
    records.set_subset_sizes(study, "coarse", (100, 20))
    assert records.parent_run(study) == "run-1" and study.user_attrs["mlflow_parent_run_id"] == "run-1"
    assert records.search_settings(study) == {"trials": 3}
    assert records.best_test(study) == {"trial": 2, "test_accuracy": 0.97}
    assert records.search_deadline(study) == 1.8e9
    assert records.trial_hooks(study) == [{"kind": "speed_floor", "images_per_second": 100.0}]
    assert not records.log_model(study)
    assert records.stage_records(study) == {"coarse": {"ok": True}, "final": {"ok": False}}
    assert records.subset_sizes(study, "coarse") == [100, 20] and records.subset_sizes(study, "refine") is None
    records.set_search_deadline(study, None)  # a later search without a time bound lifts it
    assert records.search_deadline(study) is None

"""A search's MLflow parent run, which belongs to the search, not to one process.

``automl study create`` makes it (SCHEDULED) for workers to join, every search or worker that
starts reopens it (RUNNING), and the last one to end, when no trial of the study is running any
more, closes it. Starting a search also records in the study what its workers read: its
settings, deadline, trial callbacks and whether the best model is logged at the end.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import optuna

from automl.data import Dataset
from automl.hpo import records
from automl.hpo.hooks import SearchHooks, to_specs
from automl.hpo.journal import StorageWriteError
from automl.hpo.live import Live
from automl.hpo.locks import held, lock_path
from automl.hpo.records import TrialRecord
from automl.hpo.settings import SearchSettings, shared_settings
from automl.hpo.storage import fail_dead_trials, running_trials
from automl.hpo.study import finished_count
from automl.saving import load_model
from automl.secrets import masked_fields
from automl.space import SearchSpace
from automl.tracking import Tracker, flatten

NOT_PARAMS = ("verbose", "workers", "recycle", "gpus", "sampler_seed")  # how it runs, not what it searches


def begin_search_run(settings: SearchSettings, space: SearchSpace, study: optuna.Study, tracker: Tracker,
                     hooks: SearchHooks, scheduled: bool = False) -> str:
    """Open (or reopen) the parent run and record in the study what workers read; returns the run id.
    ``scheduled``: no process runs trials yet, so a new run waits as SCHEDULED and a running one stays."""
    with held(lock_path(settings.storage, settings.study)):  # two processes starting at once make one run
        return _begin_search_run(settings, space, study, tracker, hooks, scheduled)


def _begin_search_run(settings: SearchSettings, space: SearchSpace, study: optuna.Study, tracker: Tracker,
                      hooks: SearchHooks, scheduled: bool) -> str:
    parent = tracker.open_parent(
        records.parent_run(study),
        name=hooks.run_name or f"search-{settings.backend}",
        params={k: v for k, v in masked_fields(flatten(vars(settings))).items() if k.split(".")[0] not in NOT_PARAMS},
        tags={"automl.backend": settings.backend, "automl.kind": "search", "automl.study": settings.study,
              **hooks.tags},
        nest_under=hooks.nest_under,
        scheduled=scheduled,
    )
    records.set_parent_run(study, parent)
    records.set_search_settings(study, shared_settings(settings))
    # The last search to start decides, for every worker that joins it: a resumed search without
    # --timeout lifts an earlier deadline.
    records.set_search_deadline(study, time.time() + settings.timeout if settings.timeout else None)
    records.set_trial_hooks(study, to_specs(hooks.trial_callbacks))
    records.set_log_model(study, hooks.log_model)
    fail_dead_trials(study)  # a killed process's trial: failed and queued again, its run closed below
    tracker.close_stale_children(parent, alive=running_trials(study))
    if settings.backend == "optuna":  # KerasTuner's oracle serves them itself (keras_tuner_backend.py)
        from automl.hpo.optuna_backend import enqueue_first_trials

        enqueue_first_trials(hooks.first_trials, space, study)
    return parent


def end_search_run(settings: SearchSettings, study: optuna.Study, tracker: Tracker, parent: str, status: str,
                   live: Live, data: Dataset, metrics: dict[str, float] | None = None, final: bool = True) -> None:
    """Log the best metrics so far to the parent run and close it with ``status``, unless trials
    are still running (other workers): then the last of them closes it. A ``final`` end (not a
    recycled worker's) also tests the best model, once, and logs it to the run."""
    with contextlib.suppress(StorageWriteError):  # the error that ended this search is on its way up
        fail_dead_trials(study)
    running = running_trials(study)
    tracker.close_stale_children(parent, alive=running)  # e.g. the trial of a worker that was killed
    best = records.best_trial(study)
    record = TrialRecord.of(best) if best else TrialRecord()
    summary = {f"best_{k}": v for k, v in record.metrics.items()}
    summary.update(finished_trials=finished_count(study), **(metrics or {}))
    if running:
        tracker.log_metrics(parent, _finite(summary))
        return
    try:
        if status == "FINISHED" and final and best is not None:
            summary.update(_test_best(study, best, data, live))
            if records.log_model(study):
                _log_best_model(tracker, parent, best, live)
    finally:
        tracker.close_parent(parent, status, _finite(summary))


def _test_best(study: optuna.Study, best: optuna.trial.FrozenTrial, data: Dataset, live: Live) -> dict[str, float]:
    """The best trial's model on the test split: evaluated once per best trial, kept in the study
    (``records.best_test``), so no trial is chosen by its test score."""
    if data.x_test is None:
        return {}
    done = records.best_test(study)
    if done is None or done["trial"] != best.number:
        path = Path(TrialRecord.of(best).model_path)
        if not path.is_file():  # trained on another machine; its end tests it
            return {}
        import keras

        model = load_model(path)  # evaluation needs no optimizer state
        model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
        y_test = keras.utils.to_categorical(data.y_test, data.num_classes)
        scores = model.evaluate(data.x_test, y_test, batch_size=256, verbose=0, return_dict=True)
        done = {"trial": best.number, **{f"test_{k}": float(v) for k, v in scores.items()}}
        records.set_best_test(study, done)
        live.say(f"best trial {best.number}: test accuracy {done.get('test_accuracy', float('nan')):.4f} "
                 f"on {len(data.x_test)} images (the test split, used for this model only)")
    return {k: v for k, v in done.items() if k != "trial"}


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def _log_best_model(tracker: Tracker, parent: str, best: optuna.trial.FrozenTrial, live: Live) -> None:
    if tracker.best_model_logged(parent, best.number):
        return  # logged by an earlier run of this search
    record = TrialRecord.of(best)
    if Path(record.model_path).is_file():
        tracker.log_best_model(parent, record.model_path, best.number)
    else:  # trained by a worker on another machine, whose --out this one cannot see
        live.say(f"best trial {best.number}'s model is on {record.worker or 'another machine'}: "
                 f"not logged to MLflow from here")

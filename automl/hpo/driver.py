"""Run a search: the steps both backends share around their own trial loop.

check the space -> load data -> open the study -> reopen the MLflow parent run -> run trials
until the study holds ``trials`` finished ones (or the timeout) -> close every run -> summarise.

The parent run belongs to the search, not to one process: ``automl study create`` makes it
(SCHEDULED) for workers to join, every search or worker that starts reopens it (RUNNING), and
the last one to end, when no trial of the study is running any more, closes it.
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path

import optuna

from automl.data import Dataset, load_dataset, without_test
from automl.hpo.journal import StorageWriteError
from automl.hpo.live import Live
from automl.hpo.locks import held, lock_path
from automl.hpo.results import best_trial, print_top_trials
from automl.hpo.settings import SearchSettings
from automl.hpo.storage import fail_dead_trials, running_trials
from automl.hpo.study import finished_count, open_study
from automl.hpo.workers import SETTINGS_ATTR, Pool, precision, shared_settings
from automl.saving import load_model
from automl.secrets import masked_fields
from automl.space import SearchSpace
from automl.tracking import Tracker, flatten

PARENT_ATTR = "mlflow_parent_run_id"
TEST_ATTR = "best_test"


def run_search(settings: SearchSettings, data: Dataset | None = None) -> optuna.Study:
    """Run or resume the search; ``data``, when given, is ``settings.data`` already loaded."""
    space = SearchSpace.load(settings.space)
    data = data or load_dataset(settings.data, seed=settings.seed, image_size=settings.image_size)
    check_backbone(space, data.input_shape)
    study = open_study(settings, data)
    live = Live(settings.trials, settings.objective, settings.direction, settings.verbose)
    done = finished_count(study)
    target = f"/{settings.trials}" if settings.trials else ""
    live.say(f"study {settings.study}: {done}{target} trials finished; data {data.describe()}")
    if settings.trials is not None and done >= settings.trials:
        print_top_trials(study, live)
        return study

    tracker = Tracker(settings.tracking_uri, settings.experiment)
    parent = begin_search_run(settings, space, study, tracker)
    status, start = "KILLED", time.perf_counter()
    try:
        if settings.pooled:
            Pool(settings, study, live.say).run()
        else:
            if settings.backend == "optuna":
                from automl.hpo.optuna_backend import optimize
            else:
                from automl.hpo.keras_tuner_backend import optimize
            with precision(settings):
                optimize(settings, space, without_test(data), study, tracker, parent, live)
        status = "FINISHED"
    except Exception:
        status = "FAILED"
        raise
    finally:  # whatever happened, the parent run gets the best metrics so far
        end_search_run(settings, study, tracker, parent, status, live, data,
                       {"search_seconds": time.perf_counter() - start})
    print_top_trials(study, live)
    return study


def check_backbone(space: SearchSpace, input_shape: tuple[int, int, int]) -> None:
    from automl.blocks import backbone  # Keras loads only for a search that trains

    backbone.check(space, input_shape)


def create_search(settings: SearchSettings, data: Dataset | None = None) -> tuple[optuna.Study, bool]:
    """Create the study and MLflow parent run of a search that workers will run, and run no trial.
    Returns the study and whether it was new (an existing one keeps its trials and runs); ``data`` as
    for run_search."""
    space = SearchSpace.load(settings.space)
    data = data or load_dataset(settings.data, seed=settings.seed, image_size=settings.image_size)
    check_backbone(space, data.input_shape)
    study = open_study(settings, data)
    new = PARENT_ATTR not in study.user_attrs
    begin_search_run(settings, space, study, Tracker(settings.tracking_uri, settings.experiment), scheduled=True)
    return study, new


def begin_search_run(settings: SearchSettings, space: SearchSpace, study: optuna.Study, tracker: Tracker,
                     scheduled: bool = False) -> str:
    """Open (or reopen) the parent run and record in the study what workers read; returns the run id.
    ``scheduled``: no process runs trials yet, so a new run waits as SCHEDULED and a running one stays."""
    with held(lock_path(settings.storage, settings.study)):  # two processes starting at once make one run
        return _begin_search_run(settings, space, study, tracker, scheduled)


def _begin_search_run(settings: SearchSettings, space: SearchSpace, study: optuna.Study, tracker: Tracker,
                      scheduled: bool) -> str:
    skipped = ("verbose", "first_trials", "nest_under", "run_tags", "workers", "recycle", "gpus", "sampler_seed",
               "min_images_per_second")
    parent = tracker.open_parent(
        study.user_attrs.get(PARENT_ATTR),
        name=settings.run_name or f"search-{settings.backend}",
        params={k: v for k, v in masked_fields(flatten(vars(settings))).items() if k.split(".")[0] not in skipped},
        tags={"automl.backend": settings.backend, "automl.kind": "search", "automl.study": settings.study,
              **settings.run_tags},
        nest_under=settings.nest_under,
        scheduled=scheduled,
    )
    study.set_user_attr(PARENT_ATTR, parent)
    study.set_user_attr(SETTINGS_ATTR, shared_settings(settings))
    fail_dead_trials(study)  # a killed process's trial: failed and queued again, its run closed below
    tracker.close_stale_children(parent, alive=running_trials(study))
    if settings.backend == "optuna":
        from automl.hpo.optuna_backend import enqueue_first_trials

        enqueue_first_trials(settings, space, study)
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
    best = best_trial(study)
    summary = {f"best_{k}": v for k, v in (best.user_attrs.get("metrics", {}) if best else {}).items()}
    summary.update(finished_trials=finished_count(study), **(metrics or {}))
    if running:
        tracker.log_metrics(parent, _finite(summary))
        return
    try:
        if status == "FINISHED" and final and best is not None:
            summary.update(_test_best(study, best, data, live))
            if settings.log_model:
                _log_best_model(tracker, parent, best, live)
    finally:
        tracker.close_parent(parent, status, _finite(summary))


def _test_best(study: optuna.Study, best: optuna.trial.FrozenTrial, data: Dataset, live: Live) -> dict[str, float]:
    """The best trial's model on the test split: evaluated once per best trial, kept in the study
    (user attribute ``best_test``), so no trial is chosen by its test score."""
    if data.x_test is None:
        return {}
    done = study.user_attrs.get(TEST_ATTR)
    if done is None or done["trial"] != best.number:
        path = Path(best.user_attrs["model_path"])
        if not path.is_file():  # trained on another machine; its end tests it
            return {}
        import keras

        model = load_model(path)  # evaluation needs no optimizer state
        model.compile(loss="categorical_crossentropy", metrics=["accuracy"])
        y_test = keras.utils.to_categorical(data.y_test, data.num_classes)
        scores = model.evaluate(data.x_test, y_test, batch_size=256, verbose=0, return_dict=True)
        done = {"trial": best.number, **{f"test_{k}": float(v) for k, v in scores.items()}}
        study.set_user_attr(TEST_ATTR, done)
        live.say(f"best trial {best.number}: test accuracy {done.get('test_accuracy', float('nan')):.4f} "
                 f"on {len(data.x_test)} images (the test split, used for this model only)")
    return {k: v for k, v in done.items() if k != "trial"}


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def _log_best_model(tracker: Tracker, parent: str, best: optuna.trial.FrozenTrial, live: Live) -> None:
    if tracker.client.get_run(parent).data.tags.get("automl.best_trial") == str(best.number):
        return  # logged by an earlier run of this search
    if Path(best.user_attrs["model_path"]).is_file():
        tracker.log_best_model(parent, best.user_attrs["model_path"], best.number)
    else:  # trained by a worker on another machine, whose --out this one cannot see
        live.say(f"best trial {best.number}'s model is on {best.user_attrs.get('worker', 'another machine')}: "
                 f"not logged to MLflow from here")


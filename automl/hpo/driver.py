"""Run a search: the steps both backends share around their own trial loop.

check the space -> load data -> open the study -> reopen the MLflow parent run -> run trials
until the study holds ``trials`` finished ones (or the timeout) -> close every run -> summarise.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import optuna

from automl.data import Dataset, load_dataset
from automl.hpo.live import Live
from automl.hpo.results import best_trial, print_top_trials
from automl.hpo.settings import SearchSettings
from automl.hpo.study import finished_count, open_study
from automl.hpo.workers import SETTINGS_ATTR, Pool, precision, shared_settings
from automl.space import SearchSpace
from automl.tracking import Tracker, flatten

PARENT_ATTR = "mlflow_parent_run_id"


def run_search(settings: SearchSettings, data: Dataset | None = None) -> optuna.Study:
    """Run or resume the search; ``data``, when given, is ``settings.data`` already loaded."""
    space = SearchSpace.load(settings.space)
    data = data or load_dataset(settings.data, seed=settings.seed, image_size=settings.image_size)
    study = open_study(settings, data)
    live = Live(settings.trials, settings.objective, settings.direction, settings.verbose)
    done = finished_count(study)
    target = f"/{settings.trials}" if settings.trials else ""
    live.say(f"study {settings.study}: {done}{target} trials finished; data {data.describe()}")
    if settings.trials is not None and done >= settings.trials:
        print_top_trials(study, live)
        return study

    tracker = Tracker(settings.tracking_uri, settings.experiment)
    skipped = ("verbose", "first_trials", "nest_under", "run_tags")
    parent = tracker.open_parent(
        study.user_attrs.get(PARENT_ATTR),
        name=settings.run_name or f"search-{settings.backend}",
        params={k: v for k, v in flatten(vars(settings)).items() if k.split(".")[0] not in skipped},
        tags={"automl.backend": settings.backend, "automl.kind": "search", "automl.study": settings.study,
              **settings.run_tags},
        nest_under=settings.nest_under,
    )
    study.set_user_attr(PARENT_ATTR, parent)
    study.set_user_attr(SETTINGS_ATTR, shared_settings(settings))  # what workers read
    running = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
    tracker.close_stale_children(parent, alive=running)

    status, start = "KILLED", time.perf_counter()
    try:
        if settings.backend == "optuna":
            from automl.hpo.optuna_backend import enqueue_first_trials, optimize

            enqueue_first_trials(settings, space, study)
        else:
            from automl.hpo.keras_tuner_backend import optimize
        if settings.pooled:
            Pool(settings, study, live.say).run()
        else:
            with precision(settings):
                optimize(settings, space, data, study, tracker, parent, live)
        best = best_trial(study)
        if settings.log_model and best is not None:
            if Path(best.user_attrs["model_path"]).is_file():
                tracker.log_best_model(parent, best.user_attrs["model_path"], best.number)
            else:  # trained by a worker on another machine, whose --out this one cannot see
                live.say(f"best trial {best.number}'s model is on {best.user_attrs.get('worker', 'another machine')}: "
                         f"not logged to MLflow from here")
        status = "FINISHED"
    except Exception:
        status = "FAILED"
        raise
    finally:  # whatever happened, the parent run is closed with the best metrics so far
        running = [t.number for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))]
        tracker.close_stale_children(parent, alive=running)  # e.g. the trial of a worker that was killed
        best = best_trial(study)
        metrics = {f"best_{k}": v for k, v in (best.user_attrs.get("metrics", {}) if best else {}).items()}
        metrics.update(finished_trials=finished_count(study), search_seconds=time.perf_counter() - start)
        tracker.close_parent(parent, status, {k: v for k, v in metrics.items() if math.isfinite(v)})
    print_top_trials(study, live)
    return study

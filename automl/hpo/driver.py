"""Run a search: the steps both backends share around their own trial loop.

check the space -> load data -> open the study -> reopen the MLflow parent run (search_run.py)
-> run trials until the study holds ``trials`` finished ones or the timeout passes -> close
every run -> summarise.
"""

from __future__ import annotations

import time

import optuna

from automl.data import Dataset, load_dataset, without_test
from automl.hpo import records
from automl.hpo.hooks import SearchHooks
from automl.hpo.live import Live
from automl.hpo.results import print_top_trials
from automl.hpo.search_run import begin_search_run, end_search_run
from automl.hpo.settings import SearchSettings
from automl.hpo.study import finished_count, open_study
from automl.hpo.workers import Pool, precision
from automl.space import SearchSpace
from automl.tracking import Tracker


def run_search(settings: SearchSettings, data: Dataset | None = None, hooks: SearchHooks | None = None) -> optuna.Study:
    """Run or resume the search; ``data``, when given, is ``settings.data`` already loaded;
    ``hooks``: what a caller (a tune's stage) adds to it."""
    hooks = hooks or SearchHooks()
    space = SearchSpace.load(settings.space)
    data = data or settings.load_data()
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
    parent = begin_search_run(settings, space, study, tracker, hooks)
    status, start = "KILLED", time.perf_counter()
    try:
        if hooks.workers is not None:
            hooks.workers.serve(study, settings)
        elif settings.pooled:
            Pool(settings, study, live.say).run()
        else:
            if settings.backend == "optuna":
                from automl.hpo.optuna_backend import optimize
            else:
                from automl.hpo.keras_tuner_backend import optimize
            with precision(settings):
                optimize(settings, space, without_test(data), study, tracker, parent, live, hooks)
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


def create_search(settings: SearchSettings, data: Dataset | None = None,
                  hooks: SearchHooks | None = None) -> tuple[optuna.Study, bool]:
    """Create the study and MLflow parent run of a search that workers will run, and run no trial.
    Returns the study and whether it was new (an existing one keeps its trials and runs); ``data``
    and ``hooks`` as for run_search."""
    space = SearchSpace.load(settings.space)
    data = data or load_dataset(settings.data, seed=settings.seed, image_size=settings.image_size)
    check_backbone(space, data.input_shape)
    study = open_study(settings, data)
    new = records.parent_run(study) is None
    tracker = Tracker(settings.tracking_uri, settings.experiment)
    begin_search_run(settings, space, study, tracker, hooks or SearchHooks(), scheduled=True)
    return study, new

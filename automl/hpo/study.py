"""The study behind a search: created once, then found again by name to resume or inspect.

A study keeps what it was made for (records.StudyInfo: what export and predict need later, and
what a resumed search must match) and the MLflow parent run to reopen on resume.
"""

from __future__ import annotations

import optuna

from automl.data import Dataset
from automl.errors import UserError
from automl.hpo.records import StudyInfo
from automl.hpo.settings import SearchSettings
from automl.hpo.storage import open_storage

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def open_study(settings: SearchSettings, data: Dataset) -> optuna.Study:
    """Create the search's study, or load it when it exists and was made for the same space and data."""
    expected = {"space": settings.space, "data": settings.data, "objective": settings.objective,
                "backend": settings.backend}
    return open_named_study(settings.study, settings.storage, settings.direction, expected, data)


def open_named_study(name: str, storage_url: str, direction: str, expected: dict, data: Dataset) -> optuna.Study:
    """Create study ``name`` made for ``expected`` (StudyInfo's identity fields) and the data, or
    load it when those match (a study is resumed only with the settings it was made with)."""
    storage = open_storage(storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, direction=direction, load_if_exists=True)
    info = StudyInfo.of(study)
    if info.space is None:
        StudyInfo(**expected, input_shape=list(data.input_shape), num_classes=data.num_classes,
                  class_names=data.class_names, pixel_scale=data.pixel_scale).write(study)
        return study
    for key, value in expected.items():
        made = getattr(info, key)
        if made != value:
            raise UserError(
                f"--study {name}: this study was made with {key} {made!r}, not {value!r}; "
                f"resume it with the same settings or choose another --study"
            )
    return study


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))

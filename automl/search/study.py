"""The study behind a search: created once, then found again by name to resume or inspect.

A study's user attributes hold what export and predict need later (data set, input shape,
class names, pixel scale, objective) and the MLflow parent run to reopen on resume.
"""

from __future__ import annotations

import optuna

from automl.data import Dataset
from automl.errors import UserError
from automl.search.settings import SearchSettings
from automl.search.storage import open_storage

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def open_study(settings: SearchSettings, data: Dataset) -> optuna.Study:
    """Create the study, or load it when it exists and was made for the same space and data."""
    storage = open_storage(settings.storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=settings.study, storage=storage, direction=settings.direction, load_if_exists=True
    )
    expected = {
        "space": settings.space,
        "data": settings.data,
        "objective": settings.objective,
        "backend": settings.backend,
    }
    attrs = study.user_attrs
    if "space" not in attrs:
        for key, value in {
            **expected,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "class_names": data.class_names,
            "pixel_scale": data.pixel_scale,
        }.items():
            study.set_user_attr(key, value)
        return study
    for key, value in expected.items():
        if attrs.get(key) != value:
            raise UserError(
                f"--study {settings.study}: this study was made with {key} {attrs.get(key)!r}, not {value!r}; "
                f"resume it with the same settings or choose another --study"
            )
    return study


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))

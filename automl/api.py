"""The Python API; the CLI is a thin layer over these functions.

    import automl
    study = automl.search("search_spaces/quick.yaml", data="digits", trials=8, epochs=5)
    automl.export(study.study_name, out="best")
    for record in automl.predict("best", ["digit.png"]): print(record["class"])

Searches, tunes and ``create_study`` check their inputs and destinations (automl/preflight.py), then
load the data and check the space's model sizes on it, before the search machinery (Optuna, MLflow,
Keras) is imported and before the study is created; ``export`` and ``report`` check where they write
before they read the study.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from automl import preflight
from automl import settings as defaults
from automl.hpo.hooks import SearchHooks
from automl.hpo.settings import SearchSettings

if TYPE_CHECKING:
    import optuna

    from automl.data import Dataset


def _checked_data(settings, study: str | None, sizes: bool = True) -> Dataset:
    """Everything about a search's or tune's inputs that can be known before it starts; its data."""
    from automl.data import load_dataset

    space = preflight.check_inputs(settings.space, settings.data, study)
    preflight.check_destinations(settings.out, settings.tracking_uri, settings.storage)
    data = load_dataset(settings.data, seed=settings.seed, image_size=settings.image_size)
    if sizes:
        space.check_sizes(data.input_shape, data.num_classes)
    return data


def search(space: str, data: str = "digits", hooks: SearchHooks | None = None, **options) -> optuna.Study:
    """Run (or resume) a search; options are the fields of SearchSettings (trials, epochs, backend...),
    ``hooks`` what a caller adds to it (automl/hpo/hooks.py: first trials, MLflow run, trial callbacks)."""
    settings = SearchSettings(space=str(space), data=str(data), **options)
    loaded = _checked_data(settings, options.get("study"))
    from automl.hpo.driver import run_search

    return run_search(settings, loaded, hooks)


def create_study(space: str, data: str = "digits", hooks: SearchHooks | None = None,
                 **options) -> tuple[optuna.Study, bool]:
    """Create a search for workers (``automl worker``) to run, running no trial; options and hooks
    as for ``search``. Returns the study and whether it is new."""
    settings = SearchSettings(space=str(space), data=str(data), **options)
    loaded = _checked_data(settings, options.get("study"))
    from automl.hpo.driver import create_search

    return create_search(settings, loaded, hooks)


def tune(space: str, data: str = "digits", **options) -> optuna.Study:
    """Run (or resume) the staged tuning recipe; options are the fields of TuneSettings (budget, seed...).
    Returns the tune's study, whose one trial is the final model."""
    from automl.recipe.plan import check_until
    from automl.recipe.settings import TuneSettings

    settings = TuneSettings(space=str(space), data=str(data), **options)
    check_until(settings.until)
    loaded = _checked_data(settings, options.get("study"))
    from automl.recipe.tune import run_tune

    return run_tune(settings, loaded)


def report(study: str, out: str | Path | None = None, storage: str | None = None) -> Path:
    """Write the report of tune ``study`` (.md with figures beside it, or one .html file)."""
    out = Path(out or Path(defaults.out_dir(None)) / study / "report.md")
    preflight.check_file(f"--out {out}", out, make_folder=True)
    from automl.recipe.report import write_report

    return write_report(study, defaults.storage_url(storage), out)


def trials(study: str, storage: str | None = None):
    """All trials of a study as a pandas DataFrame."""
    from automl.hpo.results import trials_frame
    from automl.hpo.storage import load_study

    return trials_frame(load_study(study, defaults.storage_url(storage)))


def export(study: str, out: str | Path, storage: str | None = None) -> Path:
    """Write the best trial's model.keras (+ SavedModel) and automl.json to ``out``."""
    preflight.check_out(out)
    from automl.export import export_study

    return export_study(study, defaults.storage_url(storage), out)


def predict(model: str | Path, inputs: list[str]) -> Iterator[dict]:
    """Predictions of an exported model for image files, folders or .npz files."""
    from automl.predict import predict as run

    return run(model, inputs)

"""Export the best trial of a study: model.keras (+ SavedModel on TensorFlow) and automl.json.

The trial's best-epoch model was saved when the trial finished, so nothing is retrained; the
exported model takes raw pixels (scaling is its first layer).
"""

from __future__ import annotations

import json
import platform
import shutil
from importlib import metadata
from pathlib import Path

from automl.errors import UserError
from automl.hpo import records
from automl.hpo.records import StudyInfo, TrialRecord
from automl.hpo.storage import load_study
from automl.saving import load_model
from automl.secrets import masked

METADATA = "automl.json"


def _versions() -> dict[str, str]:
    names = ("automl", "keras", "tensorflow", "jax", "optuna", "mlflow", "numpy")
    found = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"python": platform.python_version(), **found}


def export_study(study_name: str, storage: str, out: str | Path) -> Path:
    """Write the best trial's model and metadata to ``out``; returns the folder."""
    study = load_study(study_name, storage)
    best = records.best_trial(study)
    if best is None:
        raise UserError(f"--study {study_name}: no completed trial with a saved model to export yet")
    record = TrialRecord.of(best)
    source = Path(record.model_path)
    if not source.is_file():
        raise UserError(f"{source}: the best trial's model file is missing (was the --out folder moved?)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, out / "model.keras")

    import keras

    formats = ["keras"]
    if keras.backend.backend() == "tensorflow":
        model = load_model(out / "model.keras")
        model.export(str(out / "saved_model"), format="tf_saved_model", verbose=False)
        formats.append("tf_saved_model")
    made = StudyInfo.of(study)
    info = {
        "study": study_name,
        "storage": masked(storage),  # where it came from; the password is given again, never stored
        "trial": best.number,
        "objective": made.objective,
        "value": best.value,
        "metrics": {**record.metrics, **_test_metrics(records.best_test(study), best.number)},
        "config": record.config,
        "data": made.data,
        "input_shape": made.input_shape,
        "class_names": made.class_names or [str(i) for i in range(made.num_classes or 0)],
        "preprocessing": {"pixel_scale": made.pixel_scale, "inside_model": True,
                          "input": "raw pixel values, resized to input_shape"},
        "formats": formats,
        "versions": _versions(),
    }
    (out / METADATA).write_text(json.dumps(info, indent=2))
    return out


def _test_metrics(tested: dict | None, trial: int) -> dict:
    """The search's one test of its best model (a tune's final model carries its own)."""
    tested = tested or {}
    return {k: v for k, v in tested.items() if k != "trial"} if tested.get("trial") == trial else {}

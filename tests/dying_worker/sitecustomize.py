"""Loaded at start-up by every Python process that has this folder on its PYTHONPATH (see
tests/test_faults.py). In a worker process of ``automl search --workers`` (``AUTOML_POOL`` set)
where ``AUTOML_TEST_FITS`` names a file, a trial's training (``keras.Model.fit``) adds the
process id to that file as it starts, and the process SIGKILLs itself: a real death, with no
chance to clean up, holding a trial and its MLflow run."""

import os
import signal
import sys

_FITS = os.environ.get("AUTOML_TEST_FITS")


def _fit_and_die(self, *args, **kwargs):
    with open(_FITS, "a") as file:
        file.write(f"{os.getpid()}\n")
    os.kill(os.getpid(), signal.SIGKILL)


def _on_import(event: str, args: tuple) -> None:
    model = getattr(sys.modules.get("keras"), "Model", None)  # there once keras is imported
    if event == "import" and model is not None and model.fit is not _fit_and_die:
        model.fit = _fit_and_die


if _FITS and os.environ.get("AUTOML_POOL"):
    sys.addaudithook(_on_import)

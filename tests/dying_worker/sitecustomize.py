"""Loaded at start-up by every Python process that has this folder on its PYTHONPATH (see
tests/test_faults.py). In a worker process of ``automl search --workers`` (``AUTOML_POOL`` set)
where ``AUTOML_TEST_FITS`` names a file, each training a trial starts (``keras.Model.fit``)
adds a line to that file, under a lock shared by all the workers, and the process SIGKILLs
itself, with no chance to clean up, when the line's number is in ``AUTOML_TEST_DIE_AT``
(comma-separated, counted from 1; ``all``: every time)."""

import fcntl
import os
import signal
import sys

_FITS = os.environ.get("AUTOML_TEST_FITS")
_DIE_AT = os.environ.get("AUTOML_TEST_DIE_AT", "all")


def _count_fit() -> int:
    with open(_FITS, "a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        number = len(file.readlines()) + 1
        file.write(f"{os.getpid()}\n")
        file.flush()
        return number


def _fit_then_maybe_die(real_fit):
    def fit(self, *args, **kwargs):
        number = _count_fit()
        if _DIE_AT == "all" or str(number) in _DIE_AT.split(","):
            os.kill(os.getpid(), signal.SIGKILL)
        return real_fit(self, *args, **kwargs)

    fit.dies = True
    return fit


def _on_import(event: str, args: tuple) -> None:
    if event != "import":
        return
    model = getattr(sys.modules.get("keras"), "Model", None)  # keras fully imported: Model is there
    if model is not None and not getattr(model.fit, "dies", False):
        model.fit = _fit_then_maybe_die(model.fit)


if _FITS and os.environ.get("AUTOML_POOL"):
    sys.addaudithook(_on_import)

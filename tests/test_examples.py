"""README and examples/ must keep running."""

import os
import subprocess
import sys

from .conftest import ROOT


def test_python_api_example_runs():
    env = {**os.environ, "TRIALS": "2", "EPOCHS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "python_api.py")], capture_output=True,
                          text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert sum(line.startswith("trial ") for line in lines) == 2 and lines[-1].startswith("best: trial")


def test_the_api_functions_stay_callable_once_the_internals_are_imported():
    import automl
    import automl.hpo.driver  # noqa: F401  (a subpackage named like an API function would replace it)
    import automl.recipe.tune  # noqa: F401

    assert all(callable(getattr(automl, name)) for name in automl.API)

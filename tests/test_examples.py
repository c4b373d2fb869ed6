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

"""A virtual environment of its own for the AutoKeras contender.

AutoKeras 3.0.0 (the newest release) does not run on the project's Keras 3.15: Keras 3.13.0 made
``Dense`` refuse a ``units`` that is not a Python ``int``, and AutoKeras' ClassificationHead passes
a NumPy integer (``layers.Dense(self.shape[-1])``), so the first model build fails with
``ValueError: Received an invalid value for `units`, expected a positive integer. Received: units=10``.
Keras 3.12.x has no such check; TensorFlow 2.21 accepts Keras >= 3.12.0. So the contender runs in a
separate venv with the versions below, and ``autokeras_run.py`` is run with that venv's python.

    from benchmarks.contenders.autokeras_env import ensure_env
    python = ensure_env(ROOT)   # creates ROOT/benchmarks/.venvs/autokeras once, then reuses it
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

VENV = Path("benchmarks/.venvs/autokeras")

# Exact versions, checked together on this machine (Python 3.11, CPU). Keras must stay < 3.13.
PINS = {
    "autokeras": "3.0.0",
    "keras-tuner": "1.4.8",
    "keras": "3.12.4",
    "tensorflow-cpu": "2.21.0",
    # TF 2.21 no longer depends on TensorBoard, but KerasTuner imports it in every trial on the
    # TensorFlow backend (Tuner._configure_tensorboard_dir): without it every trial fails with
    # "ModuleNotFoundError: No module named 'tensorboard'".
    "tensorboard": "2.21.0",
}

_PROBE = (
    "import json, importlib.metadata as m\n"
    "import autokeras, keras, keras_tuner, tensorflow, tensorboard.plugins.hparams.api\n"
    f"print(json.dumps({{d: m.version(d) for d in {sorted(PINS)!r}}}))\n"
)


def _env() -> dict[str, str]:
    return {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONNOUSERSITE": "1"}


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_versions(python: Path) -> dict[str, str] | None:
    """The pinned distributions' versions in the venv, or None when it is missing or does not import."""
    if not python.exists():
        return None
    proc = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, env=_env(), timeout=600)
    if proc.returncode != 0:
        return None
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def _run(cmd: list[str], what: str) -> None:
    print(f"[autokeras-env] {what}: {' '.join(cmd)}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env())
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        print(f"[autokeras-env]   {line}", end="", flush=True)
    if proc.wait() != 0:
        errors = [ln for ln in lines if ln.startswith("ERROR") or "error" in ln.lower()] or lines[-5:]
        raise RuntimeError(f"AutoKeras environment: {what} failed (exit {proc.returncode}): "
                           + " | ".join(errors[-5:]))


def ensure_env(root: Path) -> Path:
    """Create (once) the AutoKeras venv under ``root/benchmarks/.venvs/autokeras`` and return its python.

    A venv already there is reused when it imports autokeras, keras, keras_tuner and tensorflow at the
    pinned versions; otherwise it is rebuilt from scratch. Raises RuntimeError with the reason when
    creating it or installing the pins fails (e.g. PyPI not reachable, no wheel for this Python).
    """
    venv = Path(root).resolve() / VENV
    python = _python(venv)
    found = installed_versions(python)
    if found == PINS:
        print(f"[autokeras-env] reusing {venv} ({', '.join(f'{k}=={v}' for k, v in PINS.items())})", flush=True)
        return python
    if venv.exists():
        print(f"[autokeras-env] {venv} is not usable (found {found}); rebuilding it", flush=True)
        shutil.rmtree(venv)
    start = time.monotonic()
    print(f"[autokeras-env] creating {venv} (about 300 MB from PyPI, 1.6 GB on disk; 1-2 minutes)", flush=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "venv", str(venv)], "creating the venv")
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--upgrade", "pip"],
         "upgrading pip")
    _run([str(python), "-m", "pip", "install", "--disable-pip-version-check", "--progress-bar", "off",
          *(f"{name}=={version}" for name, version in PINS.items())], "installing the pinned packages")
    found = installed_versions(python)
    if found != PINS:
        raise RuntimeError(f"AutoKeras environment: after installing, the venv does not import the pinned "
                           f"versions {PINS}: found {found} (run {python} -c 'import autokeras' to see why)")
    print(f"[autokeras-env] ready in {time.monotonic() - start:.0f} s: {python}", flush=True)
    return python


if __name__ == "__main__":
    print(ensure_env(Path(__file__).resolve().parents[2]))

"""Loaded at start-up by every Python process that has this folder on its PYTHONPATH (see
tests/test_workers.py). Where AUTOML_TEST_PROBE names a folder, it writes there, per process,
the command line and the CUDA_VISIBLE_DEVICES that Keras found when it was first imported: the
GPU a framework in that process can see."""

import json
import os
import sys

_FOLDER = os.environ.get("AUTOML_TEST_PROBE")


def _on_import(event: str, args: tuple) -> None:
    if event == "import" and args[0] == "keras" and "keras" not in sys.modules:
        record = {"argv": sys.argv, "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES")}
        with open(os.path.join(_FOLDER, f"{os.getpid()}.json"), "w") as file:
            json.dump(record, file)


if _FOLDER:
    sys.addaudithook(_on_import)

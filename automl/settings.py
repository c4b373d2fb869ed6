"""Where things live by default: files in the working directory, each overridable by flag or env."""

import os
from pathlib import Path

DEFAULT_STORAGE = "journal:automl.journal"  # Optuna journal file: safe for several local processes
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # MLflow's own default, so `mlflow ui` here shows everything
DEFAULT_OUT = "automl-out"


def storage_url(given: str | None) -> str:
    return given or os.environ.get("AUTOML_STORAGE") or DEFAULT_STORAGE


def tracking_uri(given: str | None) -> str:
    env = os.environ.get("AUTOML_TRACKING_URI") or os.environ.get("MLFLOW_TRACKING_URI")
    return given or env or DEFAULT_TRACKING_URI


def out_dir(given: str | None) -> str:
    return given or os.environ.get("AUTOML_OUT") or DEFAULT_OUT


def local_file(url: str) -> Path | None:
    """The file a storage or tracking URL names on this machine (``journal:PATH``, ``PATH.journal``,
    ``sqlite:///PATH``), as given (relative paths are the working directory's); None for a server
    or an in-memory database."""
    if url.startswith("sqlite:///"):
        path = url.removeprefix("sqlite:///").split("?")[0]
        return Path(path) if path and path != ":memory:" else None
    if url.startswith("journal:") or url.endswith(".journal"):
        return Path(url.removeprefix("journal:"))
    return None

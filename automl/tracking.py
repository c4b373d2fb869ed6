"""MLflow layout: experiment = study; a parent run per search (or recipe stage); a child run per trial.

Child runs carry the flattened TrialConfig as params, per-epoch metrics, the tags
``automl.trial`` / ``automl.state`` / ``automl.backend``, the configuration YAML and a
learning-curve plot. No run stays RUNNING: every run is closed by a ``finally``, and runs left
RUNNING by a dead process are closed when the next search of the study starts.
"""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from automl.errors import UserError
from automl.saving import load_model
from automl.secrets import masked

# MLflow configures its loggers on import; its INFO lines (database set-up) would drown the live view.
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAMS_PER_BATCH = 100  # MLflow's limit per log_batch call


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": [1, {"c": 2}]}} -> {"a.b.0": 1, "a.b.1.c": 2}; empty containers stay as values."""
    if isinstance(tree, dict) and tree:
        items = tree.items()
    elif isinstance(tree, list) and tree:
        items = enumerate(tree)
    else:
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in items:
        flat.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return flat


class Tracker:
    """Logs one study's searches to MLflow through an explicit client (no global active run)."""

    def __init__(self, tracking_uri: str, experiment: str, create: bool = True):
        """``create``: make the experiment if missing (a worker joins one that must exist)."""
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        if found is None and not create:
            raise UserError(f"--tracking-uri {masked(tracking_uri)}: no MLflow experiment {experiment} there; give the "
                            f"tracking server the search logs to")
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)

    # --- parent runs ------------------------------------------------------------------

    def open_parent(self, run_id: str | None, name: str, params: dict[str, Any], tags: dict[str, str],
                    nest_under: str | None = None, scheduled: bool = False) -> str:
        """Reopen ``run_id`` (a resumed search) or start a new parent run, itself a child of
        ``nest_under`` when given (a recipe stage under its tune); returns its id. ``scheduled``:
        nothing runs yet, so a new run is SCHEDULED and an existing one keeps its status."""
        if run_id and self._exists(run_id):
            if not scheduled:
                self.client.update_run(run_id, status="RUNNING")
        else:
            tags = {**tags, PARENT_TAG: nest_under} if nest_under else tags
            run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
            self._log_params(run_id, params)
            if scheduled:
                self.client.update_run(run_id, status="SCHEDULED")
        return run_id

    def reopen_parent(self, run_id: str) -> None:
        """A worker joins the search's parent run, which must be in this tracking store."""
        if not self._exists(run_id):
            raise UserError(f"--tracking-uri {masked(self.tracking_uri)}: the search's MLflow run {run_id} is not "
                            f"there; give the tracking server the search logs to")
        self.client.update_run(run_id, status="RUNNING")

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        now = _now()
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def close_parent(self, run_id: str, status: str, metrics: dict[str, float] | None = None) -> None:
        if metrics:
            self.log_metrics(run_id, metrics)
        self.client.set_terminated(run_id, status)

    def log_best_model(self, run_id: str, model_path: str, trial_number: int) -> None:
        """The best trial's model as an MLflow model of the parent run (the Keras 3 flavor)."""
        import keras
        import mlflow
        import mlflow.keras
        import numpy as np
        from mlflow.models import infer_signature

        mlflow.set_tracking_uri(self.tracking_uri)
        model = load_model(model_path)
        example = np.zeros((1, *model.input_shape[1:]), "float32")
        signature = infer_signature(example, model.predict(example, verbose=0))
        with mlflow.start_run(run_id=run_id):
            mlflow.keras.log_model(model, name="best_model", signature=signature,
                                   pip_requirements=[f"keras=={keras.__version__}"])
        self.client.set_tag(run_id, "automl.best_trial", str(trial_number))

    def close_stale_children(self, parent_id: str, alive: Iterable[int]) -> int:
        """Close as FAILED the RUNNING child runs (trials, stages) whose trial is not running any more."""
        alive = {str(n) for n in alive}
        stale = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and attributes.status = 'RUNNING'",
        )
        closed = 0
        for run in stale:
            if run.data.tags.get("automl.trial") not in alive:
                self.client.set_tag(run.info.run_id, "automl.state", "FAIL")
                self.client.set_tag(run.info.run_id, "automl.fail_reason", "the process stopped before this run ended")
                self.client.set_terminated(run.info.run_id, "FAILED")
                closed += 1
        return closed

    # --- child runs -------------------------------------------------------------------

    @contextmanager
    def trial_run(self, parent_id: str, number: int, config: dict, tags: dict[str, str]):
        """A child run for trial ``number``; the body sets ``run.state`` and may log metrics."""
        run = TrialRun(self, parent_id, number, config, tags)
        try:
            yield run
        except KeyboardInterrupt:
            run.finish("FAIL", "interrupted", status="KILLED")
            raise
        except BaseException as exc:
            run.finish("FAIL", f"{type(exc).__name__}: {exc}".splitlines()[0])
            raise
        else:
            run.finish(run.state, run.reason)

    def _exists(self, run_id: str) -> bool:
        try:
            self.client.get_run(run_id)
            return True
        except Exception:  # MlflowException when the run was deleted or the database is new
            return False

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        items = [Param(k[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])


class TrialRun:
    """One trial's child run: epoch metrics stream in; ``finish`` writes state, curves and closes it."""

    def __init__(self, tracker: Tracker, parent_id: str, number: int, config: dict, tags: dict[str, str]):
        self.tracker, self.number = tracker, number
        self.state, self.reason = "COMPLETE", None
        self.history: dict[str, list[float]] = {}
        client = tracker.client
        run_tags = {PARENT_TAG: parent_id, "automl.trial": str(number), "automl.state": "RUNNING", **tags}
        self.run_id = client.create_run(tracker.experiment_id, run_name=f"trial-{number}", tags=run_tags).info.run_id
        tracker._log_params(self.run_id, flatten(config))
        client.log_text(self.run_id, yaml.safe_dump(config, sort_keys=False), "config.yaml")

    def log_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        now = _now()
        metrics = [Metric(k, float(v), now, epoch) for k, v in logs.items() if _is_number(v)]
        for m in metrics:
            self.history.setdefault(m.key, []).append(m.value)
        self.tracker.client.log_batch(self.run_id, metrics=metrics)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.tracker.log_metrics(self.run_id, metrics)

    def log_traceback(self, exc: BaseException) -> None:
        """Where a failed trial's error arose, in full, as the artifact ``traceback.txt``."""
        self.tracker.client.log_text(self.run_id, "".join(traceback.format_exception(exc)), "traceback.txt")

    def finish(self, state: str, reason: str | None = None, status: str | None = None) -> None:
        client = self.tracker.client
        tags = [RunTag("automl.state", state)] + ([RunTag("automl.fail_reason", reason)] if reason else [])
        client.log_batch(self.run_id, tags=tags)
        if self.history:
            _log_learning_curves(client, self.run_id, self.history)
        status = status or {"COMPLETE": "FINISHED", "PRUNED": "FINISHED"}.get(state, "FAILED")
        client.set_terminated(self.run_id, status)


def _log_learning_curves(client: MlflowClient, run_id: str, history: dict[str, list[float]]) -> None:
    from automl import plots

    with tempfile.TemporaryDirectory() as tmp:
        figure = plots.learning_curves(history)
        client.log_artifact(run_id, str(plots.save(figure, Path(tmp) / "learning_curves.png", tight=False)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _now() -> int:
    return int(time.time() * 1000)

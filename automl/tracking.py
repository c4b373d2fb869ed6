"""MLflow layout: experiment = study; a parent run per search (or recipe stage); a child run per trial.

Child runs carry the flattened TrialConfig as params, per-epoch metrics, the tags
``automl.trial`` / ``automl.state`` / ``automl.backend``, the configuration YAML and a
learning-curve plot. No run stays RUNNING: every run is closed by a ``finally``, and runs left
RUNNING by a dead process are closed when the next search of the study starts.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag

from automl.errors import UserError
from automl.hpo.locks import held, lock_path
from automl.saving import load_model
from automl.secrets import masked

# MLflow configures its loggers on import; its INFO lines (database set-up) would drown the live view.
logging.getLogger("mlflow").setLevel(logging.WARNING)
logging.getLogger("alembic").setLevel(logging.WARNING)
# Its store logs a database error with a traceback, then raises it: the raised error is reported.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

PARENT_TAG = "mlflow.parentRunId"
MAX_PARAMS_PER_BATCH = 100  # MLflow's limits per log_batch call
MAX_METRICS_PER_BATCH = 1000
# The tags of a run whose process died in it (closed by close_stale_children)
STALE_MARKS = {"automl.state": "FAIL", "automl.fail_reason": "the process stopped before this run ended"}
RETRY_DELAYS = (0.5, 1.0, 2.0)  # seconds before each retry of a failed MLflow call of a trial


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
        self.tracking_uri = tracking_uri
        # MLflow creates a new SQLite database's tables (as the client starts), and the experiment,
        # with no guard against a second process doing the same at once ("table latest_metrics
        # already exists"). (The key is no study name, which has no space: a search whose storage is
        # this very SQLite file locks its study apart.)
        with held(lock_path(tracking_uri, "mlflow tables")):
            self.client = MlflowClient(tracking_uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None and not create:
                raise UserError(f"--tracking-uri {masked(tracking_uri)}: no MLflow experiment {experiment} there; "
                                f"give the tracking server the search logs to")
            self.experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        # trial runs to finish: each waits for its study to record the trial, and MLflow may refuse
        # a finish (see finish_pending)
        self.pending: list[TrialRun] = []

    # --- parent runs ------------------------------------------------------------------

    def open_parent(self, run_id: str | None, name: str, params: dict[str, Any], tags: dict[str, str],
                    nest_under: str | None = None, scheduled: bool = False) -> str:
        """Reopen ``run_id`` (a resumed search) or start a new parent run, itself a child of
        ``nest_under`` when given (a recipe stage under its tune); returns its id. ``scheduled``:
        nothing runs yet, so a new run is SCHEDULED and an existing one keeps its status."""
        if run_id and self._exists(run_id):
            if not scheduled:
                self._resume(run_id)
        else:
            tags = {**tags, PARENT_TAG: nest_under} if nest_under else tags
            run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
            self._log_params(run_id, params)
            if scheduled:
                self.client.update_run(run_id, status="SCHEDULED")
        return run_id

    def _resume(self, run_id: str) -> None:
        """Run ``run_id`` again. A search nested in a tune whose process died was closed, with the
        marks of a failed run, by the next tune's ``close_stale_children``; the search it resumes
        runs on, so the marks of that interruption go."""
        tags = self.client.get_run(run_id).data.tags
        for key in STALE_MARKS:
            if key in tags:
                self.client.delete_tag(run_id, key)
        self.client.update_run(run_id, status="RUNNING")

    def reopen_parent(self, run_id: str) -> None:
        """A worker joins the search's parent run, which must be in this tracking store."""
        if not self._exists(run_id):
            raise UserError(f"--tracking-uri {masked(self.tracking_uri)}: the search's MLflow run {run_id} is not "
                            f"there; give the tracking server the search logs to")
        self.client.update_run(run_id, status="RUNNING")

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        now = _now()
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def finish_pending(self) -> None:
        """Finish the trial runs whose trials the study has recorded, and try again those that
        MLflow refused to finish before."""
        pending, self.pending = self.pending, []
        for run in pending:
            run.finish(run.state, run.reason, run.status)

    def close_parent(self, run_id: str, status: str, metrics: dict[str, float] | None = None) -> None:
        self.finish_pending()
        if metrics:
            self.log_metrics(run_id, metrics)
        self.client.set_terminated(run_id, status)

    # --- what a stage of a tune writes to its own run ------------------------------

    def end_run(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), folder)

    def log_artifacts(self, run_id: str, folder: str | Path, into: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(folder), into)

    def log_figure(self, run_id: str, figure, name: str) -> None:
        """A matplotlib figure as the run's PNG artifact ``name``."""
        from automl import plots

        with tempfile.TemporaryDirectory() as tmp:
            self.log_artifact(run_id, plots.save(figure, Path(tmp) / name))

    def describe(self, run_id: str, tags: dict[str, str], metrics: dict[str, float], note: str) -> None:
        """What a stage found, on its run: tags, metrics, and the note the MLflow UI shows (also
        kept as ``summary.md``)."""
        self.set_tags(run_id, {**tags, "mlflow.note.content": note})
        self.log_metrics(run_id, metrics)
        self.client.log_text(run_id, note + "\n", "summary.md")

    def epoch_log(self, run_id: str) -> RunEpochs:
        """Per-epoch metrics of a training that is not a search's trial (a tune's final model)."""
        return RunEpochs(self, run_id)

    def log_best_model(self, run_id: str, model_path: str, trial_number: int) -> None:
        """The best trial's model as an MLflow model of the parent run (the Keras 3 flavor), once
        per trial: a resumed search whose best did not change logs nothing again."""
        if self.best_model_logged(run_id, trial_number):
            return
        import keras
        import mlflow
        import mlflow.keras
        import numpy as np
        from mlflow.models import infer_signature

        model = load_model(model_path)
        example = np.zeros((1, *model.input_shape[1:]), "float32")
        signature = infer_signature(example, model.predict(example, verbose=0))
        # The fluent API needs the global URI, which MLflow also exports to the environment: put
        # both back, or every process this one starts later would log to this search's store.
        before = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.tracking_uri)
        try:
            with mlflow.start_run(run_id=run_id):
                mlflow.keras.log_model(model, name="best_model", signature=signature,
                                       pip_requirements=[f"keras=={keras.__version__}"])
        finally:
            mlflow.set_tracking_uri(before)
        self.client.set_tag(run_id, "automl.best_trial", str(trial_number))

    def best_model_logged(self, run_id: str, trial_number: int) -> bool:
        return self.client.get_run(run_id).data.tags.get("automl.best_trial") == str(trial_number)

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
                for key, value in STALE_MARKS.items():
                    self.client.set_tag(run.info.run_id, key, value)
                self.client.set_terminated(run.info.run_id, "FAILED")
                closed += 1
        return closed

    # --- child runs -------------------------------------------------------------------

    @contextmanager
    def trial_run(self, parent_id: str, number: int, config: dict, tags: dict[str, str]):
        """A child run for trial ``number``; the body sets ``run.state`` and may log metrics. A run
        that ends normally is finished by the next ``finish_pending``: its learning-curve plot and
        MLflow's retries wait until the backend has recorded the trial in its study."""
        self.finish_pending()
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
            run.settle(run.state, run.reason)
            self.pending.append(run)

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


class RunEpochs:
    """Per-epoch metrics streamed to one run (what ``TrialRun.log_epoch`` does for a trial)."""

    def __init__(self, tracker: Tracker, run_id: str):
        self.tracker, self.run_id = tracker, run_id

    def log_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        now = _now()
        metrics = [Metric(k, float(v), now, epoch) for k, v in logs.items() if _is_number(v)]
        self.tracker.client.log_batch(self.run_id, metrics=metrics)


class TrialRun:
    """One trial's child run: epoch metrics stream in; ``finish`` writes state, curves and closes it.

    MLflow trouble (a locked SQLite file, a server restarting) never fails the trial: each call is
    retried with backoff, then reported in one line; what could not be logged is kept and logged
    when the run finishes, and a run that cannot be finished is finished at the next trial or at
    the search's end (``Tracker.finish_pending``).
    """

    def __init__(self, tracker: Tracker, parent_id: str, number: int, config: dict, tags: dict[str, str]):
        self.tracker, self.parent_id, self.number, self.config, self.tags = tracker, parent_id, number, config, tags
        self.state, self.reason = "COMPLETE", None
        self.history: dict[str, list[float]] = {}
        self.unlogged: list[Metric] = []  # metrics whose logging failed, logged again at the end
        self.run_id: str | None = None
        self.failing = False  # a call failed after its retries: the next ones wait for the end
        self._call("start its run", self._create)

    def _create(self) -> None:
        client = self.tracker.client
        if self.run_id is None:
            run_tags = {PARENT_TAG: self.parent_id, "automl.trial": str(self.number), "automl.state": "RUNNING",
                        **self.tags}
            self.run_id = client.create_run(self.tracker.experiment_id, run_name=f"trial-{self.number}",
                                            tags=run_tags).info.run_id
        self.tracker._log_params(self.run_id, flatten(self.config))
        client.log_text(self.run_id, yaml.safe_dump(self.config, sort_keys=False), "config.yaml")

    def log_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        now = _now()
        metrics = [Metric(k, float(v), now, epoch) for k, v in logs.items() if _is_number(v)]
        for m in metrics:
            self.history.setdefault(m.key, []).append(m.value)
        self._log(metrics)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        now = _now()
        self._log([Metric(k, float(v), now, 0) for k, v in metrics.items()])

    def _log(self, metrics: list[Metric]) -> None:
        if self.failing or self.run_id is None or not self._call(
                "log its metrics", self.tracker.client.log_batch, self.run_id, metrics=metrics):
            self.unlogged += metrics

    def log_traceback(self, exc: BaseException) -> None:
        """Where a failed trial's error arose, in full, as the artifact ``traceback.txt``."""
        if not self.failing and self.run_id is not None:
            self._call("log its traceback", self.tracker.client.log_text, self.run_id,
                       "".join(traceback.format_exception(exc)), "traceback.txt")

    def settle(self, state: str, reason: str | None = None, status: str | None = None) -> None:
        self.state, self.reason = state, reason
        self.status = status or {"COMPLETE": "FINISHED", "PRUNED": "FINISHED"}.get(state, "FAILED")

    def finish(self, state: str, reason: str | None = None, status: str | None = None) -> None:
        self.settle(state, reason, status)
        self.failing = False  # worth another try: MLflow may be back
        if not self._call("finish its run", self._finish):
            self.tracker.pending.append(self)

    def _finish(self) -> None:
        if self.run_id is None:  # MLflow did not answer when the trial started
            self._create()
        client = self.tracker.client
        for i in range(0, len(self.unlogged), MAX_METRICS_PER_BATCH):
            client.log_batch(self.run_id, metrics=self.unlogged[i : i + MAX_METRICS_PER_BATCH])
        self.unlogged = []
        tags = [RunTag("automl.state", self.state)] + ([RunTag("automl.fail_reason", self.reason)] if self.reason
                                                        else [])
        client.log_batch(self.run_id, tags=tags)
        if self.history:
            _log_learning_curves(client, self.run_id, self.history)
        client.set_terminated(self.run_id, self.status)

    def _call(self, what: str, call: Callable, *args, **kwargs) -> bool:
        """``call`` with retries; False (and one line on stderr) when MLflow did not take it."""
        try:
            retrying(call, *args, **kwargs)
            return True
        except Exception as exc:
            self.failing = True
            while exc.__cause__ is not None:  # the database's or the server's own words
                exc = exc.__cause__
            text = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            where = masked(self.tracker.tracking_uri)
            print(f"automl: warning: MLflow ({where}): trial {self.number} could not {what} "
                  f"({text}); the trial goes on and its run is completed later", file=sys.stderr, flush=True)
            return False


def retrying(call: Callable, *args, **kwargs):
    """``call(*args, **kwargs)``, tried again after each of ``RETRY_DELAYS`` seconds while it raises."""
    for delay in RETRY_DELAYS:
        try:
            return call(*args, **kwargs)
        except Exception:
            time.sleep(delay)
    return call(*args, **kwargs)


def _log_learning_curves(client: MlflowClient, run_id: str, history: dict[str, list[float]]) -> None:
    from automl import plots

    with tempfile.TemporaryDirectory() as tmp:
        figure = plots.learning_curves(history)
        client.log_artifact(run_id, str(plots.save(figure, Path(tmp) / "learning_curves.png", tight=False)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _now() -> int:
    return int(time.time() * 1000)

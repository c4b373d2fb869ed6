"""Run one trial for either backend: train, keep the model, log to MLflow, say how it went; and
what both backends' trial loops share (first trials, when to stop, failures in a row).

The search algorithm (Optuna, KerasTuner) only hands over a configuration and gets back an
outcome, so both backends share this code.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import optuna

from automl.config import TrialConfig
from automl.data import Dataset
from automl.errors import ArchitectureError, SearchStopped, TrialFailed, UserError
from automl.hpo import records
from automl.hpo.live import Live
from automl.hpo.records import TrialRecord
from automl.hpo.settings import SearchSettings
from automl.space import FixedSuggester, SearchSpace
from automl.tracking import Tracker, TrialRun
from automl.training.fit import TrialResult, fit

log = logging.getLogger(__name__)
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial
ALLOCATION = re.compile(r"\bOOM\b|out of memory", re.IGNORECASE)  # the line naming what did not fit
OUT_OF_MEMORY = re.compile(r"ResourceExhausted|\bOOM\b|out of memory", re.IGNORECASE)


@dataclass
class Outcome:
    state: str  # COMPLETE | PRUNED | FAIL
    value: float | None = None
    reason: str | None = None
    result: TrialResult | None = None
    pruned: BaseException | None = None  # the backend's own pruning signal, re-raised by the backend
    run_id: str | None = None  # the trial's MLflow run


class MlflowEpochs(keras.callbacks.Callback):
    def __init__(self, run: TrialRun):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        self.run.log_epoch(epoch, logs or {})


def failure_reason(exc: BaseException) -> str:
    """A short, recordable reason: nan_loss, architecture, oom, or the error's type and message."""
    if isinstance(exc, TrialFailed):
        return f"{exc.reason}: {exc.detail}"
    if isinstance(exc, ArchitectureError):
        return f"architecture: {exc}"
    lines = f"{type(exc).__name__}: {exc}".splitlines() or [type(exc).__name__]
    if isinstance(exc, MemoryError) or any(OUT_OF_MEMORY.search(line) for line in lines):
        # TensorFlow's first line says only "Graph execution error:"; which allocation failed comes later
        first, said = lines[0], next((line.strip() for line in lines[1:] if ALLOCATION.search(line)), None)
        if said and not ALLOCATION.search(first):
            first = f"{first} {said}"
        return f"oom: {first[:300]}"
    return f"error: {lines[0][:300]}"


def describe(config: TrialConfig) -> str:
    m, t = config.model, config.training
    parts = [f"{Path(m.backbone.source).name} backbone ({m.backbone.trainable})"] if m.backbone else []
    if m.stages:
        parts.append("/".join(s.family for s in m.stages) + " stages")
    return (f"{' + '.join(parts)}, {t.optimizer.name} lr {t.optimizer.learning_rate:.2g}, {t.schedule.name}, "
            f"batch {t.batch_size}")


def run_trial(
    settings: SearchSettings,
    data: Dataset,
    number: int,
    config: dict,
    tracker: Tracker,
    parent: str,
    live: Live,
    *,
    finished: int,
    pruning: list[keras.callbacks.Callback] = (),
    pruned_errors: tuple[type[BaseException], ...] = (),
    epochs: int | None = None,
) -> Outcome:
    start = time.perf_counter()
    keras.backend.clear_session()  # drop the previous trial's graph before building the next
    validated = TrialConfig.model_validate(config)
    epochs = epochs or settings.epochs or validated.training.epochs
    live.trial_started(number, finished, describe(validated))
    with tracker.trial_run(parent, number, config, tags={"automl.backend": settings.backend}) as run:
        callbacks = [MlflowEpochs(run), *live.epoch_callbacks(number, epochs), *pruning]
        try:  # the model is saved before anything is logged: MLflow's trouble cannot lose it
            result = fit(validated, data, callbacks=callbacks, epochs=epochs, objective=settings.objective,
                         seed=settings.seed + number, jit_compile=settings.jit_compile or "auto")
            path = settings.trial_dir(number) / "model.keras"
            path.parent.mkdir(parents=True, exist_ok=True)
            result.model.save(path)
        except pruned_errors as exc:  # its message, when it has one, says why (too slow, time up)
            outcome = Outcome("PRUNED", pruned=exc, reason=str(exc) or None)
        except Exception as exc:  # the trial fails alone; the search goes on
            outcome = Outcome("FAIL", reason=failure_reason(exc))
            run.log_traceback(exc)  # the terminal says why in one line; --debug shows it there too
            log.debug("trial %d failed", number, exc_info=exc)
        else:
            outcome = Outcome("COMPLETE", result.metrics[settings.objective], result=result)
        run.state, run.reason, outcome.run_id = outcome.state, outcome.reason, run.run_id
        seconds = time.perf_counter() - start
        summary = {"trial_seconds": seconds}
        if outcome.result:  # the best epoch's values under best_*, so the per-epoch histories stay clean
            r = outcome.result
            summary.update(fit_seconds=r.fit_seconds, best_epoch=r.best_epoch, params=r.params,
                           **{k if k.startswith("test_") else f"best_{k}": v for k, v in r.metrics.items()})
        run.log_metrics(summary)
    live.trial_ended(number, outcome.state, outcome.value, time.perf_counter() - start, outcome.reason or "")
    return outcome


def run_trial_or_smaller(space: SearchSpace, config: dict, train: Callable[[dict], Outcome],
                         live: Live, number: int) -> tuple[Outcome, dict, int | None]:
    """``train(config)``; when it runs out of memory, once more with half the batch, where the
    space offers that size (both backends). Returns the outcome, the configuration it trained
    last and the batch size that ran out of memory (None: no retry)."""
    outcome = train(config)
    smaller = halved_batch(space, config) if (outcome.reason or "").startswith("oom") else None
    if smaller is None:
        return outcome, config, None
    batch = config["training"]["batch_size"]
    live.say(f"trial {number} ran out of memory at batch {batch}; retrying with batch {batch // 2}")
    return train(smaller), smaller, batch


def halved_batch(space: SearchSpace, config: dict) -> dict | None:
    """``config`` with half its batch size, where the space offers that size; else None."""
    param = next((p for p in space.params if p.name == "training.batch_size"), None)
    if param is None:  # a fixed batch size: nothing smaller to try
        return None
    batch = config["training"]["batch_size"]
    if batch < 2 or not param.contains(batch // 2):
        return None
    return {**config, "training": {**config["training"], "batch_size": batch // 2}}


def freeze_long_lived() -> None:
    """Hide what lives as long as the process (framework modules, the data) from the garbage
    collector: Keras's clear_session collects before every trial, and walking those objects
    took about 0.5 s of each."""
    gc.collect()
    gc.freeze()


def resident_mb() -> float | None:
    """This process's resident memory now (Linux): how memory grows across a worker's trials."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def trial_record(settings: SearchSettings, number: int, outcome: Outcome, seconds: float) -> TrialRecord:
    """What a study keeps of a finished trial for export, `automl trials` and the recipe."""
    record = TrialRecord(trial_seconds=round(seconds, 3), mlflow_run_id=outcome.run_id, rss_mb=resident_mb(),
                         fail_reason=outcome.reason, worker=WORKER)
    if outcome.result is not None:
        r = outcome.result
        record.model_path = str(settings.trial_dir(number) / "model.keras")
        record.metrics, record.best_epoch, record.params = r.metrics, r.best_epoch, r.params
        record.fit_seconds = round(r.fit_seconds, 3)
        record.epoch_seconds = [round(v, 3) for v in r.epoch_seconds]
        record.epochs_run = len(r.history.get("loss", []))
        record.history = {k: [float(f"{v:.5g}") for v in vals] for k, vals in r.history.items()}
    return record


def stop_time(settings: SearchSettings, study: optuna.Study) -> float | None:
    """When, on ``time.perf_counter``'s clock, this process starts no more trials: at the search's
    deadline (kept in the study from its start, so that every worker stops together) or at this
    process's own timeout from now, whichever comes first; None: no time bound."""
    now = time.perf_counter()
    ends = [now + settings.timeout] if settings.timeout else []
    deadline = records.search_deadline(study)
    if deadline is not None:
        ends.append(now + deadline - time.time())
    return min(ends, default=None)


def first_values(first_trials: list[dict] | None, space: SearchSpace) -> list[dict]:
    """The parameter values of a search's first trials, as both backends run them: each given
    set, the parameters it leaves out at their defaults, or else the default configuration."""
    searched = {p.name for p in space.params}
    for values in first_trials or []:
        unknown = sorted(set(values) - searched)
        if unknown:
            raise UserError(f"first_trials: {', '.join(unknown)} not searched in {space.file} (searched: "
                            f"{', '.join(sorted(searched))})")
    return [space.suggest_all(FixedSuggester(values)) for values in first_trials or [{}]]


class FailureGuard:
    """Stops a search after ``limit`` failed trials in a row (a pruned trial is not a failure):
    then the cause is not one configuration."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.last_reason = limit, 0, ""

    @classmethod
    def for_search(cls, trials: int | None) -> FailureGuard:
        return cls(max(5, trials // 2) if trials else 5)

    def saw(self, state: str, reason: str | None) -> bool:
        """Count a finished trial; True when the search should stop."""
        if state != "FAIL":
            self.in_a_row = 0
            return False
        self.in_a_row, self.last_reason = self.in_a_row + 1, reason or ""
        return self.in_a_row >= self.limit

    def check(self) -> None:
        """After the search's loop: raise if it was stopped by failures."""
        if self.in_a_row >= self.limit:
            raise SearchStopped(f"stopped after {self.in_a_row} failed trials in a row; last: {self.last_reason}")

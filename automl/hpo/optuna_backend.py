"""The Optuna backend: define-by-run sampling of the space, pruning on per-epoch validation metrics."""

from __future__ import annotations

import os
import socket
import time

import keras
import optuna
from optuna.exceptions import StorageInternalError
from optuna.study import MaxTrialsCallback
from optuna_integration import KerasPruningCallback

from automl.config import TrialConfig
from automl.data import Dataset
from automl.errors import SearchStopped
from automl.hpo.journal import StorageWriteError
from automl.hpo.live import Live
from automl.hpo.locks import process_slot
from automl.hpo.settings import SearchSettings
from automl.hpo.strategies import make_pruner, make_sampler
from automl.hpo.study import FINISHED, finished_count
from automl.hpo.trial import Outcome, freeze_long_lived, run_trial, run_trial_or_smaller, trial_attrs
from automl.space import DefaultSuggester, OptunaSuggester, SearchSpace
from automl.tracking import Tracker

COMPLETE = optuna.trial.TrialState.COMPLETE
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # which process ran a trial


class TimeUp(keras.callbacks.Callback):
    """Prunes the running trial once the search's timeout has passed (Optuna's own timeout only
    keeps new trials from starting), unless no trial has completed yet: a search returns a model."""

    def __init__(self, study: optuna.Study, deadline: float):
        super().__init__()
        self.study, self.deadline = study, deadline

    def on_epoch_end(self, epoch, logs=None):
        if time.perf_counter() > self.deadline and self.study.get_trials(deepcopy=False, states=(COMPLETE,)):
            raise optuna.TrialPruned(f"the search's time ran out after epoch {epoch + 1}")


class TooSlow(keras.callbacks.Callback):
    """Prunes a trial that trains fewer than ``floor`` images per second, measured in its first
    epoch after a few batches (the first include tracing) for a few seconds or to the epoch's
    end. A tune's search stages set the floor from the speed its final training needs: a slower
    configuration could not be the final model, so its trial stops within seconds."""

    SKIPPED, MEASURED = 5, 3.0  # batches before the clock starts; seconds measured at most

    def __init__(self, floor: float, batch_size: int):
        super().__init__()
        self.floor, self.batch_size = floor, batch_size
        self.start: float | None = None
        self.measured: tuple[int, float] | None = None  # batches, seconds
        self.done = False

    def on_train_batch_end(self, batch, logs=None):
        if self.done or batch < self.SKIPPED:
            return
        now = time.perf_counter()
        if batch == self.SKIPPED:
            self.start = now
        elif self.start is not None:
            self.measured = (batch - self.SKIPPED, now - self.start)
            if now - self.start >= self.MEASURED:
                self._judge()

    def on_epoch_end(self, epoch, logs=None):
        if not self.done and self.measured:
            self._judge()
        self.done = True

    def _judge(self) -> None:
        self.done = True
        batches, seconds = self.measured
        speed = batches * self.batch_size / seconds
        if speed < self.floor:
            raise optuna.TrialPruned(f"trains {speed:.0f} images/s, below the {self.floor:.0f} its final training "
                                     "would need")


class FailureGuard:
    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.last_reason = limit, 0, ""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.FAIL:
            self.in_a_row += 1
            self.last_reason = trial.user_attrs.get("fail_reason", "")
            if self.in_a_row >= self.limit:
                study.stop()
        else:
            self.in_a_row = 0


def enqueue_first_trials(settings: SearchSettings, space: SearchSpace, study: optuna.Study) -> None:
    """Known-reasonable first trials of a new study: the space's default configuration, or the given ones."""
    if not study.trials:
        by_name = {p.name: p for p in space.params}
        for values in settings.first_trials or [space.suggest_all(DefaultSuggester())]:
            study.enqueue_trial({n: OptunaSuggester.stored_value(by_name[n], v) for n, v in values.items()})


def optimize(settings: SearchSettings, space: SearchSpace, data: Dataset, study: optuna.Study, tracker: Tracker,
             parent: str, live: Live) -> int:
    """Run trials in this process until the study's target (or the timeout); returns how many ran."""
    # A resumed search must not replay the seeded sampler's first suggestions, nor may two
    # processes on one study propose the same ones: each has its own slot (0 when alone).
    expected = settings.trials or 100  # a search bounded by time only: plan for many trials
    seed = settings.sampler_seed
    if seed is None:
        seed = settings.seed + len(study.trials) + 7919 * process_slot(settings.storage, settings.study)
    study.sampler = make_sampler(settings.sampler, seed, expected)
    study.pruner = make_pruner(settings.pruner, settings.epochs)
    guard = FailureGuard(limit=max(5, settings.trials // 2) if settings.trials else 5)
    deadline = time.perf_counter() + settings.timeout if settings.timeout else None
    ran = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal ran
        ran += 1
        start = time.perf_counter()
        config = space.sample(OptunaSuggester(trial))
        trial.set_user_attr("worker", WORKER)
        pruning = [KerasPruningCallback(trial, settings.objective)] if settings.pruner != "none" else []
        pruning += [TimeUp(study, deadline)] if deadline else []
        if settings.min_images_per_second:
            batch = TrialConfig.model_validate(config).training.batch_size  # the space may leave it to the default
            pruning.append(TooSlow(settings.min_images_per_second, batch))

        def train(config: dict) -> Outcome:
            trial.set_user_attr("config", config)
            return run_trial(settings, data, trial.number, config, tracker, parent, live,
                             finished=finished_count(study), pruning=pruning, pruned_errors=(optuna.TrialPruned,))

        outcome, config, retried = run_trial_or_smaller(space, config, train, live, trial.number)
        for key, value in retried.items():
            trial.set_user_attr(key, value)
        for key, value in trial_attrs(settings, trial.number, outcome, time.perf_counter() - start).items():
            trial.set_user_attr(key, value)
        if outcome.pruned is not None:
            raise outcome.pruned
        if outcome.state == "FAIL":
            raise TrialFailedInStudy(outcome.reason)
        return outcome.value

    callbacks = [MaxTrialsCallback(settings.trials, states=FINISHED), guard] if settings.trials else [guard]
    if deadline:  # Optuna's timeout runs on its own clock, started a moment later: a trial TimeUp
        # pruned must not be followed by another one in that moment
        callbacks.append(lambda study, _: study.stop() if time.perf_counter() > deadline else None)
    freeze_long_lived()
    try:
        study.optimize(
            objective,
            n_trials=settings.recycle,  # a recycled worker process exits after this many
            timeout=settings.timeout,
            callbacks=callbacks,
            catch=(TrialFailedInStudy,),
        )
    except AssertionError as exc:  # Optuna's "Should not reach." when the storage cannot record a trial's end
        cause = exc.__context__
        while cause is not None and not isinstance(cause, (StorageWriteError, StorageInternalError)):
            cause = cause.__context__
        if cause is None:
            raise
        if isinstance(cause, StorageInternalError):  # a relational database refused the write
            root = cause.__cause__ or cause
            raise StorageWriteError(f"the study's storage could not record a trial ({type(root).__name__}: "
                                    f"{str(root).splitlines()[0][:200]}); the trials it holds are kept: rerun "
                                    "the same command once it can be written") from None
        raise cause from None
    if guard.in_a_row >= guard.limit:
        raise SearchStopped(f"stopped after {guard.in_a_row} failed trials in a row; last: {guard.last_reason}")
    return ran


class TrialFailedInStudy(Exception):
    """Raised to Optuna so it records the trial as FAIL (the reason is in its user attrs)."""
